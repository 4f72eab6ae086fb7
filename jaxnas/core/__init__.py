"""The bottom layer: how every layer declares its settings (``schema``), names its plug-ins
(``registry``) and builds its optax optimizers (``optim``). Imports nothing else of jaxnas."""

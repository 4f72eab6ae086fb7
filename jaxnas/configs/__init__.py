"""The shipped configs: ``jaxnas search NAME`` (e.g. ``quickstart``) runs ``NAME.py`` of this folder.

Each file is a plain Python file with ``get_config()``; copy one to start your own. In a clone of
the repository ``configs/`` at the top level is this folder. Configs that default to data beside the
repository (``../shared/data/...``) need ``data.path=...`` elsewhere."""

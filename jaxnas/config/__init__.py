"""Experiment configuration: the config schema and its defaults (``settings``) and the registries
that turn a resolved config into an :class:`Experiment` (``experiment``)."""
from jaxnas.config.experiment import Experiment, build
from jaxnas.config.settings import DEFAULTS, load_config, raw_config, resolve

__all__ = ["DEFAULTS", "Experiment", "build", "load_config", "raw_config", "resolve"]

"""jaxnas: weight-sharing neural architecture search in JAX/Flax.

The layers, bottom to top (docs/architecture.md): ``core`` (settings schema, registries, optimizers,
work directories), ``spaces``, ``models`` (ops, supernets, discrete networks), ``data``, ``tasks``,
``strategies``, ``benchmarks``, ``training``, ``evaluators``, ``engine`` (the compiled search loop,
lanes, processes), ``config`` (defaults, resolve, build), ``protocols`` (retrain per space), and the
commands here (``run_search``, ``retrain``, ``export``, ``report``, the CLI).
"""
__version__ = "0.1.0"

# What users call, loaded on first use (PEP 562): ``import jaxnas`` and ``jaxnas --help`` stay instant
_API = {
    "DEFAULTS": "jaxnas.config", "Experiment": "jaxnas.config", "build": "jaxnas.config",
    "load_config": "jaxnas.config", "resolve": "jaxnas.config",
    "load": "jaxnas.export", "run_search": "jaxnas.runner",
}
# the commands are modules of their own: jaxnas.retrain.retrain, jaxnas.export.export / load,
# jaxnas.report.report (a function of the same name here would be shadowed by its module)
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name in _API:
        import importlib
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'jaxnas' has no attribute {name!r}")

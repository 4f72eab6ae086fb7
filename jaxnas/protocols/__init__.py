"""Retrain protocols keyed by space (``base.py``): ``mlp`` (TabNAS Alg. 3), ``nb201`` and ``darts``
(``cells.py``), ``rnn`` (``rnn.py``), ``pipeline`` (MA2ML, ``pipeline.py``)."""
from jaxnas.protocols import cells, mlp, pipeline, rnn  # noqa: F401  (register the built-in protocols)
from jaxnas.protocols.base import (
    RETRAIN_DIR,
    SETTINGS,
    Protocol,
    RunContext,
    get,
    kinds,
    read_search,
    register,
    seed_list,
)

__all__ = ["RETRAIN_DIR", "SETTINGS", "Protocol", "RunContext", "get", "kinds", "read_search", "register", "seed_list"]

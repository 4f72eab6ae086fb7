"""Evaluators: what a strategy learns from (see base.py for the protocol).

``shared_weights`` (a one-shot supernet), ``table`` (a benchmark table), ``standalone`` (candidates
trained from scratch in one vmapped program).
"""
from jaxnas.evaluators import lm_shared_weights, shared_weights, standalone, table  # noqa: F401  (register)
from jaxnas.evaluators.base import Evaluator, available, get, register

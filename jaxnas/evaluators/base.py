"""The evaluator protocol: what a strategy learns from.

The search loop (``jaxnas/engine/search.py``) runs one *sample* per lane of the population axis ``AXIS``
(a device under ``shard_map``, or a ``vmap`` lane on one device). Per lane and step it calls

- ``weight_step(state, inputs, weights, batch, key) -> (state, metrics)`` (evaluators with
  ``has_weights`` only): one optimizer step of the shared weights on this lane's training batch;
  the gradient is reduced over ``axis_name`` inside, so every lane holds the same state after it;
- ``reward_fn(state, inputs, batch, key) -> reward_fn``, with ``reward_fn(weights float[D, K]) ->
  (reward, aux)`` (higher is better) for the strategy; differentiable w.r.t. ``weights`` when
  ``differentiable`` is True; safe under ``jax.vmap`` over lanes and weights when
  ``max_lane_batch > 1``;
- ``context(state, inputs, train_batch, val_batch, key) -> SupernetContext`` for strategies that
  unroll the weight step (DARTS 2nd order).

``inputs`` is a pytree of arrays the compiled chunk takes as an argument (replicated on every
device; e.g. a benchmark table or a training set), never part of the checkpointed state.
``state`` is a pytree checkpointed with the search. ``result(state, arch)`` runs on the host after
the search and returns what ``result.json`` reports about the derived architecture.
``needs_batches``: whether the loop must feed train/validation batches.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import jax

from jaxnas.core.registry import Registry

RewardFn = Callable[[jax.Array], tuple[jax.Array, Any]]



class Evaluator(Protocol):
    name: str
    has_weights: bool        # a weight step exists (phases "weights" and "both" are allowed)
    differentiable: bool     # reward_fn works under jax.grad (gradient strategies need it)
    needs_batches: bool      # the loop feeds (train, val) batches
    max_lane_batch: int      # samples one device may evaluate at once under vmap (1: never vmap)

    def init(self, key) -> Any: ...
    def inputs(self) -> Any: ...
    def weight_step(self, state, inputs, weights, batch, key) -> tuple[Any, dict]: ...
    def reward_fn(self, state, inputs, batch, key) -> RewardFn: ...
    def context(self, state, inputs, train_batch, val_batch, key): ...
    def result(self, state, arch) -> dict: ...


EVALUATORS = Registry("evaluator")


def register(name: str, defaults: dict, *, needs_data: bool, has_weights: bool):
    """``@register("table", SCHEMA, needs_data=False, has_weights=False) def make(options, *, cfg,
    space, data, task, axis_name, **_)``. ``SCHEMA`` gives the keys of the config's ``evaluator``
    section for this name (types, ranges, defaults); ``needs_data`` and ``has_weights`` are known
    before the evaluator is built (the loader skips the data set, the schedule its weight phases)."""
    def deco(fn):
        fn.needs_data, fn.has_weights = bool(needs_data), bool(has_weights)
        return EVALUATORS.register(name, defaults)(fn)
    return deco


def available() -> list[str]:
    return EVALUATORS.names()


def get(name: str):
    return EVALUATORS.get(name)

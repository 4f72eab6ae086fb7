"""The strategy protocol: a search method as pure functions over a pytree state.

A strategy is built for one space and one config and exposes

- ``init(key) -> state``
- ``sample(state, key) -> (arch int32[D], weights float[D, K])``: what the weight step trains.
- ``step(state, key, reward_fn, ctx=None) -> (state, metrics)``: one architecture update. ``reward_fn(weights)
  -> (reward, aux)`` closes over the supernet parameters and a validation batch (higher is better).
  A strategy calls it once, under ``jax.grad``, or under ``jax.vmap`` over many weight matrices.
- ``derive(state) -> arch int32[D]``: the final architecture.
- ``probs(state) -> float[D, K]``: the current per-decision distribution (for reports).

``mode`` says which supernet mode the weights are meant for: ``"sparse"`` (one op per decision,
``lax.switch``) or ``"dense"`` (weighted sum of every op).

All functions are jit-able; the state is a pytree (``flax.struct.dataclass``); randomness comes only
from the keys passed in.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxnas.spaces.base import NEG_INF, Space

RewardFn = Callable[[jax.Array], tuple[jax.Array, Any]]


class SupernetContext(NamedTuple):
    """What a strategy needs beyond ``reward_fn`` when it differentiates through the weight step
    (DARTS second order, eq. 7 of Liu et al.). The search loop passes one to every ``step`` as
    ``ctx=``; strategies that do not need it ignore it.

    params: the supernet parameters; train_loss(params, weights) -> scalar on the current training
    batch; val_reward(params, weights) -> (reward, aux) on the validation batch (reward_fn is
    ``partial(val_reward, params)``); weight_lr: the learning rate of the weight optimizer.
    """
    params: Any
    train_loss: Callable[[Any, jax.Array], jax.Array]
    val_reward: Callable[[Any, jax.Array], tuple[jax.Array, Any]]
    weight_lr: float


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    space: Space
    mode: str
    init: Callable[[jax.Array], Any]
    sample: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]
    step: Callable[..., tuple[Any, dict]]  # (state, key, reward_fn, ctx=None)
    derive: Callable[[Any], jax.Array]
    probs: Callable[[Any], jax.Array]

    def __post_init__(self):
        if self.mode not in ("sparse", "dense"):
            raise ValueError(f"strategy {self.name!r}: mode must be 'sparse' or 'dense', got {self.mode!r}")


_REGISTRY: dict[str, Callable[..., Strategy]] = {}


def register(name: str):
    """Decorator: ``@register("reinforce") def make(space, **config) -> Strategy``."""
    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"strategy {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn
    return deco


def available() -> list[str]:
    return sorted(_REGISTRY)


def make(name: str, space: Space, **config) -> Strategy:
    """Builds the registered strategy ``name`` for ``space``; unknown names and keys raise."""
    import jaxnas.strategies  # noqa: F401  (registers the built-in strategies)
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(available())}")
    try:
        return _REGISTRY[name](space, **config)
    except TypeError as e:  # an unexpected keyword: name it and the ones that exist
        import inspect
        params = [p for p in inspect.signature(_REGISTRY[name]).parameters if p != "space"]
        raise ValueError(f"strategy {name!r}: {e}; its options are: {', '.join(params)}") from None


# ---- helpers shared by policy-based strategies ---------------------------------------------------
def masked_log_softmax(logits: jax.Array, mask) -> jax.Array:
    """Log-probabilities over valid choices; invalid choices get a large negative (finite) value."""
    return jax.nn.log_softmax(jnp.where(jnp.asarray(mask), logits, NEG_INF), axis=-1)


def categorical_entropy(logits: jax.Array, mask) -> jax.Array:
    """Entropy per decision, ``float[D]``."""
    logp = masked_log_softmax(logits, mask)
    return -jnp.sum(jnp.where(jnp.asarray(mask), jnp.exp(logp) * logp, 0.0), -1)


def check_finite_reward(reward: jax.Array, strategy: str) -> jax.Array:
    """Flags a NaN/inf reward; the search loop turns the flag into an error with advice."""
    return jnp.logical_not(jnp.all(jnp.isfinite(reward)))

"""The policy-gradient family (REINFORCE, AdvantageNAS, PARSEC): state and assembly.

The policy is an independent categorical per decision, ``p_theta(a) = prod_i softmax(theta_i)[a_i]``
(AdvantageNAS sec. 4.1, eq. 2); ``theta`` are logits ``float[D, K]`` with invalid choices pinned at
``NEG_INF``. A method supplies its step; what they share is here and in ``categorical.py``.

Conventions: gradient *estimates* ``delta`` are ascent directions on ``J(theta) = E[R(a)]``;
:func:`update` averages them over the lanes whose estimate is finite and feeds ``-delta`` to the
optimizer (which minimises). Moving averages use ``decay``, the weight of the OLD value: the
AdvantageNAS paper's ``gamma = 0.05`` (eq. 9, App. C) is ``decay = 0.95``.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from jaxnas.spaces.base import NEG_INF, Space
from jaxnas.strategies import categorical as K
from jaxnas.strategies.base import Strategy


@struct.dataclass
class PolicyState:
    """State of a categorical-policy strategy. ``extra`` holds what a method adds (baselines,
    moving averages, sample buffers); ``best_*`` track the best architecture evaluated so far over
    all lanes ("process best", sec. 5.2)."""
    logits: jax.Array          # float[D, K]
    opt_state: Any
    step: jax.Array            # int32, architecture steps taken
    best_arch: jax.Array       # int32[D]
    best_reward: jax.Array     # float32, -inf before the first evaluation
    extra: Any


def init_policy_state(space: Space, optimizer, extra=None) -> PolicyState:
    # App. D initialises theta to ones (equal probabilities); uniform logits are the same policy.
    logits = space.uniform_logits().astype(jnp.float32)
    return PolicyState(logits=logits, opt_state=optimizer.init(logits),
                       step=jnp.zeros((), jnp.int32),
                       best_arch=jnp.zeros((space.num_decisions,), jnp.int32),
                       best_reward=jnp.full((), -jnp.inf, jnp.float32), extra=extra)


def update(state: PolicyState, delta, ok, optimizer, mask, axis_name) -> tuple[PolicyState, Any]:
    """One optimizer step along the mean of the lanes' ascent directions ``delta`` over the lanes
    where ``ok``; skipped (state kept) when no lane is ok, so a bad batch never writes NaN into theta.
    Returns ``(state, n_ok)``."""
    delta, n_ok = K.masked_mean(delta, ok, axis_name)
    logits, opt_state = K.ascend(optimizer, state.logits, state.opt_state, delta, n_ok > 0,
                                 mask=mask, fill=NEG_INF)
    return state.replace(logits=logits, opt_state=opt_state), n_ok


def track_best(state: PolicyState, arch, reward, ok, axis_name) -> PolicyState:
    best_arch, best_reward = K.track_best(state.best_arch, state.best_reward, arch, reward, ok,
                                          axis_name)
    return state.replace(best_arch=best_arch, best_reward=best_reward)


def derive_arch(space: Space, state: PolicyState, final: str) -> jax.Array:
    """Final architecture: the space's derivation of theta (argmax per decision), or the process
    best (falling back to the former before anything was evaluated)."""
    amax = K.derive(space, state.logits)
    if final == "argmax":
        return amax
    return jnp.where(jnp.isfinite(state.best_reward), state.best_arch, amax)


def build_policy_strategy(name: str, space: Space, step: Callable, optimizer, final: str,
                          extra_init: Callable[[], Any] = lambda: None, needs: str = "reward",
                          mode: str = "sparse") -> Strategy:
    """Wraps a method's ``step(state, key, reward_fn, ctx) -> (state, metrics)`` into the protocol;
    init, sampling, derive and probs are the same for every method."""
    mask = space.mask
    final = K.check_final(name, final)

    def init(key):
        del key  # the uniform initial policy needs no randomness
        return init_policy_state(space, optimizer, extra_init())

    def sample(state, key):
        arch = space.sample(key, state.logits)
        return arch, space.one_hot(arch)

    def step_(state, key, reward_fn, ctx=None):
        return step(state, key, reward_fn, ctx)

    return Strategy(name=name, space=space, mode=mode, init=init, sample=sample, step=step_,
                    derive=lambda s: derive_arch(space, s, final),
                    probs=lambda s: K.softmax(s.logits, mask), needs=needs)


"""Shared pieces of the categorical-policy strategies (REINFORCE, AdvantageNAS, PARSEC).

The policy is an independent categorical per decision, ``p_theta(a) = prod_i softmax(theta_i)[a_i]``
(AdvantageNAS sec. 4.1, eq. 2); ``theta`` are logits ``float[D, K]`` with invalid choices pinned at
``NEG_INF``. Everything here is a pure function; strategies assemble them into a ``Strategy``.

Conventions: gradient *estimates* ``delta`` are ascent directions on ``J(theta) = E[R(a)]``;
``ascent_update`` feeds ``-delta`` to the optax optimizer (which minimises).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxnas.spaces.base import NEG_INF, Space
from jaxnas.strategies.base import Strategy, categorical_entropy, masked_log_softmax

FINAL_RULES = ("argmax", "process_best")


# ---- the policy ------------------------------------------------------------------------------------
def policy_probs(logits: jax.Array, mask) -> jax.Array:
    """``mu(theta)``, eq. 2: softmax over valid choices, exactly 0 on invalid ones."""
    return jnp.where(jnp.asarray(mask), jnp.exp(masked_log_softmax(logits, mask)), 0.0)


def score(logits: jax.Array, arch: jax.Array, mask) -> jax.Array:
    """``grad_theta log p_theta(a) = a - mu(theta)`` (sec. 4.2), ``float[D, K]``."""
    return jax.nn.one_hot(arch, logits.shape[-1], dtype=logits.dtype) - policy_probs(logits, mask)


def log_prob(logits: jax.Array, arch: jax.Array, mask) -> jax.Array:
    """``log p_theta(a)`` summed over decisions (used by tests to check ``score`` with jax.grad)."""
    logp = masked_log_softmax(logits, mask)
    return jnp.sum(jnp.take_along_axis(logp, arch[:, None], -1))


def reinforce_estimate(logits, arch, reward, mask, baseline=0.0) -> jax.Array:
    """REINFORCE, eq. 4 (with an optional baseline, App. C): ``(r - b) (a - mu)``."""
    return (reward - baseline) * score(logits, arch, mask)


def per_decision_estimate(logits, arch, coeff, mask) -> jax.Array:
    """Alg. 1 line 9: ``delta_theta_i = A_i (a_i - mu_i)`` with one coefficient per decision."""
    return coeff[:, None] * score(logits, arch, mask)


def ema_update(old, new, gamma: float):
    """Exponential moving average, eq. 9 form: ``old + gamma (new - old)``."""
    return old + gamma * (new - old)


def masked_argmax(x: jax.Array, mask) -> jax.Array:
    return jnp.argmax(jnp.where(jnp.asarray(mask), x, -jnp.inf), axis=-1).astype(jnp.int32)


# ---- optimizer on the logits ---------------------------------------------------------------------
def make_optimizer(lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, weight_decay: float = 0.0,
                   clip: Optional[float] = None, total_steps: Optional[int] = None):
    """Adam on theta. Toy task (sec. 5.1): lr 1e-3, betas (0.9, 0.999). NAS-Bench-201 (App. D): lr
    3e-4 cosine-annealed over ``total_steps``, betas (0.5, 0.999), weight decay 3e-3, clip 1.0."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"Adam betas must lie in [0, 1), got b1={b1}, b2={b2}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip}")
    schedule = lr if total_steps is None else optax.cosine_decay_schedule(lr, int(total_steps))
    parts = []
    if clip is not None:
        parts.append(optax.clip_by_global_norm(clip))
    parts.append(optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity())
    parts.append(optax.scale_by_adam(b1=b1, b2=b2))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)


@struct.dataclass
class PolicyState:
    """State of a categorical-policy strategy. ``extra`` holds what a method adds (baselines,
    moving averages, sample buffers); ``best_*`` track the best architecture evaluated so far
    ("process best", sec. 5.2)."""
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


def ascent_update(state: PolicyState, delta: jax.Array, optimizer, mask, ok=True) -> PolicyState:
    """One optimizer step along the ascent direction ``delta``; skipped (state kept) when ``ok`` is
    False, e.g. a non-finite reward, so a bad batch never writes NaN into theta."""
    updates, opt_state = optimizer.update(-delta, state.opt_state, state.logits)
    logits = jnp.where(jnp.asarray(mask), optax.apply_updates(state.logits, updates), NEG_INF)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    return state.replace(logits=keep(logits, state.logits), opt_state=keep(opt_state, state.opt_state))


def track_best(state: PolicyState, arch: jax.Array, reward: jax.Array) -> PolicyState:
    """"Process best": keep the architecture with the highest reward seen (NaN never wins)."""
    better = jnp.isfinite(reward) & (reward > state.best_reward)
    return state.replace(best_arch=jnp.where(better, arch, state.best_arch),
                         best_reward=jnp.where(better, reward.astype(jnp.float32), state.best_reward))


def derive_arch(state: PolicyState, mask, final: str) -> jax.Array:
    """Final architecture: ``argmax`` of mu(theta) per decision, or the process best (falling back
    to argmax before anything was evaluated)."""
    amax = masked_argmax(state.logits, mask)
    if final == "argmax":
        return amax
    return jnp.where(jnp.isfinite(state.best_reward), state.best_arch, amax)


def check_final(final: str) -> str:
    if final not in FINAL_RULES:
        raise ValueError(f"final={final!r}: choose one of {FINAL_RULES} ('argmax' of the policy or "
                         "'process_best', the best architecture evaluated during search)")
    return final


def check_gamma(gamma: float, name: str = "gamma") -> float:
    if not 0 < gamma <= 1:
        raise ValueError(f"{name} is a moving-average decay factor and must lie in (0, 1], got {gamma}")
    return float(gamma)


def policy_metrics(state: PolicyState, reward, nonfinite, mask, **more) -> dict:
    out = {"reward": jnp.asarray(reward, jnp.float32),
           "entropy": jnp.mean(categorical_entropy(state.logits, mask)),
           "nonfinite": nonfinite}
    out.update({k: jnp.asarray(v, jnp.float32) for k, v in more.items()})
    return out


def build_policy_strategy(name: str, space: Space, step_impl: Callable, optimizer,
                          final: str, extra_init: Callable[[], Any] = lambda: None,
                          mode: str = "sparse") -> Strategy:
    """Wraps a method's ``step_impl(state, key, reward_fn, ctx) -> (state, metrics)`` into the
    protocol; the shared parts (init, sampling, derive, probs) are the same for every method."""
    mask = space.mask
    final = check_final(final)

    def init(key):
        del key  # the uniform initial policy needs no randomness
        return init_policy_state(space, optimizer, extra_init())

    def sample(state, key):
        arch = space.sample(key, state.logits)
        return arch, space.one_hot(arch)

    def step(state, key, reward_fn, ctx=None):
        return step_impl(state, key, reward_fn, ctx)

    return Strategy(name=name, space=space, mode=mode, init=init, sample=sample, step=step,
                    derive=lambda s: derive_arch(s, mask, final),
                    probs=lambda s: policy_probs(s.logits, mask))

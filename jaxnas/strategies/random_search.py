"""Random search with weight sharing: sample architectures uniformly, keep the best ones seen.

``step`` evaluates one uniform sample and inserts it into a small buffer of the ``buffer_size``
highest rewards; ``derive`` returns the best architecture in the buffer. The policy never changes,
so ``probs`` is uniform. This is the control every learnt strategy has to beat.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxnas.spaces.base import Space
from jaxnas.strategies.base import Strategy, check_finite_reward, register
from jaxnas.strategies import policy as P


@struct.dataclass
class RandomState:
    archs: jax.Array     # int32[S, D], sorted by reward, best first
    rewards: jax.Array   # float32[S], -inf for empty slots
    step: jax.Array      # int32


@register("random")
def make_random(space: Space, buffer_size: int = 8) -> Strategy:
    """Random search. buffer_size: how many of the best architectures the state keeps."""
    if int(buffer_size) < 1:
        raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    S = int(buffer_size)
    mask = space.mask
    logits = space.uniform_logits()

    def init(key):
        del key
        return RandomState(archs=jnp.zeros((S, space.num_decisions), jnp.int32),
                           rewards=jnp.full((S,), -jnp.inf, jnp.float32),
                           step=jnp.zeros((), jnp.int32))

    def sample(state, key):
        arch = space.sample(key, logits)
        return arch, space.one_hot(arch)

    def step(state, key, reward_fn, ctx=None):
        arch = space.sample(key, logits)
        reward, _ = reward_fn(space.one_hot(arch))
        bad = check_finite_reward(reward, "random")
        r = jnp.where(bad, -jnp.inf, reward).astype(jnp.float32)  # a NaN reward never enters
        rewards = jnp.concatenate([state.rewards, r[None]])
        archs = jnp.concatenate([state.archs, arch[None]])
        order = jnp.argsort(-rewards, stable=True)[:S]            # stable: earlier ties first
        new = RandomState(archs=archs[order], rewards=rewards[order], step=state.step + 1)
        return new, {"reward": jnp.asarray(reward, jnp.float32),
                     "entropy": jnp.mean(jnp.log(jnp.asarray(space.num_choices, jnp.float32))),
                     "nonfinite": bad, "best_reward": new.rewards[0]}

    def derive(state):
        return jnp.where(jnp.isfinite(state.rewards[0]), state.archs[0],
                         jnp.zeros_like(state.archs[0]))

    return Strategy(name="random", space=space, mode="sparse", init=init, sample=sample,
                    step=step, derive=derive, probs=lambda s: P.policy_probs(logits, mask))

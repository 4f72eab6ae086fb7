"""Random search with weight sharing: sample architectures uniformly, keep the best ones seen.

``step`` evaluates one uniform sample per lane and inserts the P samples of the step into a buffer
of the ``buffer_size`` highest rewards (earlier entries, then lower lanes, win ties); ``derive``
returns the best architecture in the buffer. The policy never changes, so ``probs`` is uniform.
This is the control every learnt strategy has to beat.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

from jaxnas.spaces.base import Space
from jaxnas.strategies import categorical as K
from jaxnas.strategies.base import Strategy, register


@struct.dataclass
class RandomState:
    archs: jax.Array     # int32[S, D], sorted by reward, best first
    rewards: jax.Array   # float32[S], -inf for empty slots
    step: jax.Array      # int32


@register("random")
def make_random(space: Space, *, axis_name: Optional[str] = None,
                total_steps: Optional[int] = None, buffer_size: int = 8) -> Strategy:
    """Random search. buffer_size: how many of the best architectures the state keeps."""
    del total_steps
    if int(buffer_size) < 1:
        raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    S = int(buffer_size)
    mask = space.mask
    logits = space.uniform_logits()
    uniform = K.softmax(logits, mask)

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
        ok = K.finite(reward)
        r = jnp.where(ok, reward, -jnp.inf).astype(jnp.float32)   # a NaN reward never enters
        archs_p, r_p = K.lane_gather((arch, r), axis_name)          # the step's P samples
        rewards = jnp.concatenate([state.rewards, r_p])
        archs = jnp.concatenate([state.archs, archs_p])
        order = jnp.argsort(-rewards, stable=True)[:S]            # stable: earlier ties first
        new = RandomState(archs=archs[order], rewards=rewards[order], step=state.step + 1)
        return new, K.step_metrics(reward, ~ok, uniform, 1.0, best_reward=new.rewards[0])

    def derive(state):
        return jnp.where(jnp.isfinite(state.rewards[0]), state.archs[0],
                         jnp.zeros_like(state.archs[0]))

    return Strategy(name="random", space=space, mode="sparse", init=init, sample=sample,
                    step=step, derive=derive, probs=lambda s: uniform, needs="reward")

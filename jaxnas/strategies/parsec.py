"""PARSEC (Casale, Gordon, Fusi 2019) as the AdvantageNAS paper runs it (App. C: 8 MC samples).

PARSEC fits the architecture distribution by Monte-Carlo empirical Bayes: with samples
``a_k ~ p_theta`` (k = 1..S) and their likelihoods, the gradient of the log marginal likelihood is
estimated with self-normalised importance weights,

    delta = sum_k w_k grad_theta log p_theta(a_k),    w_k = softmax_k(r(a_k) / temperature),

i.e. the likelihood of a sample is taken as ``exp(reward / temperature)``.

``accumulate=True`` (default, as the authors' implementation) evaluates one sample per step, keeps
it in a buffer and updates theta every S-th step, so one step costs one sparse evaluation like the
other methods. ``accumulate=False`` evaluates all S samples in one step, sequentially (``lax.map``:
no vmap over a sparse supernet).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxnas.spaces.base import Space
from jaxnas.strategies.base import Strategy, check_finite_reward, register
from jaxnas.strategies import policy as P


def importance_estimate(logits, archs, rewards, mask, temperature: float = 1.0):
    """``sum_k softmax(r / T)_k (a_k - mu)`` for samples ``archs int[S, D]``, ``rewards float[S]``."""
    w = jax.nn.softmax(rewards / temperature)
    scores = jax.vmap(lambda a: P.score(logits, a, mask))(archs)
    return jnp.tensordot(w, scores, axes=1)


@register("parsec")
def make_parsec(space: Space, num_samples: int = 8, temperature: float = 1.0,
                accumulate: bool = True, final: str = "argmax", lr: float = 1e-3,
                b1: float = 0.9, b2: float = 0.999, weight_decay: float = 0.0,
                clip: Optional[float] = None, total_steps: Optional[int] = None) -> Strategy:
    """PARSEC. num_samples: MC samples per update (8, App. C); temperature: likelihood scale of
    the reward; accumulate: one sample per step (True) or all per step (False); final, Adam
    options as for REINFORCE."""
    S = int(num_samples)
    if S < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    opt = P.make_optimizer(lr, b1, b2, weight_decay, clip, total_steps)
    mask = space.mask
    D = space.num_decisions

    def extra_init():
        return {"archs": jnp.zeros((S, D), jnp.int32), "rewards": jnp.zeros((S,), jnp.float32),
                "count": jnp.zeros((), jnp.int32)}

    def step_accumulate(state, key, reward_fn, ctx):
        arch = space.sample(key, state.logits)
        reward, _ = reward_fn(space.one_hot(arch))
        bad = check_finite_reward(reward, "parsec")
        ex = state.extra
        c = ex["count"]
        archs = jnp.where(bad, ex["archs"], ex["archs"].at[c].set(arch))
        rewards = jnp.where(bad, ex["rewards"], ex["rewards"].at[c].set(reward.astype(jnp.float32)))
        c = c + jnp.where(bad, 0, 1)
        full = c == S
        delta = importance_estimate(state.logits, archs, rewards, mask, temperature)
        new = P.ascent_update(state, delta, opt, mask, full)   # theta fixed while sampling
        new = new.replace(step=state.step + 1,
                          extra={"archs": archs, "rewards": rewards, "count": jnp.where(full, 0, c)})
        new = P.track_best(new, arch, reward)
        return new, P.policy_metrics(new, reward, bad, mask, updated=full)

    def step_batch(state, key, reward_fn, ctx):
        archs = space.sample(key, state.logits, shape=(S,))
        rewards = jax.lax.map(lambda a: reward_fn(space.one_hot(a))[0], archs)
        bad = check_finite_reward(rewards, "parsec")
        delta = importance_estimate(state.logits, archs, rewards.astype(jnp.float32), mask,
                                    temperature)
        new = P.ascent_update(state, delta, opt, mask, ~bad)
        best = jnp.argmax(jnp.where(jnp.isfinite(rewards), rewards, -jnp.inf))
        new = P.track_best(new.replace(step=state.step + 1), archs[best], rewards[best])
        return new, P.policy_metrics(new, jnp.mean(rewards), bad, mask, updated=~bad)

    return P.build_policy_strategy("parsec", space, step_accumulate if accumulate else step_batch,
                                   opt, final, extra_init)

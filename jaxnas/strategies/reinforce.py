"""REINFORCE (Williams 1992) on an independent categorical policy, as the AdvantageNAS paper runs it.

One architecture step: sample ``a ~ p_theta``, evaluate the reward once (forward only, no
backward), ascend ``(r - b)(a - mu(theta))`` (eq. 4) with Adam. The baseline ``b`` approximates
``E[R]`` by an exponential moving average with decay ``gamma = 0.05`` (App. C, eq. 9 form); it is
built from past rewards only and initialised with the first reward (as the authors' EMA), so the
first step does not move theta and the estimate stays unbiased.
"""
from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from jaxnas.spaces.base import Space
from jaxnas.strategies.base import Strategy, check_finite_reward, register
from jaxnas.strategies import policy as P


@register("reinforce")
def make_reinforce(space: Space, gamma: float = 0.05, baseline: bool = True,
                   final: str = "argmax", lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
                   weight_decay: float = 0.0, clip: Optional[float] = None,
                   total_steps: Optional[int] = None) -> Strategy:
    """REINFORCE. gamma: decay of the moving-average baseline; baseline=False gives plain eq. 4;
    final: "argmax" or "process_best" (ENAS's rule); Adam lr/b1/b2, weight_decay, clip,
    total_steps (cosine decay) on theta."""
    gamma = P.check_gamma(gamma)
    opt = P.make_optimizer(lr, b1, b2, weight_decay, clip, total_steps)
    mask = space.mask

    def extra_init():
        return {"baseline": jnp.zeros((), jnp.float32), "baseline_set": jnp.zeros((), bool)}

    def step_impl(state, key, reward_fn, ctx):
        arch = space.sample(key, state.logits)
        reward, _ = reward_fn(space.one_hot(arch))
        bad = check_finite_reward(reward, "reinforce")
        ok = ~bad
        r = jnp.where(ok, reward, 0.0).astype(jnp.float32)
        ex = state.extra
        if baseline:
            b = jnp.where(ex["baseline_set"], ex["baseline"], r)
            new_b = P.ema_update(b, r, gamma)
        else:
            b, new_b = jnp.zeros((), jnp.float32), ex["baseline"]
        delta = P.reinforce_estimate(state.logits, arch, r, mask, b)   # eq. 4 with baseline
        new = P.ascent_update(state, delta, opt, mask, ok)
        new = new.replace(step=state.step + 1,
                          extra={"baseline": jnp.where(ok, new_b, ex["baseline"]),
                                 "baseline_set": ex["baseline_set"] | ok})
        new = P.track_best(new, arch, reward)
        return new, P.policy_metrics(new, reward, bad, mask, baseline=b)

    return P.build_policy_strategy("reinforce", space, step_impl, opt, final, extra_init)

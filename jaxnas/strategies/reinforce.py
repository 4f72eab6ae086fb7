"""REINFORCE (Williams 1992) on an independent categorical policy, as the AdvantageNAS paper runs it.

One architecture step: sample ``a ~ p_theta``, evaluate the reward once (forward only, no
backward), ascend ``(r - b)(a - mu(theta))`` (eq. 4) with Adam. The baseline ``b`` approximates
``E[R]`` by an exponential moving average (App. C, eq. 9 form, gamma = 0.05, i.e. ``decay = 0.95``);
it is built from past rewards only and initialised with the first rewards (as the authors' EMA), so
with one lane the first step does not move theta and the estimate stays unbiased.

P lanes: every lane samples and evaluates its own architecture; all use the same ``b``; the
directions are averaged over the lanes with a finite reward and the baseline moves towards their
mean reward.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from jaxnas.spaces.base import Space
from jaxnas.strategies import categorical as K
from jaxnas.strategies import policy as P
from jaxnas.strategies.base import Strategy, register


def reinforce_estimate(logits, arch, reward, mask, baseline=0.0):
    """REINFORCE, eq. 4 (with an optional baseline, App. C): ``(r - b) (a - mu)``."""
    return (reward - baseline) * K.score(logits, arch, mask)


@register("reinforce")
def make_reinforce(space: Space, *, axis_name: Optional[str] = None,
                   total_steps: Optional[int] = None, decay: float = 0.95, baseline: bool = True,
                   final: str = "argmax", optimizer: str = "adam", lr: float = 1e-3,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                   clip: Optional[float] = None, lr_schedule: str = "constant") -> Strategy:
    """REINFORCE. decay: weight of the old value in the moving-average baseline (paper gamma =
    1 - decay = 0.05); baseline=False gives plain eq. 4; final: "argmax" or "process_best" (ENAS's
    rule); optimizer/lr/b1/b2/eps/weight_decay/clip/lr_schedule on theta."""
    return build_reinforce("reinforce", space, axis_name=axis_name, total_steps=total_steps,
                           decay=decay, baseline=baseline, final=final, optimizer=optimizer, lr=lr,
                           b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, clip=clip,
                           lr_schedule=lr_schedule)


def build_reinforce(name: str, space: Space, *, axis_name: Optional[str], total_steps: Optional[int],
                    decay: float, baseline: bool, final: str, optimizer: str, lr: float, b1: float,
                    b2: float, eps: float, weight_decay: float, clip: Optional[float], lr_schedule: str,
                    extra_metrics: Optional[Callable[[jax.Array], dict]] = None) -> Strategy:
    """The REINFORCE strategy under the name ``name`` (every option given: each registered factory
    keeps its own defaults). ``extra_metrics(probs)``: further step metrics from the new policy's
    probabilities (MA2ML-Lite's per-agent entropies)."""
    decay = K.check_decay(name, decay)
    opt = K.make_optimizer(name, optimizer=optimizer, lr=lr, b1=b1, b2=b2, eps=eps,
                           weight_decay=weight_decay, clip=clip, lr_schedule=lr_schedule,
                           total_steps=total_steps)
    mask = space.mask

    def extra_init():
        return {"baseline": jnp.zeros((), jnp.float32), "baseline_set": jnp.zeros((), bool)}

    def step(state, key, reward_fn, ctx):
        arch = space.sample(key, state.logits)
        reward, _ = reward_fn(space.one_hot(arch))
        ok = K.finite(reward)
        r = jnp.where(ok, reward, 0.0).astype(jnp.float32)
        r_mean, n_ok = K.masked_mean(r, ok, axis_name)
        ex = state.extra
        if baseline:   # the same b on every lane: past rewards, or this step's mean at the first
            b = jnp.where(ex["baseline_set"], ex["baseline"], r_mean)
            new_b = K.ema(b, r_mean, decay)                         # eq. 9 form
        else:
            b, new_b = jnp.zeros((), jnp.float32), ex["baseline"]
        delta = reinforce_estimate(state.logits, arch, r, mask, b)   # eq. 4 with baseline
        new, _ = P.update(state, delta, ok, opt, mask, axis_name)
        seen = n_ok > 0
        new = new.replace(step=state.step + 1,
                          extra={"baseline": jnp.where(seen, new_b, ex["baseline"]),
                                 "baseline_set": ex["baseline_set"] | seen})
        new = P.track_best(new, arch, reward, ok, axis_name)
        probs = K.softmax(new.logits, mask)
        extra = extra_metrics(probs) if extra_metrics is not None else {}
        return new, K.step_metrics(reward, ~ok, probs, 1.0, baseline=b, **extra)

    return P.build_policy_strategy(name, space, step, opt, final, extra_init)

"""AdvantageNAS (Sato, Sakuma, Akimoto, AAAI 2021): policy gradient with a per-edge advantage.

One architecture step (Alg. 1, lines 6-10): sample ``a ~ p_theta``; evaluate the reward once with
its gradient w.r.t. the architecture weights; per decision ``i`` the advantage is

    A_i(a) ~= grad_{a_i} r(a)^T a_i = dr/dO_i^T O_i^j                       (eq. 7)

which, with a sparse supernet that multiplies the chosen op's output by ``weights[i, j]``, is just
``grad[i, a_i]`` -- no extra forward pass. The exact advantage ``r(a) - r((s_i, 0))`` (eq. 6) is
available as ``estimator="exact"`` (D extra reward evaluations). The update is
``delta_theta_i = A_i (a_i - mu_i)`` (Alg. 1 line 9), ascended with Adam.

A sampled zero op has advantage 0 by construction; App. B replaces it with the worst moving average
(eq. 9) of the advantages of the other ops on that edge. Moving averages take ``decay``, the weight
of the old value: the paper's gamma = 0.05 (App. C) is ``decay = 0.95``.

``advantage_baseline`` additionally subtracts a per-edge moving average of the advantage (the
authors' "A2" variant); the baseline is built from past steps only, so the estimate stays unbiased.

P lanes: every lane samples its own architecture and computes its advantages; the eq. 9 average of
op j on edge i moves towards the mean advantage of the lanes that sampled j there; every lane uses
the same per-edge baseline; the directions ``A_i (a_i - mu_i)`` are averaged over the lanes whose
reward and gradient are finite.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.spaces.base import Space
from jaxnas.strategies import categorical as K
from jaxnas.strategies import policy as P
from jaxnas.strategies.base import Strategy, register


# ---- the estimators (pure functions, also used directly by tests) -----------------------------------
def taylor_advantages(reward_fn, weights: jax.Array):
    """Eq. 7: ``A_i = sum_k dr/dw[i, k] w[i, k]`` at one-hot ``weights``.

    Returns ``(advantages float[D], reward, aux, grad float[D, K])``."""
    (reward, aux), grad = jax.value_and_grad(reward_fn, has_aux=True)(weights)
    return jnp.sum(grad * weights, axis=-1), reward, aux, grad


def exact_advantages(reward_fn, weights: jax.Array):
    """Eq. 6: ``A_i = r(a) - r((s_i, 0))``, the reward drop when edge ``i`` outputs zero.

    Costs D extra reward evaluations, run sequentially with ``lax.map`` (never vmapped, so sparse
    supernets stay sparse). Returns ``(advantages float[D], reward, aux)``."""
    reward, aux = reward_fn(weights)

    def zeroed(i):
        return reward_fn(weights.at[i].set(0.0))[0]

    r0 = jax.lax.map(zeroed, jnp.arange(weights.shape[0]))
    return reward - r0, reward, aux


def zero_op_indices(space: Space, zero_op: Optional[str], name: str = "advantage") -> np.ndarray:
    """Index of the choice named ``zero_op`` in every decision, -1 where it has none.

    A name that no decision of the space has is an error (it would silently turn App. B off), except
    the default ``"none"`` on spaces without a zero op (e.g. MLP widths)."""
    if zero_op is None:
        return np.full(space.num_decisions, -1, np.int32)
    names = sorted({c for ch in space.choices for c in ch})
    if zero_op not in names and zero_op != "none":
        raise ValueError(f"strategy {name!r}: zero_op={zero_op!r} is not a choice of this space; use one "
                         f"of its ops ({', '.join(repr(n) for n in names[:20])}"
                         f"{', ...' if len(names) > 20 else ''}) or None (App. B off)")
    return np.array([ch.index(zero_op) if zero_op in ch else -1 for ch in space.choices], np.int32)


def per_decision_estimate(logits, arch, coeff, mask) -> jax.Array:
    """Alg. 1 line 9: ``delta_theta_i = A_i (a_i - mu_i)`` with one coefficient per decision."""
    return coeff[:, None] * K.score(logits, arch, mask)


def zero_op_rule(adv, arch, ema, zero_idx, mask, decay: float, ok=True, axis_name=None):
    """App. B. Updates the per-op moving average of advantages (eq. 9: only the sampled entries
    move, each towards the mean advantage of the ok lanes that sampled it) and gives a sampled zero
    op the worst (lowest) average among the other valid ops of its edge. Returns ``(adv, ema)``."""
    K_ = ema.shape[-1]
    onehot = jax.nn.one_hot(arch, K_, dtype=ema.dtype) * jnp.asarray(ok, ema.dtype)
    cnt, tot = K.lane_sum((onehot, adv[:, None] * onehot), axis_name)
    mean = tot / jnp.maximum(cnt, 1.0)
    ema = jnp.where(cnt > 0, K.ema(ema, mean, decay), ema)         # eq. 9, gamma = 1 - decay
    zero_idx = jnp.asarray(zero_idx)
    others = jnp.asarray(mask) & (jnp.arange(K_)[None, :] != zero_idx[:, None])
    worst = jnp.min(jnp.where(others, ema, jnp.inf), axis=-1)
    worst = jnp.where(jnp.any(others, axis=-1), worst, 0.0)
    return jnp.where(arch == zero_idx, worst, adv), ema


# ---- the strategy -----------------------------------------------------------------------------------
def _make(space: Space, *, baseline: bool, name: str, axis_name: Optional[str], total_steps,
          decay: float, zero_op: Optional[str], estimator: str, final: str, **opt) -> Strategy:
    decay = K.check_decay(name, decay)
    if estimator not in ("taylor", "exact"):
        raise ValueError(f"estimator={estimator!r}: use 'taylor' (eq. 7, one backward pass) or "
                         "'exact' (eq. 6, one extra forward pass per decision)")
    opt = K.make_optimizer(name, total_steps=total_steps, **opt)
    mask = space.mask
    zero_idx = zero_op_indices(space, zero_op, name)
    D, K_ = space.shape

    def extra_init():
        return {"ema": jnp.zeros((D, K_), jnp.float32),      # App. B, initialised as 0
                "baseline": jnp.zeros((D,), jnp.float32),
                "baseline_set": jnp.zeros((), bool)}

    def step(state, key, reward_fn, ctx):
        arch = space.sample(key, state.logits)              # Alg. 1 line 7
        weights = K.vary(space.one_hot(arch), axis_name)    # this lane's gradient, not a sum
        if estimator == "taylor":                           # Alg. 1 line 8
            adv, reward, _, grad = taylor_advantages(reward_fn, weights)
            ok = K.finite(reward) & K.finite(grad)
            evaluations = 1.0
        else:
            adv, reward, _ = exact_advantages(reward_fn, weights)
            ok = K.finite(reward) & K.finite(adv)
            evaluations = D + 1.0
        adv = jnp.where(jnp.isfinite(adv), adv, 0.0).astype(jnp.float32)
        ex = state.extra
        adv, ema = zero_op_rule(adv, arch, ex["ema"], zero_idx, mask, decay, ok, axis_name)
        adv_mean, n_ok = K.masked_mean(adv, ok, axis_name)
        if baseline:  # past-only baseline; the first step initialises it (as the authors' EMA)
            b = jnp.where(ex["baseline_set"], ex["baseline"], adv_mean)
            coeff = adv - b
            new_b = K.ema(b, adv_mean, decay)
        else:
            coeff, new_b = adv, ex["baseline"]
        delta = per_decision_estimate(state.logits, arch, coeff, mask)    # Alg. 1 line 9
        new, _ = P.update(state, delta, ok, opt, mask, axis_name)        # Alg. 1 line 10
        seen = n_ok > 0
        new = new.replace(step=state.step + 1,
                          extra={"ema": ema,
                                 "baseline": jnp.where(seen, new_b, ex["baseline"]),
                                 "baseline_set": ex["baseline_set"] | seen})
        new = P.track_best(new, arch, reward, ok, axis_name)
        return new, K.step_metrics(reward, ~ok, K.softmax(new.logits, mask), evaluations,
                                   advantage_abs_mean=jnp.mean(jnp.abs(adv)))

    return P.build_policy_strategy(name, space, step, opt, final, extra_init,
                                   needs="gradient" if estimator == "taylor" else "reward")


@register("advantage")
def make_advantage(space: Space, *, axis_name: Optional[str] = None,
                   total_steps: Optional[int] = None, decay: float = 0.95,
                   zero_op: Optional[str] = "none", estimator: str = "taylor",
                   final: str = "argmax", optimizer: str = "adam", lr: float = 1e-3,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                   clip: Optional[float] = None, lr_schedule: str = "constant") -> Strategy:
    """AdvantageNAS. decay: weight of the old value in the App. B moving average (paper gamma =
    1 - decay = 0.05, App. C); zero_op: the choice name treated as the zero op (None disables
    App. B); estimator: "taylor" (eq. 7) or "exact" (eq. 6, needs only rewards); final: "argmax" or
    "process_best"; optimizer/lr/b1/b2/eps/weight_decay/clip/lr_schedule on theta (App. D: lr 3e-4
    with lr_schedule="cosine", b1 0.5, weight_decay 3e-3, clip 1.0)."""
    kw = dict(locals())
    kw.pop("space")
    return _make(space, baseline=False, name="advantage", **kw)


@register("advantage_baseline")
def make_advantage_baseline(space: Space, *, axis_name: Optional[str] = None,
                            total_steps: Optional[int] = None, decay: float = 0.95,
                            zero_op: Optional[str] = "none", estimator: str = "taylor",
                            final: str = "argmax", optimizer: str = "adam", lr: float = 1e-3,
                            b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                            weight_decay: float = 0.0, clip: Optional[float] = None,
                            lr_schedule: str = "constant") -> Strategy:
    """AdvantageNAS with a per-edge moving-average baseline (same ``decay``) subtracted from A_i."""
    kw = dict(locals())
    kw.pop("space")
    return _make(space, baseline=True, name="advantage_baseline", **kw)

"""The categorical core every strategy is built on.

The architecture distribution of every method is a product of independent categoricals, one per
decision (AdvantageNAS eq. 2, TabNAS sec. 3.2, the softmax relaxation of DARTS eq. 1-2): a score
matrix ``float[D, K]`` (policy logits, DARTS alpha) whose masked entries (ragged spaces) have
probability exactly 0. This module holds what the methods share, so that each method file keeps
only its own estimator:

- the distribution: :func:`log_softmax`, :func:`softmax`, :func:`log_prob`, :func:`score`,
  :func:`entropy`, :func:`masked_argmax`;
- the optimizer on the scores (:func:`make_optimizer`, the options :data:`OPTIMIZER_KEYS`)
  and the update that is skipped when a step is bad (:func:`ascend`, :func:`keep_if`);
- lane reductions for a step with P samples (:func:`vary`, :func:`lane_sum`, :func:`lane_mean`,
  :func:`masked_mean`, :func:`lane_gather`, :func:`best_over_lanes`), process-best tracking
  (:func:`track_best`), the final architecture (:func:`derive`) and the step metrics
  (:func:`step_metrics`).

Lanes. A search step runs P samples over a population axis ``axis_name``: every lane (a device of
``jax.shard_map`` or a lane of ``jax.vmap(..., axis_name=...)``) calls ``step`` with its own key and
reward function, reduces its estimate over the lanes with collectives and applies the same update,
so the returned state is identical on every lane. ``axis_name=None`` is one lane (no collectives).
Under ``shard_map(check_vma=True)`` a state leaf that was not reduced is a type error.

``jax.grad`` inside ``shard_map`` w.r.t. a replicated (invariant) value returns the gradient SUMMED
over devices (the transpose of the implicit broadcast is a psum); under ``vmap`` it returns the
lane's own gradient. :func:`vary` marks such a value per-lane first, so both give the lane's own
gradient and :func:`masked_mean` takes the mean: differentiate ``vary(alpha)``, never ``alpha``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jaxnas.core import optim
from jaxnas.spaces.base import NEG_INF, Space

# The optimizer on the scores, one name per knob for every strategy (values: each method's default).
OPTIMIZER_KEYS = ("optimizer", "lr", "b1", "b2", "eps", "weight_decay", "clip", "lr_schedule")
FINAL_RULES = ("argmax", "process_best")


# ---- the distribution ----------------------------------------------------------------------------
def log_softmax(scores: jax.Array, mask) -> jax.Array:
    """Per-decision log-probabilities ``[..., D, K]``; masked choices get a large negative (finite)
    value, so gradients stay NaN-free."""
    return jax.nn.log_softmax(jnp.where(jnp.asarray(mask), scores, NEG_INF), axis=-1)


def softmax(scores: jax.Array, mask) -> jax.Array:
    """``mu(theta)`` (AdvantageNAS eq. 2): softmax over valid choices, exactly 0 on masked ones."""
    return jnp.where(jnp.asarray(mask), jnp.exp(log_softmax(scores, mask)), 0.0)


def log_prob(scores: jax.Array, archs: jax.Array, mask) -> jax.Array:
    """``log p(a) = sum_d log p_d(a_d)`` for architectures ``int[..., D]``."""
    logp = log_softmax(scores, mask)
    archs = jnp.asarray(archs)
    return jnp.sum(logp[jnp.arange(logp.shape[0]), archs], -1)


def score(scores: jax.Array, arch: jax.Array, mask) -> jax.Array:
    """``grad_theta log p_theta(a) = a - mu(theta)`` (AdvantageNAS sec. 4.2), ``float[D, K]``."""
    return jax.nn.one_hot(arch, scores.shape[-1], dtype=scores.dtype) - softmax(scores, mask)


def entropy(probs: jax.Array) -> jax.Array:
    """Entropy per decision ``float[D]`` of a probability matrix (``0 log 0 = 0``)."""
    pos = probs > 0
    return -jnp.sum(jnp.where(pos, probs * jnp.log(jnp.where(pos, probs, 1.0)), 0.0), -1)


def masked_argmax(scores: jax.Array, mask) -> jax.Array:
    """Per-decision argmax over the choices ``mask`` allows, ``int32[D]``."""
    return jnp.argmax(jnp.where(jnp.asarray(mask), scores, -jnp.inf), axis=-1).astype(jnp.int32)


def finite(x) -> jax.Array:
    """True when every entry of ``x`` is finite (a NaN/inf reward or gradient makes a step bad)."""
    return jnp.all(jnp.isfinite(x))


# ---- the final architecture ----------------------------------------------------------------------
def derive(space: Space, scores: jax.Array, exclude: Sequence[str] = ()) -> jax.Array:
    """The space's derivation rule (``Space.derive``: the masked argmax over the valid choices not
    named in ``exclude``; on DARTS cells the genotype, two strongest non-zero inputs per node)."""
    return jnp.asarray(space.derive(scores, exclude=tuple(exclude)), jnp.int32)


def check_final(name: str, final: str, allowed: Sequence[str] = FINAL_RULES) -> str:
    if final not in allowed:
        raise ValueError(f"strategy {name!r}: final={final!r}; choose one of {tuple(allowed)}")
    return final


# ---- the optimizer on the scores -----------------------------------------------------------------
def make_optimizer(name: str, *, optimizer: str = "adam", lr: float = 1e-3, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                   clip: Optional[float] = None, lr_schedule: str = "constant",
                   total_steps: Optional[int] = None):
    """``jaxnas.core.optim.make_optimizer`` on the logits / alpha of strategy ``name``: clip (global
    norm) -> coupled L2 weight decay (PyTorch Adam, as DARTS and AdvantageNAS App. D) -> Adam or
    SGD -> lr, constant or cosine-decayed to 0 over ``total_steps`` (the engine's strategy steps)."""
    return optim.make_optimizer(optimizer, lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                                weight_decay_mode="coupled", clip=clip, schedule=lr_schedule,
                                total_steps=total_steps, what=f"strategy {name!r}",
                                schedule_key="lr_schedule")


def keep_if(ok, new, old):
    """``new`` where ``ok`` else ``old``, leaf by leaf: a bad step never writes NaN into a state."""
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def ascend(optimizer, params, opt_state, ascent, ok, *, mask, fill, where=None, post=None,
           project=None):
    """One optimizer step along the ascent direction ``ascent`` (the optimizer minimises, so it
    gets ``-ascent``); entries outside ``mask & where`` keep their value, ``post(old, new)`` runs
    after the step (ProxylessNAS's rescaling), ``project`` (NASP's box) after that, masked entries
    are pinned at ``fill``. Skipped (params and optimizer state kept) unless ``ok``.

    Returns ``(params, opt_state)``."""
    updates, new_opt = optimizer.update(-ascent, opt_state, params)
    sel = jnp.asarray(mask) if where is None else jnp.asarray(mask) & where
    new = params + jnp.where(sel, updates, 0.0)
    if post is not None:
        new = post(params, new)
    if project is not None:
        new = project(new)
    new = jnp.where(jnp.asarray(mask), new, fill)
    return keep_if(ok, (new, new_opt), (params, opt_state))


def ema(old, new, decay: float):
    """Exponential moving average ``old + (1 - decay)(new - old)``; ``decay`` is the weight of the
    old value (AdvantageNAS eq. 9 writes ``gamma = 1 - decay``)."""
    return old + (1.0 - decay) * (new - old)


def check_decay(name: str, decay: float) -> float:
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"strategy {name!r}: decay (the weight of the old value in a moving "
                         f"average) must lie in [0, 1), got {decay}")
    return float(decay)


# ---- lanes ---------------------------------------------------------------------------------------
def _manual(axis_name) -> bool:
    """True when ``axis_name`` is a manual axis of an enclosing ``shard_map`` (not a vmap axis)."""
    return axis_name is not None and axis_name in getattr(jax.sharding.get_abstract_mesh(),
                                                          "manual_axes", ())


def _varying_axes(x) -> frozenset:
    """The manual axes ``x`` varies over (its type under ``shard_map(check_vma=True)``)."""
    t = jax.typeof(x)
    mat = getattr(t, "mat", None)                     # jax >= 0.9: ManualAxisType
    if mat is not None:
        return frozenset(getattr(mat, "varying", ()))
    return frozenset(getattr(t, "vma", ()))


def vary(tree, axis_name):
    """Marks replicated values as per-lane (``shard_map``'s varying type): before differentiating
    w.r.t. them (so ``jax.grad`` gives this lane's gradient, not one summed over devices) and on the
    outputs of ``lax.cond`` branches, which must agree in type. A no-op under ``vmap``, without an
    axis and under ``shard_map(check_vma=False)``."""
    if not _manual(axis_name):
        return tree

    def cast(x):
        if axis_name in _varying_axes(x):
            return x                                  # already varying
        try:
            return jax.lax.pcast(x, axis_name, to="varying")
        except ValueError:
            return x
    return jax.tree.map(cast, tree)


def lane_count(axis_name):
    """P, the number of lanes (1.0 without an axis)."""
    return 1.0 if axis_name is None else jax.lax.psum(1.0, axis_name)


def lane_sum(tree, axis_name):
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def lane_mean(tree, axis_name):
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def masked_mean(tree, ok, axis_name):
    """Mean over the lanes where ``ok`` (e.g. a finite reward; TabNAS App. B.2.2: a feasible
    sample): ``psum(where(ok, x, 0)) / max(psum(ok), 1)``, 0 where no lane is ok.

    Returns ``(mean_tree, n_ok)``; ``n_ok > 0`` says whether to update."""
    ok = jnp.asarray(ok, bool)
    n = lane_sum(ok.astype(jnp.float32), axis_name)
    zeroed = jax.tree.map(lambda x: jnp.where(ok, x, jnp.zeros_like(x)), tree)  # not x*ok: NaN*0
    return jax.tree.map(lambda x: x / jnp.maximum(n, 1.0), lane_sum(zeroed, axis_name)), n


def lane_gather(tree, axis_name):
    """Every lane's value, stacked on a new leading axis of size P (size 1 without an axis),
    identical on all lanes."""
    if axis_name is None:
        return jax.tree.map(lambda x: jnp.asarray(x)[None], tree)

    def gather(x):
        if _manual(axis_name):                        # shard_map: the result is invariant
            return jax.lax.all_gather(vary(x, axis_name), axis_name, to="invarying")
        return jax.lax.all_gather(x, axis_name)       # vmap
    return jax.tree.map(gather, tree)


def lane_index(axis_name):
    return jnp.zeros((), jnp.int32) if axis_name is None else jax.lax.axis_index(axis_name)


def best_over_lanes(reward, arch, ok, axis_name):
    """The best ``(reward, arch)`` over the lanes whose step was ok (NaN never wins, ties go to the
    lowest lane); the reward is -inf when no lane qualifies. Identical on all lanes."""
    r = jnp.where(jnp.asarray(ok, bool) & jnp.isfinite(reward), reward, -jnp.inf).astype(jnp.float32)
    rs, archs = lane_gather((r, jnp.asarray(arch, jnp.int32)), axis_name)
    i = jnp.argmax(rs)                                  # first maximum: the lowest lane
    return rs[i], archs[i]


def track_best(best_arch, best_reward, arch, reward, ok, axis_name):
    """"Process best" (AdvantageNAS sec. 5.2): the architecture with the highest reward evaluated so
    far over all lanes, and that reward. Returns ``(best_arch, best_reward)``."""
    r, a = best_over_lanes(reward, arch, ok, axis_name)
    better = jnp.isfinite(r) & (r > best_reward)
    return jnp.where(better, a, best_arch), jnp.where(better, r, best_reward)


# ---- metrics -------------------------------------------------------------------------------------
def step_metrics(reward, nonfinite, probs, evaluations, **more) -> dict:
    """The metrics every ``step`` returns (per lane): ``reward`` (float32), ``nonfinite`` (bool),
    ``entropy`` (mean per-decision entropy of the policy after the step), ``evaluations`` (float32,
    reward_fn evaluations this lane made), plus the method's own (float32)."""
    out = {"reward": jnp.asarray(reward, jnp.float32),
           "nonfinite": jnp.asarray(nonfinite, bool),
           "entropy": jnp.mean(entropy(probs)),
           "evaluations": jnp.asarray(evaluations, jnp.float32)}
    out.update({k: jnp.asarray(v, jnp.float32) for k, v in more.items()})
    return out

"""Gradient-based baselines of AdvantageNAS (Sato et al. 2021, sec. 3, Table 1, App. C/D):
DARTS (first and second order), GDAS, SNAS, NASP and ProxylessNAS, one file, one state type.

Every method keeps a real matrix ``alpha float[D, K]`` (0 at masked choices; masked choices are
re-masked with NEG_INF before every softmax, so their probability is exactly 0) and updates it with
one optax optimizer: by default Adam(3e-4, b=(0.5, 0.999)), L2 weight decay 1e-3 and gradient
clipping 1.0 (DARTS's architect settings / AdvantageNAS App. D). ``reward_fn(weights) -> (reward, aux)`` is
maximised; the optimizer minimises ``-reward``.

| name      | mode   | weights given to the supernet                                        |
|-----------|--------|-----------------------------------------------------------------------|
| darts     | dense  | softmax(alpha)                                                        |
| darts2    | dense  | softmax(alpha); gradient through one unrolled weight step (ctx)       |
| gdas      | sparse | Gumbel hard one-hot + (soft - stop_grad(soft)), tau 10 -> 0.1 linear  |
| snas      | dense  | Gumbel-softmax soft sample, tau 1 -> 0 cosine (floored, see below)    |
| nasp      | dense  | one-hot(argmax alpha); alpha kept in the box [0, 1]                   |
| proxyless | sparse | binary gates on two paths sampled per decision                        |
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas.spaces.base import NEG_INF, Space
from jaxnas.strategies.base import (SupernetContext, Strategy, check_finite_reward,
                                    masked_log_softmax, register)

# Choices that mean "no edge"; DARTS (sec. 2.4) excludes them when it derives the final cell.
ZERO_OPS = ("none", "zero")


@flax.struct.dataclass
class GradientState:
    alpha: jax.Array          # float[D, K] architecture parameters (0 at masked choices)
    opt_state: Any            # optax state of the architecture optimizer
    step: jax.Array           # int32, architecture steps taken (drives temperatures and schedules)
    best_arch: jax.Array      # int32[D]: best one-hot architecture evaluated ("process best")
    best_reward: jax.Array    # float32, -inf until a one-hot architecture is evaluated


# ---- shared pieces -------------------------------------------------------------------------------
def _check_common(name, lr, b1, b2, weight_decay, clip, optimizer, lr_schedule, total_steps):
    if not lr > 0:
        raise ValueError(f"strategy {name!r}: lr must be > 0, got {lr}")
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"strategy {name!r}: Adam betas must lie in [0, 1), got b1={b1}, b2={b2}")
    if weight_decay < 0:
        raise ValueError(f"strategy {name!r}: weight_decay must be >= 0, got {weight_decay}")
    if clip is not None and not clip > 0:
        raise ValueError(f"strategy {name!r}: clip (global-norm gradient clipping) must be > 0 "
                         f"or None (off), got {clip}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"strategy {name!r}: optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"strategy {name!r}: lr_schedule must be 'constant' or 'cosine', "
                         f"got {lr_schedule!r}")
    if lr_schedule == "cosine" and (total_steps is None or total_steps < 1):
        raise ValueError(f"strategy {name!r}: lr_schedule='cosine' needs total_steps >= 1 "
                         f"(the number of architecture steps of the search), got {total_steps}")


def _arch_optimizer(lr, b1, b2, weight_decay, clip, optimizer, lr_schedule, total_steps):
    """PyTorch-style Adam with coupled L2 decay, as DARTS / AdvantageNAS App. D use it."""
    sched = optax.cosine_decay_schedule(lr, total_steps) if lr_schedule == "cosine" else lr
    parts = []
    if clip is not None:
        parts.append(optax.clip_by_global_norm(clip))
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    if optimizer == "adam":
        parts.append(optax.scale_by_adam(b1=b1, b2=b2))
    parts.append(optax.scale_by_learning_rate(sched))
    return optax.chain(*parts)


def _masked_softmax(alpha, mask):
    return jnp.exp(masked_log_softmax(alpha, mask))


def _entropy(p):
    """Entropy per decision of a probability matrix (0 log 0 = 0)."""
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1)


def _argmax_valid(scores, mask):
    return jnp.argmax(jnp.where(mask, scores, -jnp.inf), -1).astype(jnp.int32)


def _derive_mask(space: Space, exclude) -> jnp.ndarray:
    """Valid choices minus those named in ``exclude``; a decision left empty keeps all its choices."""
    m = space.mask.copy()
    for d, ch in enumerate(space.choices):
        keep = np.array([c not in exclude for c in ch] + [False] * (space.max_choices - len(ch)))
        if (m[d] & keep).any():
            m[d] &= keep
    return jnp.asarray(m)


def gumbel_softmax(key, alpha, mask, tau, hard: bool):
    """Gumbel-softmax sample over valid choices (Maddison et al. 2017), as GDAS (hard) and SNAS (soft) use it.

    Returns ``(weights, index)``. ``hard=True`` gives the straight-through estimator
    ``one_hot + soft - stop_gradient(soft)``: the forward value is exactly one-hot (x - x == 0 in IEEE
    arithmetic), the gradient is that of ``soft``. Masked choices are 0 in both.
    """
    mask = jnp.asarray(mask)
    g = jax.random.gumbel(key, alpha.shape, dtype=jnp.float32)
    z = jnp.where(mask, (masked_log_softmax(alpha, mask) + g) / tau, NEG_INF)
    soft = jax.nn.softmax(z, axis=-1)
    idx = jnp.argmax(z, -1).astype(jnp.int32)
    if not hard:
        return soft, idx
    one_hot = jax.nn.one_hot(idx, alpha.shape[-1], dtype=soft.dtype)
    return one_hot + (soft - jax.lax.stop_gradient(soft)), idx


def gdas_temperature(step, total_steps, tau_max=10.0, tau_min=0.1):
    """GDAS: tau decays linearly from tau_max (step 0) to tau_min (step total_steps - 1)."""
    frac = jnp.minimum(step, total_steps - 1) / max(total_steps - 1, 1)
    return tau_max - (tau_max - tau_min) * frac


def snas_temperature(step, total_steps, tau0=1.0, tau_floor=1e-3):
    """SNAS as in AdvantageNAS App. C: tau0 * (1 + cos(pi t / (T - 1))) / 2 reaches 0 at the last
    step; it is floored at ``tau_floor`` because 1/tau appears in the relaxed sample and its gradient."""
    frac = jnp.minimum(step, total_steps - 1) / max(total_steps - 1, 1)
    return jnp.maximum(tau0 * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)), tau_floor)


def _reward_grad(reward_fn, weights_of_alpha, alpha):
    """(reward, aux, d reward / d alpha) with the weights a differentiable function of alpha."""
    def f(a):
        r, aux = reward_fn(weights_of_alpha(a))
        return r, aux
    (r, aux), g = jax.value_and_grad(f, has_aux=True)(alpha)
    return r, aux, g


def _build(name, space, mode, *, lr, b1, b2, weight_decay, clip, optimizer, lr_schedule,
           total_steps, init_std, init_value, derive_exclude,
           sample_fn, arch_grad_fn, probs_fn=None, project_fn=None, extra_metrics=None,
           update_mask_fn=None, post_update_fn=None, track_fn=None, final="argmax") -> Strategy:
    """Assembles a Strategy from the method-specific pieces.

    arch_grad_fn(state, key, reward_fn, ctx) -> (reward, aux, grad_of_reward, info): the ascent
    direction; info is passed to update_mask_fn / post_update_fn (ProxylessNAS's sampled pair) and
    track_fn(info) -> the one-hot architecture that was evaluated (for final='process_best').
    """
    if final not in ("argmax", "process_best") or (final == "process_best" and track_fn is None):
        raise ValueError(f"strategy {name!r}: final={final!r}; choose 'argmax'"
                         + (" or 'process_best'" if track_fn is not None else
                            " (this method never evaluates a one-hot architecture)"))
    _check_common(name, lr, b1, b2, weight_decay, clip, optimizer, lr_schedule, total_steps)
    if init_std < 0:
        raise ValueError(f"strategy {name!r}: init_std must be >= 0, got {init_std}")
    mask = jnp.asarray(space.mask)
    dmask = _derive_mask(space, tuple(derive_exclude))
    opt = _arch_optimizer(lr, b1, b2, weight_decay, clip, optimizer, lr_schedule, total_steps)
    probs_fn = probs_fn or (lambda alpha: _masked_softmax(alpha, mask))
    project_fn = project_fn or (lambda alpha: alpha)

    def init(key):
        alpha = init_value + init_std * jax.random.normal(key, space.shape, jnp.float32)
        alpha = jnp.where(mask, project_fn(alpha), 0.0)
        return GradientState(alpha=alpha, opt_state=opt.init(alpha), step=jnp.zeros((), jnp.int32),
                             best_arch=jnp.zeros((space.num_decisions,), jnp.int32),
                             best_reward=jnp.full((), -jnp.inf, jnp.float32))

    def sample(state, key):
        return sample_fn(state, key)

    def step(state, key, reward_fn, ctx=None):
        reward, aux, g, info = arch_grad_fn(state, key, reward_fn, ctx)
        bad = check_finite_reward(reward, name) | ~jnp.all(jnp.isfinite(jnp.where(mask, g, 0.0)))
        g = jnp.where(mask, g, 0.0)
        updates, opt_state = opt.update(-g, state.opt_state, state.alpha)   # minimise -reward
        keep = mask if update_mask_fn is None else mask & update_mask_fn(info)
        alpha = state.alpha + jnp.where(keep, updates, 0.0)
        if post_update_fn is not None:
            alpha = post_update_fn(state.alpha, alpha, info)
        alpha = jnp.where(mask, project_fn(alpha), 0.0)
        # a non-finite reward or gradient never reaches alpha: the step is skipped and flagged
        ok = ~bad
        alpha = jnp.where(ok, alpha, state.alpha)
        opt_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), opt_state, state.opt_state)
        new = state.replace(alpha=alpha, opt_state=opt_state, step=state.step + 1)
        if track_fn is not None:  # "process best" over the one-hot architectures evaluated
            arch = track_fn(info)
            better = ok & (reward > state.best_reward)
            new = new.replace(best_arch=jnp.where(better, arch, state.best_arch),
                              best_reward=jnp.where(better, jnp.asarray(reward, jnp.float32),
                                                    state.best_reward))
        ent = _entropy(probs_fn(alpha))
        metrics = {"reward": jnp.asarray(reward, jnp.float32),
                   "entropy": jnp.mean(ent),             # AdvantageNAS App. H, Fig. 4
                   "entropy_per_decision": ent,
                   "nonfinite": bad}
        if extra_metrics is not None:
            metrics.update(extra_metrics(state))
        return new, metrics

    def derive(state):
        amax = _argmax_valid(state.alpha, dmask)
        if final == "argmax":
            return amax
        return jnp.where(jnp.isfinite(state.best_reward), state.best_arch, amax)

    def probs(state):
        return probs_fn(state.alpha)

    return Strategy(name=name, space=space, mode=mode, init=init, sample=sample, step=step,
                    derive=derive, probs=probs)


def _need_total_steps(name, total_steps):
    if total_steps is None or int(total_steps) < 1:
        raise ValueError(f"strategy {name!r} anneals its Gumbel temperature over the search: set "
                         f"total_steps (the number of architecture steps), got {total_steps}")
    return int(total_steps)


# ---- DARTS ---------------------------------------------------------------------------------------
def unrolled_loss_grad(alpha, mask, ctx: SupernetContext, xi, method="exact"):
    """Gradient w.r.t. alpha of L_val(w - xi grad_w L_train(w, a), a), a = softmax(alpha)
    (DARTS eq. 6-7), with L_val = -val_reward. Returns (val_reward at w', aux, loss gradient).

    method="exact": JAX differentiates through the one-step unroll (a Hessian-vector product).
    method="finite_difference": DARTS eq. 8, the central difference with eps = 0.01 / |grad_w'|.
    """
    def weights(a):
        return _masked_softmax(a, mask)

    def unroll(a):
        w_a = weights(a)
        gw = jax.grad(ctx.train_loss)(ctx.params, w_a)
        return jax.tree.map(lambda p, q: p - xi * q, ctx.params, gw)

    if method == "exact":
        def f(a):
            r, aux = ctx.val_reward(unroll(a), weights(a))
            return -r, (r, aux)
        (_, (r, aux)), g = jax.value_and_grad(f, has_aux=True)(alpha)
        return r, aux, g
    # DARTS eq. 7 first term and eq. 8 for the second-order term.
    w1 = unroll(jax.lax.stop_gradient(alpha))

    def f_val(a, p):
        r, aux = ctx.val_reward(p, weights(a))
        return -r, (r, aux)
    (_, (r, aux)), (g_a, g_w) = jax.value_and_grad(f_val, argnums=(0, 1), has_aux=True)(alpha, w1)
    norm = jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g_w)))
    eps = 0.01 / jnp.maximum(norm, 1e-12)
    w_plus = jax.tree.map(lambda p, q: p + eps * q, ctx.params, g_w)
    w_minus = jax.tree.map(lambda p, q: p - eps * q, ctx.params, g_w)
    d_train = jax.grad(lambda a, p: ctx.train_loss(p, weights(a)))
    hvp = (d_train(alpha, w_plus) - d_train(alpha, w_minus)) / (2 * eps)
    return r, aux, g_a - xi * hvp


def _darts(space, name, second_order, *, lr, b1, b2, weight_decay, clip, optimizer,
           lr_schedule, total_steps, init_std, derive_exclude, xi=None, unroll="exact"):
    mask = jnp.asarray(space.mask)
    if unroll not in ("exact", "finite_difference"):
        raise ValueError(f"strategy {name!r}: unroll must be 'exact' or 'finite_difference', "
                         f"got {unroll!r}")

    def sample_fn(state, key):
        w = _masked_softmax(state.alpha, mask)           # AdvantageNAS eq. 1-2: softmax relaxation
        return _argmax_valid(state.alpha, mask), w

    def arch_grad_fn(state, key, reward_fn, ctx):
        if not second_order:                              # DARTS first order: xi = 0
            r, aux, g = _reward_grad(reward_fn, lambda a: _masked_softmax(a, mask), state.alpha)
            return r, aux, g, None
        if ctx is None:
            raise ValueError("strategy 'darts2' differentiates through a weight step: call "
                             "step(state, key, reward_fn, ctx=SupernetContext(params, train_loss, "
                             "val_reward, weight_lr)), or use 'darts' (first order)")
        step_size = ctx.weight_lr if xi is None else xi
        r, aux, g_loss = unrolled_loss_grad(state.alpha, mask, ctx, step_size, unroll)
        return r, aux, -g_loss, None

    return _build(name, space, "dense", lr=lr, b1=b1, b2=b2, weight_decay=weight_decay,
                  clip=clip, optimizer=optimizer, lr_schedule=lr_schedule,
                  total_steps=total_steps, init_std=init_std, init_value=0.0,
                  derive_exclude=derive_exclude, sample_fn=sample_fn, arch_grad_fn=arch_grad_fn)


@register("darts")
def make_darts(space: Space, *, lr=3e-4, b1=0.5, b2=0.999, weight_decay=1e-3, clip=1.0,
               optimizer="adam", lr_schedule="constant", total_steps=None, init_std=0.0,
               derive_exclude=ZERO_OPS) -> Strategy:
    """DARTS, first order (Liu et al. 2019, eq. 6 with xi = 0): ascend reward(softmax(alpha))."""
    return _darts(space, "darts", False, lr=lr, b1=b1, b2=b2, weight_decay=weight_decay,
                  clip=clip, optimizer=optimizer, lr_schedule=lr_schedule,
                  total_steps=total_steps, init_std=init_std, derive_exclude=derive_exclude)


@register("darts2")
def make_darts2(space: Space, *, lr=3e-4, b1=0.5, b2=0.999, weight_decay=1e-3, clip=1.0,
                optimizer="adam", lr_schedule="constant", total_steps=None, init_std=0.0,
                derive_exclude=ZERO_OPS, xi=None, unroll="exact") -> Strategy:
    """DARTS, second order (eq. 6-8): xi defaults to ctx.weight_lr; unroll='exact' (autodiff) or
    'finite_difference' (eq. 8). The unroll is a plain SGD step (the DARTS code adds momentum and
    weight decay to it). The reported reward is the validation reward at the unrolled weights."""
    return _darts(space, "darts2", True, lr=lr, b1=b1, b2=b2, weight_decay=weight_decay,
                  clip=clip, optimizer=optimizer, lr_schedule=lr_schedule,
                  total_steps=total_steps, init_std=init_std, derive_exclude=derive_exclude,
                  xi=xi, unroll=unroll)


# ---- GDAS and SNAS -------------------------------------------------------------------------------
@register("gdas")
def make_gdas(space: Space, *, total_steps=None, tau_max=10.0, tau_min=0.1, lr=3e-4, b1=0.5,
              b2=0.999, weight_decay=1e-3, clip=1.0, optimizer="adam",
              lr_schedule="constant", init_std=0.0, derive_exclude=(),
              final="argmax") -> Strategy:
    """GDAS (Dong & Yang 2019): one op per decision from a hard Gumbel-softmax sample; alpha learns
    through the straight-through gradient of the soft sample (AutoDL-Projects search_model_gdas.py, cited in AdvantageNAS App. C).
    In the sparse supernet only the chosen op gets a weight gradient (GDAS's code also passes
    d loss / d out to the unchosen weights through a constant term; we do not).
    final: 'argmax' of alpha or 'process_best', the best sampled architecture (AdvantageNAS 5.2)."""
    T = _need_total_steps("gdas", total_steps)
    if not tau_max >= tau_min > 0:
        raise ValueError(f"strategy 'gdas': need tau_max >= tau_min > 0, got {tau_max}, {tau_min}")
    mask = jnp.asarray(space.mask)
    tau = lambda s: gdas_temperature(s, T, tau_max, tau_min)

    def sample_fn(state, key):
        w, idx = gumbel_softmax(key, state.alpha, mask, tau(state.step), hard=True)
        return idx, w

    def arch_grad_fn(state, key, reward_fn, ctx):
        t = tau(state.step)
        r, aux, g = _reward_grad(
            reward_fn, lambda a: gumbel_softmax(key, a, mask, t, hard=True)[0], state.alpha)
        return r, aux, g, gumbel_softmax(key, state.alpha, mask, t, hard=True)[1]

    return _build("gdas", space, "sparse", lr=lr, b1=b1, b2=b2, weight_decay=weight_decay,
                  clip=clip, optimizer=optimizer, lr_schedule=lr_schedule,
                  total_steps=T, init_std=init_std, init_value=0.0, derive_exclude=derive_exclude,
                  sample_fn=sample_fn, arch_grad_fn=arch_grad_fn, track_fn=lambda idx: idx,
                  final=final, extra_metrics=lambda s: {"temperature": tau(s.step)})


@register("snas")
def make_snas(space: Space, *, total_steps=None, tau0=1.0, tau_floor=1e-3, lr=3e-4, b1=0.5,
              b2=0.999, weight_decay=1e-3, clip=1.0, optimizer="adam",
              lr_schedule="constant", init_std=0.0, derive_exclude=ZERO_OPS) -> Strategy:
    """SNAS (Xie et al. 2019): dense supernet weighted by a relaxed (soft) Gumbel-softmax sample
    (concrete distribution; AdvantageNAS sec. 3), alpha learns by the reparameterised gradient; tau cosine-annealed tau0 -> 0
    (AdvantageNAS App. C), floored at tau_floor > 0 so 1/tau stays finite."""
    T = _need_total_steps("snas", total_steps)
    if not tau0 >= tau_floor > 0:
        raise ValueError(f"strategy 'snas': need tau0 >= tau_floor > 0, got {tau0}, {tau_floor}")
    mask = jnp.asarray(space.mask)
    tau = lambda s: snas_temperature(s, T, tau0, tau_floor)

    def sample_fn(state, key):
        w, idx = gumbel_softmax(key, state.alpha, mask, tau(state.step), hard=False)
        return idx, w

    def arch_grad_fn(state, key, reward_fn, ctx):
        t = tau(state.step)
        r, aux, g = _reward_grad(
            reward_fn, lambda a: gumbel_softmax(key, a, mask, t, hard=False)[0], state.alpha)
        return r, aux, g, None

    return _build("snas", space, "dense", lr=lr, b1=b1, b2=b2, weight_decay=weight_decay,
                  clip=clip, optimizer=optimizer, lr_schedule=lr_schedule,
                  total_steps=T, init_std=init_std, init_value=0.0, derive_exclude=derive_exclude,
                  sample_fn=sample_fn, arch_grad_fn=arch_grad_fn,
                  extra_metrics=lambda s: {"temperature": tau(s.step)})


# ---- NASP ----------------------------------------------------------------------------------------
def nasp_project(alpha, box="clip"):
    """prox_{C2}: NASP keeps alpha in the box [0, 1] (Yao et al. 2020; its code clips with
    Hardtanh(0, 1)). box='rescale' is the AdvantageNAS code's variant: shift each row so its min is
    >= 0, then divide it by its max when that exceeds 1."""
    if box == "clip":
        return jnp.clip(alpha, 0.0, 1.0)
    lo = jnp.minimum(jnp.min(alpha, -1, keepdims=True), 0.0)
    x = alpha - lo
    return x / jnp.maximum(jnp.max(x, -1, keepdims=True), 1.0)


@register("nasp")
def make_nasp(space: Space, *, lr=3e-4, b1=0.5, b2=0.999, weight_decay=1e-3, clip=1.0,
              optimizer="adam", lr_schedule="constant", total_steps=None, init_value=1.0,
              init_std=0.0, box="clip", derive_exclude=ZERO_OPS) -> Strategy:
    """NASP (Yao et al. 2020, Alg. 2): the forward uses the discrete a_bar = prox_{C1}(alpha), the
    one-hot of argmax alpha, in both the weight and the architecture step; the gradient w.r.t.
    a_bar updates the continuous alpha, which is then projected onto C2 = [0, 1]. The architecture
    step needs every op's output for d reward / d a_bar, hence dense mode (AdvantageNAS Table 1,
    note 3: sparse weight step, dense architecture step). alpha starts at init_value (AdvantageNAS
    App. D initialises by ones); probs are alpha normalised per decision."""
    if box not in ("clip", "rescale"):
        raise ValueError(f"strategy 'nasp': box must be 'clip' or 'rescale', got {box!r}")
    if not 0.0 <= init_value <= 1.0:
        raise ValueError(f"strategy 'nasp': init_value must lie in the box [0, 1], got {init_value}")
    mask = jnp.asarray(space.mask)
    K = space.max_choices

    def discrete(alpha):
        idx = _argmax_valid(alpha, mask)
        return idx, jax.nn.one_hot(idx, K, dtype=jnp.float32)

    def sample_fn(state, key):
        return discrete(state.alpha)

    def arch_grad_fn(state, key, reward_fn, ctx):
        _, a_bar = discrete(state.alpha)
        (r, aux), g = jax.value_and_grad(reward_fn, has_aux=True)(a_bar)   # grad w.r.t. a_bar
        return r, aux, g, None

    def probs_fn(alpha):
        a = jnp.where(mask, jnp.maximum(alpha, 0.0), 0.0)
        s = jnp.sum(a, -1, keepdims=True)
        uniform = mask / jnp.sum(mask, -1, keepdims=True)
        return jnp.where(s > 0, a / jnp.where(s > 0, s, 1.0), uniform)

    def project(alpha):
        return jnp.where(mask, nasp_project(jnp.where(mask, alpha, 0.0), box), 0.0)

    return _build("nasp", space, "dense", lr=lr, b1=b1, b2=b2, weight_decay=weight_decay,
                  clip=clip, optimizer=optimizer, lr_schedule=lr_schedule,
                  total_steps=total_steps, init_std=init_std, init_value=init_value,
                  derive_exclude=derive_exclude, sample_fn=sample_fn, arch_grad_fn=arch_grad_fn,
                  probs_fn=probs_fn, project_fn=project)


# ---- ProxylessNAS --------------------------------------------------------------------------------
def sample_two_paths(key, alpha, mask):
    """Two distinct choices per decision drawn without replacement from softmax(alpha) (Gumbel
    top-2), then one of them made active with the renormalised pair probabilities (ProxylessNAS
    mix_op.py MODE='two', cited in AdvantageNAS App. C). Returns (pair int32[D, 2] with the active path first,
    pair probabilities float[D, 2]). A decision with one valid choice pairs it with a masked one,
    whose probability is 0 so its update is 0."""
    k1, k2 = jax.random.split(key)
    logp = masked_log_softmax(alpha, mask)
    z = jnp.where(mask, logp + jax.random.gumbel(k1, alpha.shape), NEG_INF)
    _, pair = jax.lax.top_k(z, 2)
    pair_logits = jnp.take_along_axis(jnp.where(mask, alpha, NEG_INF), pair, -1)
    active_first = jax.random.categorical(k2, pair_logits, axis=-1) == 0
    pair = jnp.where(active_first[:, None], pair, pair[:, ::-1]).astype(jnp.int32)
    p = jax.nn.softmax(jnp.take_along_axis(jnp.where(mask, alpha, NEG_INF), pair, -1), -1)
    return pair, p


def proxyless_pair_grad(gate_grads, pair, p, K):
    """ProxylessNAS eq. 4 restricted to the sampled pair: d r/d alpha_i =
    sum_j d r/d g_j p_j (delta_ij - p_i), i, j in the pair (mix_op.py set_arch_param_grad).
    gate_grads: float[D, 2] (active, inactive). Returns float[D, K], 0 off the pair."""
    eye = jnp.eye(2)
    g_pair = jnp.einsum("dj,dj,dij->di", gate_grads, p, eye[None] - p[:, :, None])
    return jnp.sum(jax.nn.one_hot(pair, K) * g_pair[..., None], 1)


@register("proxyless")
def make_proxyless(space: Space, *, mode="sparse", lr=3e-4, b1=0.5, b2=0.999, weight_decay=1e-3,
                   clip=1.0, optimizer="adam", lr_schedule="constant", total_steps=None,
                   init_std=0.0, derive_exclude=()) -> Strategy:
    """ProxylessNAS (Cai et al. 2019), two-path mode. Weight step: one path per decision sampled
    from softmax(alpha), gate 1 (binary gates). Architecture step: sample two paths per
    decision, make one active with the pair's renormalised probabilities, take the gate gradients
    d reward / d g of both and apply eq. 4 over the pair; only the pair's alpha are updated, then
    they are shifted by log(sum exp new / sum exp old) so that the unsampled paths' probabilities
    do not change (mix_op.py rescale_updated_arch_param).

    mode='sparse': two sparse evaluations, gates one-hot on the active paths, then on the inactive
    ones (each gate gradient is taken with its own path running; the original runs both paths in
    one forward). mode='dense': one dense evaluation with gate 1 on the active path and 0 elsewhere,
    which gives both gate gradients exactly as the original code, at the dense memory cost.
    Note: the optimizer's update is applied to the pair only (Adam momentum and weight decay
    would otherwise move unsampled alpha; the original uses beta1 = 0 and no decay)."""
    if mode not in ("sparse", "dense"):
        raise ValueError(f"strategy 'proxyless': mode must be 'sparse' or 'dense', got {mode!r}")
    mask = jnp.asarray(space.mask)
    K = space.max_choices

    def sample_fn(state, key):
        idx = space.sample(key, jnp.where(mask, state.alpha, NEG_INF))
        return idx, jax.nn.one_hot(idx, K, dtype=jnp.float32)

    def arch_grad_fn(state, key, reward_fn, ctx):
        pair, p = sample_two_paths(key, state.alpha, mask)
        gates_a = jax.nn.one_hot(pair[:, 0], K, dtype=jnp.float32)
        (r, aux), ga = jax.value_and_grad(reward_fn, has_aux=True)(gates_a)
        if mode == "dense":
            gate_grads = jnp.take_along_axis(ga, pair, -1)
        else:
            gates_b = jax.nn.one_hot(pair[:, 1], K, dtype=jnp.float32)
            gb = jax.grad(lambda w: reward_fn(w)[0])(gates_b)
            gate_grads = jnp.stack([jnp.take_along_axis(ga, pair[:, :1], -1)[:, 0],
                                    jnp.take_along_axis(gb, pair[:, 1:], -1)[:, 0]], -1)
        g = proxyless_pair_grad(gate_grads, pair, p, K)
        return r, aux, g, pair

    def in_pair(pair):
        return jnp.sum(jax.nn.one_hot(pair, K), 1) > 0

    def rescale(old, new, pair):
        sel = in_pair(pair) & mask
        lse = lambda a: jax.nn.logsumexp(jnp.where(sel, a, -jnp.inf), -1, keepdims=True)
        return jnp.where(sel, new - (lse(new) - lse(old)), new)

    return _build("proxyless", space, mode, lr=lr, b1=b1, b2=b2, weight_decay=weight_decay,
                  clip=clip, optimizer=optimizer, lr_schedule=lr_schedule,
                  total_steps=total_steps, init_std=init_std, init_value=0.0,
                  derive_exclude=derive_exclude, sample_fn=sample_fn, arch_grad_fn=arch_grad_fn,
                  update_mask_fn=in_pair, post_update_fn=rescale)

"""Gradient-based baselines of AdvantageNAS (Sato et al. 2021, sec. 3, Table 1, App. C/D):
DARTS (first and second order), GDAS, SNAS, NASP and ProxylessNAS, one file, one state type.

Every method keeps a real matrix ``alpha float[D, K]`` (0 at masked choices; masked choices are
re-masked with NEG_INF before every softmax, so their probability is exactly 0) and updates it with
one optax optimizer: by default AdvantageNAS App. D's settings for every gradient baseline: Adam(3e-4,
b=(0.5, 0.999)), coupled L2 weight decay 3e-3, lr cosine-annealed to 0 over ``total_steps`` (so a
factory called by hand needs ``total_steps`` or ``lr_schedule="constant"``) and gradient clipping 1.0;
ProxylessNAS keeps its original b1 = 0 and no decay (proxylessnas search/imagenet_arch_search.py).
``reward_fn(weights) -> (reward, aux)`` is maximised; the optimizer minimises ``-reward``.

| name      | mode   | weights given to the supernet                                        |
|-----------|--------|-----------------------------------------------------------------------|
| darts     | dense  | softmax(alpha)                                                        |
| darts2    | dense  | softmax(alpha); gradient through one unrolled weight step (ctx)       |
| gdas      | sparse | Gumbel hard one-hot + (soft - stop_grad(soft)), tau 10 -> 0.1 linear  |
| snas      | dense  | Gumbel-softmax soft sample, tau 1 -> 0 cosine (floored, see below)    |
| nasp      | dense  | one-hot(argmax alpha, ties at random); alpha kept in the box [0, 1]   |
| proxyless | dense  | binary gates on two paths sampled per decision ('sparse': opt-in)     |

A method is a :class:`Method`: how it samples for the weight step and how one lane computes its
reward gradient w.r.t. alpha (:class:`LaneGrad`); the rest (lane mean, optimizer step, skip of
non-finite steps, process best, metrics, derive) is :func:`_build`.

P lanes: every lane differentiates its own reward w.r.t. ``vary(alpha)`` (its own gradient, see
``categorical.py``); the gradients are averaged over the lanes whose reward and gradient are finite,
so the update is the gradient of the mean reward. ProxylessNAS updates and rescales the union of the
lanes' sampled pairs; DARTS 2nd order unrolls one weight step with the lane-mean training gradient.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import flax.struct
import jax
import jax.numpy as jnp

from jaxnas.spaces.base import NEG_INF, Space
from jaxnas.strategies import categorical as K
from jaxnas.strategies.base import Strategy, SupernetContext, register

# Choices that mean "no edge"; DARTS (sec. 2.4) excludes them when it derives the final cell.
ZERO_OPS = ("none", "zero")


@flax.struct.dataclass
class GradientState:
    alpha: jax.Array          # float[D, K] architecture parameters (0 at masked choices)
    opt_state: Any            # optax state of the architecture optimizer
    step: jax.Array           # int32, architecture steps taken (drives temperatures and schedules)
    best_arch: jax.Array      # int32[D]: best one-hot architecture evaluated ("process best")
    best_reward: jax.Array    # float32, -inf until a one-hot architecture is evaluated


class LaneGrad(NamedTuple):
    """What one lane's architecture step computed."""
    reward: jax.Array                     # the reward it reports
    grad: jax.Array                       # d reward / d alpha, float[D, K]
    arch: Optional[jax.Array] = None      # the one-hot architecture evaluated (process best)
    touched: Optional[jax.Array] = None   # bool[D, K]: the entries it updates (all when None)
    evaluations: float = 1.0              # reward_fn evaluations


@dataclasses.dataclass(frozen=True)
class Method:
    """The method-specific pieces. ``sample(state, key) -> (arch, weights)``;
    ``grad(state, alpha, key, reward_fn, ctx) -> LaneGrad`` with ``alpha`` already per-lane;
    ``probs(alpha)`` (default: masked softmax); ``project(alpha)`` after each step (NASP's box);
    ``rescale(old, new, sel)`` after each step on the updated entries ``sel`` (ProxylessNAS);
    ``metrics(step) -> dict``; ``tracks``: it evaluates one-hot architectures, so
    ``final='process_best'`` is available."""
    name: str
    mode: str
    sample: Callable
    grad: Callable
    needs: str = "gradient"
    probs: Optional[Callable] = None
    project: Optional[Callable] = None
    rescale: Optional[Callable] = None
    init_value: float = 0.0
    metrics: Optional[Callable] = None
    tracks: bool = False
    init_fn: Optional[Callable] = None        # (key, shape) -> alpha before projection (NASP)
    derive_scores: Optional[Callable] = None  # alpha -> the scores derive ranks (NASP's tie-break)


# ---- shared pieces -------------------------------------------------------------------------------
def gumbel_softmax(key, alpha, mask, tau, hard: bool):
    """Gumbel-softmax sample over valid choices (Maddison et al. 2017), as GDAS (hard) and SNAS (soft) use it.

    Returns ``(weights, index)``. ``hard=True`` gives the straight-through estimator
    ``one_hot + soft - stop_gradient(soft)``: the forward value is exactly one-hot (x - x == 0 in IEEE
    arithmetic), the gradient is that of ``soft``. Masked choices are 0 in both.
    """
    mask = jnp.asarray(mask)
    g = jax.random.gumbel(key, alpha.shape, dtype=jnp.float32)
    z = jnp.where(mask, (K.log_softmax(alpha, mask) + g) / tau, NEG_INF)
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
    """(reward, d reward / d alpha) with the weights a differentiable function of alpha."""
    (r, _), g = jax.value_and_grad(lambda a: reward_fn(weights_of_alpha(a)), has_aux=True)(alpha)
    return r, g


def _build(method: Method, space: Space, *, axis_name, total_steps, init_std, derive_exclude,
           final="argmax", **opt) -> Strategy:
    """Assembles a Strategy from a :class:`Method` and the optimizer options ``opt``."""
    name = method.name
    if final not in K.FINAL_RULES or (final == "process_best" and not method.tracks):
        raise ValueError(f"strategy {name!r}: final={final!r}; choose 'argmax'"
                         + (" or 'process_best'" if method.tracks else
                            " (this method never evaluates a one-hot architecture)"))
    if init_std < 0:
        raise ValueError(f"strategy {name!r}: init_std must be >= 0, got {init_std}")
    mask = jnp.asarray(space.mask)
    optimizer = K.make_optimizer(name, total_steps=total_steps, **opt)
    probs_fn = method.probs or (lambda alpha: K.softmax(alpha, mask))
    project = method.project or (lambda alpha: alpha)

    def init(key):
        if method.init_fn is not None:
            alpha = method.init_fn(key, space.shape)
        else:
            alpha = method.init_value + init_std * jax.random.normal(key, space.shape, jnp.float32)
        alpha = jnp.where(mask, project(alpha), 0.0)
        return GradientState(alpha=alpha, opt_state=optimizer.init(alpha),
                             step=jnp.zeros((), jnp.int32),
                             best_arch=jnp.zeros((space.num_decisions,), jnp.int32),
                             best_reward=jnp.full((), -jnp.inf, jnp.float32))

    def step(state, key, reward_fn, ctx=None):
        lane = method.grad(state, K.vary(state.alpha, axis_name), key, reward_fn, ctx)
        g = jnp.where(mask, lane.grad, 0.0)
        # a non-finite reward or gradient never reaches alpha: that lane is left out, and the step
        # is skipped (and flagged) when no lane is left
        ok = K.finite(lane.reward) & K.finite(g)
        g, n_ok = K.masked_mean(g, ok, axis_name)          # the gradient of the mean reward
        sel = post = None
        if lane.touched is not None:                       # union of the lanes' updated entries
            sel = K.lane_sum((lane.touched & ok).astype(jnp.float32), axis_name) > 0
            if method.rescale is not None:
                post = lambda old, new: method.rescale(old, new, mask & sel)
        alpha, opt_state = K.ascend(optimizer, state.alpha, state.opt_state, g, n_ok > 0,
                                    mask=mask, fill=0.0, where=sel, post=post, project=project)
        new = state.replace(alpha=alpha, opt_state=opt_state, step=state.step + 1)
        if lane.arch is not None:  # "process best" over the one-hot architectures evaluated
            best_arch, best_reward = K.track_best(state.best_arch, state.best_reward, lane.arch,
                                                  lane.reward, ok, axis_name)
            new = new.replace(best_arch=best_arch, best_reward=best_reward)
        p = probs_fn(alpha)
        more = {} if method.metrics is None else method.metrics(state.step)
        metrics = K.step_metrics(lane.reward, ~ok, p, lane.evaluations, **more)
        metrics["entropy_per_decision"] = K.entropy(p)     # AdvantageNAS App. H, Fig. 4
        return new, metrics

    def derive(state):
        scores = state.alpha if method.derive_scores is None else method.derive_scores(state.alpha)
        amax = K.derive(space, scores, derive_exclude)
        if final == "argmax":
            return amax
        return jnp.where(jnp.isfinite(state.best_reward), state.best_arch, amax)

    return Strategy(name=name, space=space, mode=method.mode, init=init, sample=method.sample,
                    step=step, derive=derive, probs=lambda s: probs_fn(s.alpha), needs=method.needs)


def _need_total_steps(name, total_steps):
    if total_steps is None or int(total_steps) < 1:
        raise ValueError(f"strategy {name!r} anneals its Gumbel temperature over the search and "
                         f"needs total_steps (the number of strategy steps, passed by the engine), "
                         f"got {total_steps}")
    return int(total_steps)


# ---- DARTS ---------------------------------------------------------------------------------------
def unrolled_loss_grad(alpha, mask, ctx: SupernetContext, xi, method="exact", axis_name=None):
    """Gradient w.r.t. alpha of L_val(w - xi grad_w L_train(w, a), a), a = softmax(alpha)
    (DARTS eq. 6-7), with L_val = -val_reward. Returns (val_reward at w', aux, loss gradient).

    method="exact": JAX differentiates through the one-step unroll (a Hessian-vector product).
    method="finite_difference": DARTS eq. 8, the central difference with eps = 0.01 / |grad_w'|.

    With ``axis_name`` the unrolled step uses the lane-mean training gradient (the weight step of
    the engine), and eq. 8's direction the lane-mean validation gradient; alpha must be per-lane
    (``categorical.vary``), and the lane mean of the result is the gradient of the mean reward.
    """
    def weights(a):
        return K.softmax(a, mask)

    def grad_w(f, p):  # this lane's gradient w.r.t. the (replicated) weights, averaged over lanes
        return K.lane_mean(jax.grad(f)(K.vary(p, axis_name)), axis_name)

    def unroll(a):
        w_a = weights(a)
        gw = grad_w(lambda p: ctx.train_loss(p, w_a), ctx.params)    # eq. 6: w - xi grad L_train
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
    (_, (r, aux)), (g_a, g_w) = jax.value_and_grad(f_val, argnums=(0, 1), has_aux=True)(
        alpha, K.vary(w1, axis_name))
    g_w = K.lane_mean(g_w, axis_name)
    norm = jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g_w)))
    eps = 0.01 / jnp.maximum(norm, 1e-12)
    w_plus = jax.tree.map(lambda p, q: p + eps * q, ctx.params, g_w)
    w_minus = jax.tree.map(lambda p, q: p - eps * q, ctx.params, g_w)
    d_train = jax.grad(lambda a, p: ctx.train_loss(p, weights(a)))
    hvp = (d_train(alpha, w_plus) - d_train(alpha, w_minus)) / (2 * eps)   # eq. 8
    return r, aux, g_a - xi * hvp


def _darts_method(space, name, second_order, xi=None, unroll="exact", axis_name=None) -> Method:
    mask = jnp.asarray(space.mask)
    if unroll not in ("exact", "finite_difference"):
        raise ValueError(f"strategy {name!r}: unroll must be 'exact' or 'finite_difference', "
                         f"got {unroll!r}")

    def sample(state, key):
        w = K.softmax(state.alpha, mask)                  # AdvantageNAS eq. 1-2: softmax relaxation
        return K.masked_argmax(state.alpha, mask), w

    def grad(state, alpha, key, reward_fn, ctx):
        if not second_order:                              # DARTS first order: xi = 0
            r, g = _reward_grad(reward_fn, lambda a: K.softmax(a, mask), alpha)
            return LaneGrad(r, g)
        if ctx is None:
            raise ValueError("strategy 'darts2' differentiates through a weight step: call "
                             "step(state, key, reward_fn, ctx=SupernetContext(params, train_loss, "
                             "val_reward, weight_lr)), or use 'darts' (first order)")
        step_size = ctx.weight_lr if xi is None else xi
        r, _, g_loss = unrolled_loss_grad(alpha, mask, ctx, step_size, unroll, axis_name)
        return LaneGrad(r, -g_loss)

    return Method(name, "dense", sample, grad, needs="unroll" if second_order else "gradient")


@register("darts")
def make_darts(space: Space, *, axis_name=None, total_steps=None, optimizer="adam", lr=3e-4,
               b1=0.5, b2=0.999, eps=1e-8,
               weight_decay=3e-3, clip=1.0, lr_schedule="cosine",  # AdvantageNAS App. D
               init_std=0.0, derive_exclude=ZERO_OPS, final="argmax") -> Strategy:
    """DARTS, first order (Liu et al. 2019, eq. 6 with xi = 0): ascend reward(softmax(alpha))."""
    return _build(_darts_method(space, "darts", False), space, axis_name=axis_name,
                  total_steps=total_steps, init_std=init_std, derive_exclude=derive_exclude,
                  final=final,
                  optimizer=optimizer, lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                  clip=clip, lr_schedule=lr_schedule)


@register("darts2")
def make_darts2(space: Space, *, axis_name=None, total_steps=None, optimizer="adam", lr=3e-4,
                b1=0.5, b2=0.999, eps=1e-8,
                weight_decay=3e-3, clip=1.0, lr_schedule="cosine",  # AdvantageNAS App. D
                init_std=0.0, derive_exclude=ZERO_OPS, xi=None, unroll="exact",
                final="argmax") -> Strategy:
    """DARTS, second order (eq. 6-8): xi defaults to ctx.weight_lr (the weight optimizer's current
    lr); unroll='exact' (autodiff) or 'finite_difference' (eq. 8). The unroll is a plain SGD step
    (the DARTS code adds momentum and weight decay to it). The reported reward is the validation
    reward at the unrolled weights."""
    return _build(_darts_method(space, "darts2", True, xi, unroll, axis_name), space,
                  axis_name=axis_name, total_steps=total_steps, init_std=init_std,
                  derive_exclude=derive_exclude, final=final, optimizer=optimizer, lr=lr, b1=b1,
                  b2=b2, eps=eps, weight_decay=weight_decay, clip=clip, lr_schedule=lr_schedule)


# ---- GDAS and SNAS -------------------------------------------------------------------------------
def _gumbel_method(space, name, mode, hard: bool, tau: Callable, tracks: bool) -> Method:
    mask = jnp.asarray(space.mask)

    def sample(state, key):
        w, idx = gumbel_softmax(key, state.alpha, mask, tau(state.step), hard=hard)
        return idx, w

    def grad(state, alpha, key, reward_fn, ctx):
        t = tau(state.step)
        r, g = _reward_grad(reward_fn, lambda a: gumbel_softmax(key, a, mask, t, hard)[0], alpha)
        idx = gumbel_softmax(key, alpha, mask, t, hard)[1]
        return LaneGrad(r, g, arch=idx if tracks else None)

    return Method(name, mode, sample, grad, metrics=lambda s: {"temperature": tau(s)},
                  tracks=tracks)


@register("gdas")
def make_gdas(space: Space, *, axis_name=None, total_steps=None, tau_max=10.0, tau_min=0.1,
              optimizer="adam", lr=3e-4, b1=0.5, b2=0.999, eps=1e-8,
              weight_decay=3e-3, clip=1.0, lr_schedule="cosine",  # AdvantageNAS App. D
              init_std=0.0, derive_exclude=(), final="argmax") -> Strategy:
    """GDAS (Dong & Yang 2019): one op per decision from a hard Gumbel-softmax sample; alpha learns
    through the straight-through gradient of the soft sample (AutoDL-Projects search_model_gdas.py, cited in AdvantageNAS App. C).
    In the sparse supernet only the chosen op gets a weight gradient (GDAS's code also passes
    d loss / d out to the unchosen weights through a constant term; we do not).
    final: 'argmax' of alpha or 'process_best', the best sampled architecture (AdvantageNAS 5.2)."""
    T = _need_total_steps("gdas", total_steps)
    if not tau_max >= tau_min > 0:
        raise ValueError(f"strategy 'gdas': need tau_max >= tau_min > 0, got {tau_max}, {tau_min}")
    tau = lambda s: gdas_temperature(s, T, tau_max, tau_min)
    return _build(_gumbel_method(space, "gdas", "sparse", True, tau, tracks=True), space,
                  axis_name=axis_name, total_steps=T, init_std=init_std,
                  derive_exclude=derive_exclude, final=final, optimizer=optimizer, lr=lr, b1=b1,
                  b2=b2, eps=eps, weight_decay=weight_decay, clip=clip, lr_schedule=lr_schedule)


@register("snas")
def make_snas(space: Space, *, axis_name=None, total_steps=None, tau0=1.0, tau_floor=1e-3,
              optimizer="adam", lr=3e-4, b1=0.5, b2=0.999, eps=1e-8,
              weight_decay=3e-3, clip=1.0, lr_schedule="cosine",  # AdvantageNAS App. D
              init_std=0.0, derive_exclude=ZERO_OPS, final="argmax") -> Strategy:
    """SNAS (Xie et al. 2019): dense supernet weighted by a relaxed (soft) Gumbel-softmax sample
    (concrete distribution; AdvantageNAS sec. 3), alpha learns by the reparameterised gradient; tau cosine-annealed tau0 -> 0
    (AdvantageNAS App. C), floored at tau_floor > 0 so 1/tau stays finite.
    As tau -> 0 the relaxed sample saturates and d reward / d alpha vanishes, while Adam turns the
    coupled decay wd * alpha into full-size steps back toward uniform: on the AdvantageNAS toy
    weight decay 1e-3 left SNAS at a* in 6 of 10 trials, 0 in 8-9 of 10 (advantage_toy.json)."""
    T = _need_total_steps("snas", total_steps)
    if not tau0 >= tau_floor > 0:
        raise ValueError(f"strategy 'snas': need tau0 >= tau_floor > 0, got {tau0}, {tau_floor}")
    tau = lambda s: snas_temperature(s, T, tau0, tau_floor)
    return _build(_gumbel_method(space, "snas", "dense", False, tau, tracks=False), space,
                  axis_name=axis_name, total_steps=T, init_std=init_std,
                  derive_exclude=derive_exclude, final=final, optimizer=optimizer, lr=lr, b1=b1, b2=b2, eps=eps,
                  weight_decay=weight_decay, clip=clip, lr_schedule=lr_schedule)


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


def argmax_random_ties(key, scores, mask):
    """Per-decision argmax over valid choices, exact ties broken uniformly at random (NASP's box
    clips every growing alpha to 1, where a lowest-index rule would always pick the first op)."""
    mask = jnp.asarray(mask)
    s = jnp.where(mask, scores, -jnp.inf)
    top = mask & (s >= jnp.max(s, -1, keepdims=True))
    u = jax.random.uniform(key, scores.shape)
    return jnp.argmax(jnp.where(top, u, -1.0), -1).astype(jnp.int32)


@register("nasp")
def make_nasp(space: Space, *, axis_name=None, total_steps=None, optimizer="adam", lr=3e-4, b1=0.5,
              b2=0.999, eps=1e-8,
              weight_decay=3e-3, clip=1.0, lr_schedule="cosine",  # AdvantageNAS App. D
              init_value=0.0, init_std=1e-3,  # NASP code (DARTS's 1e-3 * randn), folded into the box
              box="clip", derive_exclude=ZERO_OPS, final="argmax") -> Strategy:
    """NASP (Yao et al. 2020, Alg. 2): the forward uses the discrete a_bar = prox_{C1}(alpha), the
    one-hot of argmax alpha, in both the weight and the architecture step; the gradient w.r.t.
    a_bar updates the continuous alpha, which is then projected onto C2 = [0, 1]. The architecture
    step needs every op's output for d reward / d a_bar, hence dense mode (AdvantageNAS Table 1,
    note 3: sparse weight step, dense architecture step).

    Start: alpha = init_value + init_std * |N(0, 1)|, inside the box with distinct values (the NASP
    code draws 1e-3 * N(0, 1) as DARTS does and clips after the first step; |.| keeps the start
    inside the box). init_value=1, init_std=0 is the AdvantageNAS code's start (ones, on the bound).
    Exact ties of argmax alpha are broken at random (a fresh draw per step; ``derive`` uses a fixed
    key), since the clip makes every op whose gradient stays positive end at 1. probs are alpha
    normalised per decision.

    Note: with Adam the step is scale-free per entry, so on a reward whose gradient w.r.t. a_bar is
    constant (a linear reward) every op with a positive gradient rises at the same rate and they
    all end tied at 1; SGD (the paper's Alg. 2 step) separates them by the gradient's size."""
    if box not in ("clip", "rescale"):
        raise ValueError(f"strategy 'nasp': box must be 'clip' or 'rescale', got {box!r}")
    if not 0.0 <= init_value <= 1.0:
        raise ValueError(f"strategy 'nasp': init_value must lie in the box [0, 1], got {init_value}")
    if init_std < 0:
        raise ValueError(f"strategy 'nasp': init_std must be >= 0, got {init_std}")
    mask = jnp.asarray(space.mask)
    K_ = space.max_choices

    def discrete(alpha, key):
        idx = argmax_random_ties(key, alpha, mask)
        return idx, jax.nn.one_hot(idx, K_, dtype=jnp.float32)

    def sample(state, key):
        return discrete(state.alpha, key)

    def grad(state, alpha, key, reward_fn, ctx):
        _, a_bar = discrete(alpha, key)                     # per-lane (alpha is)
        (r, _), g = jax.value_and_grad(reward_fn, has_aux=True)(a_bar)   # grad w.r.t. a_bar
        return LaneGrad(r, g)

    def probs(alpha):
        a = jnp.where(mask, jnp.maximum(alpha, 0.0), 0.0)
        s = jnp.sum(a, -1, keepdims=True)
        uniform = mask / jnp.sum(mask, -1, keepdims=True)
        return jnp.where(s > 0, a / jnp.where(s > 0, s, 1.0), uniform)

    def project(alpha):
        return jnp.where(mask, nasp_project(jnp.where(mask, alpha, 0.0), box), 0.0)

    def init_fn(key, shape):
        return init_value + init_std * jnp.abs(jax.random.normal(key, shape, jnp.float32))

    def derive_scores(alpha):
        # ties (ops clipped to 1) broken at random with a fixed key, so derive is deterministic;
        # the jitter (< 1e-6) reorders only alphas closer than that
        return alpha + 1e-6 * jax.random.uniform(jax.random.key(0), alpha.shape)

    method = Method("nasp", "dense", sample, grad, probs=probs, project=project,
                    init_value=init_value, init_fn=init_fn, derive_scores=derive_scores)
    return _build(method, space, axis_name=axis_name, total_steps=total_steps, init_std=init_std,
                  derive_exclude=derive_exclude, final=final, optimizer=optimizer, lr=lr, b1=b1, b2=b2, eps=eps,
                  weight_decay=weight_decay, clip=clip, lr_schedule=lr_schedule)


# ---- ProxylessNAS --------------------------------------------------------------------------------
def sample_two_paths(key, alpha, mask):
    """Two distinct choices per decision drawn without replacement from softmax(alpha) (Gumbel
    top-2), then one of them made active with the renormalised pair probabilities (ProxylessNAS
    mix_op.py MODE='two', cited in AdvantageNAS App. C). Returns (pair int32[D, 2] with the active path first,
    pair probabilities float[D, 2]). A decision with one valid choice pairs it with a masked one,
    whose probability is 0 so its update is 0."""
    k1, k2 = jax.random.split(key)
    logp = K.log_softmax(alpha, mask)
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
def make_proxyless(space: Space, *, axis_name=None, total_steps=None,
                   mode="dense",  # the original binary-gate gradient (mix_op.py MODE='two')
                   optimizer="adam", lr=3e-4,
                   b1=0.0,  # ProxylessNAS arch_adam_beta1 (imagenet_arch_search.py)
                   b2=0.999, eps=1e-8,
                   weight_decay=0.0,  # ProxylessNAS arch_weight_decay
                   clip=1.0, lr_schedule="cosine",  # AdvantageNAS App. D
                   init_std=0.0, derive_exclude=(), final="argmax") -> Strategy:
    """ProxylessNAS (Cai et al. 2019), two-path mode. Weight step: one path per decision sampled
    from softmax(alpha), gate 1 (binary gates). Architecture step: sample two paths per
    decision, make one active with the pair's renormalised probabilities, take the gate gradients
    d reward / d g of both and apply eq. 4 over the pair; only the pair's alpha are updated, then
    they are shifted by log(sum exp new / sum exp old) so that the unsampled paths' probabilities
    do not change (mix_op.py rescale_updated_arch_param). With P lanes: the union of the lanes'
    pairs is updated and rescaled.

    mode='dense' (default): the original's gate gradients. mix_op.py (MODE='two') runs both sampled
    paths in one forward with gate 1 on the active and 0 on the inactive path, so d r / d g_j =
    <O_j, d r / d out> at the network running the active paths. Here one dense evaluation with
    one-hot gates on the active paths gives exactly that (the supernet runs every op, not only the
    pair: the dense memory and compute cost, also in the weight step, whose inactive ops get
    weight 0). mode='sparse' (opt-in, the sparse supernet's memory): two sparse evaluations, gates
    one-hot on the active paths, then on the inactive ones, so each gate gradient is taken with
    its own path running on every decision at once; it differs from the original's gradient
    (issue 13's audit on an NB201 supernet: median cosine 0.51, sign agreement 60%).
    Optimizer: b1 = 0 and no weight decay as the original; lr 3e-4 cosine and clip 1 as
    AdvantageNAS App. D (the original: lr 1e-3, constant). The update is applied to the pair only
    (Adam's state would otherwise move unsampled alpha)."""
    if mode not in ("sparse", "dense"):
        raise ValueError(f"strategy 'proxyless': mode must be 'sparse' or 'dense', got {mode!r}")
    mask = jnp.asarray(space.mask)
    K_ = space.max_choices

    def sample(state, key):
        idx = space.sample(key, jnp.where(mask, state.alpha, NEG_INF))
        return idx, jax.nn.one_hot(idx, K_, dtype=jnp.float32)

    def grad(state, alpha, key, reward_fn, ctx):
        pair, p = sample_two_paths(key, alpha, mask)
        gates_a = jax.nn.one_hot(pair[:, 0], K_, dtype=jnp.float32)
        (r, _), ga = jax.value_and_grad(reward_fn, has_aux=True)(gates_a)
        if mode == "dense":
            gate_grads = jnp.take_along_axis(ga, pair, -1)
        else:
            gates_b = jax.nn.one_hot(pair[:, 1], K_, dtype=jnp.float32)
            gb = jax.grad(lambda w: reward_fn(w)[0])(gates_b)
            gate_grads = jnp.stack([jnp.take_along_axis(ga, pair[:, :1], -1)[:, 0],
                                    jnp.take_along_axis(gb, pair[:, 1:], -1)[:, 0]], -1)
        g = proxyless_pair_grad(gate_grads, pair, p, K_)
        in_pair = jnp.sum(jax.nn.one_hot(pair, K_), 1) > 0
        return LaneGrad(r, g, touched=in_pair, evaluations=2.0 if mode == "sparse" else 1.0)

    def rescale(old, new, sel):
        lse = lambda a: jax.nn.logsumexp(jnp.where(sel, a, -jnp.inf), -1, keepdims=True)
        return jnp.where(sel, new - (lse(new) - lse(old)), new)

    method = Method("proxyless", mode, sample, grad, rescale=rescale)
    return _build(method, space, axis_name=axis_name, total_steps=total_steps, init_std=init_std,
                  derive_exclude=derive_exclude, final=final, optimizer=optimizer, lr=lr, b1=b1, b2=b2, eps=eps,
                  weight_decay=weight_decay, clip=clip, lr_schedule=lr_schedule)

"""TabNAS: REINFORCE with rejection under a resource budget (Yang et al. 2022), and the
reward-shaping baselines it compares against (TuNAS Abs Reward, MnasNet soft/hard).

Registered strategies:

- ``"tabnas"``: sample y from the factorised policy; if y is infeasible skip the RL update (Alg. 2
  line 13); else ascend J(y) = sg(Q(y) - Q̄) log[P(y) / P(V)] (sec. 3.3), with P(V) exact
  (``pv="exact"``: DP over layers or enumeration) or the Monte-Carlo P̂(V) (``pv="mc"``, Alg. 2).
- ``"tunas_abs"``, ``"mnas_soft"``, ``"mnas_hard"``: plain REINFORCE (Alg. 1) on a shaped reward
  Q + beta|T/T0 - 1|, Q (T/T0)^beta, Q min{1, (T/T0)^beta}.

Q, the quality reward, is ``reward_fn(weights)[0] + q_offset``. The paper uses Q = 1 - loss (Alg. 1
line 13); an engine whose reward is -loss gets exactly that with ``q_offset=1``, the default. It
matters for the multiplicative MnasNet rewards, which assume Q > 0 (a step whose Q <= 0 raises an
error naming q_offset: the penalty would be reversed), and for the first step, where Q̄ = 0.

Common to all: Adam on the logits (App. A/B.1: b1 0.9, b2 0.999, ``eps`` 1e-3; the optimizer options
of every strategy), the bias-corrected moving average baseline of Alg. 1 line 18 (its gamma = 0.9 is
``decay``, the weight of the old value), layer warm-up (sec. 3.1): during the first
``warmup_frac * total_steps`` steps ``sample`` returns the whole supernet (largest choice everywhere)
with a probability decaying linearly 1 -> 0 and a policy sample otherwise, and ``step`` makes no RL
update. With ``axis_name`` set (P lanes: devices of ``shard_map`` or lanes of ``vmap``) every lane
samples its own y and the gradients are averaged over the lanes whose y was feasible (App. B.2.2).
``final``: "alg3" (Alg. 3, the default of ``"tabnas"``: of m = ``num_final_samples`` policy samples the
feasible one with the largest cost), "mode" (the mode of P(y | y in V), the most probable feasible
architecture: exact by a max-product DP or enumeration when P(V) is exact, else over 10,000 samples)
or "argmax" (per decision; the default of the shaped ones). ``Strategy.summary(state, arch)`` says
how the policy stands behind the final choice (runner: ``result.json["policy"]``): P(arch),
P(arch | V), P(V), the entropy per layer, the Alg. 3 top-n (n = ``num_final_archs``) with their
probabilities and costs, the mode of P(y | y in V), and warnings when the policy has not
concentrated (P(mode | V) < CONCENTRATED = 0.5) or the final choice is not the mode.

The baseline Q̄ of the shaped-reward strategies is the moving average of the shaped reward r (as
in TuNAS); for ``"tabnas"`` it averages Q over feasible samples only (rejected y have no Q).

Metrics of ``step`` (scalars, reduced over the lanes by the App. B.2.2 rule, so identical on every
lane): ``reward`` Q (mean over the lanes whose sample was evaluated; 0 when every sample was rejected
or during warm-up), ``baseline`` Q̄, ``feasible`` (fraction of samples in V), ``cost`` T(y),
``updated``, ``warmup``, ``warmup_prob``, ``entropy`` (mean over decisions, after the step),
``evaluations`` (the fraction of lanes whose sample was evaluated, neither rejected nor in warm-up:
summed over the P lanes, the number of evaluations), ``nonfinite`` (a NaN/inf reward or gradient:
that update was skipped), ``skipped_infeasible`` (cumulative); tabnas adds ``pv`` (the P̂(V) or
P(V) used) and ``skipped_zero_pv`` (cumulative, App. E.3); ``pv_exact`` when an exact P(V) exists (DP or
enumeration; ``log_exact_pv=False`` turns it off); shaped strategies add ``shaped_reward``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxnas.spaces.base import NEG_INF, Space
from jaxnas.strategies import budget as C
from jaxnas.strategies import categorical as K
from jaxnas.strategies.base import Strategy, register


@struct.dataclass
class TabNASState:
    logits: jax.Array                 # [D, K] policy logits (invalid choices at NEG_INF)
    opt_state: Any                    # Adam state on the logits
    baseline_num: jax.Array           # Alg. 1 line 18: Q̄ = num / den (bias-corrected EMA)
    baseline_den: jax.Array
    step: jax.Array                   # RL steps taken, warm-up included (drives the warm-up schedule)
    num_updates: jax.Array            # steps whose logits changed
    skipped_infeasible: jax.Array     # sampled y outside V (rejected, Alg. 2 line 13)
    skipped_zero_pv: jax.Array        # feasible y but P̂(V) = 0: no update (App. E.3)

    @property
    def baseline(self) -> jax.Array:
        return jnp.where(self.baseline_den > 0, self.baseline_num / jnp.maximum(self.baseline_den, 1e-30), 0.0)


def warmup_probability(step, warmup_steps: int):
    """Sec. 3.1 / Fig. 5(a): probability of training the whole supernet, 1 -> 0 linearly."""
    if warmup_steps <= 0:
        return jnp.zeros((), jnp.float32)
    return jnp.clip(1.0 - step.astype(jnp.float32) / warmup_steps, 0.0, 1.0)


def select_final(budget: C.Budget, logits, key, num_samples: int = 500) -> tuple[jax.Array, jax.Array]:
    """Alg. 3 with n = 1: draw ``num_samples`` architectures from the policy, keep the feasible ones,
    return the one with the largest cost (ties: the most probable) and whether one was feasible.
    If none is, returns the per-decision argmax. A deterministic policy returns its argmax."""
    space = budget.space
    archs = space.sample(key, logits, (num_samples,))
    cost = budget.cost(archs)
    feas = cost <= budget.limit
    lp = K.log_prob(logits, archs, space.mask)
    best_cost = jnp.max(jnp.where(feas, cost, -jnp.inf))
    top = jnp.logical_and(feas, cost == best_cost)
    best = archs[jnp.argmax(jnp.where(top, lp, -jnp.inf))]          # ties: the most probable
    argmax = jnp.argmax(jnp.where(jnp.asarray(space.mask), logits, -jnp.inf), -1).astype(jnp.int32)
    any_feas = jnp.any(feas)
    return jnp.where(any_feas, best, argmax), any_feas


def select_final_n(budget: C.Budget, logits, key, n: int = 3, num_samples: int = 500) -> np.ndarray:
    """Alg. 3: the n unique feasible architectures with the largest costs among ``num_samples``
    policy samples (fewer if fewer are feasible). Host-side (numpy), for reports."""
    space = budget.space
    archs = np.asarray(space.sample(key, logits, (num_samples,)))
    cost = np.asarray(budget.cost(archs))
    keep = cost <= budget.limit
    uniq, idx = np.unique(archs[keep], axis=0, return_index=True)
    lp = np.asarray(K.log_prob(logits, uniq, space.mask)) if len(uniq) else np.zeros(0)
    order = np.lexsort((-lp, -cost[keep][idx]))     # largest cost first, ties: the most probable
    return uniq[order[:n]]


CONCENTRATED = 0.5   # the policy "has concentrated" when P(mode of P(y | y in V) | V) >= this


def policy_summary(budget: C.Budget, logits, arch, *, final: str, n: int = 3,
                   num_samples: int = 500, pv_samples: int = 1 << 20) -> dict:
    """How the learned policy stands behind the final architecture ``arch`` (host-side, for
    result.json and reports): P(arch) and P(arch | y in V) = P(arch) / P(V), P(V) (exact when the
    budget has it, else Monte-Carlo with ``pv_samples``), the entropy of each decision (and its
    maximum log K_d), the Alg. 3 top-n candidates (same key and m as ``derive``) and the mode of
    P(y | y in V), each with its probabilities and cost, and ``warnings``."""
    space = budget.space
    logits = jnp.asarray(logits)
    mask = np.asarray(space.mask)
    if budget.exact is not None:
        pv, pv_method = float(budget.pv_exact(logits)), budget.exact_method
    else:
        pv = float(budget.pv_mc(jax.random.key(1), logits, pv_samples))
        pv_method = f"mc({pv_samples})"

    def describe(a):
        a = np.asarray(a, np.int32)
        p = float(np.exp(K.log_prob(logits, a, mask)))
        return {"arch": space.encode(a) if hasattr(space, "encode") else a.tolist(),
                "cost": float(budget.cost(a)), "feasible": bool(budget.cost(a) <= budget.limit),
                "prob": p, "prob_given_feasible": p / pv if pv > 0 else None}

    mode, mode_exact = budget.mode(logits)
    top = select_final_n(budget, logits, jax.random.key(0), n=n, num_samples=num_samples)
    ent = np.asarray(K.entropy(K.softmax(logits, mask)))
    chosen, m = describe(arch), describe(mode)
    out = {"final_rule": final, "budget": budget.limit, "pv": pv, "pv_method": pv_method,
           "chosen": chosen, "mode": {**m, "exact": bool(mode_exact)},
           "alg3_candidates": [describe(a) for a in top], "alg3_samples": int(num_samples),
           "entropy_per_decision": [round(float(e), 4) for e in ent],
           "max_entropy_per_decision": [round(float(np.log(k)), 4) for k in mask.sum(-1)],
           "concentration_threshold": CONCENTRATED, "warnings": []}
    pm = m["prob_given_feasible"] or 0.0
    out["concentrated"] = bool(pm >= CONCENTRATED)
    if not out["concentrated"]:
        out["warnings"].append(
            f"the policy has not concentrated: its most probable feasible architecture {m['arch']} "
            f"has P(y | y in V) = {pm:.3g} < {CONCENTRATED} (entropy per decision "
            f"{out['entropy_per_decision']} of at most {out['max_entropy_per_decision']}); "
            f"search longer or raise the RL lr, and retrain the alg3_candidates")
    if chosen["arch"] != m["arch"]:
        pc = chosen["prob_given_feasible"] or 0.0
        out["warnings"].append(
            f"final rule {final!r} chose {chosen['arch']} (cost {chosen['cost']:g}, P(y | y in V) = "
            f"{pc:.3g}), not the mode of P(y | y in V), {m['arch']} (cost {m['cost']:g}, "
            f"P = {pm:.3g}); final='mode' returns the mode")
    return out


def reinforce_objective(logits, mask, y, advantage, pv_fn=None):
    """Single-step REINFORCE objective and the P(V) it used: ``(J(y), P(V))``.

    Without ``pv_fn``: J = advantage * log P(y) (Alg. 1 line 16). With ``pv_fn`` (logits -> P(V) or
    P̂(V), differentiable): J = advantage * log[P(y) / P(V)] (sec. 3.3, Alg. 2 line 11), whose
    gradient is advantage * ∇log P(y | y in V). Where P(V) = 0, log P(V) is replaced by 0 so nothing
    is NaN; the caller must skip that update (App. E.3)."""
    lp_y = K.log_prob(logits, y, mask)
    if pv_fn is None:
        return advantage * lp_y, jnp.ones((), jnp.float32)
    p_v = pv_fn(logits)
    safe = jnp.where(p_v > 0, p_v, 1.0)
    return advantage * (lp_y - jnp.log(safe)), jnp.asarray(p_v, jnp.float32)


def _build(space: Space, name: str, *, budget, cost_fn, cost_terms, rejection: bool,
           shape_reward: Optional[Callable], pv: str, num_mc_samples: int, mc_chunk: int,
           decay: float, total_steps: Optional[int], warmup_frac: float, q_offset: float,
           num_final_samples: int, axis_name: Optional[str], log_exact_pv: Optional[bool],
           final: str, num_final_archs: int = 3, multiplicative: bool = False, **opt) -> Strategy:
    if isinstance(budget, C.Budget):
        bud = budget
    else:
        if budget is None:
            raise ValueError(f"strategy {name!r} needs budget= (the resource limit, e.g. a parameter "
                             f"count)")
        bud = C.make_budget(space, budget, cost_fn=cost_fn, cost_terms=cost_terms)
    if pv not in ("mc", "exact"):
        raise ValueError(f"pv must be 'mc' (Monte-Carlo, Alg. 2) or 'exact', got {pv!r}")
    if rejection and pv == "exact" and bud.exact is None:
        raise ValueError(f"pv='exact' needs an enumerable space (<= {C.ENUM_LIMIT:,} architectures) or "
                         f"a cost that is a sum of adjacent-layer terms; use pv='mc'")
    if rejection and pv == "mc" and int(num_mc_samples) < 1:
        raise ValueError(f"num_mc_samples must be >= 1, got {num_mc_samples}")
    if not 0.0 <= warmup_frac < 1.0:
        raise ValueError(f"warmup_frac must be in [0, 1), got {warmup_frac}")
    if warmup_frac > 0 and total_steps is None:
        raise ValueError("layer warm-up runs over a fraction of the search and needs total_steps= "
                         "(the number of strategy steps, passed by the engine); or set warmup_frac=0")
    decay = K.check_decay(name, decay)
    K.check_final(name, final, FINAL_RULES)
    warmup_steps = int(round(warmup_frac * total_steps)) if total_steps else 0
    log_exact = (bud.exact is not None) if log_exact_pv is None else bool(log_exact_pv)
    if log_exact and bud.exact is None:
        raise ValueError("log_exact_pv=True but this budget has no exact P(V)")
    mask = np.asarray(space.mask)
    full_arch = jnp.asarray(space.num_choices - 1, jnp.int32)   # widest choice: the whole supernet
    tx = K.make_optimizer(name, total_steps=total_steps, **opt)
    n_mc = int(num_mc_samples)
    f32 = lambda x: jnp.asarray(x, jnp.float32)

    def pv_of(logits, key):
        if pv == "exact":
            return bud.pv_exact(logits)
        return bud.pv_mc(key, logits, n_mc, mc_chunk)

    def init(key=None):
        del key  # logits start uniform (Alg. 1: l_ij <- 0)
        logits = space.uniform_logits()
        z = jnp.zeros((), jnp.float32)
        i = jnp.zeros((), jnp.int32)
        return TabNASState(logits=logits, opt_state=tx.init(logits), baseline_num=z, baseline_den=z,
                           step=i, num_updates=i, skipped_infeasible=i, skipped_zero_pv=i)

    def sample(state, key):
        k_full, k_arch = jax.random.split(key)
        arch = space.sample(k_arch, state.logits)
        full = jax.random.uniform(k_full) < warmup_probability(state.step, warmup_steps)
        arch = jnp.where(full, full_arch, arch)
        return arch, space.one_hot(arch)

    def step(state, key, reward_fn, ctx=None):
        del ctx
        k_y, k_mc = jax.random.split(key)
        warm = state.step < warmup_steps
        vary = lambda t: K.vary(t, axis_name)
        lv = vary(state.logits)              # this lane's gradient, not one summed over devices
        qbar = state.baseline

        def rl(_):
            y = space.sample(k_y, lv)
            cost = bud.cost(y)
            feas = cost <= bud.limit
            active = feas if rejection else jnp.bool_(True)
            # reward only where it is used: rejected samples cost no validation pass
            q = jax.lax.cond(active,
                             lambda: vary(f32(reward_fn(space.one_hot(y))[0]) + q_offset),
                             lambda: vary(f32(0.0)))
            # Q (T/T0)^beta with Q <= 0 would reverse the resource penalty: the step counts such
            # lanes (q_nonpositive) and the engine stops the search after the chunk, before it is
            # checkpointed (search.check_metrics). No host callback in the step: it would not export
            # for GPU/TPU (tests/test_lowering.py), and one raising on one device of a shard_map
            # leaves the others waiting at the next all-reduce
            r = q if shape_reward is None else shape_reward(q, cost)
            adv = jax.lax.stop_gradient(r - qbar)

            pv_fn = (lambda lg: pv_of(lg, k_mc)) if rejection else None
            (_, p_v), g = jax.value_and_grad(reinforce_objective, has_aux=True)(lv, mask, y, adv, pv_fn)
            # a NaN/inf reward or gradient never reaches the logits: skipped and flagged
            bad = jnp.logical_and(active, ~(jnp.isfinite(r) & jnp.all(jnp.isfinite(g))))
            used = jnp.logical_and(active, ~bad)
            ok = jnp.logical_and(used, p_v > 0)
            return vary(dict(g=g, q=q, r=f32(r), cost=f32(cost), feas=feas, evaluated=active,
                             active=used, ok=ok, bad=bad, pv=f32(p_v)))

        def idle(_):
            return vary(dict(g=jnp.zeros_like(lv), q=f32(0), r=f32(0), cost=f32(0),
                             feas=jnp.bool_(False), evaluated=jnp.bool_(False),
                             active=jnp.bool_(False), ok=jnp.bool_(False), bad=jnp.bool_(False),
                             pv=f32(0)))

        o = jax.lax.cond(warm, idle, rl, None)
        g, n_ok = K.masked_mean(o["g"], o["ok"], axis_name)                # App. B.2.2
        (r_mean, q_mean), n_active = K.masked_mean((o["r"], o["q"]), o["active"], axis_name)
        n_feas = K.lane_sum(o["feas"].astype(jnp.float32), axis_name)
        n_dev = K.lane_count(axis_name)
        pv_mean = K.lane_mean(o["pv"], axis_name)

        do = n_ok > 0
        logits, opt_state = K.ascend(tx, state.logits, state.opt_state, g, do, mask=mask,
                                     fill=NEG_INF)                        # ascend J
        seen = n_active > 0                                               # Alg. 1 line 18
        num = jnp.where(seen, decay * state.baseline_num + (1 - decay) * r_mean, state.baseline_num)
        den = jnp.where(seen, decay * state.baseline_den + (1 - decay), state.baseline_den)
        rl_on = jnp.logical_not(warm)
        n_inf = jnp.where(rl_on, n_dev - n_feas, 0.0) if rejection else f32(0)
        n_zero = n_active - n_ok if rejection else f32(0)
        n_bad = K.lane_sum(o["bad"].astype(jnp.float32), axis_name)
        new = TabNASState(
            logits=logits, opt_state=opt_state, baseline_num=num, baseline_den=den,
            step=state.step + 1, num_updates=state.num_updates + do.astype(jnp.int32),
            skipped_infeasible=state.skipped_infeasible + n_inf.astype(jnp.int32),
            skipped_zero_pv=state.skipped_zero_pv + n_zero.astype(jnp.int32))
        more = dict(baseline=new.baseline, feasible=n_feas / n_dev,
                    cost=K.lane_mean(o["cost"], axis_name), updated=do,
                    warmup=warm, warmup_prob=warmup_probability(state.step, warmup_steps),
                    skipped_infeasible=new.skipped_infeasible)
        if shape_reward is not None:
            more["shaped_reward"] = r_mean
        if multiplicative:   # lanes whose evaluated Q <= 0: search.check_metrics stops the search
            more["q_nonpositive"] = K.lane_sum((o["evaluated"] & (o["q"] <= 0)).astype(jnp.float32),
                                               axis_name)
        if rejection:
            more["pv"] = pv_mean
            more["skipped_zero_pv"] = new.skipped_zero_pv
        if log_exact:
            more["pv_exact"] = bud.pv_exact(state.logits)
        # evaluations: the lane mean (all TabNAS metrics are lane-reduced); the engine's sum over
        # the lanes is the number of samples evaluated
        evaluations = K.lane_mean(o["evaluated"].astype(jnp.float32), axis_name)
        metrics = K.step_metrics(q_mean, n_bad > 0, probs(new), evaluations, **more)
        return new, metrics

    def derive(state):
        if final == "argmax":
            return K.derive(space, state.logits)
        if final == "mode":          # the mode of P(y | y in V) (sec. 3.4: "largest probabilities")
            return bud.mode(state.logits)[0]
        # Alg. 3 with a fixed key: deterministic for a given state
        return select_final(bud, state.logits, jax.random.key(0), num_final_samples)[0]

    def probs(state):
        return K.softmax(state.logits, mask)

    def summary(state, arch):
        return policy_summary(bud, state.logits, arch, final=final, n=int(num_final_archs),
                              num_samples=int(num_final_samples))

    return Strategy(name=name, space=space, mode="sparse", init=init, sample=sample, step=step,
                    derive=derive, probs=probs, needs="reward", summary=summary)


def q_not_positive_message(where: str) -> str:
    return (f"a multiplicative MnasNet reward met the quality Q = reward + q_offset "
            f"{where} <= 0: Q (T/T0)^beta would reverse the resource penalty. "
            f"Raise q_offset so that Q > 0 (default 1: Q = 1 - loss, TabNAS Alg. 1 line "
            f"13; for a loss that can exceed 1, q_offset above its largest value)")


FINAL_RULES = ("alg3", "mode", "argmax")
# RL lr of "tabnas" (Adam on the logits): the top of the paper's range, "a constant eta in [0.001,
# 0.01] is appropriate for all datasets" (App. D). bench/tabnas_connect4.py (24 search epochs,
# budgets on and between front costs, 2 seeds): 0.01 concentrates in 5 of 8 searches (3 of 4 at
# the budgets between front points; 0.005: 3 of 8, 1 of 4) and its Alg. 3 top-3 retrain is within
# 2 std of the best at every budget; 0.02 concentrated on a worse architecture (24-48 at 2,483).
RL_LR = 0.01


@register("tabnas")
def make_tabnas(space: Space, budget=None, *, axis_name: Optional[str] = None,
                total_steps: Optional[int] = None, cost_fn=None, cost_terms=None, pv: str = "mc",
                num_mc_samples: int = 32768, mc_chunk: int = 65536, decay: float = 0.9,
                warmup_frac: float = 0.25,
                q_offset: float = 1.0,  # Q = 1 - loss (Alg. 1 line 13) from a reward of -loss
                final: str = "alg3", num_final_samples: int = 500,
                num_final_archs: int = 3,  # Alg. 3's n (sec. 3.4: n <= 3 suffice)
                log_exact_pv: Optional[bool] = None, optimizer: str = "adam",
                lr: float = RL_LR,  # App. D: eta in [0.001, 0.01]; see RL_LR
                b1: float = 0.9, b2: float = 0.999,
                eps: float = 1e-3, weight_decay: float = 0.0, clip: Optional[float] = None,
                lr_schedule: str = "constant") -> Strategy:
    """TabNAS (rejection-based REINFORCE). ``budget``: the limit (number, with ``cost_fn`` default
    ``space.param_count``) or a :class:`jaxnas.strategies.budget.Budget`. ``pv``: "mc" (Alg. 2, N =
    ``num_mc_samples``) or "exact". ``decay``: Alg. 1 line 18's gamma (0.9). ``final``: "alg3"
    (Alg. 3, m = ``num_final_samples``, fixed key), "mode" (of P(y | y in V)) or "argmax";
    ``num_final_archs``: the n of Alg. 3 listed by ``summary`` (the candidates to retrain)."""
    return _build(space, "tabnas", budget=budget, cost_fn=cost_fn, cost_terms=cost_terms,
                  rejection=True, shape_reward=None, pv=pv, num_mc_samples=num_mc_samples,
                  mc_chunk=mc_chunk, decay=decay, total_steps=total_steps,
                  warmup_frac=warmup_frac, q_offset=q_offset, num_final_samples=num_final_samples,
                  num_final_archs=num_final_archs,
                  axis_name=axis_name, log_exact_pv=log_exact_pv, final=final,
                  optimizer=optimizer, lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                  clip=clip, lr_schedule=lr_schedule)


def _make_shaped(name: str, reward, multiplicative: bool):
    def make(space: Space, target=None, *, beta: float, axis_name: Optional[str] = None,
             total_steps: Optional[int] = None, cost_fn=None, decay: float = 0.9,
             warmup_frac: float = 0.25,
             q_offset: float = 1.0,  # Q = 1 - loss (TabNAS Alg. 1 line 13): Q > 0 for MnasNet
             final: str = "argmax", num_final_samples: int = 500, num_final_archs: int = 3,
             log_exact_pv: Optional[bool] = None, optimizer: str = "adam",
             lr: float = 0.05,  # TabNAS App. B: the Abs Reward needs eta >= 0.05
             b1: float = 0.9, b2: float = 0.999,
             eps: float = 1e-3, weight_decay: float = 0.0, clip: Optional[float] = None,
             lr_schedule: str = "constant") -> Strategy:
        if target is None or float(target) <= 0:
            raise ValueError(f"strategy {name!r} needs target= > 0 (the resource target T0)")
        beta = float(beta)
        shape = lambda q, cost: reward(q, cost, float(target), beta)
        return _build(space, name, budget=target, cost_fn=cost_fn, cost_terms=None,
                      rejection=False, shape_reward=shape, pv="mc", num_mc_samples=1, mc_chunk=1,
                      decay=decay, total_steps=total_steps, warmup_frac=warmup_frac,
                      q_offset=q_offset, num_final_samples=num_final_samples,
                      num_final_archs=num_final_archs, multiplicative=multiplicative,
                      axis_name=axis_name, log_exact_pv=log_exact_pv, final=final,
                      optimizer=optimizer, lr=lr, b1=b1, b2=b2, eps=eps,
                      weight_decay=weight_decay, clip=clip, lr_schedule=lr_schedule)
    make.__name__ = f"make_{name}"
    make.__doc__ = (f"Plain REINFORCE on the shaped reward {reward.__doc__.splitlines()[0]} "
                    f"``target`` is T0; derive returns the per-decision argmax (final='alg3': "
                    f"Alg. 3 with limit T0).")
    return make


make_tunas_abs = register("tunas_abs")(_make_shaped("tunas_abs", C.abs_reward, False))
make_mnas_soft = register("mnas_soft")(_make_shaped("mnas_soft", C.mnas_soft_reward, True))
make_mnas_hard = register("mnas_hard")(_make_shaped("mnas_hard", C.mnas_hard_reward, True))

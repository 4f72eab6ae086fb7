"""MANAS: multi-agent neural architecture search (Carlucci et al., "MANAS: Multi-Agent Neural
Architecture Search", sec. 4, App. B.1, D).

One agent per decision (an edge of a cell; with unique cells, every edge of every cell). Each agent
samples one op from its own distribution ``pi_i``; the sampled architecture's validation loss is the
only feedback (Alg. 1): no gradient w.r.t. the architecture, the reward need not be differentiable.
The loss is ``L = -reward`` (the engine's rewards are higher-better: ``-loss`` or an accuracy).

Credit (sec. 4.1), per-op scores ``B[i, k]`` (lower = better):

- ``coordinated``: ``B[i, k] += L 1{a_i = k} / pi_i[k]`` (the importance-weighted loss; sec. 4.1
  "Coordinated Descent"), the paper's update and the default. ``baseline=True`` (our option, not the
  paper's) adds ``-b 1{a_i = k} / pi_i[k]`` with ``b`` a moving average of past losses, the same for
  every op of every agent: ``E[(L - b) 1{a_i=k} / pi_i[k]] = E[L | a_i = k] - b``, so the expected
  scores move by the same constant for all ops of an agent, which neither sampler sees, while the
  variance of the common loss level (~2.3 nats of a 10-class cross-entropy against differences of
  ~0.01) no longer swamps the differences. It is off by default because App. D.2's regret bound
  assumes the paper's non-negative losses, which ``L - b`` is not.
- ``linear``: ``L ~ beta^T Z`` with ``Z`` in {0,1}^{KN}; ``B = (Z Z^T)^+ Z L`` over all rows seen
  (sec. 4.1 "Linear Decomposition"). We accumulate the normal equations ``G = sum z z^T``,
  ``h = sum z L`` (constant memory) and solve every ``collect_steps`` strategy steps (App. B.1: rows
  are collected with the scores frozen, then solved). Each agent's block of ``z`` sums to one, so
  ``G`` is singular: the pseudo-inverse returns ``beta`` up to one constant per agent, which no
  agent's ranking or distribution depends on.

Sampling (sec. 4.2):

- ``softmax`` (EXP3): ``pi_i = (1 - explore) softmax(-lr * B_i) + explore / K_i`` — the paper's
  softmax of ``B`` written for losses (low loss = high probability), mixed with uniform exploration
  ``explore`` (EXP3's gamma). With ``linear`` credit, ``B`` estimates a per-row loss, so the softmax
  gets ``-lr * R * B`` (``R`` rows at the last solve: the cumulative-loss scale ``lr`` is meant for).
  Defaults (App. B.1 "starting estimates ... suggested by Bubeck et al. (2012)"), with ``n`` =
  ``total_steps * lanes`` architectures: ``lr = 0.95 sqrt(ln K / (n K))``, ``explore = 1.05 sqrt(K
  ln K / n)`` — Bubeck & Cesa-Bianchi (2012), Thm 3.3 (Exp3.P). The paper prints ``0.95 sqrt(ln K) /
  (n K)`` and ``1.05 K ln K / n``: the square roots lost their extent (with n = 10^4 architectures the
  printed lr moves the policy by a factor e^0.05 over a whole search). :func:`exp3_rates` gives both.
- ``zipf``: ``pi_i[k] = 1 / (rank_i(k) H_{K_i})``, rank by ``B_i`` (best = 1), ``H_K = 1 + ... + 1/K``
  (sec. 4.2). Tied ops share their ranks' mass equally (the paper is silent): all-equal scores, as
  at the start, give the uniform policy of Alg. 1 line 1.

Ragged spaces: agent ``i`` has ``K_i`` valid ops (``space.mask``); masked ops have probability 0.

Final architecture (Alg. 1 line 7): ``final="argmax"`` (default) each agent's best op by ``B``, under
the space's derivation rule (DARTS: the two strongest inputs per node, strength = how far the best
non-zero op's score is below the agent's mean score, so per-agent constants cancel); ``"sample"``
draws from ``pi`` (the paper's line 7) with a key fixed at ``init``; ``"process_best"`` the best
architecture evaluated. With ``linear`` credit ``derive`` solves the normal equations of all rows.

Lanes: each of the P lanes samples and evaluates its own architecture; the lanes' ``(arch, loss)``
pairs are gathered (``P x (D + 2)`` numbers), and every lane adds all P to its scores (coordinated:
the sum of the P importance-weighted losses) or to ``G, h`` (linear: P rows), so all lanes apply
the identical update. A lane whose reward is not finite contributes nothing.
"""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxnas.spaces.base import NEG_INF, Space
from jaxnas.strategies import categorical as K
from jaxnas.strategies.base import Strategy, register

CREDITS = ("coordinated", "linear")
SAMPLERS = ("softmax", "zipf")
FINALS = ("argmax", "sample", "process_best")


@struct.dataclass
class ManasState:
    scores: jax.Array       # float[D, K]: B (accumulated importance-weighted losses, or the LS solution)
    gram: jax.Array         # float[DK, DK]: sum z z^T (linear credit; a zero [1, 1] otherwise)
    moment: jax.Array       # float[DK]: sum z L (linear credit; a zero [1] otherwise)
    rows: jax.Array         # float: rows in gram/moment (linear) or architectures credited (coordinated)
    scale: jax.Array        # float: rows at the last solve (linear + softmax's cumulative scale)
    lr: jax.Array           # float: EXP3 lr (eta) in use (defaults depend on the lane count)
    explore: jax.Array      # float: EXP3 uniform mixing (gamma) in use
    baseline: jax.Array     # float: moving average of past losses (coordinated, baseline=True)
    baseline_set: jax.Array  # bool
    step: jax.Array         # int32: strategy steps taken
    best_arch: jax.Array    # int32[D]: best architecture evaluated ("process best")
    best_reward: jax.Array  # float32
    final_key: jax.Array    # uint32 key data for final="sample" (jax.random.key_data)


# ---- the formulas ----------------------------------------------------------------------------------
def exp3_rates(num_choices: int, n: float, printed: bool = False) -> tuple[float, float]:
    """App. B.1 starting values ``(lr, explore)`` for ``n`` architectures and ``K`` ops per agent:
    Bubeck & Cesa-Bianchi (2012) Thm 3.3, ``0.95 sqrt(ln K / (nK))`` and ``1.05 sqrt(K ln K / n)``
    (the values App. B.1 cites); ``printed=True``: the formulas as App. B.1 prints them,
    ``0.95 sqrt(ln K) / (nK)`` and ``1.05 K ln K / n``. ``explore`` is capped at 1."""
    k, n = float(num_choices), float(n)
    if n <= 0:
        raise ValueError(f"exp3_rates: n (architectures seen) must be > 0, got {n}")
    lnk = math.log(k)
    if printed:
        return 0.95 * math.sqrt(lnk) / (n * k), min(1.0, 1.05 * k * lnk / n)
    return 0.95 * math.sqrt(lnk / (n * k)), min(1.0, 1.05 * math.sqrt(k * lnk / n))


def coordinated_credit(arch, loss, probs, mask):
    """sec. 4.1 coordinated descent: ``loss * 1{a_i = k} / pi_i[k]``, ``float[D, K]`` (0 on masked ops)."""
    m = jnp.asarray(mask)
    z = jax.nn.one_hot(arch, probs.shape[-1], dtype=probs.dtype)
    return jnp.where(m, z * loss / jnp.where(m, probs, 1.0), 0.0)


def zipf_probs(scores, mask):
    """sec. 4.2 Zipf: ``pi_i[k] = 1 / (rank_i(k) H_{K_i})``, rank 1 = lowest score among the agent's
    valid ops; ``g`` tied ops with ranks ``r..r+g-1`` each get ``(H_{r+g-1} - H_{r-1}) / (g H_{K_i})``
    (their mean). ``float[D, K]``, 0 on masked ops."""
    m = jnp.asarray(mask)
    kmax = scores.shape[-1]
    hn = jnp.concatenate([jnp.zeros(1, scores.dtype),
                          jnp.cumsum(1.0 / jnp.arange(1, kmax + 1, dtype=scores.dtype))])
    other = m[:, None, :]                                            # [D, k, j]: j valid
    lower = jnp.sum((scores[:, None, :] < scores[:, :, None]) & other, -1)   # ops strictly better
    ties = jnp.sum((scores[:, None, :] == scores[:, :, None]) & other, -1)   # incl. itself
    ties = jnp.maximum(ties, 1)
    kd = jnp.sum(m, -1, keepdims=True)
    p = (hn[lower + ties] - hn[lower]) / (ties * hn[kd])
    return jnp.where(m, p, 0.0)


def exp3_probs(scores, mask, lr, explore):
    """sec. 4.2 softmax sampling as EXP3 on losses: ``(1 - explore) softmax(-lr B) + explore / K_i``."""
    m = jnp.asarray(mask)
    uniform = m / jnp.sum(m, -1, keepdims=True)
    return (1.0 - explore) * K.softmax(-lr * scores, m) + explore * uniform


def solve_normal_equations(gram, moment):
    """sec. 4.1 linear credit: ``B = (Z Z^T)^+ Z L`` from ``G = Z Z^T`` and ``h = Z L``
    (symmetric pseudo-inverse, numpy's default cut-off)."""
    return jnp.linalg.pinv(gram, hermitian=True) @ moment


# ---- the strategy ----------------------------------------------------------------------------------
def _make(name: str, space: Space, axis_name, total_steps, credit, sampler, lr, explore, baseline,
          decay, final, collect_steps, train_steps) -> Strategy:
    if credit not in CREDITS:
        raise ValueError(f"strategy {name!r}: credit={credit!r}; choose one of {CREDITS}")
    if sampler not in SAMPLERS:
        raise ValueError(f"strategy {name!r}: sampler={sampler!r}; choose one of {SAMPLERS}")
    final = K.check_final(name, final, FINALS)
    linear = credit == "linear"
    if linear and baseline is not None:
        raise ValueError(f"strategy {name!r}: baseline applies to credit='coordinated' (least squares "
                         f"fits the common loss level itself); drop it")
    if not linear and (collect_steps is not None or train_steps is not None):
        raise ValueError(f"strategy {name!r}: collect_steps/train_steps schedule the least-squares "
                         f"solves of credit='linear'; drop them or set credit='linear'")
    if sampler == "zipf" and (lr is not None or explore is not None):
        raise ValueError(f"strategy {name!r}: lr and explore are EXP3's (sampler='softmax'); Zipf "
                         f"sampling has no parameters")
    if explore is not None and not 0.0 <= explore <= 1.0:
        raise ValueError(f"strategy {name!r}: explore (EXP3's uniform mixing) must lie in [0, 1], got {explore}")
    if sampler == "softmax" and (lr is None or explore is None) and total_steps is None:
        raise ValueError(f"strategy {name!r}: the default lr/explore (App. B.1) depend on the number of "
                         f"architectures the search sees: give total_steps (the engine does) or lr and explore")
    baseline = bool(baseline)     # sec. 4.1 has none (default off); linear credit refuses it above
    decay = K.check_decay(name, decay)
    mask = np.asarray(space.mask)
    D, Kmax = space.shape
    M = D * Kmax if linear else 1       # coordinated: a [1, 1] placeholder (orbax saves no empty arrays)
    valid_columns = int(mask.sum())
    collect = int(collect_steps) if collect_steps is not None else valid_columns + 1  # rows > columns
    train = int(train_steps) if train_steps is not None else collect
    jmask = jnp.asarray(mask)

    def rates(lanes):
        """(lr, explore) for ``n = total_steps * lanes`` architectures (traced lane count)."""
        if sampler != "softmax":
            return jnp.zeros(()), jnp.zeros(())
        n = float(total_steps or 1) * lanes
        lnk = math.log(Kmax)
        d_lr = 0.95 * jnp.sqrt(lnk / (n * Kmax))              # App. B.1 / Bubeck et al. Thm 3.3
        d_ex = jnp.minimum(1.0, 1.05 * jnp.sqrt(Kmax * lnk / n))
        return (d_lr if lr is None else jnp.asarray(lr)), (d_ex if explore is None else jnp.asarray(explore))

    def init(key):
        f = jnp.zeros(()).dtype                               # float64 under jax.enable_x64
        lr0, ex0 = rates(1.0)
        return ManasState(scores=jnp.zeros((D, Kmax), f), gram=jnp.zeros((M, M), f),
                          moment=jnp.zeros((M,), f), rows=jnp.zeros((), f), scale=jnp.zeros((), f),
                          lr=jnp.asarray(lr0, f), explore=jnp.asarray(ex0, f),
                          baseline=jnp.zeros((), f), baseline_set=jnp.zeros((), bool),
                          step=jnp.zeros((), jnp.int32), best_arch=jnp.zeros((D,), jnp.int32),
                          best_reward=jnp.full((), -jnp.inf, jnp.float32),
                          final_key=jax.random.key_data(key))

    def policy(state, scores=None, scale=None):
        b = state.scores if scores is None else scores
        if sampler == "zipf":
            return zipf_probs(b, jmask)
        if linear:                                            # per-row estimate -> cumulative scale
            b = b * (state.scale if scale is None else scale)
        return exp3_probs(b, jmask, state.lr, state.explore)

    def draw(key, probs):
        logits = jnp.where(jmask, jnp.log(probs), NEG_INF)
        return space.sample(key, logits)

    def sample(state, key):
        arch = draw(key, policy(state))
        return arch, space.one_hot(arch)

    def step(state, key, reward_fn, ctx=None):
        del ctx
        lanes = K.lane_count(axis_name)
        lr_t, ex_t = rates(lanes)
        f = state.scores.dtype
        state = state.replace(lr=jnp.asarray(lr_t, f), explore=jnp.asarray(ex_t, f))
        probs = policy(state)
        arch = draw(key, probs)
        reward, _ = reward_fn(space.one_hot(arch))
        ok = K.finite(reward)
        loss = jnp.where(ok, -reward, 0.0).astype(f)          # L = -reward
        archs, losses, oks = K.lane_gather((arch, loss, ok), axis_name)   # [P, D], [P], [P]
        n_ok = jnp.sum(oks.astype(f))
        z = jax.nn.one_hot(archs, Kmax, dtype=f) * oks.astype(f)[:, None, None]   # [P, D, K]
        new = state
        b = jnp.zeros((), f)
        if linear:
            zf = z.reshape(z.shape[0], M)
            gram = state.gram + zf.T @ zf                     # sum z z^T (normal equations)
            moment = state.moment + zf.T @ losses             # sum z L
            rows = state.rows + n_ok
            solve_now = (state.step + 1) % collect == 0       # App. B.1: solve after collecting
            scores = jax.lax.cond(solve_now, lambda: solve_normal_equations(gram, moment).reshape(D, Kmax),
                                  lambda: state.scores)
            new = new.replace(gram=gram, moment=moment, rows=rows, scores=scores,
                              scale=jnp.where(solve_now, rows, state.scale))
        else:
            mean_loss = jnp.sum(losses) / jnp.maximum(n_ok, 1.0)
            if baseline:   # past losses; the first step's mean at the first step (as REINFORCE)
                b = jnp.where(state.baseline_set, state.baseline, mean_loss)
                seen = n_ok > 0
                new = new.replace(baseline=jnp.where(seen, K.ema(b, mean_loss, decay), state.baseline),
                                  baseline_set=state.baseline_set | seen)
            # sec. 4.1 coordinated update, summed over the lanes: sum_p (L_p - b) 1{a_p,i = k} / pi_i[k]
            credit = jnp.sum(z * (losses - b)[:, None, None], 0) / jnp.where(jmask, probs, 1.0)
            new = new.replace(scores=state.scores + jnp.where(jmask, credit, 0.0),
                              rows=state.rows + n_ok)
        best_arch, best_reward = K.track_best(state.best_arch, state.best_reward, arch, reward, ok, axis_name)
        new = new.replace(step=state.step + 1, best_arch=best_arch, best_reward=best_reward)
        return new, K.step_metrics(reward, ~ok, policy(new), 1.0, baseline=b, lr=new.lr,
                                   explore=new.explore, rows=new.rows)

    def final_scores(state):
        if linear:   # every row seen, also those after the last solve
            fresh = solve_normal_equations(state.gram, state.moment).reshape(D, Kmax)
            return jnp.where(state.rows > 0, fresh, state.scores), state.rows
        return state.scores, state.scale

    def derive(state):
        b, scale = final_scores(state)
        if final == "sample":
            return draw(jax.random.wrap_key_data(state.final_key), policy(state, b, scale))
        # per-agent centring: B is defined up to one constant per agent (linear credit)
        mean = jnp.sum(jnp.where(jmask, b, 0.0), -1, keepdims=True) / jnp.sum(jmask, -1, keepdims=True)
        amax = K.derive(space, -(b - mean))
        if final == "argmax":
            return amax
        return jnp.where(jnp.isfinite(state.best_reward), state.best_arch, amax)

    def phases(steps: int, warmup: int):
        """App. B.1: [weights warm-up + train_steps] then (strategy collect_steps, weights train_steps)
        rounds; every collection phase ends with a solve. Weight steps that do not fill a round go
        to the first training phase."""
        cycle = train + collect
        rounds = (int(steps) - int(warmup)) // cycle
        if rounds < 1:
            raise ValueError(f"strategy {name!r}: search.steps={steps} (warm-up {warmup}) leaves no room "
                             f"for one least-squares round of train_steps={train} weight steps and "
                             f"collect_steps={collect} row-collection steps (rows > columns = "
                             f"{valid_columns}): raise search.steps, or lower strategy.collect_steps / "
                             f"strategy.train_steps")
        lead = int(steps) - int(warmup) - rounds * cycle
        out = [("weights", int(warmup) + lead + train), ("strategy", collect)]
        out += [("weights", train), ("strategy", collect)] * (rounds - 1)
        return out

    return Strategy(name=name, space=space, mode="sparse", init=init, sample=sample, step=step,
                    derive=derive, probs=policy, needs="reward", phases=phases if linear else None)


@register("manas")
def make_manas(space: Space, *, axis_name: Optional[str] = None, total_steps: Optional[int] = None,
               credit: str = "coordinated", sampler: str = "softmax", lr: Optional[float] = None,
               explore: Optional[float] = None, baseline: Optional[bool] = None, decay: float = 0.95,
               final: str = "argmax", collect_steps: Optional[int] = None,
               train_steps: Optional[int] = None) -> Strategy:
    """MANAS (sec. 5: coordinated credit + softmax/EXP3 sampling). credit: "coordinated" | "linear";
    sampler: "softmax" | "zipf"; lr, explore: EXP3's eta and gamma (default App. B.1 from
    total_steps x lanes); baseline (coordinated; default False, the paper's update), decay: its moving average's weight
    of the old value; final: "argmax" | "sample" | "process_best"; collect_steps, train_steps (linear
    credit): the rows collected per solve (default columns + 1) and the weight steps per round of
    the default schedule (default collect_steps)."""
    return _make("manas", space, axis_name, total_steps, credit, sampler, lr, explore, baseline, decay,
                 final, collect_steps, train_steps)


@register("manas_ls")
def make_manas_ls(space: Space, *, axis_name: Optional[str] = None, total_steps: Optional[int] = None,
                  credit: str = "linear", sampler: str = "zipf", lr: Optional[float] = None,
                  explore: Optional[float] = None, baseline: Optional[bool] = None, decay: float = 0.95,
                  final: str = "argmax", collect_steps: Optional[int] = None,
                  train_steps: Optional[int] = None) -> Strategy:
    """MANAS-LS (sec. 5: linear (least-squares) credit + Zipf sampling), App. B.1's schedule as its
    default phases. Options as ``manas``."""
    return _make("manas_ls", space, axis_name, total_steps, credit, sampler, lr, explore, baseline, decay,
                 final, collect_steps, train_steps)

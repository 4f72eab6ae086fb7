"""Resource constraints for TabNAS (Yang et al. 2022): budgets, P(V) and resource-aware rewards.

A :class:`Budget` says which architectures are feasible (``cost(arch) <= limit``, the set V of the
paper). The probability that the factorised policy samples a feasible architecture, P(V), is needed
by the rejection-based REINFORCE update (sec. 3.3, Alg. 2). Three differentiable estimators:

- :func:`pv_mc`: the Monte-Carlo estimate P̂(V) of Alg. 2, chunked so N = 5e6 fits in memory;
- :meth:`Budget.pv_exact` by enumeration (small spaces) or by a dynamic programme over layers when the
  cost is a sum of terms on adjacent decisions (``MLPSpace.layer_cost_terms``), exact in value and
  gradient.

Plus the reward shapings TabNAS compares against (TuNAS Abs Reward, MnasNet) and the device
averaging of App. B.2.2.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from functools import reduce
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.spaces.base import Space
from jaxnas.strategies.categorical import log_softmax, masked_mean

CostFn = Callable[[jax.Array], jax.Array]

ENUM_LIMIT = 2_000_000      # exact P(V) by enumeration up to this many architectures
DP_MAX_BINS = 5_000_000     # cost-axis bins x choices the exact DP accepts


# ---- policy helpers (the categorical core of jaxnas.strategies.categorical) ---------------------
def log_probs(logits: jax.Array, mask) -> jax.Array:
    """Per-decision log-probabilities ``[D, K]`` of the factorised policy (softmax per decision)."""
    return log_softmax(logits, mask)


def arch_log_prob(logp: jax.Array, archs: jax.Array) -> jax.Array:
    """log P(arch) = sum_d log p_d(arch_d) for architectures ``int[..., D]``."""
    archs = jnp.asarray(archs)
    d = jnp.arange(logp.shape[0])
    return jnp.sum(logp[d, archs], -1)


def sample_archs(key, probs: jax.Array, n: int, num_choices) -> jax.Array:
    """``int32[n, D]`` i.i.d. architectures by inverse-CDF sampling (n*D uniforms, no [n, D, K]
    Gumbel noise). Invalid (masked) choices have zero probability and are never drawn."""
    cdf = jnp.cumsum(probs, -1)                                   # [D, K]
    u = jax.random.uniform(key, (n, probs.shape[0]), dtype=probs.dtype)
    idx = jnp.sum(u[:, :, None] >= cdf[None, :, :-1], -1)       # first k with u < cdf_k
    return jnp.minimum(idx, jnp.asarray(num_choices) - 1).astype(jnp.int32)


# ---- Monte-Carlo P̂(V), Alg. 2 --------------------------------------------------------------------
def pv_mc_naive(logits, mask, archs, feasible):
    """Alg. 2 line 10 literally: P̂(V) = (1/N) sum_k p(z_k)/q(z_k) 1[z_k in V], q = stop_grad(p).

    ``archs`` [N, D] must have been drawn from stop_grad(p). O(N) autodiff: use :func:`pv_mc`."""
    lp = arch_log_prob(log_probs(logits, mask), archs)
    ratio = jnp.exp(lp - jax.lax.stop_gradient(lp))              # p/q: value 1, gradient ∇log p
    return jnp.mean(jnp.where(feasible, ratio, 0.0))


def mc_feasible_counts(key, logits, mask, feasible_fn, n: int, chunk: int = 65536):
    """Draws n architectures from stop_grad(p) in chunks (``lax.scan``) and returns
    ``(n_feasible, counts[D, K])``: counts[d, k] = #feasible samples whose decision d is k.
    Memory is O(chunk * D * K) whatever n is."""
    if n < 1:
        raise ValueError(f"the number of Monte-Carlo samples must be >= 1, got {n}")
    mask = np.asarray(mask)
    num_choices = mask.sum(-1)
    D, K = mask.shape
    probs = jnp.exp(jax.lax.stop_gradient(log_probs(logits, mask)))
    chunk = int(min(chunk, n))
    num_chunks = -(-n // chunk)

    def chunk_stats(i):
        z = sample_archs(jax.random.fold_in(key, i), probs, chunk, num_choices)
        valid = (i * chunk + jnp.arange(chunk)) < n              # the last chunk may be partial
        f = jnp.logical_and(feasible_fn(z), valid)
        # histogram of (decision, choice) over feasible samples; infeasible ones go to bin D*K
        bins = jnp.where(f[:, None], z + K * jnp.arange(D)[None, :], D * K).reshape(-1)
        counts = jnp.bincount(bins, length=D * K + 1)[:D * K].reshape(D, K)
        return jnp.sum(f, dtype=jnp.float32), counts.astype(jnp.float32)

    def body(carry, i):
        return jax.tree.map(jnp.add, carry, chunk_stats(i)), None

    # the first chunk seeds the carry, so its type (also shard_map's per-device type) is the body's
    nf, counts = chunk_stats(0)
    if num_chunks > 1:
        (nf, counts), _ = jax.lax.scan(body, (nf, counts), jnp.arange(1, num_chunks))
    return nf, counts


def pv_from_counts(logits, mask, n: int, n_feasible, counts):
    """P̂(V) of Alg. 2 from sufficient statistics, equal in value AND gradient to
    :func:`pv_mc_naive` on the same samples: since p/q has value 1 and gradient ∇log p(z) =
    sum_d ∇log p_d(z_d), P̂ = (1/N)[n_feasible + S - stop_grad(S)] with S = sum_{d,k} counts[d,k]
    log p_d(k)."""
    logp = log_probs(logits, mask)
    s = jnp.sum(jnp.where(jnp.asarray(mask), jax.lax.stop_gradient(counts) * logp, 0.0))
    return (jax.lax.stop_gradient(n_feasible) + s - jax.lax.stop_gradient(s)) / n


def pv_mc(key, logits, mask, feasible_fn, n: int, chunk: int = 65536):
    """Differentiable Monte-Carlo P̂(V) (Alg. 2) with N = n samples from q = stop_grad(p)."""
    nf, counts = mc_feasible_counts(key, logits, mask, feasible_fn, n, chunk)
    return pv_from_counts(logits, mask, n, nf, counts)


# ---- exact P(V) by a dynamic programme over adjacent-layer costs --------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class AdjacentCostDP:
    """Exact P(V) for ``cost(a) = first[a_0] + sum_l pair_l[a_l, a_{l+1}] + last[a_{L-1}] <= limit``
    with integer terms (parameter counts).

    Mass is carried over (choice of the current layer, cost so far) layer by layer. To keep the cost
    axis short every table is shifted by its minimum (the constants come off the budget) and divided
    by the gcd g of all first/pair entries; the last layer's term is not accumulated but applied as a
    per-choice cap at the end (floor((limit' - last_j) / g)), so the comparison stays exact. The
    Volkert 9x12 space (180 inputs, 10 classes) at 100,000 parameters needs 12 x 12,360 bins.
    """
    mask: np.ndarray                      # bool[D, K]
    first: np.ndarray                     # int64[K]     (shifted, divided by g)
    pairs: tuple                          # int64[K, K]  per adjacent pair (shifted, divided by g)
    caps: np.ndarray                      # int64[K]     max accumulated bin for each last choice
    num_bins: int                         # cost bins 0..num_bins-1 (0 when nothing is feasible)
    gcd: int

    @classmethod
    def build(cls, mask, first, pairs: Sequence, last, limit: float) -> "AdjacentCostDP":
        mask = np.asarray(mask, bool)
        D, K = mask.shape
        n = mask.sum(-1)
        if len(pairs) != D - 1:
            raise ValueError(f"{len(pairs)} pair tables for {D} decisions (need {D - 1})")

        def valid(t, *ns):
            t = np.asarray(t, np.float64)[tuple(slice(0, m) for m in ns)]
            if not np.all(np.isfinite(t)) or not np.allclose(t, np.round(t)):
                raise ValueError("the exact P(V) dynamic programme needs integer cost terms; "
                                 "use pv='mc' or an enumerable space for fractional costs")
            return np.round(t).astype(np.int64)

        f = valid(first, n[0])
        ps = [valid(p, n[l], n[l + 1]) for l, p in enumerate(pairs)]
        la = valid(last, n[-1])
        offset = f.min() + sum(p.min() for p in ps) + la.min()
        f, ps, la = f - f.min(), [p - p.min() for p in ps], la - la.min()
        room = math.floor(limit - offset + 1e-9)       # remaining budget once minima are paid
        g = reduce(math.gcd, [int(v) for t in [f, *ps] for v in np.unique(t)], 0) or 1
        if room < 0:
            num_bins = 0
        else:
            num_bins = room // g + 1
        caps = np.full(K, -1, np.int64)
        caps[:n[-1]] = np.where(la <= room, (room - la) // g, -1) if room >= 0 else -1
        pad = lambda t, shape: np.pad(t // g, [(0, s - d) for s, d in zip(shape, t.shape)])
        if num_bins * K > DP_MAX_BINS:
            raise ValueError(f"exact P(V) needs {num_bins} cost bins x {K} choices (> {DP_MAX_BINS}); "
                             f"use pv='mc'")
        return cls(mask=mask, first=pad(f, (K,)), pairs=tuple(pad(p, (K, K)) for p in ps),
                   caps=caps, num_bins=int(num_bins), gcd=int(g))

    def __call__(self, logits) -> jax.Array:
        """P(V) (scalar), differentiable w.r.t. ``logits`` [D, K]."""
        probs = jnp.exp(log_probs(logits, self.mask))
        C = self.num_bins
        if C == 0:
            return jnp.sum(probs) * 0.0
        K = self.mask.shape[1]
        onehot0 = np.zeros((K, C), np.float32)
        for j in range(K):
            if self.mask[0, j] and self.first[j] < C:
                onehot0[j, self.first[j]] = 1.0
        m = probs[0][:, None] * onehot0                            # mass[choice, cost bin]
        for l, shifts in enumerate(self.pairs):
            m = probs[l + 1][:, None] * _shift_add(m, shifts, self.mask[l])
        keep = np.arange(C)[None, :] <= self.caps[:, None]          # last layer's term as a cap
        return jnp.sum(jnp.where(keep, m, 0.0))


    def mode(self, logits) -> jax.Array:
        """The most probable feasible architecture, argmax_{y in V} P(y) (= the mode of
        P(y | y in V)): the same layer-by-layer recursion as ``__call__`` with max in place of sum
        (Viterbi), then a backtrack. ``int32[D]``; jit-able (the shifts are static)."""
        lp = log_probs(logits, self.mask)
        D, K = self.mask.shape
        C = self.num_bins
        if C == 0:
            return jnp.zeros((D,), jnp.int32)
        ninf = jnp.asarray(-jnp.inf, lp.dtype)
        start = np.zeros((K, C), bool)
        for j in range(K):
            if self.mask[0, j] and self.first[j] < C:
                start[j, self.first[j]] = True
        v = jnp.where(start, lp[0][:, None], ninf)                  # best log P of a prefix
        backs = []
        for l, shifts in enumerate(self.pairs):
            smax = int(min(shifts.max(), C))
            vp = jnp.pad(v, ((0, 0), (smax, 0)), constant_values=-jnp.inf)
            rows, args = [], []
            for jn in range(K):
                cand = jnp.stack([vp[j, smax - int(s): smax - int(s) + C]
                                  if (s < C and self.mask[l, j]) else jnp.full((C,), ninf)
                                  for j, s in enumerate(shifts[:, jn])])          # [K, C]
                ok = bool(self.mask[l + 1, jn])
                rows.append(lp[l + 1, jn] + jnp.max(cand, 0) if ok else jnp.full((C,), ninf))
                args.append(jnp.argmax(cand, 0).astype(jnp.int32))
            v, backs = jnp.stack(rows), backs + [jnp.stack(args)]
        v = jnp.where(np.arange(C)[None, :] <= self.caps[:, None], v, ninf)
        flat = jnp.argmax(v.reshape(-1))
        j, c = (flat // C).astype(jnp.int32), (flat % C).astype(jnp.int32)
        arch = [j]
        for l in reversed(range(len(self.pairs))):
            jp = backs[l][j, c]
            c = c - jnp.asarray(self.pairs[l], jnp.int32)[jp, j]
            j = jp
            arch.append(j)
        return jnp.stack(arch[::-1]).astype(jnp.int32)

def _shift_add(m, shifts: np.ndarray, prev_valid: np.ndarray):
    """``out[j', c] = sum_j m[j, c - shifts[j, j']]`` (zero where c < shift) on a fixed-length cost
    axis; mass pushed past the end is dropped (costs only grow, so it stays infeasible).

    The shifts are static, so forward and backward are both sums of static slices of a padded copy
    (the backward shifts the other way). A custom VJP matters: autodiff would transpose each slice
    into a pad of the whole array (K^3 C work; measured 3 s and a 5-minute compile on the 9x12
    Volkert space, against 5 ms and 3 s here).
    """
    K, C = m.shape
    smax = int(min(shifts.max(), C))

    def push(m):  # forward: out[j'] = sum_j shift_right(m[j], s[j, j'])
        mp = jnp.pad(m, ((0, 0), (smax, 0)))
        rows = []
        for jn in range(K):
            t = [mp[j, smax - int(s): smax - int(s) + C] for j, s in enumerate(shifts[:, jn])
                 if s < C and prev_valid[j]]
            rows.append(sum(t) if t else jnp.zeros((C,), m.dtype))
        return jnp.stack(rows)

    def pull(g):  # transpose: gm[j] = sum_j' shift_left(g[j'], s[j, j'])
        gp = jnp.pad(g, ((0, 0), (0, smax)))
        rows = []
        for j in range(K):
            t = [gp[jn, int(s): int(s) + C] for jn, s in enumerate(shifts[j, :])
                 if s < C and prev_valid[j]]
            rows.append(sum(t) if t else jnp.zeros((C,), g.dtype))
        return jnp.stack(rows)

    f = jax.custom_vjp(push)
    f.defvjp(lambda m: (push(m), None), lambda _, g: (pull(g),))
    return f(m)


def adjacent_cost_fn(first, pairs: Sequence, last) -> CostFn:
    """``cost(a) = first[a0] + sum_l pair_l[a_l, a_l+1] + last[a_L]`` as a vectorised jnp function of
    architectures ``int[..., D]`` (table look-ups: ~5x faster than ``MLPSpace.param_count`` on 1e6
    architectures, and equal to it when the tables come from ``layer_cost_terms``)."""
    f = jnp.asarray(np.asarray(first, np.float32))
    ps = [jnp.asarray(np.asarray(p, np.float32)) for p in pairs]
    la = jnp.asarray(np.asarray(last, np.float32))

    def cost(archs):
        a = jnp.asarray(archs)
        c = f[a[..., 0]] + la[a[..., -1]]
        for l, p in enumerate(ps):
            c = c + p[a[..., l], a[..., l + 1]]
        return c
    return cost


def min_adjacent_cost(mask, first, pairs, last) -> float:
    """Smallest ``first + sum pairs + last`` over valid choices (min-plus dynamic programme)."""
    n = np.asarray(mask).sum(-1)
    best = np.asarray(first, np.float64)[:n[0]]
    for l, p in enumerate(pairs):
        best = np.min(best[:, None] + np.asarray(p, np.float64)[:n[l], :n[l + 1]], 0)
    return float(np.min(best + np.asarray(last, np.float64)[:n[-1]]))


# ---- budget --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Budget:
    """Feasible set V = {a : cost_fn(a) <= limit}.

    Build with :func:`make_budget`, which checks that V is not empty. ``cost_fn`` maps
    ``int[..., D]`` architectures to costs ``float[...]`` (jnp, vectorised); the default is
    ``space.param_count``. ``min_cost`` is exact when the cost has adjacent-layer terms or the space is
    enumerable (else at most the limit). ``exact`` is the exact P(V) function when one exists (DP over adjacent
    layers or enumeration), else None.
    """
    space: Space
    limit: float
    cost_fn: CostFn
    min_cost: float
    exact: Optional[Callable[[jax.Array], jax.Array]]
    exact_method: str                     # "dp", "enum" or "none"
    exact_mode: Optional[Callable[[jax.Array], jax.Array]] = None   # logits -> argmax_{y in V} P(y)

    def cost(self, archs) -> jax.Array:
        return self.cost_fn(jnp.asarray(archs))

    def feasible(self, archs) -> jax.Array:
        """``bool[...]``: whether each architecture meets the budget."""
        return self.cost(archs) <= self.limit

    def pv_exact(self, logits) -> jax.Array:
        if self.exact is None:
            raise ValueError(f"no exact P(V) for this budget ({self.space.num_archs:,} architectures, "
                             f"cost without adjacent-layer terms); use pv='mc'")
        return self.exact(logits)

    def pv_mc(self, key, logits, n: int, chunk: int = 65536) -> jax.Array:
        return pv_mc(key, logits, self.space.mask, self.feasible, n, chunk)

    def mode(self, logits, key=None, num_samples: int = 10_000) -> tuple[jax.Array, bool]:
        """The mode of P(y | y in V), i.e. the most probable feasible architecture, and whether it
        is exact: by the DP (Viterbi over the adjacent-layer cost) or enumeration when available,
        else the most probable feasible one among ``num_samples`` policy samples (``key``; the
        per-decision argmax when none is feasible). jit-able."""
        if self.exact_mode is not None:
            return self.exact_mode(logits), True
        key = jax.random.key(0) if key is None else key
        archs = self.space.sample(key, logits, (num_samples,))
        lp = arch_log_prob(log_probs(logits, self.space.mask), archs)
        feas = self.feasible(archs)
        best = archs[jnp.argmax(jnp.where(feas, lp, -jnp.inf))]
        amax = jnp.argmax(jnp.where(jnp.asarray(self.space.mask), logits, -jnp.inf), -1)
        return jnp.where(jnp.any(feas), best, amax).astype(jnp.int32), False


def _enum_exact(space: Space, cost_fn: CostFn, limit: float):
    archs = space.all_archs(ENUM_LIMIT)
    costs = np.concatenate([np.asarray(cost_fn(jnp.asarray(a)))
                            for a in np.array_split(archs, max(1, len(archs) // 65536))])
    feas = costs <= limit
    fa = jnp.asarray(archs[feas])

    def exact(logits):
        if fa.shape[0] == 0:
            return jnp.sum(logits) * 0.0
        lp = arch_log_prob(log_probs(logits, space.mask), fa)
        return jnp.exp(jax.nn.logsumexp(lp))

    def mode(logits):
        if fa.shape[0] == 0:
            return jnp.zeros((space.num_decisions,), jnp.int32)
        return fa[jnp.argmax(arch_log_prob(log_probs(logits, space.mask), fa))].astype(jnp.int32)
    return exact, float(costs.min()), mode


def make_budget(space: Space, limit: float, cost_fn: Optional[CostFn] = None,
                cost_terms=None, exact: str = "auto") -> Budget:
    """A budget ``cost <= limit`` on ``space``.

    cost_fn: vectorised jnp cost (default ``space.param_count``).
    cost_terms: ``(first, pairs, last)`` tables with ``cost = first[a0] + sum pair_l + last[a_L]``;
      taken from ``space.layer_cost_terms()`` when cost_fn is the default. Enables the exact DP.
    exact: "auto" (DP if cost_terms, else enumeration if the space is small), "dp", "enum", "none".

    Raises ValueError when no architecture meets the budget, naming the smallest cost.
    """
    limit = float(limit)
    if not math.isfinite(limit):
        raise ValueError(f"budget limit must be finite, got {limit}")
    default = cost_fn is None
    if default:
        if not hasattr(space, "param_count"):
            raise ValueError(f"{type(space).__name__} has no param_count; pass cost_fn=")
        cost_fn = space.param_count
        if cost_terms is None and hasattr(space, "layer_cost_terms"):
            cost_terms = space.layer_cost_terms()
            cost_fn = adjacent_cost_fn(*cost_terms)      # the same counts, by table look-up
    if exact not in ("auto", "dp", "enum", "none"):
        raise ValueError(f"exact must be 'auto', 'dp', 'enum' or 'none', got {exact!r}")
    if exact == "dp" and cost_terms is None:
        raise ValueError("exact='dp' needs cost_terms=(first, pairs, last) (or the default "
                         "parameter count of an MLPSpace)")
    small = space.num_archs <= ENUM_LIMIT
    if exact == "enum" and not small:
        raise ValueError(f"exact='enum': {space.num_archs:,} architectures exceed {ENUM_LIMIT:,}")

    fn, method, min_cost, mode_fn = None, "none", None, None
    if cost_terms is not None:
        first, pairs, last = cost_terms
        min_cost = min_adjacent_cost(space.mask, first, pairs, last)
    if exact in ("auto", "dp") and cost_terms is not None:
        try:
            fn, method = AdjacentCostDP.build(space.mask, first, pairs, last, limit), "dp"
            mode_fn = fn.mode
        except ValueError:
            if exact == "dp":
                raise
    if fn is None and exact in ("auto", "enum") and small:
        fn, enum_min, mode_fn = _enum_exact(space, cost_fn, limit)
        method = "enum"
        min_cost = enum_min if min_cost is None else min_cost
    if min_cost is None:  # huge space, generic cost: only an estimate, so warn rather than raise
        archs = space.sample(jax.random.key(0), None, (65536,))
        sampled = float(jnp.min(cost_fn(archs)))
        if sampled > limit:
            warnings.warn(f"budget {limit:g}: none of 65,536 uniformly sampled architectures is "
                          f"feasible (smallest sampled cost {sampled:g}); the search may reject "
                          f"every sample", stacklevel=2)
        min_cost = min(sampled, limit)
    if min_cost > limit:
        raise ValueError(f"budget {limit:g} is below the smallest architecture's cost {min_cost:g}: "
                         f"no architecture is feasible; raise the budget to at least {min_cost:g}")
    return Budget(space=space, limit=limit, cost_fn=cost_fn, min_cost=float(min_cost), exact=fn,
                  exact_method=method, exact_mode=mode_fn)


# ---- resource-aware rewards (sec. 3.3) -----------------------------------------------------------
def abs_reward(q, cost, target, beta):
    """TuNAS Abs Reward: Q + beta |T/T0 - 1| (beta < 0)."""
    return q + beta * jnp.abs(cost / target - 1.0)


def mnas_soft_reward(q, cost, target, beta):
    """MnasNet soft constraint: Q (T/T0)^beta (beta < 0; assumes Q > 0)."""
    return q * (cost / target) ** beta


def mnas_hard_reward(q, cost, target, beta):
    """MnasNet hard constraint (Tan et al. eq. 2 with alpha = 0, beta < 0): Q min{1, (T/T0)^beta},
    i.e. Q below the target and Q (T/T0)^beta above it. The TabNAS text writes max{1, .}, which with
    beta < 0 would leave every infeasible architecture unpenalised; we implement MnasNet's rule."""
    return q * jnp.minimum(1.0, (cost / target) ** beta)


# ---- multi-device averaging, App. B.2.2 ----------------------------------------------------------
def feasible_mean(tree, feasible, axis_name: Optional[str] = None):
    """Averages a per-lane pytree over the lanes (devices) whose sample was feasible (App. B.2.2),
    ``psum(where(feasible, x, 0)) / max(psum(feasible), 1)``: the categorical core's
    ``masked_mean``. Returns ``(mean_tree, n_feasible)``; the mean is 0 where no lane was feasible.
    Call inside ``shard_map`` (or ``vmap`` with ``axis_name``); ``axis_name=None`` is one lane.
    """
    return masked_mean(tree, feasible, axis_name)

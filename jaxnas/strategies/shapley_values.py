"""Shapley values of a cooperative game over ``n`` players (Shapley-NAS, Xiao et al., sec. 3.2-3.3).

A game is a value function of coalitions given as masks: ``values(masks bool[..., n]) -> float[...]``
(in Shapley-NAS a player is one (cell type, edge, op) of the dense supernet and V(S) the validation
accuracy of the supernet whose mixing weights keep only the players in S).

- :func:`exact_shapley`: eq. 3 by enumerating the 2^n coalitions (small games; the test oracle).
- :func:`truncated_mc`: Alg. 1 (App. A.1), the Monte-Carlo estimate of eq. 4 with early truncation,
  as one compiled program: the m permutations run side by side, their prefix coalitions are
  evaluated ``chunk`` positions at a time as one batch of masks ``[m, chunk, n]``, and a
  ``lax.while_loop`` over chunks stops as soon as every permutation has truncated, so truncation
  saves evaluations and not only bookkeeping.
- :func:`permutations`: the permutations a lane draws (one key, the lane's share of M).

Removal order. Alg. 1 starts from the full set N and removes the players one by one in permutation
order R; the player removed at position k contributes V_{k-1} - V_k, where V_k is the value of the
players not yet removed (R[k+1:]). This is eq. 4 for the reversed permutation, so the estimate is
unbiased for any fixed number of permutations when truncation is off (``eta=None``).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.strategies.categorical import lane_sum

NEVER = 2 ** 30   # the step at which a non-removable player leaves


# ---- exact ---------------------------------------------------------------------------------------
def all_coalitions(n: int) -> np.ndarray:
    """``bool[2^n, n]``: row ``s`` holds player ``i`` iff bit ``i`` of ``s`` is set."""
    s = np.arange(2 ** n, dtype=np.int64)
    return ((s[:, None] >> np.arange(n)) & 1).astype(bool)


def exact_shapley(values: Callable, n: int, chunk: int = 4096) -> np.ndarray:
    """Exact Shapley values ``float64[n]`` by subset enumeration (eq. 3):
    ``phi_i = sum_{S not containing i} |S|! (n - |S| - 1)! / n! * (V(S + i) - V(S))``.

    ``values(masks bool[B, n]) -> float[B]`` is called on chunks of ``chunk`` coalitions (2^n
    evaluations in all); n <= 20."""
    if not 1 <= n <= 20:
        raise ValueError(f"exact Shapley values enumerate 2^n coalitions; n={n} must be in [1, 20]")
    masks = all_coalitions(n)
    v = np.concatenate([np.asarray(values(masks[i:i + chunk]), np.float64)
                        for i in range(0, len(masks), chunk)])
    if v.shape != (2 ** n,):
        raise ValueError(f"values(masks [B, n]) must return [B]; got {v.shape} for {2 ** n} coalitions")
    size = masks.sum(1)
    weight = np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
                       for s in range(n)])                       # eq. 3's coalition weights
    idx = np.arange(2 ** n)
    phi = np.zeros(n)
    for i in range(n):
        without = idx[~masks[:, i]]                              # S, i not in S
        phi[i] = np.sum(weight[size[without]] * (v[without | (1 << i)] - v[without]))
    return phi


# ---- Monte Carlo ---------------------------------------------------------------------------------
def permutations(key, n: int, total: int, lane=0, per_lane: Optional[int] = None) -> jax.Array:
    """``int32[per_lane, n]``: permutations ``lane * per_lane ...`` of the ``total`` permutations of
    ``range(n)`` drawn from ``key`` (one key gives the same M permutations however the lanes split
    them)."""
    per_lane = total if per_lane is None else per_lane
    keys = jax.random.split(key, total)
    mine = jax.lax.dynamic_slice_in_dim(keys, lane * per_lane, per_lane)
    return jax.vmap(lambda k: jax.random.permutation(k, n))(mine).astype(jnp.int32)


class MCResult(NamedTuple):
    contributions: jax.Array   # float[m, n]: player i's marginal contribution in permutation j (0 after truncation)
    removals: jax.Array        # int32: removals Alg. 1 makes (evaluations a sequential loop needs)
    evaluations: jax.Array     # int32: coalitions evaluated (whole chunks, the V(N)'s not counted)
    truncated: jax.Array       # bool[m]: the permutation stopped before its last player


def truncated_mc(values: Callable, perms: jax.Array, v_full: jax.Array, eta: Optional[float],
                 chunk: int = 8, removable: Optional[jax.Array] = None, vary=lambda t: t,
                 packed: bool = False) -> MCResult:
    """Alg. 1 (App. A.1) on the permutations ``perms int[m, n]`` of the players, compiled.

    ``values(masks bool[m, c, n]) -> float[m, c]`` values coalitions (row j is scored like
    permutation j: its own validation batch when the caller gives it one); ``v_full float[m]`` is
    V(N) per permutation. Permutation j removes ``perms[j, 0], perms[j, 1], ...``; the player at
    position k is removed only while ``V_{k-1} > eta * V(N)`` (Alg. 1's test; ``eta=None``: never
    truncate) and is ``removable`` (Alg. 1 skips the zero op: a non-removable player stays in the
    coalition and contributes 0, with no evaluation). ``vary`` marks the loop's initial carry as
    per-lane (``categorical.vary``) under ``shard_map``.

    Prefixes run ``chunk`` positions at a time for all m permutations (one batch of m * chunk
    masks); the ``lax.while_loop`` over chunks stops when every permutation has truncated. Values
    past a permutation's truncation point inside the last chunk it runs are computed and discarded.

    ``packed=True`` (rows interchangeable: ``values`` must not depend on the row, i.e. one
    validation batch for all permutations): each batch of m * chunk masks is shared among the
    permutations still running, each taking the next ``m * chunk // running`` steps of its own, so a
    truncated permutation's slots go to the others instead of idling; the batches then number about
    (sequential Alg. 1's removals) / (m * chunk) instead of (the longest run) / chunk.
    """
    perms = jnp.asarray(perms, jnp.int32)
    m, n = perms.shape
    c = max(1, min(int(chunk), n))
    n_steps, leave, player_at_step = _alg1_plan(perms, removable)
    v_full = jnp.asarray(v_full, jnp.float32)
    thresh = None if eta is None else eta * v_full

    def above(v):   # Alg. 1's test V > eta V(N), per permutation (row)
        return jnp.ones(v.shape, bool) if thresh is None else v > thresh[:, None]

    if packed:
        return _truncated_mc_packed(values, m, n, c, v_full, above, n_steps, leave, player_at_step, vary)
    n_chunks = -(-n // c)

    def cond(carry):
        b, _, alive, _, _, _ = carry
        return (b < n_chunks) & jnp.any(alive)

    def body(carry):
        b, v_prev, alive, contrib, runs_per_perm, evals = carry
        t = b * c + 1 + jnp.arange(c)                                # steps of this chunk, [c]
        masks = leave[:, None, :] > t[None, :, None]                 # still in after step t
        vals = jnp.asarray(values(masks), jnp.float32).reshape(m, c)
        before = jnp.concatenate([v_prev[:, None], vals[:, :-1]], 1)  # V_{k-1}
        real = t[None, :] <= n_steps[:, None]                        # a removable player exists
        # Alg. 1: step k runs iff V_{k'} > eta V(N) for every k' < k (a truncated V stays frozen)
        ok_before = jnp.concatenate([jnp.ones((m, 1), bool), above(vals)[:, :-1]], 1)
        runs = alive[:, None] & (jnp.cumprod(ok_before, 1) > 0) & real
        delta = jnp.where(runs, before - vals, 0.0)                  # eq. 4: V_{k-1} - V_k
        contrib = jax.lax.dynamic_update_slice_in_dim(contrib, delta, b * c, 1)
        alive = alive & jnp.all(above(vals) | ~real, 1) & (b * c + c < n_steps)
        return (b + 1, vals[:, -1], alive, contrib, runs_per_perm + jnp.sum(runs, 1, dtype=jnp.int32),
                evals + m * c)

    alive0 = above(v_full[:, None])[:, 0] & (n_steps > 0)            # Alg. 1: V_0 = V(N) > eta V(N)
    init = vary((jnp.zeros((), jnp.int32), v_full, alive0, jnp.zeros((m, n_chunks * c), jnp.float32),
                 jnp.zeros((m,), jnp.int32), jnp.zeros((), jnp.int32)))
    _, _, _, by_step, runs_per_perm, evals = jax.lax.while_loop(cond, body, init)
    # back to player order: the contribution of step k goes to player_at_step[k]
    valid = jnp.arange(n)[None, :] < n_steps[:, None]
    contributions = jnp.zeros((m, n), jnp.float32).at[jnp.arange(m)[:, None], player_at_step].add(
        jnp.where(valid, by_step[:, :n], 0.0))
    return MCResult(contributions, jnp.sum(runs_per_perm), evals, runs_per_perm < n_steps)


def _alg1_plan(perms, removable):
    """The removal schedule of Alg. 1 for ``perms int[m, n]``: removable players per permutation
    ``n_steps [m]``, the step at which each player leaves ``leave [m, n]`` (1-based; NEVER for a
    non-removable player) and the player removed at each step ``player_at_step [m, n]``."""
    m, n = perms.shape
    removable = jnp.ones((n,), bool) if removable is None else jnp.asarray(removable, bool)
    rem_in_perm = removable[perms]                                   # [m, n] in permutation order
    # the k-th removable player of a permutation leaves at step k (non-removable ones never)
    step_of_pos = jnp.where(rem_in_perm, jnp.cumsum(rem_in_perm, 1), NEVER)
    n_steps = jnp.sum(rem_in_perm, 1)
    leave = jnp.zeros((m, n), jnp.int32).at[jnp.arange(m)[:, None], perms].set(step_of_pos)
    # past n_steps: the non-removable players, in permutation order (dummies)
    player_at_step = jnp.take_along_axis(perms, jnp.argsort(step_of_pos, axis=1, stable=True), 1)
    return n_steps, leave, player_at_step


def _truncated_mc_packed(values, m, n, c, v_full, above, n_steps, leave, player_at_step, vary) -> MCResult:
    """:func:`truncated_mc` with ``packed=True`` (see there): same contributions and removals."""
    B = m * c                                                        # slots per batch
    ks = jnp.arange(n + 1)

    def body(carry):
        pos, alive, last, V, evals = carry          # pos: next step to run (1-based); V[:, k] = V_k
        n_alive = jnp.sum(alive.astype(jnp.int32))
        share = jnp.maximum(B // jnp.maximum(n_alive, 1), 1)          # steps per running permutation
        running = jnp.nonzero(alive, size=m, fill_value=0)[0]         # their ids, in order
        slot = jnp.arange(B)
        r = slot // share
        j = running[jnp.minimum(r, m - 1)]
        t = pos[j] + slot % share                                     # the step this slot runs
        ok = (r < n_alive) & (t <= n_steps[j])
        masks = leave[j] > t[:, None]                                 # still in after step t
        vals = jnp.asarray(values(masks.reshape(m, c, n)), jnp.float32).reshape(B)
        V = V.at[j, jnp.where(ok, t, n + 1)].set(vals, mode="drop")
        end = jnp.where(alive, jnp.minimum(pos + share, n_steps + 1), pos)   # steps [pos, end) ran
        fresh = (ks[None, :] >= pos[:, None]) & (ks[None, :] < end[:, None])
        # Alg. 1: after step k, stop once V_k <= eta V(N) (step k itself was made)
        stop = fresh & ~above(V)
        stopped = jnp.any(stop, 1)
        first = jnp.argmax(stop, 1)
        last = jnp.where(stopped, first, jnp.where(alive, end - 1, last))
        alive = alive & ~stopped & (end <= n_steps)
        return end, alive, last, V, evals + B

    alive0 = above(jnp.broadcast_to(v_full[:, None], (m, n + 1)))[:, 0] & (n_steps > 0)
    V0 = jnp.zeros((m, n + 1), jnp.float32).at[:, 0].set(v_full)
    init = vary((jnp.ones((m,), jnp.int32), alive0, jnp.zeros((m,), jnp.int32), V0,
                 jnp.zeros((), jnp.int32)))
    _, _, last, V, evals = jax.lax.while_loop(lambda cr: jnp.any(cr[1]), body, init)
    runs = ks[None, 1:] <= last[:, None]                             # step k ran (k = 1..n)
    by_step = jnp.where(runs, V[:, :-1] - V[:, 1:], 0.0)             # eq. 4: V_{k-1} - V_k
    contributions = jnp.zeros((m, n), jnp.float32).at[jnp.arange(m)[:, None], player_at_step].add(by_step)
    return MCResult(contributions, jnp.sum(last), evals, last < n_steps)


def moments(contributions: jax.Array, axis_name=None):
    """Mean and standard deviation (ddof=0, as ``np.std`` in the official code) of the
    contributions over every lane's permutations: ``(mean [n], std [n], M)``."""
    s, sq = jnp.sum(contributions, 0), jnp.sum(contributions ** 2, 0)
    s, sq, count = lane_sum((s, sq, jnp.asarray(contributions.shape[0], jnp.float32)), axis_name)
    mean = s / count
    return mean, jnp.sqrt(jnp.maximum(sq / count - mean ** 2, 0.0)), count

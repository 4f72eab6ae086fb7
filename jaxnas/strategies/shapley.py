"""Shapley-NAS (Xiao et al., "Shapley-NAS: Discovering Operation Contribution for Neural Architecture
Search", sec. 3.2-3.4, App. A.1-A.2): architecture weights moved along the operations' Shapley values.

Players: every valid (decision, op) entry of the ``[D, K]`` weights except the zero op (Alg. 1 skips
it: it is a null player, phi = 0), i.e. every (cell type, edge, op) of the dense supernet. V(S):
validation **accuracy** (``value='accuracy'``, the paper's metric; ``'reward'``: the evaluator's
reward) of the dense supernet whose mixing weights ``softmax(alpha)`` keep only the players in S; a
removed player's weight is set to 0, the others are not renormalised (``remove_players`` in the
official code, Euphoria16/Shapley-NAS ``train_search.py``).

One step (``needs="batch"``: ``reward_fn`` scores a batch of weight matrices, vmapped in bounded
chunks by the ``shared_weights`` evaluator):

1. Alg. 1: M = ``num_samples`` permutations with early truncation at ``eta`` (:mod:`jaxnas.strategies.shapley_values`,
   compiled: batches of M * ``prefix_chunk`` prefix coalitions, vmapped, shared among the lane's
   permutations still running (``packed``); a ``while_loop`` stops once every permutation has
   truncated).
   P lanes split the permutations (each runs ceil(M / P), drawn from its key) and the estimate is
   reduced across lanes (``psum`` of the contributions' sums), so every lane applies the same update.
2. phi = the mean over permutations (Alg. 1), or ``subtract_std=True``: mean - std (official code).
3. Alg. 2 with ``normalize``:
   - ``'l2'`` (paper, default): s_t = mu s_{t-1} + (1 - mu) phi / ||phi||_2 (eq. 7) and
     alpha_t = alpha_{t-1} + eps s_t / ||s_t||_2 (eq. 6 as Alg. 2 writes it; eq. 6's denominator is
     garbled in our copy), norms over all players of all cells;
   - ``'zscore'`` (official ``change_alpha``): phi z-scored per cell type over its valid entries
     (torch ``std``, ddof = 1), s_t = mu s_{t-1} + (1 - mu) z, alpha_t = alpha_{t-1} + eps s_t.
   mu = ``decay`` (0.8), eps = ``lr`` (0.1, sec. 4.1), applied by the categorical core's optimizer
   (plain SGD by default, so the step is exactly alpha + lr * direction); s_0 = 0 (Alg. 2; the
   official code starts it at 1e-3 N(0, 1)).
4. ``every``: an estimate every ``every`` strategy steps (1: Alg. 2, once per step; the official code
   estimates once per epoch: ``every`` = steps per epoch); the other steps leave the state as it is.

``fresh_batch=True`` (official code: ``next(iter(valid_queue))`` per permutation) splits the lane's
validation batch into one slice per permutation, each permutation (and its V(N)) scored on its own
slice; the default (paper) scores every permutation on the same batch, so V(N) is evaluated once.
Warm-up (weights only, Alg. 2 stage 1) is the engine's ``search.warmup_steps``. Final architecture:
argmax of alpha per edge (the DARTS genotype on DARTS cells), zero op excluded.

Metrics: ``evaluations`` (coalitions evaluated, whole chunks, plus V(N)), ``evaluations_full``
(|N| * m + V(N) evaluations: the same permutations without truncation), ``removals`` (the
evaluations a sequential loop of Alg. 1 needs), ``truncated`` (fraction of permutations that
truncated), ``estimated`` (1 on steps that estimated).
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.spaces.base import Space
from jaxnas.strategies import categorical as K
from jaxnas.strategies import shapley_values as SH
from jaxnas.strategies.base import Strategy, register

ZERO_OPS = ("none", "zero")
VALUES = ("accuracy", "reward")
NORMALIZE = ("l2", "zscore")


@flax.struct.dataclass
class ShapleyState:
    alpha: jax.Array       # float[D, K] architecture parameters (0 at masked choices)
    momentum: jax.Array    # float[D, K] s_t, the accumulated normalised Shapley values (eq. 7)
    opt_state: Any         # optax state of the alpha optimizer (plain SGD by default)
    phi: jax.Array         # float[D, K] the last Shapley estimate (0 for non-players)
    value: jax.Array       # float32 V(N) of the last estimate
    step: jax.Array        # int32 strategy steps taken


def players_of(space: Space, zero_op) -> np.ndarray:
    """Flat indices into ``[D * K]`` of the players: valid entries whose op is not ``zero_op``."""
    D, K_ = space.shape
    flat = []
    for d, ch in enumerate(space.choices):
        flat += [d * K_ + k for k, name in enumerate(ch) if zero_op is None or name != zero_op]
    return np.asarray(flat, np.int32)


def keep_weights(full: jax.Array, players: np.ndarray, masks: jax.Array) -> jax.Array:
    """``full [D, K]`` with player ``players[i]`` zeroed where ``masks[..., i]`` is False
    (``remove_players``: no renormalisation): ``[..., D, K]``."""
    D, K_ = full.shape
    keep = jnp.ones(masks.shape[:-1] + (D * K_,), full.dtype).at[..., players].set(masks.astype(full.dtype))
    return (keep * full.reshape(-1)).reshape(masks.shape[:-1] + (D, K_))


def _norm(x):
    n = jnp.sqrt(jnp.sum(x ** 2))
    return x / jnp.where(n > 0, n, 1.0)


def zscore_blocks(phi, mask, num_blocks: int):
    """The official ``change_alpha``: (phi - mean) / std per cell type over its valid entries
    (torch's unbiased std)."""
    D, K_ = phi.shape
    p = phi.reshape(num_blocks, D // num_blocks, K_)
    m = jnp.asarray(mask).reshape(p.shape)
    cnt = jnp.sum(m, (1, 2), keepdims=True)
    mean = jnp.sum(jnp.where(m, p, 0.0), (1, 2), keepdims=True) / cnt
    var = jnp.sum(jnp.where(m, (p - mean) ** 2, 0.0), (1, 2), keepdims=True) / jnp.maximum(cnt - 1, 1)
    std = jnp.sqrt(var)
    z = jnp.where(m, (p - mean) / jnp.where(std > 0, std, 1.0), 0.0)
    return z.reshape(D, K_)


def update_direction(phi, momentum, mask, decay, normalize, num_blocks):
    """Alg. 2: the new s_t and the step direction (alpha += lr * direction). See the module doc."""
    if normalize == "l2":
        s = decay * momentum + (1.0 - decay) * _norm(phi)           # eq. 7
        return s, _norm(s)                                          # eq. 6 / Alg. 2: eps s_t / ||s_t||
    s = decay * momentum + (1.0 - decay) * zscore_blocks(phi, mask, num_blocks)   # change_alpha
    return s, s


def _pick(value):
    def pick(rewards, aux):
        if value == "reward":
            return rewards
        if not isinstance(aux, dict) or "accuracy" not in aux:
            raise ValueError("strategy 'shapley': value='accuracy' (the paper's V(S)) needs the reward "
                             "function's aux to hold 'accuracy' (the shared_weights evaluator's does); "
                             "set strategy.value='reward' to use the evaluator's reward")
        return aux["accuracy"]
    return pick


def _lane_size(axis_name) -> int:
    return 1 if axis_name is None else int(jax.lax.axis_size(axis_name))


@register("shapley")
def make_shapley(space: Space, *, axis_name=None, total_steps=None, num_samples=10, eta=0.5,
                 value="accuracy", decay=0.8, normalize="l2", subtract_std=False, every=1,
                 fresh_batch=False, prefix_chunk=8, packed=True, zero_op="none", optimizer="sgd",
                 lr=0.1,
                 b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=None, lr_schedule="constant",
                 init_std=1e-3, derive_exclude=ZERO_OPS, final="argmax") -> Strategy:
    """Shapley-NAS (sec. 3.3-3.4, Alg. 1-2). Paper defaults: M = ``num_samples`` = 10, ``eta`` = 0.5,
    mu = ``decay`` = 0.8, eps = ``lr`` = 0.1 (sec. 4.1), ``normalize='l2'`` (eq. 6-7), mean over
    permutations, an estimate every step, one validation batch for all permutations. The official
    code's choices: ``subtract_std=True``, ``normalize='zscore'``, ``every`` = steps per epoch,
    ``fresh_batch=True``. ``eta=None`` turns truncation off. alpha starts at ``init_std`` N(0, 1)
    (DARTS's 1e-3); ``prefix_chunk``: prefix positions per permutation evaluated per loop iteration
    (memory of one batch: m * prefix_chunk weight matrices, further chunked by the evaluator's
    ``vmap_chunk``); ``packed``: the running permutations share each batch (``shapley.truncated_mc``;
    one validation batch for all permutations only, so ``fresh_batch=True`` runs them lock-step)."""
    name = "shapley"
    K.check_final(name, final, ("argmax",))
    decay = K.check_decay(name, decay)
    if value not in VALUES:
        raise ValueError(f"strategy {name!r}: value must be one of {VALUES}, got {value!r}")
    if normalize not in NORMALIZE:
        raise ValueError(f"strategy {name!r}: normalize must be one of {NORMALIZE}, got {normalize!r}")
    if eta is not None and not 0.0 <= eta <= 1.0:
        raise ValueError(f"strategy {name!r}: eta (Alg. 1's truncation threshold, a fraction of V(N)) "
                         f"must lie in [0, 1] or be None (no truncation), got {eta}")
    for k, v in (("num_samples", num_samples), ("every", every), ("prefix_chunk", prefix_chunk)):
        if int(v) < 1:
            raise ValueError(f"strategy {name!r}: {k} must be >= 1, got {v}")
    if init_std < 0:
        raise ValueError(f"strategy {name!r}: init_std must be >= 0, got {init_std}")
    mask = jnp.asarray(space.mask)
    players = players_of(space, zero_op)
    n = len(players)
    if n == 0:
        raise ValueError(f"strategy {name!r}: the space has no players (every valid op is the zero op "
                         f"{zero_op!r})")
    D, K_ = space.shape
    num_blocks = int(getattr(space, "num_blocks", 1))
    if D % num_blocks:
        num_blocks = 1
    optimizer_ = K.make_optimizer(name, optimizer=optimizer, lr=lr, b1=b1, b2=b2, eps=eps,
                                  weight_decay=weight_decay, clip=clip, lr_schedule=lr_schedule,
                                  total_steps=total_steps)
    pick = _pick(value)
    M, every, chunk = int(num_samples), int(every), int(prefix_chunk)

    def init(key):
        alpha = jnp.where(mask, init_std * jax.random.normal(key, space.shape, jnp.float32), 0.0)
        zeros = jnp.zeros(space.shape, jnp.float32)
        return ShapleyState(alpha=alpha, momentum=zeros, opt_state=optimizer_.init(alpha), phi=zeros,
                            value=jnp.zeros((), jnp.float32), step=jnp.zeros((), jnp.int32))

    def sample(state, key):
        return K.masked_argmax(state.alpha, mask), K.softmax(state.alpha, mask)

    def estimate(state, key, reward_fn, ctx):
        P = _lane_size(axis_name)
        m = -(-M // P)                                     # this lane's share of the permutations
        perms = SH.permutations(key, n, m * P, K.lane_index(axis_name), m)
        full = K.softmax(state.alpha, mask)                # the supernet's mixing weights
        if fresh_batch:
            if ctx is None:
                raise ValueError("strategy 'shapley': fresh_batch=True scores each permutation on its own "
                                 "slice of the validation batch and needs ctx=BatchContext (the search "
                                 "loop passes it)")
            B = jax.tree.leaves(ctx.batch)[0].shape[0]
            if B % m:
                raise ValueError(f"strategy 'shapley': fresh_batch=True splits the lane's validation batch "
                                 f"({B}) into {m} slices (one per permutation): make "
                                 f"search.val_batch_size per device a multiple of {m}")
            parts = jax.tree.map(lambda x: x.reshape((m, B // m) + x.shape[1:]), ctx.batch)
            score = lambda b, ws: pick(*ctx.reward_on(b)(ws))
            v_full = jax.vmap(lambda b: score(b, full[None])[0])(parts)
            values = lambda masks: jax.vmap(lambda b, mk: score(b, keep_weights(full, players, mk)))(
                parts, masks)
            n_full = m
        else:
            v_full = jnp.broadcast_to(pick(*reward_fn(full[None]))[0], (m,))
            values = lambda masks: pick(*reward_fn(
                keep_weights(full, players, masks).reshape((-1, D, K_)))).reshape(masks.shape[:2])
            n_full = 1
        res = SH.truncated_mc(values, perms, v_full, eta, chunk, vary=lambda t: K.vary(t, axis_name),
                              packed=bool(packed) and not fresh_batch)   # rows interchangeable
        ok_lane = K.finite(v_full) & K.finite(res.contributions)
        ok = K.lane_sum((~ok_lane).astype(jnp.float32), axis_name) == 0
        contributions = jnp.where(ok_lane, res.contributions, 0.0)
        mean, std, _ = SH.moments(contributions, axis_name)        # Alg. 1: phi = sum / M
        est = mean - std if subtract_std else mean                  # official: mean - std
        phi = jnp.zeros((D * K_,), jnp.float32).at[players].set(est).reshape(D, K_)
        s, direction = update_direction(phi, state.momentum, mask, decay, normalize, num_blocks)
        alpha, opt_state = K.ascend(optimizer_, state.alpha, state.opt_state, direction, ok,
                                    mask=mask, fill=0.0)
        v_mean = K.lane_mean(jnp.mean(v_full), axis_name)
        new = state.replace(alpha=alpha, opt_state=opt_state,
                            momentum=K.keep_if(ok, s, state.momentum),
                            phi=K.keep_if(ok, phi, state.phi),
                            value=jnp.where(ok, v_mean, state.value), step=state.step + 1)
        metrics = K.step_metrics(
            jnp.mean(v_full), ~ok, K.softmax(alpha, mask), res.evaluations + n_full,
            evaluations_full=n * m + n_full, removals=res.removals,
            truncated=jnp.mean(res.truncated.astype(jnp.float32)), estimated=1.0)
        return new, metrics

    def skip(state):
        metrics = K.step_metrics(state.value, False, K.softmax(state.alpha, mask), 0.0,
                                 evaluations_full=0.0, removals=0.0, truncated=0.0, estimated=0.0)
        return state.replace(step=state.step + 1), metrics

    def step(state, key, reward_fn, ctx=None):
        if every == 1:
            return estimate(state, key, reward_fn, ctx)
        per_lane = lambda out: (out[0], K.vary(out[1], axis_name))   # branch metrics: one type
        return jax.lax.cond(state.step % every == 0,
                            lambda st: per_lane(estimate(st, key, reward_fn, ctx)),
                            lambda st: per_lane(skip(st)), state)

    def derive(state):
        return K.derive(space, state.alpha, derive_exclude)

    return Strategy(name=name, space=space, mode="dense", init=init, sample=sample, step=step,
                    derive=derive, probs=lambda s: K.softmax(s.alpha, mask), needs="batch")

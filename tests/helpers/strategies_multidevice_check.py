"""Every registered strategy on P = 8 lanes: run with XLA_FLAGS=--xla_force_host_platform_device_count=8
(tests/test_strategies_multidevice.py does). Prints one JSON line {strategy: results}.

Per strategy (config from tests/test_conformance.py CASES, NAS-Bench-201 space 6 x 5, closed-form
quadratic reward, ``ctx`` for needs="unroll"), a jitted ``lax.scan`` of T steps per lane:

(a) under ``jax.shard_map`` (mesh of 8, in_specs P(), out_specs P(), check_vma=True), each device with
    ``fold_in(key, axis_index)``: every device holds the same state afterwards, bitwise;
(b) strategies that track the process best: best_reward is the reward of best_arch, re-evaluated;
(c) the same 8-lane chunk under ``jax.vmap(axis_name="data")`` on one device gives the same state;
(d) every lane with the same key but its own reward r_k (r_k linear in per-lane coefficients: a
    scale of the quadratic and a linear term): the state equals that of ONE lane whose reward is the
    mean of the 8 (so the lane estimate is the estimate of the mean reward; 8 lanes do not move 8x
    as far), with plain SGD (Adam is scale-free). For "unroll" the lanes' training losses differ too
    (the unrolled step uses their mean). Not for parsec and random: P copies of one sample are P
    samples to them.
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxnas.spaces.cells import NasBench201Space  # noqa: E402
from jaxnas.strategies import available, make  # noqa: E402
from jaxnas.strategies.base import SupernetContext  # noqa: E402
from tests.test_conformance import CASES, _target  # noqa: E402

AXIS, N, T = "data", 8, 10
TRACKS = ("reinforce", "advantage", "advantage_baseline", "parsec", "gdas", "random", "ma2ml_lite",
          "ma2ml")
NOT_LINEAR = ("parsec", "random", "ma2ml", "manas", "manas_ls")   # (d) does not apply (ma2ml: a learnt
# critic; manas: P lanes are P samples, credited as such)
# (d) with the same reward on every lane: a baseline initialised with the first step's mean reward
# makes that step's estimate mean_k (r_k - mean r) score = 0 up to rounding, which Adam (scale-free)
# turns into a full step; with one lane r - r is exactly 0
# shapley: the lanes split one estimate's permutations (lane i scores permutations i*m ... of the
# key's M on its own reward), so 8 lanes with the same key and reward equal one lane with all M
SAME_REWARD = ("reinforce", "advantage_baseline", "shapley", "ma2ml_lite")
assert jax.device_count() == N, jax.devices()
space = NasBench201Space.create()
target_w = space.one_hot(_target(space))
mesh = jax.make_mesh((N,), (AXIS,))


def lane_ctx(scale, lin):
    """Quadratic supernet stand-in of this lane (tests/test_conformance.py's, with the lane's
    coefficients): params p [D, K]; reward and training loss linear in (scale, lin)."""
    def train_loss(p, w):
        return scale * jnp.sum((p["p"] - w) ** 2) + jnp.sum(lin * w * p["p"])

    def val_reward(p, w):
        r = -jnp.sum((w - target_w) ** 2) - 0.125 * jnp.sum((p["p"] - target_w) ** 2)
        return scale * r + jnp.sum(lin * w), None
    return SupernetContext({"p": jnp.full(space.shape, 0.125, jnp.float32)}, train_loss, val_reward,
                           0.125)     # dyadic constants: the rewards at one-hot weights are exact


def chunk(s, state, key, scale, lin):
    ctx = lane_ctx(scale, lin)
    reward_fn = lambda w: ctx.val_reward(ctx.params, w)
    if s.needs == "batch":                       # weights [N, D, K] -> rewards [N]
        reward_fn = jax.vmap(reward_fn)
    c = ctx if s.needs == "unroll" else None

    def body(st, k):
        return s.step(st, k, reward_fn, ctx=c)
    return jax.lax.scan(body, state, jax.random.split(key, T))


def lane_key(key, fold):
    return jax.random.fold_in(key, jax.lax.axis_index(AXIS) * fold)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def compare(a, b, skip=()):
    """ints equal; floats: max |a - b| and max relative difference; bitwise flag."""
    out = {"ints_equal": True, "bitwise": True, "max_abs": 0.0, "max_rel": 0.0}
    fa, fb = jax.tree_util.tree_flatten_with_path(jax.device_get(a))[0], jax.tree.leaves(jax.device_get(b))
    for (path, x), y in zip(fa, fb):
        if any(name in jax.tree_util.keystr(path) for name in skip):
            continue
        x, y = np.asarray(x), np.asarray(y)
        out["bitwise"] &= bool(np.array_equal(x, y, equal_nan=True))
        if np.issubdtype(x.dtype, np.floating):
            fin = np.isfinite(x) & np.isfinite(y)
            if fin.any():
                d = np.abs(x[fin].astype(np.float64) - y[fin])
                out["max_abs"] = max(out["max_abs"], float(d.max()))
                rel = d / np.maximum(np.abs(y[fin]), 1e-6)
                out["max_rel"] = max(out["max_rel"], float(rel.max()))
            out["allclose"] = out.get("allclose", True) and bool(
                np.allclose(x, y, rtol=1e-6, atol=1e-6, equal_nan=True))
        else:
            out["ints_equal"] &= bool(np.array_equal(x, y))
    out.setdefault("allclose", True)
    return out


results = {}
key = jax.random.key(7)
ones, zeros = jnp.ones((N,), jnp.float32), jnp.zeros((N,) + space.shape, jnp.float32)
# dyadic lane coefficients: lane sums and means are exact, so with one sample on every lane the
# baselines' (r_k - b) sum exactly to 0, as r - b does on one lane (Adam would amplify an ulp of
# rounding into a full step)
lane_scale = (2 * jnp.arange(N, dtype=jnp.float32) + 25) / 32               # 1 +- 7/32, mean 1
lane_lin = jnp.round(2.4 * jax.random.normal(jax.random.key(11), (N,) + space.shape)) / 8
per_lane = lambda x: jax.device_put(x, jax.sharding.NamedSharding(mesh, P(AXIS)))
ones8, zeros8 = per_lane(ones), per_lane(zeros)
for name, config, _ in CASES:
    t0 = time.time()
    cfg = config(space) if callable(config) else config
    if "q_offset" in cfg:   # lane scales up to 1.22 and linear terms: keep MnasNet's Q > 0 here too
        cfg = {**cfg, "q_offset": 2 * cfg["q_offset"] + 8}
    s = make(name, space, axis_name=AXIS, total_steps=T, **cfg)
    state0 = s.init(jax.random.key(0))
    add_lane = lambda m: jax.tree.map(lambda x: x[:, None], m)

    def sharded(s):
        return jax.jit(jax.shard_map(
            lambda st, k, fold, sc, li: (lambda o: (o[0], add_lane(o[1])))(
                chunk(s, st, lane_key(k, fold), sc[0], li[0])),
            mesh=mesh, in_specs=(P(), P(), P(), P(AXIS), P(AXIS)), out_specs=(P(), P(None, AXIS)),
            check_vma=True))
    f8 = sharded(s)
    fv = jax.jit(jax.vmap(lambda st, k, fold, sc, li: chunk(s, st, lane_key(k, fold), sc, li),
                          in_axes=(None, None, None, 0, 0), out_axes=(None, 1), axis_name=AXIS))
    with jax.set_mesh(mesh):
        s8, m8 = f8(state0, key, jnp.int32(1), ones8, zeros8)
        jax.block_until_ready(s8)
    r = {}
    # (a) every device holds the same state, bitwise
    r["shards"] = min(len(x.addressable_shards) for x in jax.tree.leaves(s8))
    r["replicated_bitwise"] = all(
        all(np.array_equal(np.asarray(sh.data), np.asarray(x.addressable_shards[0].data), equal_nan=True)
            for sh in x.addressable_shards) for x in jax.tree.leaves(s8))
    r["metrics_finite"] = all(bool(np.all(np.isfinite(np.asarray(v, np.float64))))
                              for v in jax.tree.leaves(m8))
    r["metric_keys"] = sorted(m8)
    r["evaluations_per_step"] = float(np.mean(np.sum(np.asarray(m8["evaluations"]), 1)))
    r["lanes_differ"] = bool(np.ptp(np.asarray(m8["reward"])[-1]) > 0) if name not in (
        "tabnas", "tunas_abs", "mnas_soft", "mnas_hard") else None
    # (b) best_reward is the reward of best_arch
    st = jax.device_get(s8)
    reward = jax.jit(lambda a: lane_ctx(1.0, 0.0).val_reward(lane_ctx(1.0, 0.0).params,
                                                            space.one_hot(a))[0])
    if name == "random":
        r["best_consistent"] = bool(np.allclose(jax.vmap(reward)(st.archs), st.rewards, rtol=1e-6))
        r["best_finite"] = bool(np.isfinite(st.rewards[0]))
    elif name in TRACKS:
        r["best_consistent"] = bool(np.allclose(reward(st.best_arch), st.best_reward, rtol=1e-6))
        r["best_finite"] = bool(np.isfinite(st.best_reward))
        # the best over all lanes and steps (lane rewards are the same function here)
        r["best_is_max_seen"] = bool(np.isclose(np.max(np.asarray(m8["reward"])), st.best_reward))
    # (c) the same 8-lane chunk under vmap on one device
    sv, mv = fv(state0, key, jnp.int32(1), ones, zeros)
    r["vmap"] = compare(sv, s8)
    r["vmap_metrics"] = compare(mv, m8)
    # (d) same key on every lane, lane-specific linear rewards vs one lane with the mean reward
    # (the process best is the best lane's, and TabNAS's skip counters count the P samples)
    skip = ("best_arch", "best_reward", "skipped_infeasible", "skipped_zero_pv")
    if name not in NOT_LINEAR:
        # plain SGD without clipping: Adam and clipping would hide a wrong scale (8x the gradient)
        sgd = {**cfg, "optimizer": "sgd", "clip": None}
        s_sgd = make(name, space, axis_name=AXIS, total_steps=T, **sgd)
        sc, li = (ones, zeros) if name in SAME_REWARD else (lane_scale, lane_lin)
        state0 = s_sgd.init(jax.random.key(0))
        with jax.set_mesh(mesh):
            sd, _ = sharded(s_sgd)(state0, key, jnp.int32(0), per_lane(sc), per_lane(li))
        s1 = make(name, space, axis_name=None, total_steps=T, **sgd)
        ref, _ = jax.jit(lambda st, k: chunk(s1, st, jax.random.fold_in(k, 0),
                                             jnp.mean(sc), jnp.mean(li, 0)))(state0, key)
        r["mean_reward"] = compare(sd, ref, skip=skip)
        r["same_reward_per_lane"] = name in SAME_REWARD
        # the state moved: a trivially unchanged state would pass the comparison
        r["moved"] = not compare(ref, state0, skip=skip + ("step",))["bitwise"]
    r["seconds"] = round(time.time() - t0, 1)
    results[name] = r
    print(name, json.dumps(r), file=sys.stderr, flush=True)

assert sorted(results) == available(), (sorted(results), available())
print(json.dumps(results))

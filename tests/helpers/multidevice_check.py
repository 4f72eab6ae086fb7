"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_multidevice.py does).

Prints one JSON line of facts the test asserts on:
- shared weights (reinforce, advantage): no mesh == 1-device mesh (to ulps); 8 devices replicated bitwise;
- TabNAS through build() on 8 devices (its App. B.2.2 rule);
- the 8-device weight step == the global-batch weight step;
- every reward-only strategy on a table: 8 devices == 8 vmapped lanes on one device (same samples),
  replicated bitwise, best_reward == the table value of best_arch, queries counted.
"""
import gzip
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxnas.config.experiment import build  # noqa: E402
from jaxnas.config.settings import resolve  # noqa: E402
from jaxnas.data import BatchSampler, gather  # noqa: E402
from jaxnas.engine.lanes import AXIS, make_mesh  # noqa: E402
from jaxnas.engine.search import state_digest  # noqa: E402
from jaxnas.spaces.cells import NasBench201Space  # noqa: E402
from jaxnas.strategies import available, make  # noqa: E402
from tests.helpers.tiny import tiny_config  # noqa: E402

assert jax.device_count() == 8, jax.devices()


def raw(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def replicated(state) -> bool:
    """Every device holds the same bits of every leaf."""
    return all(all(np.array_equal(np.asarray(raw(s.data)), np.asarray(raw(leaf.addressable_shards[0].data)))
                   for s in leaf.addressable_shards)
               for leaf in jax.tree.leaves(state))


def max_diff(a, b) -> float:
    return max((float(np.max(np.abs(np.asarray(raw(x), np.float64) - np.asarray(raw(y), np.float64))))
                for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)) if np.size(x)), default=0.0)


def max_abs(a) -> float:
    """The largest magnitude among the float leaves of ``a`` (the scale of their rounding)."""
    return max((float(np.max(np.abs(np.asarray(x, np.float64)))) for x in jax.tree.leaves(a)
                if np.size(x) and jnp.issubdtype(np.asarray(raw(x)).dtype, jnp.floating)), default=0.0)


def with_lanes(cfg_over, mesh=None, samples=1, base=None):
    """The experiment of ``base`` built for ``mesh``/``samples`` lanes."""
    exp = build(resolve(base, cfg_over), lanes=(mesh, samples))
    return exp, exp.search


out = {}
# ---- shared weights ------------------------------------------------------------------------------
for name in ("reinforce", "advantage"):
    base = tiny_config(name)
    over = ["search.batch_size=64"]
    exp, plain = with_lanes(over, base=base)
    _, one = with_lanes(over, make_mesh(1), 1, base=base)
    _, eight = with_lanes(over, make_mesh(8), 8, base=base)
    d = exp.data
    tb = gather((d.x_train, d.y_train), BatchSampler(len(d.y_train), 64, 0).chunk(0, 10))
    vb = gather((d.x_val, d.y_val), BatchSampler(len(d.y_val), 64, 1).chunk(0, 10))
    key = jax.random.key(3)
    s_plain, m_plain = plain.run_chunk(plain.init(key), tb, vb)
    s_one, _ = one.run_chunk(one.init(key), tb, vb)
    s_eight, m_eight = eight.run_chunk(eight.init(key), tb, vb)
    out[name] = {
        "one_device_max_diff": max_diff(s_plain, jax.device_get(s_one)),
        "eight_devices_replicated": replicated(s_eight),
        "eight_shards": int(len(jax.tree.leaves(s_eight)[0].addressable_shards)),
        "eight_metrics_finite": bool(np.isfinite(np.asarray(m_eight["weights/train_loss"])).all()),
        "eight_differs_from_plain": state_digest(s_plain) != state_digest(jax.device_get(s_eight)),
        "eight_samples_logged": list(np.shape(m_eight["sample/arch"])),
        "eight_evaluations": int(s_eight.evaluations),
    }

# ---- TabNAS through build() on 8 devices ---------------------------------------------------------
cfg = tiny_config("reinforce", steps=20)
cfg["strategy"] = {"name": "tabnas", "budget": 500, "warmup_frac": 0.0, "num_mc_samples": 256}
exp = build(resolve(cfg, ["search.batch_size=64", "search.devices=8"]))
assert exp.search.mesh is not None and exp.search.mesh.size == 8
d = exp.data
tb = gather((d.x_train, d.y_train), BatchSampler(len(d.y_train), 64, 0).chunk(0, 20))
vb = gather((d.x_val, d.y_val), BatchSampler(len(d.y_val), 64, 1).chunk(0, 20))
s8, m8 = exp.search.run_chunk(exp.search.init(jax.random.key(0)), tb, vb)
out["tabnas"] = {
    "replicated": replicated(s8.strategy),
    "finite": bool(np.isfinite(np.asarray(m8["weights/train_loss"])).all()),
    "policy_moved": bool(np.ptp(np.asarray(exp.strategy.probs(jax.device_get(s8.strategy)))) > 0),
    "pv_logged": bool("strategy/pv" in m8 and np.all(np.asarray(m8["strategy/pv"]) >= 0)),
}

# ---- the 8-device weight step equals the global-batch weight step --------------------------------
base = tiny_config("reinforce")
over = ["search.batch_size=64", "optimizer.name='sgd'", "optimizer.momentum=0.0", "optimizer.lr=1.0"]
exp, one = with_lanes(over, base=base)
_, eight = with_lanes(over, make_mesh(8), 8, base=base)
state = one.evaluator.init(jax.random.key(0))
weights = exp.space.one_hot(jnp.array([1, 2]))
batch = (jnp.asarray(exp.data.x_train[:64]), jnp.asarray(exp.data.y_train[:64]))
s1, m1 = jax.jit(lambda s, b: one.evaluator.weight_step(s, (), weights, b, None))(state, batch)
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

with jax.set_mesh(eight.mesh):
    f = jax.jit(jax.shard_map(lambda s, b: eight.evaluator.weight_step(s, (), weights, b, None),
                              mesh=eight.mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P())))
    s8, m8 = f(eight.replicate(state), jax.device_put(batch, NamedSharding(eight.mesh, P(AXIS))))
scale = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(state.params)))
out["grad"] = {"loss_diff": abs(float(m1["train_loss"]) - float(m8["train_loss"])),
               "update_max_abs_diff": max_diff(s1.params, jax.device_get(s8.params)), "update_scale": scale}

# ---- every reward-only strategy on a table: 8 devices == 8 vmapped lanes ------------------------
space = NasBench201Space.create()
archs = space.all_archs()
rng = np.random.default_rng(0)
tmp = Path(tempfile.mkdtemp())
table_path = tmp / "table.csv.gz"
vals = rng.uniform(10, 90, (len(archs), 4)).round(4)
with gzip.open(table_path, "wt") as f:
    f.write("index,arch,cifar10_valid_12ep,cifar10_test,cifar100_test,imagenet16_test\n")
    for i, (a, v) in enumerate(zip(archs, vals)):
        f.write(f"{i},{space.encode(a)}," + ",".join(map(str, v)) + "\n")
budget = float(np.median(np.asarray(space.param_count(archs))))
OPTIONS = {"tabnas": {"budget": budget, "num_mc_samples": 512, "warmup_frac": 0.0},
           "tunas_abs": {"target": budget, "beta": -1.0, "warmup_frac": 0.0},
           "mnas_soft": {"target": budget, "beta": -0.07, "warmup_frac": 0.0},
           "mnas_hard": {"target": budget, "beta": -1.0, "warmup_frac": 0.0},
           "random": {}, "manas": {}, "manas_ls": {}}   # MANAS: App. B.1 rates, Zipf has none
reward_only = [n for n in available()
               if make(n, space, **OPTIONS.get(n, {"lr": 0.05}), total_steps=10).needs == "reward"]
out["table"] = {}
for name in reward_only:
    base = {"space": {"name": "nb201"}, "evaluator": {"name": "table", "path": str(table_path)},
            "strategy": {"name": name, **OPTIONS.get(name, {"lr": 0.05})},
            "search": {"steps": 12, "chunk": 12, "checkpoint_every": 12}}
    exp, lanes = with_lanes([], None, 8, base=base)
    _, dev8 = with_lanes([], make_mesh(8), 8, base=base)
    key = jax.random.key(7)
    sv, mv = lanes.run_chunk(lanes.init(key), kind="strategy", length=12)
    sd, md = dev8.run_chunk(dev8.init(key), kind="strategy", length=12)
    sd_host = jax.device_get(sd)
    ints_equal = all(np.array_equal(np.asarray(raw(a)), np.asarray(raw(b)))
                     for a, b in zip(jax.tree.leaves(sv), jax.tree.leaves(sd_host))
                     if not jnp.issubdtype(np.asarray(raw(a)).dtype, jnp.floating))
    r = {"replicated": replicated(sd), "ints_equal": ints_equal, "float_max_diff": max_diff(sv, sd_host),
         "float_scale": max_abs(sv),
         "bitwise": state_digest(sv) == state_digest(sd_host),
         "samples_equal": bool(np.array_equal(np.asarray(mv["sample/arch"]), np.asarray(md["sample/arch"]))),
         "derive_equal": bool(np.array_equal(np.asarray(exp.strategy.derive(sv.strategy)),
                                             np.asarray(exp.strategy.derive(sd_host.strategy)))),
         "evaluations": int(sd.evaluations)}
    st = sd_host.strategy
    best_arch = getattr(st, "best_arch", None)
    if best_arch is None and hasattr(st, "archs"):          # random search's buffer
        best_arch, best_reward = st.archs[0], st.rewards[0]
    elif best_arch is not None:
        best_reward = st.best_reward
    if best_arch is not None:
        again, _ = lanes.evaluator.reward_fn({}, lanes.inputs, None, None)(space.one_hot(jnp.asarray(best_arch)))
        r["best_reward"] = float(best_reward)
        r["best_reward_again"] = float(again)
        r["best_is_max_seen"] = bool(np.isclose(float(best_reward), np.max(np.asarray(md["strategy/reward"]))) or
                                     float(best_reward) >= np.max(np.asarray(md["strategy/reward"])))
    out["table"][name] = r
print(json.dumps(out))

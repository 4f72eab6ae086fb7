"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_multidevice.py does)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxnas.build import build  # noqa: E402
from jaxnas.config import resolve  # noqa: E402
from jaxnas.data import BatchSampler, gather  # noqa: E402
from jaxnas.runner import state_digest  # noqa: E402
from jaxnas.search import Search, make_mesh  # noqa: E402
from tests.helpers.tiny import tiny_config  # noqa: E402

assert jax.device_count() == 8, jax.devices()
out = {}
for strategy in ("reinforce", "tabnas_like"):
    name = "reinforce" if strategy == "reinforce" else "advantage"
    exp = build(resolve(tiny_config(name), ["search.batch_size=64"]))
    d = exp.data
    tb = gather((d.x_train, d.y_train), BatchSampler(len(d.y_train), 64, 0).chunk(0, 10))
    vb = gather((d.x_val, d.y_val), BatchSampler(len(d.y_val), 64, 1).chunk(0, 10))
    plain = exp.search
    one = Search(plain.task, plain.strategy, plain.optimizer, make_mesh(1))
    eight = Search(plain.task, plain.strategy, plain.optimizer, make_mesh(8))
    key = jax.random.key(3)
    s_plain, m_plain = plain.run_chunk(plain.init(key), tb, vb)
    s_one, _ = one.run_chunk(one.init(key), tb, vb)
    s_eight, m_eight = eight.run_chunk(eight.init(key), tb, vb)
    replicated = all(
        all(np.array_equal(np.asarray(jax.random.key_data(s.data) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else s.data),
                           np.asarray(jax.random.key_data(leaf.addressable_shards[0].data) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf.addressable_shards[0].data))
            for s in leaf.addressable_shards)
        for leaf in jax.tree.leaves(s_eight))
    out[name] = {
        "one_device_equals_plain": state_digest(s_plain) == state_digest(jax.device_get(s_one)),
        "one_device_max_diff": max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                                   for a, b in zip(jax.tree.leaves((s_plain.params, s_plain.strategy_state)),
                                                   jax.tree.leaves(jax.device_get((s_one.params, s_one.strategy_state))))),
        "eight_devices_replicated": bool(replicated),
        "eight_shards": int(len(jax.tree.leaves(s_eight)[0].addressable_shards)),
        "eight_metrics_finite": bool(np.isfinite(np.asarray(m_eight["train_loss"])).all()),
        "eight_differs_from_plain": state_digest(s_plain) != state_digest(jax.device_get(s_eight)),
    }

# TabNAS through build() with 8 devices: its own device rule (App. B.2.2) via axis_name
cfg = tiny_config("reinforce", steps=20)
cfg["strategy"] = {"name": "tabnas", "budget": 500, "total_steps": 20, "warmup_frac": 0.0, "num_mc_samples": 256}
exp = build(resolve(cfg, ["search.batch_size=64", "search.devices=8"]))
assert exp.search.mesh is not None and exp.search.mesh.size == 8
d = exp.data
tb = gather((d.x_train, d.y_train), BatchSampler(len(d.y_train), 64, 0).chunk(0, 20))
vb = gather((d.x_val, d.y_val), BatchSampler(len(d.y_val), 64, 1).chunk(0, 20))
s8, m8 = exp.search.run_chunk(exp.search.init(jax.random.key(0)), tb, vb)
logits = s8.strategy_state
out["tabnas"] = {
    "replicated": all(all(np.array_equal(np.asarray(sh.data), np.asarray(leaf.addressable_shards[0].data))
                          for sh in leaf.addressable_shards)
                      for leaf in jax.tree.leaves(s8.strategy_state)
                      if not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)),
    "finite": bool(np.isfinite(np.asarray(m8["train_loss"])).all()),
    "policy_moved": bool(np.ptp(np.asarray(exp.search.strategy.probs(jax.device_get(s8.strategy_state)))) > 0),
}

# the 8-device weight gradient equals the gradient of the mean loss over the global batch
exp = build(resolve(tiny_config("reinforce"), ["search.batch_size=64"]))
params = exp.task.init_params(jax.random.key(0))
weights = exp.space.one_hot(jnp.array([1, 2]))
batch = (jnp.asarray(exp.data.x_train[:64]), jnp.asarray(exp.data.y_train[:64]))
l1, g1 = exp.search.loss_grad(params, weights, batch)
eight = Search(exp.task, exp.search.strategy, exp.search.optimizer, make_mesh(8))
l8, g8 = eight.loss_grad(params, weights, batch)
diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(jax.device_get(g8))))
scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g1))
out["grad"] = {"loss_diff": abs(float(l1) - float(l8)), "grad_max_abs_diff": diff, "grad_scale": scale}
print(json.dumps(out))

"""The ``standalone`` evaluator (jaxnas/evaluators/standalone.py): candidates trained from scratch,
one per search lane, in one compiled program."""
import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.data import load_tabular
from jaxnas.evaluators.base import get
from jaxnas.evaluators.standalone import DEFAULTS, StandaloneEvaluator
from jaxnas.spaces import MLPSpace
from jaxnas.training import standalone as S

REPO = Path(__file__).resolve().parents[1]
OPTS = {"epochs": 2, "batch_size": 64, "lr": 3e-3, "max_steps": 12}   # 8 steps/epoch: stops mid-epoch


@pytest.fixture(scope="module")
def setup():
    data = load_tabular("connect4", max_train=512, val_fraction=0.02, seed=0)
    space = MLPSpace.create(2, data.num_inputs, 3, widths=(4, 8, 16))   # Connect-4 has 3 classes
    return data, space


def _make(setup, **opts):
    data, space = setup
    return get("standalone")({**OPTS, **opts}, cfg={}, space=space, data=data, task=None, axis_name=None)


def _single(ev):
    """jit(reward_fn(weights)) of one lane: (inputs, weights[D, K], key) -> (reward, aux)."""
    state = ev.init(jax.random.key(0))
    return jax.jit(lambda inputs, w, k: ev.reward_fn(state, inputs, None, k)(w))


def test_reward_is_train_one(setup):
    data, space = setup
    ev = _make(setup)
    assert isinstance(ev, StandaloneEvaluator) and ev.name == "standalone"
    assert (ev.has_weights, ev.differentiable, ev.needs_batches) == (False, False, False)
    assert ev.max_lane_batch >= 1 and ev.total_steps == 12
    assert ev.lane_mode == ("sequential" if jax.default_backend() == "cpu" else "vmap")   # "auto"
    inputs = ev.inputs()
    chex.assert_shape(inputs["x_train"], (512, 42))
    chex.assert_type([inputs["x_train"], inputs["y_train"]], [jnp.float32, jnp.int32])
    one = _single(ev)
    arch = np.array([1, 2])
    r, aux = one(inputs, space.one_hot(jnp.asarray(arch)), jax.random.key(3))
    ref = S.train_one(data, space, arch, seed=3, cfg=ev.train_cfg)
    assert ref["total_steps"] == 12
    np.testing.assert_allclose(r, -ref["val_loss"], rtol=1e-5, atol=1e-5)
    for k in ("val_loss", "val_accuracy", "val_balanced_error", "train_loss"):
        np.testing.assert_allclose(aux[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)
    # same key -> same result; another key -> another run
    r2, _ = one(inputs, space.one_hot(jnp.asarray(arch)), jax.random.key(3))
    chex.assert_trees_all_equal(r, r2)
    r3, _ = one(inputs, space.one_hot(jnp.asarray(arch)), jax.random.key(4))
    assert float(r3) != float(r)
    assert ev.init(jax.random.key(0)) == {}
    with pytest.raises(ValueError, match="no shared"):
        ev.weight_step(None, None, None, None, None)
    with pytest.raises(ValueError, match="no shared"):
        ev.context(None, None, None, None, None)


def test_lanes_vmap_equals_single_calls(setup):
    data, space = setup
    ev = _make(setup, reward="accuracy", lane_mode="vmap")      # batched ops over the lanes
    assert ev.lane_mode == "vmap"
    inputs, state = ev.inputs(), ev.init(jax.random.key(0))
    archs = jnp.asarray([[0, 0], [2, 1], [1, 2], [2, 2]], jnp.int32)
    weights = jax.vmap(space.one_hot)(archs)                             # [4, D, K]
    keys = jax.random.split(jax.random.key(7), 4)

    @jax.jit
    def lanes(inputs, weights, keys):
        return jax.vmap(lambda w, k: ev.reward_fn(state, inputs, None, k)(w), axis_name="data")(weights, keys)
    r, aux = lanes(inputs, weights, keys)
    chex.assert_shape(r, (4,))
    chex.assert_trees_all_close(r, aux["val_accuracy"], rtol=0, atol=0)   # reward="accuracy"
    one = _single(ev)
    singles = [one(inputs, weights[i], keys[i]) for i in range(4)]
    want = jax.tree.map(lambda *xs: jnp.stack(xs), *singles)
    chex.assert_trees_all_close((r, aux), want, rtol=1e-5, atol=1e-5)
    assert len(set(np.asarray(aux["val_loss"]).tolist())) == 4            # independent candidates


def test_weights_vmap_inside_lanes_equals_single_calls(setup):
    data, space = setup
    ev = _make(setup, reward="neg_balanced_error", lane_mode="sequential")   # a loop in one program
    assert ev.lane_mode == "sequential"
    inputs, state = ev.inputs(), ev.init(jax.random.key(0))
    archs = jnp.asarray([[[0, 1], [2, 2], [1, 0]], [[2, 0], [0, 2], [1, 1]]], jnp.int32)   # [lanes, N, D]
    weights = jax.vmap(jax.vmap(space.one_hot))(archs)
    keys = jax.random.split(jax.random.key(1), 2)

    @jax.jit
    def lanes(inputs, weights, keys):
        def lane(ws, k):              # a strategy scoring a batch of weights with its lane's reward_fn
            return jax.vmap(ev.reward_fn(state, inputs, None, k))(ws)
        return jax.vmap(lane, axis_name="data")(weights, keys)
    r, aux = lanes(inputs, weights, keys)
    chex.assert_shape(r, (2, 3))
    chex.assert_trees_all_close(r, -aux["val_balanced_error"], rtol=0, atol=0)
    one = _single(ev)
    for lane in range(2):
        for n in range(3):
            rn, auxn = one(inputs, weights[lane, n], keys[lane])
            chex.assert_trees_all_close((r[lane, n], jax.tree.map(lambda a: a[lane, n], aux)), (rn, auxn),
                                        rtol=1e-5, atol=1e-5)


SHARD_CHECK = r"""
import json, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from jaxnas.data import load_tabular
from jaxnas.evaluators.base import get
from jaxnas.spaces import MLPSpace
data = load_tabular("connect4", max_train=256, val_fraction=0.01, seed=0)
space = MLPSpace.create(2, data.num_inputs, 3, widths=(4, 8))
ev = get("standalone")({"epochs": 1, "batch_size": 64, "max_steps": 3}, cfg={}, space=space, data=data,
                       task=None, axis_name="data")
inputs, state = ev.inputs(), ev.init(jax.random.key(0))
mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
w = jax.vmap(space.one_hot)(jnp.asarray([[0, 1], [1, 0]]))
keys = jax.random.key_data(jax.random.split(jax.random.key(5), 2))
def lane(inputs, w, k):
    r, aux = ev.reward_fn(state, inputs, None, jax.random.wrap_key_data(k[0]))(w[0])
    return r[None], jax.tree.map(lambda a: a[None], aux)
f = jax.jit(jax.shard_map(lane, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P("data")))
r, aux = f(inputs, w, keys)
one = jax.jit(lambda inputs, w, k: ev.reward_fn(state, inputs, None, k)(w)[0])
want = [float(one(inputs, w[i], jax.random.wrap_key_data(keys[i]))) for i in range(2)]
print(json.dumps({"devices": len(jax.devices()), "shards": len(r.sharding.device_set),
                  "max_diff": float(np.max(np.abs(np.asarray(r) - np.asarray(want))))}))
"""


def test_shard_map_one_candidate_per_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", SHARD_CHECK], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["shards"] == 2, out
    assert out["max_diff"] < 1e-5, out


def test_errors(setup):
    data, space = setup
    with pytest.raises(ValueError, match="unknown option.*'epoch'"):
        _make(setup, epoch=3)
    with pytest.raises(ValueError, match="reward must be one of"):
        _make(setup, reward="loss")
    with pytest.raises(ValueError, match="lane_mode"):
        _make(setup, lane_mode="pmap")
    with pytest.raises(ValueError, match="schedule"):
        _make(setup, schedule="step")
    with pytest.raises(ValueError, match="eps"):
        _make(setup, eps=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        _make(setup, batch_size=4096)
    with pytest.raises(ValueError, match="outputs"):
        get("standalone")(OPTS, cfg={}, space=MLPSpace.create(2, data.num_inputs, 1, (4, 8)), data=data,
                          task=None, axis_name=None)
    from jaxnas.spaces.cells import NasBench201Space
    with pytest.raises(ValueError, match="trains MLPs.*or image pipelines.*NasBench201Space"):
        get("standalone")(OPTS, cfg={}, space=NasBench201Space.create(), data=data, task=None, axis_name=None)
    assert set(OPTS) <= set(DEFAULTS) and DEFAULTS["eps"] == 1e-3 and DEFAULTS["reward"] == "neg_loss"


def test_result_retrains_derived_arch(setup):
    data, space = setup
    ev = _make(setup, result_seed=2)
    out = ev.result(ev.init(jax.random.key(0)), "8-16")
    ref = S.train_one(data, space, "8-16", seed=2, cfg=ev.train_cfg)
    for k in ("val_loss", "val_accuracy", "val_balanced_error"):
        np.testing.assert_allclose(out[f"standalone_{k}"], ref[k], rtol=1e-6, err_msg=k)
    assert out["standalone_steps"] == 12 and out["standalone_seed"] == 2

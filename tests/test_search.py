"""The search engine: compiled loop, resume after a real kill, config and data errors, NaN stop."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from jaxnas.config.experiment import build
from jaxnas.config.settings import load_config, resolve
from jaxnas.data import DataNotFoundError
from jaxnas.engine.search import NonFiniteError
from jaxnas.runner import run_search
from tests.helpers.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


def test_search_runs_and_logs(tmp_path):
    cfg = resolve(tiny_config("reinforce", steps=30, warmup_steps=10))
    result = run_search(cfg, tmp_path, progress=None)
    assert result["finished"] and result["step"] == 30
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(30))
    assert all(r["phase"] == "weights" for r in rows[:10]) and all(r["phase"] == "both" for r in rows[10:])
    assert "strategy/reward" not in rows[0] and "strategy/reward" in rows[10]
    chex.assert_shape(np.array([r["policy/entropy"] for r in rows]), (30, 2))
    archs = np.array([r["sample/arch"] for r in rows])
    chex.assert_shape(archs, (30, 1, 2))
    assert archs.min() >= 0 and archs.max() <= 2
    # warm-up leaves the policy where it started (uniform over 3 widths)
    np.testing.assert_allclose(rows[9]["policy/entropy"], [np.log(3)] * 2, rtol=1e-5)
    assert result["evaluations"] == 20  # one reward evaluation per strategy step
    assert 0.0 <= result["val_accuracy"] <= 1.0 and np.isfinite(result["val_loss"])
    assert result["arch"].count("-") == 1


def test_chunked_loop_equals_stepwise(tmp_path):
    """One compiled chunk of 10 steps gives the state of 10 one-step chunks, bit for bit."""
    exp = build(resolve(tiny_config("reinforce")))
    from jaxnas.data import BatchSampler, gather
    d = exp.data
    tb = gather((d.x_train, d.y_train), BatchSampler(len(d.y_train), 32, 0).chunk(0, 10))
    vb = gather((d.x_val, d.y_val), BatchSampler(len(d.y_val), 32, 1).chunk(0, 10))
    s0 = exp.search.init(jax.random.key(0))
    a, _ = exp.search.run_chunk(s0, tb, vb)
    b = exp.search.init(jax.random.key(0))
    for i in range(10):
        b, _ = exp.search.run_chunk(b, jax.tree.map(lambda x: x[i:i + 1], tb), jax.tree.map(lambda x: x[i:i + 1], vb))
    chex.assert_trees_all_equal(jax.tree.map(_raw, a), jax.tree.map(_raw, b))


def _raw(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def _cli(workdir, *overrides, config="tests/helpers/tiny_cli_config.py"):
    return [sys.executable, "-m", "jaxnas", "search", config, "--quiet", "--workdir", str(workdir), *overrides]


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    steps = ["search.steps=400", "search.chunk=20", "search.checkpoint_every=20"]
    full = subprocess.run(_cli(tmp_path / "full", *steps), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert full.returncode == 0, full.stderr
    # start again, kill -9 once a mid-way checkpoint exists, then resume to the end
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(killed, *steps), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        ck = killed / "checkpoints"
        done = [int(p.name) for p in ck.iterdir() if p.name.isdigit()] if ck.exists() else []
        if any(40 <= s < 400 for s in done):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(_cli(killed, *steps), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "full" / "result.json").read_text())
    b = json.loads((killed / "result.json").read_text())
    assert a["state_digest"] == b["state_digest"]
    assert a["arch"] == b["arch"] and a["val_loss"] == b["val_loss"]
    rows = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(400))


@pytest.mark.parametrize("override,needle", [
    (["search.stepz=3"], "unknown config key 'search.stepz'"),
    (["strategy.name='reinforcee'"], "unknown strategy 'reinforcee'"),
    (["space.name='nb202'"], "unknown space 'nb202'"),
    (["space.num_cells=5"], "space.num_cells for space.name='mlp'"),
    (["evaluator.name='tabel'"], "unknown evaluator 'tabel'"),
    (["strategy.total_steps=5"], "set by the engine"),
    (["search.warmup_steps=40"], "leaves the strategy no steps"),
    (["search.phases=[['weights', 5], ['bogus', 5]]"], "search.phases must be None or a non-empty list of [kind, steps] pairs"),
    (["strategy.lrr=0.1"], "its options are"),
    (["search.checkpoint_every=15"], "multiple of search.chunk"),
    (["search.steps='abc'"], "search.steps must be an int in [1, 2147483647], got 'abc'"),
    (["space.widths=[]"], "space.widths must be None or a non-empty"),
    (["strategy.lr=-1"], "strategy.lr must be a float > 0, got -1"),
    (["search.devices='many'"], "search.devices must be an int >= 1 or one of 'all', got 'many'"),
])
def test_config_errors_say_what_to_change(override, needle):
    with pytest.raises(ValueError) as e:
        build(resolve(tiny_config(), override))
    assert needle in str(e.value), str(e.value)


def test_missing_data_dir_error(tmp_path):
    cfg = resolve(tiny_config(), ["data.name='cifar10'", f"data.data_dir='{tmp_path}'", "space.name='nb201'"])
    with pytest.raises(DataNotFoundError) as e:
        build(cfg)
    assert "--file_format=array_record" in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"or the name of a shipped config \(.*quickstart"):
        load_config(tmp_path / "nope.py")


def test_nan_stops_the_search_with_advice(tmp_path):
    cfg = resolve(tiny_config(steps=20), ["optimizer.lr=1e30"])
    with pytest.raises(NonFiniteError) as e:
        run_search(cfg, tmp_path, progress=None)
    assert "Lower the" in str(e.value) and "step" in str(e.value)


def test_overrides_and_strategy_switch():
    cfg = load_config(REPO / "configs" / "quickstart.py", ["strategy.name='reinforce'", "search.steps=7",
                                                           "optimizer.eps=1e-3"])
    assert cfg["strategy"] == {"name": "reinforce"}  # tabnas's budget etc. do not leak into reinforce
    assert cfg["search"]["steps"] == 7 and cfg["optimizer"]["eps"] == 1e-3
    kept = load_config(REPO / "configs" / "quickstart.py", ["strategy.lr=0.5"])
    assert kept["strategy"]["name"] == "tabnas" and kept["strategy"]["lr"] == 0.5
    assert kept["strategy"]["budget"] == 20_000


def test_checkpoints_land_on_schedule_with_odd_warmup(tmp_path):
    cfg = resolve(tiny_config("reinforce", steps=30, warmup_steps=15))
    run_search(cfg, tmp_path, progress=None)
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [20, 30]  # every 10 steps (2 kept), though warm-up ends mid-chunk at 15

"""Evaluators behind one search loop: the NAS-Bench-201 table (rewards, queries, result), pairing
errors, phases, and the quickstart's TabNAS metrics in metrics.jsonl and `jaxnas report`."""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.config.experiment import build
from jaxnas.config.settings import load_config, resolve
from jaxnas.report import report
from jaxnas.runner import run_search
from jaxnas.spaces.cells import NasBench201Space
from tests.helpers.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]
SHARED_TABLE = REPO.parent / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    """A synthetic NB201 table with the benchmark's columns: every cell, accuracies that grow with its
    number of 3x3 convolutions (so a search can learn) plus noise."""
    space = NasBench201Space.create()
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("nb201") / "table.csv.gz"
    archs = space.all_archs()
    n_conv = np.sum(archs == space.ops.index("nor_conv_3x3"), -1)[:, None]
    vals = (20 + 10 * n_conv + rng.uniform(0, 5, (space.num_archs, 4))).round(3)
    with gzip.open(path, "wt") as f:
        f.write("index,arch,cifar10_valid_12ep,cifar10_test,cifar100_test,imagenet16_test\n")
        for i, (a, v) in enumerate(zip(space.all_archs(), vals)):
            f.write(f"{i},{space.encode(a)}," + ",".join(map(str, v)) + "\n")
    return path


def _table_cfg(path, strategy="reinforce", **search):
    return {"space": {"name": "nb201"}, "evaluator": {"name": "table", "path": str(path)},
            "strategy": {"name": strategy, **({"lr": 0.1} if strategy != "random" else {})},
            "search": {"steps": 40, "chunk": 20, "checkpoint_every": 40, **search}}


def test_table_reward_is_the_table_entry(table_path):
    exp = build(resolve(_table_cfg(table_path)))
    ev, space = exp.evaluator, exp.space
    archs = np.asarray(space.sample(jax.random.key(0), shape=(64,)))
    f = ev.reward_fn({}, ev.inputs(), None, None)
    got = np.asarray(jax.jit(jax.vmap(lambda a: f(space.one_hot(a))[0]))(jnp.asarray(archs)))
    want = [0.01 * ev.table.lookup(space.encode(a))["cifar10_valid_12ep"] for a in archs]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert exp.data is None and exp.task is None          # no data, no supernet
    assert [tuple(p) for p in exp.phases] == [("strategy", 40)]


def test_table_search_counts_queries_and_reports_accuracies(tmp_path, table_path):
    cfg = resolve(_table_cfg(table_path, samples=4))
    result = run_search(cfg, tmp_path, progress=None)
    assert result["evaluations"] == 40 * 4                # one query per sample and step
    for c in ("cifar10_test", "cifar100_test", "imagenet16_test"):
        assert 20 <= result[c] <= 85 and 1 <= result[f"{c}_rank"] <= 15625
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    chex.assert_shape(np.array([r["sample/arch"] for r in rows]), (40, 4, 6))
    assert all(r["phase"] == "strategy" and "weights/train_loss" not in r for r in rows)
    # the policy learnt: its samples in the last steps beat the first steps' on the table
    first = np.mean([r["strategy/reward"] for r in rows[:5]])
    last = np.mean([r["strategy/reward"] for r in rows[-5:]])
    assert last > first, (first, last)


@pytest.mark.parametrize("override,needle", [
    (["strategy.name='advantage'"], "differentiates the reward"),
    (["strategy.name='darts'"], "differentiates the reward"),
    (["search.warmup_steps=5"], "has none: set it to 0"),
    (["search.phases=[['both', 10]]"], "trains shared weights"),
    (["space.name='darts'"], "looks cells up in NAS-Bench-201"),
    (["evaluator.path=None"], "needs evaluator.path"),
    (["evaluator.reward='nope'"], "no column 'nope'"),
    (["evaluator.C=3"], "evaluator.C for evaluator.name='table'"),
])
def test_table_pairing_errors(table_path, override, needle):
    with pytest.raises(ValueError) as e:
        build(resolve(_table_cfg(table_path), override))
    assert needle in str(e.value), str(e.value)


def test_vmapped_lanes_refused_for_a_sparse_supernet():
    with pytest.raises(ValueError, match="search.devices=4"):
        build(resolve(tiny_config("reinforce"), ["search.samples=4"]))


def test_phases_schedule_and_strategy_steps(tmp_path):
    """weights -> strategy (weights frozen) -> both: the strategy gets exactly its steps, frozen
    weights do not move, and the strategy is told its step count."""
    cfg = resolve(tiny_config("reinforce"), ["search.phases=[['weights', 10], ['strategy', 10], ['both', 20]]"])
    assert cfg["search"]["steps"] == 40
    exp = build(cfg)
    assert exp.search.strategy.name == "reinforce"
    result = run_search(cfg, tmp_path, progress=None)
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["weights"] * 10 + ["strategy"] * 10 + ["both"] * 20
    assert all("weights/train_loss" not in r for r in rows[10:20])
    assert result["evaluations"] == 30


def test_strategy_is_told_its_steps(tmp_path):
    """GDAS anneals its temperature over the strategy steps the schedule gives (after a warm-up)."""
    cfg = resolve(tiny_config("gdas", steps=30, warmup_steps=10), ["strategy.lr=0.01"])
    run_search(cfg, tmp_path, progress=None)
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    tau = [r["strategy/temperature"] for r in rows if "strategy/temperature" in r]
    assert len(tau) == 20
    np.testing.assert_allclose([tau[0], tau[-1]], [10.0, 0.1], rtol=1e-5)


def test_quickstart_logs_tabnas_metrics_and_report_plots_them(tmp_path):
    cfg = load_config(REPO / "configs" / "quickstart.py",
                      ["search.steps=400", "search.chunk=100", "search.checkpoint_every=400"])
    run_search(cfg, tmp_path, progress=None)
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["phase"] == "both" and r["strategy/warmup"] == 0]
    assert len(rows) == 400 and len(rl) == 300             # warm-up: 25% of the strategy steps
    for k in ("strategy/pv", "strategy/feasible", "strategy/cost", "strategy/skipped_infeasible"):
        assert all(k in r for r in rl), k
    pv = np.array([r["strategy/pv"] for r in rl])
    assert np.all((pv >= 0) & (pv <= 1)) and np.ptp(pv) > 0
    text = report(tmp_path, plots=True, metrics=["pv", "feasible", "cost"])
    assert "strategy/pv" in text and (tmp_path / "metrics.png").stat().st_size > 0
    with pytest.raises(ValueError, match="logged:"):
        report(tmp_path, plots=False, metrics=["nope"])


@pytest.mark.skipif(not SHARED_TABLE.exists(), reason="the NAS-Bench-201 table is beside the repository only")
def test_nb201_table_config_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jaxnas", "search", "configs/nb201_table.py", "--quiet",
                           "--workdir", str(tmp_path), f"evaluator.path={str(SHARED_TABLE)!r}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "cifar10_test:" in proc.stdout and "imagenet16_test:" in proc.stdout
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["evaluations"] == 800 and result["search_seconds"] < 60
    assert result["cifar10_test"] > 90.0      # REINFORCE finds a good cell (table mean: ~83)


def test_strategy_default_schedule_is_used(monkeypatch):
    """A strategy that declares ``phases`` gets that schedule (and its step count) unless the config
    names one."""
    import dataclasses

    import jaxnas.config.experiment as B
    real = B.make_strategy
    seen = []

    def make(name, space, **kw):
        seen.append(kw["total_steps"])
        s = real(name, space, **kw)
        return dataclasses.replace(s, phases=lambda steps, warm: [("weights", 5), ("strategy", 10),
                                                                   ("both", steps - 15)])
    monkeypatch.setattr(B, "make_strategy", make)
    exp = build(resolve(tiny_config("reinforce", steps=40)))
    assert [tuple(p) for p in exp.phases] == [("weights", 5), ("strategy", 10), ("both", 25)]
    assert seen[-1] == 35
    exp = build(resolve(tiny_config("reinforce", steps=40), ["search.phases=[['both', 40]]"]))
    assert [tuple(p) for p in exp.phases] == [("both", 40)] and seen[-1] == 40


def test_unroll_context_has_the_current_weight_lr():
    """DARTS 2nd order's xi is the weight optimizer's learning rate at the current step (cosine)."""
    exp = build(resolve(tiny_config("darts2", steps=40), ["optimizer.schedule='cosine'", "optimizer.lr=0.2"]))
    ev = exp.evaluator
    state = ev.init(jax.random.key(0))
    for k in (0, 10, 39):
        ctx = ev.context(state.replace(step=jnp.asarray(k, jnp.int32)), (), None, None, None)
        np.testing.assert_allclose(float(ctx.weight_lr), 0.2 * 0.5 * (1 + np.cos(np.pi * k / 40)), rtol=1e-5, atol=1e-7)
    assert exp.strategy.needs == "unroll"


def test_batched_reward_fn_equals_single_rewards():
    """shared_weights scores a batch of weight matrices in vmapped groups of ``vmap_chunk`` (the last
    group padded): the same rewards as one call per matrix."""
    exp = build(resolve(tiny_config("reinforce"), ["evaluator.vmap_chunk=2"]))
    ev, space, d = exp.evaluator, exp.space, exp.data
    state = ev.init(jax.random.key(0))
    batch = (jnp.asarray(d.x_val[:64]), jnp.asarray(d.y_val[:64]))
    archs = space.all_archs()[:5]
    weights = space.one_hot(jnp.asarray(archs))
    got, aux = jax.jit(ev.batched_reward_fn(state, (), batch, None))(weights)
    one = jax.jit(ev.reward_fn(state, (), batch, None))
    want = np.array([float(one(w)[0]) for w in weights])
    chex.assert_shape(got, (5,))
    chex.assert_shape(aux["loss"], (5,))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)

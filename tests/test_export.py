"""jaxnas export: architecture + constructor arguments + retrained variables -> a plain Flax module
(``jaxnas.export.load``) whose outputs are the retrained network's."""
from __future__ import annotations

import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.cli import main
from jaxnas.config.experiment import load_data
from jaxnas.config.settings import resolve
from jaxnas.export import export, input_transform, load, restore_tree
from jaxnas.models.specs import build_model, nb201_spec
from jaxnas.models.supernets.mlp import MLP
from jaxnas.retrain import retrain
from jaxnas.runner import run_search
from jaxnas.spaces.cells import NasBench201Space
from jaxnas.tasks.classification import classification_loss
from jaxnas.training.standalone import balanced_error, masked_apply

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"
CONNECT4 = REPO / "jaxnas" / "data" / "embedded" / "connect4.npz"
NB201_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _tabular_search(wd: Path) -> dict:
    """A tiny finished REINFORCE search on 2,500 Connect-4 rows with its own 500-row test file."""
    files = wd.parent / f"{wd.name}_data"       # beside the work dir: a work dir holds only its run
    files.mkdir(parents=True)
    with np.load(CONNECT4) as d:
        x, y, cls = d["X"], d["y"], d["class_names"]
    rows = np.random.default_rng(0).permutation(len(y))[:3000]
    np.savez(files / "train.npz", X=x[rows[:2500]], y=y[rows[:2500]], class_names=cls)
    np.savez(files / "test.npz", X=x[rows[2500:]], y=y[rows[2500:]], class_names=cls)
    cfg = resolve({"data": {"name": "tabular", "path": str(files / "train.npz"), "test_path": str(files / "test.npz"),
                            "val_fraction": 0.2},
                   "space": {"name": "mlp", "num_layers": 2, "widths": [4, 8, 16]},
                   "strategy": {"name": "reinforce", "lr": 0.05}, "optimizer": {"name": "adam", "lr": 1e-2},
                   "search": {"steps": 20, "batch_size": 32, "chunk": 10, "checkpoint_every": 10}})
    run_search(cfg, wd, progress=None)
    return cfg


def test_mlp_export_round_trip(tmp_path):
    wd = tmp_path / "tab"
    cfg = _tabular_search(wd)
    data = load_data(cfg)
    # before any retrain: the architecture and constructor arguments, no variables
    out = export(wd, tmp_path / "exp")
    model, variables = load(out)
    arch = json.loads((out / "architecture.json").read_text())
    result = json.loads((wd / "result.json").read_text())
    assert variables is None and not arch["retrained"] and arch["arch"] == result["arch"]
    assert isinstance(model, MLP)
    fresh = model.init(jax.random.key(0), jnp.asarray(data.x_val[:2]))
    assert model.apply(fresh, jnp.asarray(data.x_val[:2]), train=False).shape == (2, 3)

    # retrain 2 candidates x 2 seeds (no budget: the most probable architectures), then export
    res = retrain(wd, {"epochs": 1, "max_steps": 20, "batch_size": 32}, top=2, seeds=2, progress=None)
    assert res["members"] == 4 and res["programs"] == 1
    for c in res["candidates"]:
        for r in c["runs"]:      # the data has a test split: test metrics per run
            assert np.isfinite(r["test_loss"]) and 0 <= r["test_accuracy"] <= 1
    assert main(["export", str(wd), "--out", str(out), "--quiet"]) == 0
    model, variables = load(out)
    best = res["best"]
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["retrained"] and arch["arch"] == best["arch"] and arch["retrain"]["seed"] == best["seed"]
    assert jax.tree.structure(variables) == jax.tree.structure(
        model.init(jax.random.key(0), jnp.asarray(data.x_val[:2])))
    # the loaded module's outputs == the retrained (masked max-width) member's, on the validation split
    members = restore_tree(wd / res["params_path"])
    member = jax.tree.map(lambda a: a[best["candidate"], best["run"]], members)
    x = jnp.asarray(data.x_val)
    logits = model.apply(variables, x, train=False)
    widths = jnp.asarray(model.widths)
    max_widths = tuple(int(np.asarray(member[f"hidden{l}"]["kernel"]).shape[1]) for l in range(2))
    chex.assert_trees_all_close(logits, masked_apply(member, x, widths, max_widths), atol=1e-5, rtol=1e-5)
    loss, acc = classification_loss(logits, jnp.asarray(data.y_val))
    chex.assert_trees_all_close((float(loss), float(acc)), (best["val_loss"], best["val_accuracy"]), rtol=1e-5)
    chex.assert_trees_all_close(float(balanced_error(logits, jnp.asarray(data.y_val), 3)),
                                best["val_balanced_error"], rtol=1e-5)
    # the recorded input transform standardises raw rows as the loader did
    with np.load(tmp_path / "tab_data" / "test.npz") as d:
        raw = d["X"].astype(np.float32)
    chex.assert_trees_all_close(np.asarray(input_transform(out)(raw)), data.x_test, atol=1e-5)


def test_nb201_full_size_spec_counts_the_benchmark_network():
    """The retrain network of a NAS-Bench-201 cell (C = 16, 5 cells per stage) has the benchmark's
    parameter count (the table's params_cifar10_M of this cell: 0.802426 M)."""
    space = NasBench201Space.create(C=4, cells_per_stage=1)
    arch = space.decode(NB201_CELL)
    net = build_model(nb201_spec(space, arch, C=16, cells_per_stage=5, num_classes=10))
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False))
    assert sum(np.prod(v.shape) for v in jax.tree.leaves(shapes["params"])) == 802_426


@pytest.mark.skipif(not CIFAR.exists(), reason=f"the CIFAR-10 subset {CIFAR} is not here")
def test_nb201_export_round_trip(tmp_path):
    """A tiny NAS-Bench-201 retrain (configs/retrain_nb201_tiny.py) exported and loaded: the loaded
    module with its BatchNorm statistics reproduces the retrain's validation metrics."""
    wd = tmp_path / "nb"
    wd.mkdir()
    cfg = resolve({"data": {"name": "image_npz", "path": str(CIFAR), "val_fraction": 0.5},
                   "space": {"name": "nb201", "C": 4, "cells_per_stage": 1}, "strategy": {"name": "advantage"},
                   "search": {"steps": 10, "batch_size": 16}})
    space = NasBench201Space.create(C=4, cells_per_stage=1)
    arch = space.decode(NB201_CELL)
    (wd / "config.json").write_text(json.dumps(cfg))
    (wd / "result.json").write_text(json.dumps({"finished": True, **space.describe(arch), "state_digest": "t"}))
    res = retrain(wd, config=str(REPO / "configs" / "retrain_nb201_tiny.py"), progress=None)
    best = res["best"]
    assert best["param_count"] == int(space.param_count(arch))
    out = export(wd)
    model, variables = load(out)
    assert set(variables) == {"params", "batch_stats"}
    data = load_data(cfg)
    n = res["settings"]["max_eval"]
    x = input_transform(out)(jnp.asarray(data.x_val[:n]))
    logits = model.apply(variables, x, train=False)
    loss, acc = classification_loss(logits, jnp.asarray(data.y_val[:n]))
    chex.assert_trees_all_close((float(loss), float(acc)), (best["val_loss"], best["val_accuracy"]),
                                rtol=1e-4, atol=1e-5)

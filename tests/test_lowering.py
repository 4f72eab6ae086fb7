"""Every kind of compiled program lowers for GPU and TPU without one (``jax.export``, platforms cuda
and tpu): the search chunk of every strategy on the NB201 supernet (sparse and dense), each phase kind,
the DARTS supernet per edge and scanned, the recurrent (PTB) supernet, the table and standalone
evaluators (MLP members, MA2ML pipelines), and the MLP member step of the retrain. On CPU the
accelerator branches (``lax.platform_dependent``: XLA's own convolution gradients, no cotangent
barrier) are never compiled; lowering them is what shows they build there."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from jaxnas.config.experiment import build
from jaxnas.config.settings import load_config, resolve
from jaxnas.data.batching import BatchSampler, gather
from jaxnas.strategies import available

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CIFAR = SHARED / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"
TABLE = SHARED / "nasbench201" / "nb201_accuracies.csv.gz"
PTB = SHARED / "ptb"
PLATFORMS = ("cuda", "tpu")
needs_cifar = pytest.mark.skipif(not CIFAR.exists(), reason="the CIFAR-10 subset is in ../shared")

# options a strategy needs to build on NB201 (budgets that every cell meets)
OPTIONS = {"tabnas": {"budget": 1e9, "num_mc_samples": 64, "mc_chunk": 64}, "tunas_abs": {"target": 1e9, "beta": -0.1},
           "mnas_soft": {"target": 1e9, "beta": -0.07, "q_offset": 3.0},
           "mnas_hard": {"target": 1e9, "beta": -1.0, "q_offset": 3.0},
           "manas_ls": {"collect_steps": 2, "train_steps": 2}}


def _image_cfg(space: dict, strategy: dict, **search) -> dict:
    return resolve({"seed": 0, "space": space, "strategy": strategy,
                    "data": {"name": "image_npz", "path": str(CIFAR), "val_fraction": 0.5, "max_train": 64,
                             "max_val": 64},
                    "search": {"steps": 4, "batch_size": 8, "chunk": 2, "checkpoint_every": 4, **search}})


def _exported(cfg: dict, kinds=("both",), length: int = 2) -> list:
    exp = build(cfg)
    search, data = exp.search, exp.data
    state = search.init(jax.random.key(0))
    out = []
    for kind in kinds:
        if search.evaluator.needs_batches:
            s = cfg["search"]
            tb = gather((data.x_train, data.y_train), BatchSampler(len(data.y_train), s["batch_size"], 0).chunk(0, length))
            vb = gather((data.x_val, data.y_val),
                        BatchSampler(len(data.y_val), s["val_batch_size"] or s["batch_size"], 1).chunk(0, length))
            e = search.export_chunk(PLATFORMS, state, tb, vb, kind=kind)
        else:
            e = search.export_chunk(PLATFORMS, state, kind=kind, length=length)
        assert tuple(e.platforms) == PLATFORMS and e.mlir_module_serialized
        out.append(e)
    return out


@needs_cifar
@pytest.mark.parametrize("name", available())
def test_every_strategy_lowers_for_gpu_and_tpu_on_nb201(name):
    kinds = ("weights", "strategy", "both") if name in ("advantage", "darts", "shapley") else ("both",)
    _exported(_image_cfg({"name": "nb201", "C": 2, "cells_per_stage": 1}, {"name": name, **OPTIONS.get(name, {})}),
              kinds)


@needs_cifar
@pytest.mark.parametrize("scan_edges", [False, True])
@pytest.mark.parametrize("strategy", ["gdas", "darts"])   # sparse (one op per edge) and dense
def test_darts_supernet_lowers(scan_edges, strategy):
    space = {"name": "darts", "C": 2, "num_cells": 3, "ops": ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"],
             "scan_edges": scan_edges}
    _exported(_image_cfg(space, {"name": strategy}))


@pytest.mark.skipif(not PTB.exists(), reason="Penn Treebank is in ../shared")
@pytest.mark.parametrize("strategy", ["advantage", "darts"])
def test_recurrent_supernet_lowers(strategy):
    cfg = load_config(REPO / "configs" / "advantagenas_ptb_tiny.py",
                      [f"strategy.name='{strategy}'", "data.max_train=2000", "data.max_val=1000"])
    if strategy != "advantage":
        cfg["strategy"] = {"name": strategy}
    _exported(resolve(cfg))


@pytest.mark.skipif(not TABLE.exists(), reason="the NAS-Bench-201 table is in ../shared")
def test_table_evaluator_lowers():
    cfg = load_config(REPO / "configs" / "nb201_table.py", [f"evaluator.path='{TABLE}'"])
    _exported(resolve(cfg), ("strategy",), length=2)


def test_standalone_evaluators_lower():
    mlp = resolve({"seed": 0, "data": {"name": "connect4", "max_train": 256}, "space": {"name": "mlp", "widths": [4, 8]},
                   "evaluator": {"name": "standalone", "epochs": 1, "max_steps": 4},
                   "strategy": {"name": "reinforce"}, "search": {"steps": 2, "samples": 2, "chunk": 1}})
    _exported(mlp, ("strategy",), length=1)
    pipe = load_config(REPO / "configs" / "ma2ml_digits.py",
                       ["evaluator.max_steps=2", "search.samples=2", "space.C=2"])
    _exported(resolve(pipe), ("strategy",), length=1)


def test_mlp_retrain_step_lowers():
    from functools import partial

    from jaxnas.training.standalone import TrainConfig, member_init, member_step
    tx = TrainConfig(epochs=1, batch_size=8).make_optimizer(10)
    widths = jnp.asarray([3, 5], jnp.int32)
    init = member_init(widths, jax.random.key(0), 6, max_widths=(4, 8), num_outputs=3, tx=tx)
    step = jax.jit(partial(member_step, max_widths=(4, 8), tx=tx))
    x, y, idx = jnp.zeros((32, 6)), jnp.zeros((32,), jnp.int32), jnp.arange(8)
    e = jax.export.export(step, platforms=PLATFORMS)(init, idx, x, y, widths)
    assert tuple(e.platforms) == PLATFORMS

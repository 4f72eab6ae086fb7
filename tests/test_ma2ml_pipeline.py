"""MA2ML image pipelines trained from scratch (jaxnas/training/standalone.py ``train_pipeline``, the standalone
evaluator's PipelineEvaluator, the 'pipeline' space and 'digits' data of jaxnas/config/experiment.py), the
checkpointed pipeline retrain (jaxnas/training/pipeline_runs.py: seeds as lanes of one step on the one
training loop; stop, SIGTERM and resume), and the analytic FLOPs of the NAS agent against XLA's cost
analysis."""
import dataclasses
import functools
import json
import os
import shutil
import signal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.config import experiment as B
from jaxnas.config import resolve
from jaxnas.core.signals import StopRequested
from jaxnas.core.workdir import restore_tree
from jaxnas.evaluators.standalone import make as make_standalone
from jaxnas.evaluators.standalone import pipeline_config
from jaxnas.retrain import retrain
from jaxnas.spaces.cells import NasBench201Space
from jaxnas.spaces.product import ProductSpace
from jaxnas.training.pipeline_runs import train_pipelines
from jaxnas.training.standalone import PipelineConfig, train_pipeline
from tests.helpers.xla import flops as xla_flops


def small_pipeline_space(data):
    s = {"num_subpolicies": 1, "aug_ops": ["Rotate", "Invert", "Posterize"], "C": 4, "cells_per_stage": 1,
         "lr": [0.02, 0.1], "weight_decay": [0.0, 1e-3], "label_smoothing": None, "momentum": None}
    return B.SPACES.get("pipeline")(s, data)


@pytest.fixture(scope="module")
def digits():
    return B.DATASETS.get("digits")({"name": "digits", "val_fraction": 0.3, "max_train": 256, "val_path": None,
                                     "test_path": None}, 0)


def test_m_pipelines_in_one_vmapped_program_equal_each_alone(digits):
    """3 pipelines (different augmentation, cell and hyper-parameters) trained side by side in one
    vmapped program == each trained alone by the unbatched program, same keys, to float tolerance."""
    sp = small_pipeline_space(digits)
    assert sp.agents == ("aug", "nas", "hpo")
    cfg = PipelineConfig(steps=6, batch_size=16, eval_batch=100)
    arrays = (jnp.asarray(digits.x_train, jnp.float32), jnp.asarray(digits.y_train),
              jnp.asarray(digits.x_val, jnp.float32), jnp.asarray(digits.y_val))
    f = functools.partial(train_pipeline, space=sp, cfg=cfg, mean=digits.mean, std=digits.std)
    archs = sp.sample(jax.random.key(0), shape=(3,))
    keys = jax.random.split(jax.random.key(1), 3)
    together = jax.jit(jax.vmap(f, in_axes=(0, 0, None)))(archs, keys, arrays)
    alone = jax.jit(f)
    for i in range(3):
        one = alone(archs[i], keys[i], arrays)
        for k in ("val_loss", "train_loss", "val_accuracy"):
            chex.assert_trees_all_close(together[k][i], one[k], rtol=2e-4, atol=2e-5)
    assert np.all(np.isfinite(np.asarray(together["val_loss"])))
    assert len(set(np.asarray(together["train_loss"]).round(5))) == 3      # they differ


def test_evaluator_rewards_accuracy_times_flops_term(digits):
    """The standalone evaluator on a pipeline space: reward = Acc (FLOPs / constraint)^w with the
    analytic FLOPs; errors before compiling for a mismatched space."""
    sp = ProductSpace.create({"nas": NasBench201Space.create(C=2, cells_per_stage=1, num_classes=10)},
                             image_hw=(8, 8), in_channels=1)     # NAS alone: a cheap program
    opts = {"max_steps": 2, "batch_size": 16, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9,
            "flops_constraint": 1e5, "flops_exponent": -0.07, "lane_mode": "vmap"}
    ev = make_standalone(opts, cfg={}, space=sp, data=digits)
    arch = sp.sample(jax.random.key(3))
    r, aux = jax.jit(lambda w: ev.reward_fn({}, ev.inputs(), None, jax.random.key(0))(w))(sp.one_hot(arch))
    chex.assert_trees_all_close(aux["flops"], sp.flops(arch))
    chex.assert_trees_all_close(r, aux["val_accuracy"] * (aux["flops"] / 1e5) ** -0.07, rtol=1e-6)
    bad = ProductSpace.create({"nas": NasBench201Space.create(C=4, cells_per_stage=1, num_classes=7)},
                              image_hw=(8, 8), in_channels=1)
    with pytest.raises(ValueError, match="classes"):
        make_standalone(opts, cfg={}, space=bad, data=digits)


# ---- the checkpointed pipeline retrain ------------------------------------------------------------
# The smallest pipeline retrain: 8x8 digits, a C=4 one-cell-per-stage network, 3 augmentation ops, 8 steps.
PIPE_CFG = {"data": {"name": "digits", "val_fraction": 0.3, "max_train": 256},
            "space": {"name": "pipeline", "num_subpolicies": 1, "aug_ops": ["Rotate", "Invert", "Posterize"],
                      "C": 4, "cells_per_stage": 1, "lr": [0.03, 0.1], "weight_decay": [0.0, 5e-4]},
            "evaluator": {"name": "standalone", "max_steps": 4, "batch_size": 16, "eval_batch": 500,
                          "lane_mode": "sequential"},
            "strategy": {"name": "ma2ml", "lr": 0.1, "min_buffer": 2, "final": "process_best"},
            "search": {"steps": 2, "samples": 2, "chunk": 2, "checkpoint_every": 2}}
PIPE_RETRAIN = {"steps": 8, "chunk": 2, "log_every": 2, "checkpoint_every": 4, "eval_batch": 1000}


@pytest.fixture(scope="module")
def pipeline_search(tmp_path_factory):
    """``(work dir, config, arch)``: a finished MA2ML pipeline search, as the retrain reads it. The pipeline
    protocol reads only ``config.json`` and ``result.json`` (the searched pipeline), so they are written
    here for a fixed pipeline instead of running a search (minutes of compiling on a small CPU)."""
    cfg = resolve(PIPE_CFG)
    data = B.load_data(cfg)
    space = B.build_space(cfg, data)
    arch = np.asarray(space.sample(jax.random.key(5)), np.int32)
    wd = tmp_path_factory.mktemp("pipeline") / "search"
    wd.mkdir()
    (wd / "config.json").write_text(json.dumps(cfg, indent=1))
    (wd / "result.json").write_text(json.dumps({"finished": True, "step": 2, "arch": space.encode(arch),
                                                "arch_indices": arch.tolist(), "state_digest": "fixed"}))
    return wd, cfg, arch


def _copy(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("retrain", "retrain.json"))
    return dst


def _runs(out):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in out["candidates"][0]["runs"]]


def _finals(wd, seeds=(0, 1)):
    return [restore_tree(wd / "retrain" / f"c0_s{s}" / "final") for s in seeds]


@pytest.fixture(scope="module")
def whole_retrain(pipeline_search, tmp_path_factory):
    """The uninterrupted pipeline retrain (2 seeds, 8 steps): ``(work dir, retrain.json)``."""
    wd = _copy(pipeline_search[0], tmp_path_factory.mktemp("whole") / "w")
    return wd, retrain(wd, PIPE_RETRAIN, seeds=2, progress=None)


def test_pipeline_retrain_resumes_bit_exactly(pipeline_search, whole_retrain, tmp_path):
    """The pipeline retrain runs on the checkpointed loop: stopped after 4 of 8 steps (checkpoint at 4)
    and rerun, it ends exactly where the uninterrupted retrain ends (metrics and final parameters)."""
    whole_wd, whole = whole_retrain
    assert (whole_wd / "retrain" / "lanes" / "checkpoints" / "8").exists()
    wd = _copy(pipeline_search[0], tmp_path / "cut")
    assert retrain(wd, PIPE_RETRAIN, seeds=2, progress=None, stop_after=4) == {"finished": False}
    assert (wd / "retrain" / "lanes" / "checkpoints" / "4").exists()
    assert not (wd / "retrain" / "lanes" / "checkpoints" / "8").exists()
    assert not (wd / "retrain.json").exists()
    resumed = retrain(wd, PIPE_RETRAIN, seeds=2, progress=None)
    assert _runs(resumed) == _runs(whole) and resumed["best"] == whole["best"]
    chex.assert_trees_all_equal(_finals(wd), _finals(whole_wd))


class _SigtermAt:
    """A progress stream that sends this process SIGTERM when the loop reports ``step N/``."""

    def __init__(self, step: int):
        self.mark, self.sent, self.lines = f"step {step}/", False, []

    def write(self, text):
        self.lines.append(text)
        if self.mark in text and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def flush(self):
        pass


def test_pipeline_retrain_stops_on_sigterm_at_a_chunk_boundary_and_resumes(pipeline_search, whole_retrain, tmp_path):
    """SIGTERM during the pipeline retrain (``jaxnas retrain``'s handlers): it stops at the end of that
    chunk (step 2 of 8, between checkpoints) with a checkpoint of that step; the rerun equals the
    uninterrupted retrain bit for bit."""
    whole_wd, whole = whole_retrain
    wd = _copy(pipeline_search[0], tmp_path / "sig")
    stream = _SigtermAt(2)
    with pytest.raises(StopRequested) as e:
        retrain(wd, PIPE_RETRAIN, seeds=2, progress=stream)
    assert e.value.step == 2 and e.value.exit_code == 143
    assert sorted(p.name for p in (wd / "retrain" / "lanes" / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    assert not (wd / "retrain.json").exists()
    resumed = retrain(wd, PIPE_RETRAIN, seeds=2, progress=None)
    assert _runs(resumed) == _runs(whole) and resumed["best"] == whole["best"]
    chex.assert_trees_all_equal(_finals(wd), _finals(whole_wd))


def test_pipeline_retrain_equals_the_one_program_retrain(pipeline_search, whole_retrain):
    """The checkpointed retrain == the retrain it replaced (every seed's whole training in one compiled
    program: ``lax.map`` of ``train_pipeline`` over the seeds' keys), same settings and seeds, to float
    tolerance (measured: bit-identical on CPU with sequential lanes)."""
    _, cfg, arch = pipeline_search
    whole_wd, whole = whole_retrain
    data = B.load_data(cfg)
    space = B.build_space(cfg, data)
    pc = dataclasses.replace(pipeline_config(cfg["evaluator"], data), steps=8, batch_size=16,
                             eval_batch=min(1000, len(data.y_val)))
    arrays = (jnp.asarray(data.x_train, jnp.float32), jnp.asarray(data.y_train, jnp.int32),
              jnp.asarray(data.x_val, jnp.float32), jnp.asarray(data.y_val, jnp.int32))
    old = jax.device_get(jax.jit(lambda keys: jax.lax.map(
        lambda k: train_pipeline(jnp.asarray(arch), k, arrays, space=space, cfg=pc, mean=tuple(data.mean),
                                 std=tuple(data.std), return_params=True), keys))(
        jnp.stack([jax.random.key(s) for s in (0, 1)])))
    for i, run in enumerate(whole["candidates"][0]["runs"]):
        for k in ("val_loss", "val_accuracy", "train_loss"):
            chex.assert_trees_all_close(run[k], float(old[k][i]), rtol=1e-5, atol=1e-6)
    new = _finals(whole_wd)
    for i in range(2):
        chex.assert_trees_all_close(new[i]["params"]["net"], jax.tree.map(lambda a: a[i], old["params"]),
                                    rtol=1e-5, atol=1e-6)


def test_pipeline_retrain_vmapped_lanes_equal_each_alone(digits, tmp_path):
    """Two pipelines (other cells, augmentation and hyper-parameters) as vmapped lanes of the
    checkpointed step == each trained alone by ``train_pipeline`` (the in-search evaluator's training),
    same seeds, to float tolerance."""
    sp = small_pipeline_space(digits)
    cfg = PipelineConfig(steps=6, batch_size=16, eval_batch=100)
    archs = np.asarray(sp.sample(jax.random.key(0), shape=(2,)), np.int32)
    got = train_pipelines(tmp_path / "lanes", digits, sp, archs, [3, 4], cfg, lanes="vmap")
    arrays = (jnp.asarray(digits.x_train, jnp.float32), jnp.asarray(digits.y_train, jnp.int32),
              jnp.asarray(digits.x_val, jnp.float32), jnp.asarray(digits.y_val, jnp.int32))
    alone = jax.jit(functools.partial(train_pipeline, space=sp, cfg=cfg, mean=digits.mean, std=digits.std,
                                      return_params=True))
    for i, seed in enumerate((3, 4)):
        one = alone(jnp.asarray(archs[i]), jax.random.key(seed), arrays)
        for k in ("val_loss", "train_loss", "val_accuracy"):
            chex.assert_trees_all_close(got[k][i], one[k], rtol=2e-4, atol=2e-5)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], got["params"]), one["params"], rtol=2e-4, atol=2e-5)
    assert got["steps"] == 6 and (tmp_path / "lanes" / "checkpoints" / "6").exists()


@pytest.mark.parametrize("h,k,stride,cin,cout", [(16, 3, 1, 3, 8), (8, 3, 2, 8, 16), (4, 3, 1, 16, 16),
                                                   (5, 1, 1, 4, 8), (8, 1, 1, 8, 16)])
def test_conv_flops_are_xla_cost_analysis_exactly(h, k, stride, cin, cout):
    """A 'same' convolution: 2 FLOPs per multiply-add that reads a real input == XLA's count."""
    from jaxnas.models.ops.conv import conv2d_reference
    from jaxnas.spaces.product import _conv_flops
    x, w = jnp.zeros((1, h, h, cin)), jnp.zeros((k, k, cin, cout))
    compiled = jax.jit(lambda x, w: conv2d_reference(x, w, stride)).lower(x, w).compile()
    assert xla_flops(compiled) == _conv_flops(h, h, k, cin, cout, stride)


@pytest.mark.parametrize("archs", [("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
                                    "|skip_connect~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")])
def test_nb201_flops_match_xla_cost_analysis(archs):
    """Analytic FLOPs of the discrete network vs XLA's cost_analysis of its forward pass: XLA also
    counts BN, ReLU and additions, so the analytic count is below it, by less than 15% in total, and
    the difference between two cells (the searched ops) agrees within 6%."""
    from jaxnas.models.ops.conv import Kernels
    from jaxnas.models.supernets.cells import NasBench201Net
    nas = NasBench201Space.create(C=8, cells_per_stage=2, num_classes=10)
    sp = ProductSpace.create({"nas": nas}, image_hw=(16, 16), in_channels=3)
    flops = {}
    for text in archs:
        a = nas.decode(text)
        # XLA's own ops (Kernels(cpu=False)): cost_analysis counts a reduce_window average pool as the
        # analytic count does; the CPU kernel's nine shifted slices and its divide count ~20 more per output
        net = NasBench201Net(nas, arch=tuple(int(v) for v in a), kernels=Kernels(cpu=False))
        x = jnp.zeros((1, 16, 16, 3), jnp.float32)
        params = net.init(jax.random.key(0), x)
        compiled = jax.jit(lambda p, x: net.apply(p, x)).lower(params, x).compile()
        flops[text] = (xla_flops(compiled), float(sp.flops(a)))
        xla, ours = flops[text]
        assert 0.85 * xla < ours <= xla, (text, xla, ours)
    (x1, a1), (x2, a2) = flops.values()
    np.testing.assert_allclose(a1 - a2, x1 - x2, rtol=0.06)

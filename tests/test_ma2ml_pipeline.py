"""MA2ML image pipelines trained from scratch (jaxnas/training/standalone.py ``train_pipeline``, the standalone
evaluator's PipelineEvaluator, the 'pipeline' space and 'digits' data of jaxnas/config/experiment.py), and the
analytic FLOPs of the NAS agent against XLA's cost analysis."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.config import experiment as B
from jaxnas.evaluators.standalone import make as make_standalone
from jaxnas.spaces.cells import NasBench201Space
from jaxnas.spaces.product import ProductSpace
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
    from jaxnas.models.supernets.cells import NasBench201Net
    nas = NasBench201Space.create(C=8, cells_per_stage=2, num_classes=10)
    sp = ProductSpace.create({"nas": nas}, image_hw=(16, 16), in_channels=3)
    flops = {}
    for text in archs:
        a = nas.decode(text)
        net = NasBench201Net(nas, arch=tuple(int(v) for v in a))
        x = jnp.zeros((1, 16, 16, 3), jnp.float32)
        params = net.init(jax.random.key(0), x)
        compiled = jax.jit(lambda p, x: net.apply(p, x)).lower(params, x).compile()
        flops[text] = (xla_flops(compiled), float(sp.flops(a)))
        xla, ours = flops[text]
        assert 0.85 * xla < ours <= xla, (text, xla, ours)
    (x1, a1), (x2, a2) = flops.values()
    np.testing.assert_allclose(a1 - a2, x1 - x2, rtol=0.06)

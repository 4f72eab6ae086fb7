"""Candidates trained from scratch: the reward of an architecture is its stand-alone result.

``reward_fn(weights)`` takes the architecture ``argmax(weights)``, looks its hidden widths up in the
space's width table (traceable) and trains that MLP from scratch with ``jaxnas.training.standalone.train_member``
(the masked max-width MLP, exact per candidate, initialised and shuffled from the lane's ``key``),
then evaluates it on the whole validation split. Everything is one traced function of the data
arrays (``inputs``), so the search loop trains its P samples in ONE compiled program: a ``vmap``
over lanes (``axis_name="data"``), a ``shard_map`` over devices (one candidate per device), or a
strategy's own ``vmap`` over a batch of weights inside a lane. No collectives are used. Under a
``vmap`` the candidates either run as batched ops or as a loop inside that program (``lane_mode``;
``auto``: a loop on CPU, where batched matmuls do not beat separate ones, batched elsewhere).

The reward (higher is better) is ``-val_loss`` (default), ``val_accuracy`` or
``-val_balanced_error`` (option ``reward``); ``aux`` holds ``val_loss``, ``val_accuracy``,
``val_balanced_error`` and ``train_loss``. Same architecture and key give the same result as
``jaxnas.training.standalone.train_one(data, space, arch, seed, cfg)`` with ``key = jax.random.key(seed)``.

Not differentiable (gradient strategies are refused by the engine), no shared weights (no
``weight_step`` / ``context``), no batches (the training set is an input). ``result`` retrains the
derived architecture with the same settings and the fixed seed ``result_seed``.

MLP spaces (``space.name='mlp'``, tabular data), and MA2ML image pipelines (``space.name='pipeline'``:
a :class:`~jaxnas.spaces.product.ProductSpace` of AUG x NB201 cell x HPO agents on image data):
:class:`PipelineEvaluator` trains each pipeline with ``jaxnas.training.standalone.train_pipeline`` (dense
one-hot cell, the augmentation policy applied per batch inside the program, per-candidate optimizer
hyper-parameters through ``optax.inject_hyperparams``) and rewards ``Acc (FLOPs / constraint)^w``
(MA2ML poster; ``Acc`` without ``flops_constraint``), reporting validation accuracy and FLOPs.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.core import optim
from jaxnas.core import schema as S
from jaxnas.evaluators.base import register
from jaxnas.spaces import MLPSpace
from jaxnas.spaces.product import ProductSpace
from jaxnas.training.standalone import (
    PipelineConfig,
    TrainConfig,
    check_pipeline_space,
    pipeline_reward,
    train_archs,
    train_member,
    train_pipeline,
)

REWARDS = ("neg_loss", "accuracy", "neg_balanced_error")
# How candidates batched by a ``vmap`` (lanes on one device, or a strategy's vmap over weights) run,
# always inside the one compiled program: "vmap" batches their ops (one batched matmul for all:
# the fast form on accelerators); "sequential" loops over them (``jax.custom_batching.sequential_vmap``:
# on XLA:CPU a batched matmul is no faster than separate ones, and slower for wide layers); "auto":
# sequential on CPU, vmap elsewhere. Results agree (to float rounding). No effect under shard_map.
LANE_MODES = ("auto", "vmap", "sequential")

# Defaults: TabNAS stand-alone training (Table 2 / App. B.2: batch 32, Adam lr 5e-4 cosine, eps 1e-3,
# 60 epochs). Lower ``epochs`` or set ``max_steps`` for a search: every sample is a full training.
SCHEMA = {   # the config keys of ``evaluator`` for this name: type, range and default (jaxnas.core.schema)
    "epochs": S.Int(60, ge=1),                     # epochs per candidate
    "batch_size": S.Int(32, ge=1),                 # training batch per candidate
    "lr": S.Float(5e-4, gt=0),
    "schedule": S.Choice(*optim.SCHEDULES, default="cosine"),  # constant | cosine (to 0 over its steps)
    "optimizer": S.Choice(*optim.NAMES, default="adam"),      # adam | sgd
    "b1": S.Float(0.9, ge=0, lt=1),
    "b2": S.Float(0.999, ge=0, lt=1),
    "eps": S.Float(1e-3, gt=0),                    # the paper's Adam eps
    "momentum": S.Float(0.0, ge=0, lt=1),          # sgd
    "max_steps": S.Optional(S.Int(ge=1)),          # cap on the steps per candidate (None: epochs * rows // batch)
    "reward": S.Choice(*REWARDS, default="neg_loss"),  # neg_loss | accuracy | neg_balanced_error (validation)
    "eval_batch": S.Int(4096, ge=1),               # validation rows per forward pass
    "max_lane_batch": S.Int(64, ge=1),             # candidates one lane may train at once under vmap
    "lane_mode": S.Choice(*LANE_MODES, default="auto"),  # vmap | sequential | auto (see LANE_MODES)
    "result_seed": S.Int(0, ge=0),                 # seed of the retraining of the derived architecture (``result``)
    # image pipelines (space.name='pipeline'): steps = max_steps (default 200); defaults of the
    # hyper-parameters the HPO agent does not search (lr, momentum above; these two):
    "weight_decay": S.Float(5e-4, ge=0),
    "label_smoothing": S.Float(0.0, ge=0, lt=1),
    "flip": S.Bool(False),                         # random horizontal flips (CIFAR)
    "crop_padding": S.Int(0, ge=0),                # random crops after zero padding (CIFAR: 4)
    "flops_constraint": S.Optional(S.Float(gt=0)),  # FLOPs per image; None: reward = accuracy
    "flops_exponent": S.Float(-0.07),              # w of R = Acc (FLOPs / constraint)^w (MnasNet's -0.07)
    "result_steps": S.Optional(S.Int(ge=1)),       # pipelines: steps of the retraining in ``result``
}
DEFAULTS = S.defaults(SCHEMA)


def _train_config(o: dict) -> TrainConfig:
    return TrainConfig(epochs=int(o["epochs"]), batch_size=int(o["batch_size"]), lr=float(o["lr"]),
                       schedule=str(o["schedule"]), optimizer=str(o["optimizer"]), b1=float(o["b1"]),
                       b2=float(o["b2"]), eps=float(o["eps"]), momentum=float(o["momentum"] or 0.0),
                       max_steps=None if o["max_steps"] is None else int(o["max_steps"]))


@dataclasses.dataclass(frozen=True, eq=False)
class StandaloneEvaluator:
    space: MLPSpace
    data: Any                        # TabularData (host numpy arrays)
    train_cfg: TrainConfig
    reward: str = "neg_loss"
    eval_batch: int = 4096
    result_seed: int = 0
    max_lane_batch: int = 64
    lane_mode: str = "vmap"          # resolved: vmap | sequential
    name: str = "standalone"
    has_weights: bool = False
    differentiable: bool = False
    needs_batches: bool = False

    @property
    def total_steps(self) -> int:
        """Optimizer steps of one candidate."""
        return self.train_cfg.total_steps(int(self.data.x_train.shape[0]))

    @property
    def _member(self):
        return functools.partial(train_member, max_widths=self.space.max_widths,
                                 num_outputs=self.space.num_outputs,
                                 num_classes=int(self.data.num_classes), cfg=self.train_cfg,
                                 eval_batch=self.eval_batch)

    def init(self, key):
        del key
        return {}                    # nothing is kept between steps

    def inputs(self):
        d = self.data
        return {"x_train": jnp.asarray(d.x_train, jnp.float32), "y_train": jnp.asarray(d.y_train, jnp.int32),
                "x_val": jnp.asarray(d.x_val, jnp.float32), "y_val": jnp.asarray(d.y_val, jnp.int32)}

    def _trainer(self):
        """``(widths, key, arrays) -> metrics`` of one candidate, per ``lane_mode`` under vmap."""
        member = self._member
        if self.lane_mode == "vmap":
            return member

        def run(widths, key, arrays):
            typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            impl = jax.random.key_impl(key) if typed else None

            @jax.custom_batching.sequential_vmap      # a vmap of it is a loop over the candidates
            def seq(widths, key_data, arrays):
                k = jax.random.wrap_key_data(key_data, impl=impl) if typed else key_data
                return member(widths, k, arrays)
            return seq(widths, jax.random.key_data(key) if typed else key, arrays)
        return run

    def reward_fn(self, state, inputs, batch, key):
        del state, batch
        arrays = (inputs["x_train"], inputs["y_train"], inputs["x_val"], inputs["y_val"])
        train = self._trainer()

        def f(weights):
            arch = jnp.argmax(weights, -1).astype(jnp.int32)
            out = train(self.space.arch_widths(arch), key, arrays)
            if self.reward == "neg_loss":
                r = -out["val_loss"]
            elif self.reward == "accuracy":
                r = out["val_accuracy"]
            else:
                r = -out["val_balanced_error"]
            return r, out
        return f

    def weight_step(self, *a, **k):
        raise ValueError("the standalone evaluator trains every candidate from scratch: it has no shared "
                         "weights to step (use search phases without weight steps)")

    def context(self, *a, **k):
        raise ValueError("the standalone evaluator has no shared weights, so no weight step to unroll "
                         "(strategies that need a SupernetContext need evaluator.name='shared_weights')")

    def result(self, state, arch) -> dict:
        """Retrain the derived ``arch`` (int[L] or ``"32-144-24"``) from scratch, seed ``result_seed``."""
        del state
        if isinstance(arch, str):
            arch = self.space.decode(arch)
        arch = np.asarray(arch, np.int32).reshape(1, self.space.num_layers)
        t0 = time.perf_counter()
        r = train_archs(self.data, self.space, arch, (self.result_seed,), self.train_cfg, member_batch=1,
                        eval_batch=self.eval_batch)
        out = {f"standalone_{k}": float(np.asarray(r[k]).reshape(-1)[0])
               for k in ("val_loss", "val_accuracy", "val_balanced_error", "train_loss")}
        out.update(standalone_steps=int(r["total_steps"]), standalone_seed=int(self.result_seed),
                   standalone_seconds=round(time.perf_counter() - t0, 3))
        return out


def check_options(options: dict) -> dict:
    """``DEFAULTS`` updated with ``options``; unknown keys and bad values raise ValueError (all listed)."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"evaluator 'standalone': unknown option(s) {unknown}; valid: {', '.join(DEFAULTS)}")
    o, problems = S.check(SCHEMA, {**DEFAULTS, **options}, "evaluator.")
    S.raise_if(problems, "options of evaluator 'standalone'")
    return o


@register("standalone", SCHEMA, needs_data=True, has_weights=False)
def make(options: dict, *, cfg: dict = None, space, data, task=None, axis_name=None,
         **_) -> StandaloneEvaluator:
    """The ``standalone`` evaluator of ``options`` (the config's ``evaluator`` section without name)."""
    del cfg, task, axis_name           # no collectives: lanes train independent candidates
    o = check_options(dict(options))
    mode = o["lane_mode"]
    if mode == "auto":
        mode = "sequential" if jax.default_backend() == "cpu" else "vmap"
    if isinstance(space, ProductSpace):
        return make_pipeline_evaluator(o, space, data, mode)
    if not isinstance(space, MLPSpace):
        raise ValueError(f"the standalone evaluator trains MLPs (space.name='mlp' on tabular data) or image "
                         f"pipelines (space.name='pipeline'), got {type(space).__name__}")
    if data is None or getattr(data, "x_train", None) is None or np.ndim(data.x_train) != 2:
        raise ValueError("the standalone evaluator trains MLPs on tabular data: it needs 2-D x_train")
    ncls = int(data.num_classes)
    if (space.num_outputs == 1) != (ncls == 2) or (ncls > 2 and space.num_outputs != ncls):
        raise ValueError(f"space has {space.num_outputs} outputs but the data has {ncls} classes "
                         f"(one logit for 2 classes, else one per class)")
    try:
        tcfg = _train_config(o)
        tcfg.make_optimizer(tcfg.total_steps(int(data.x_train.shape[0])))   # validates eps, betas, ...
    except ValueError as e:
        raise ValueError(f"evaluator 'standalone': {e}") from None
    return StandaloneEvaluator(space=space, data=data, train_cfg=tcfg, reward=o["reward"],
                               eval_batch=int(o["eval_batch"]), result_seed=int(o["result_seed"]),
                               max_lane_batch=int(o["max_lane_batch"]), lane_mode=mode)


# ---- MA2ML image pipelines -------------------------------------------------------------------------
def _sequential(fn):
    """``fn(arch, key, arrays)`` whose vmap is a loop over the candidates (``lane_mode='sequential'``)."""
    def run(arch, key, arrays):
        typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        impl = jax.random.key_impl(key) if typed else None

        @jax.custom_batching.sequential_vmap
        def seq(arch, key_data, arrays):
            k = jax.random.wrap_key_data(key_data, impl=impl) if typed else key_data
            return fn(arch, k, arrays)
        return seq(arch, jax.random.key_data(key) if typed else key, arrays)
    return run


@dataclasses.dataclass(frozen=True, eq=False)
class PipelineEvaluator:
    """Image pipelines trained from scratch (module docstring); the search's lanes and a strategy's
    vmap over weights batch them into one program."""
    space: Any                       # ProductSpace (AUG x NB201 x HPO)
    data: Any                        # ImageData
    cfg: Any                         # jaxnas.training.standalone.PipelineConfig
    flops_constraint: Any = None
    flops_exponent: float = -0.07
    result_seed: int = 0
    result_steps: Any = None
    max_lane_batch: int = 64
    lane_mode: str = "vmap"
    name: str = "standalone"
    has_weights: bool = False
    differentiable: bool = False
    needs_batches: bool = False

    def init(self, key):
        del key
        return {}

    def inputs(self):
        d = self.data
        return {"x_train": jnp.asarray(d.x_train, jnp.float32), "y_train": jnp.asarray(d.y_train, jnp.int32),
                "x_val": jnp.asarray(d.x_val, jnp.float32), "y_val": jnp.asarray(d.y_val, jnp.int32)}

    def trainer(self, cfg=None):
        """``(arch int[D], key, arrays) -> metrics`` of one pipeline, per ``lane_mode`` under vmap."""
        fn = functools.partial(train_pipeline, space=self.space, cfg=cfg or self.cfg,
                               mean=tuple(self.data.mean), std=tuple(self.data.std))
        return fn if self.lane_mode == "vmap" else _sequential(fn)

    def reward_fn(self, state, inputs, batch, key):
        del state, batch
        arrays = (inputs["x_train"], inputs["y_train"], inputs["x_val"], inputs["y_val"])
        train = self.trainer()

        def f(weights):
            arch = jnp.argmax(weights, -1).astype(jnp.int32)
            out = train(arch, key, arrays)
            out["flops"] = self.space.flops(arch)
            r = pipeline_reward(out["val_accuracy"], out["flops"], self.flops_constraint, self.flops_exponent)
            return r, out
        return f

    def weight_step(self, *a, **k):
        raise ValueError("the standalone evaluator trains every pipeline from scratch: it has no shared "
                         "weights to step (use search phases without weight steps)")

    def context(self, *a, **k):
        raise ValueError("the standalone evaluator has no shared weights, so no weight step to unroll")

    def result(self, state, arch) -> dict:
        """Retrain the derived pipeline from scratch (seed ``result_seed``, ``result_steps`` steps)."""
        del state
        if isinstance(arch, str):
            arch = self.space.decode(arch)
        arch = jnp.asarray(np.asarray(arch, np.int32))
        cfg = self.cfg if self.result_steps is None else dataclasses.replace(self.cfg, steps=int(self.result_steps))
        t0 = time.perf_counter()
        ins = self.inputs()
        out = jax.jit(self.trainer(cfg))(arch, jax.random.key(self.result_seed),
                                         (ins["x_train"], ins["y_train"], ins["x_val"], ins["y_val"]))
        res = {f"standalone_{k}": float(v) for k, v in out.items()}
        res.update(standalone_flops=float(self.space.flops(arch)), standalone_steps=int(cfg.steps),
                   standalone_seed=int(self.result_seed), standalone_seconds=round(time.perf_counter() - t0, 3),
                   pipeline=self.space.describe(np.asarray(arch))["agents"])
        return res


def pipeline_config(o: dict, data) -> PipelineConfig:
    """The training of one pipeline from the ``evaluator`` section (search and retrain alike)."""
    return PipelineConfig(steps=int(o["max_steps"] or 200), batch_size=int(o["batch_size"]), lr=float(o["lr"]),
                          weight_decay=float(o["weight_decay"]), label_smoothing=float(o["label_smoothing"]),
                          momentum=float(o["momentum"]), optimizer=o["optimizer"], schedule=o["schedule"],
                          flip=bool(o["flip"]), crop_padding=int(o["crop_padding"]),
                          eval_batch=min(int(o["eval_batch"]), int(data.x_val.shape[0])))


def make_pipeline_evaluator(o: dict, space, data, mode: str) -> PipelineEvaluator:
    check_pipeline_space(space)
    if data is None or getattr(data, "x_train", None) is None or np.ndim(data.x_train) != 4:
        raise ValueError("image pipelines need image data ([N, H, W, C]: data.name='digits', 'image_npz' or a "
                         "tfds image set)")
    assert isinstance(space, ProductSpace)
    nas = space.sub(space.nas)
    if nas.num_classes != int(data.num_classes):
        raise ValueError(f"the NAS agent's network has {nas.num_classes} outputs, the data {data.num_classes} classes")
    if tuple(space.image_hw) != tuple(data.x_train.shape[1:3]) or space.in_channels != data.x_train.shape[3]:
        raise ValueError(f"the space counts FLOPs for {space.image_hw} x {space.in_channels} images, the data has "
                         f"{tuple(data.x_train.shape[1:])}")
    if o["optimizer"] not in ("sgd", "adam"):
        raise ValueError(f"evaluator.optimizer={o['optimizer']!r}: image pipelines train with sgd or adam")
    cfg = pipeline_config(o, data)
    if cfg.batch_size > data.x_train.shape[0]:
        raise ValueError(f"evaluator.batch_size {cfg.batch_size} exceeds the {data.x_train.shape[0]} training images")
    return PipelineEvaluator(space=space, data=data, cfg=cfg, flops_constraint=o["flops_constraint"],
                             flops_exponent=float(o["flops_exponent"]), result_seed=int(o["result_seed"]),
                             result_steps=o["result_steps"], max_lane_batch=int(o["max_lane_batch"]),
                             lane_mode=mode)

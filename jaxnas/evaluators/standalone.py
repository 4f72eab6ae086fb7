"""Candidates trained from scratch: the reward of an architecture is its stand-alone result.

``reward_fn(weights)`` takes the architecture ``argmax(weights)``, looks its hidden widths up in the
space's width table (traceable) and trains that MLP from scratch with ``jaxnas.standalone.train_member``
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
``jaxnas.standalone.train_one(data, space, arch, seed, cfg)`` with ``key = jax.random.key(seed)``.

Not differentiable (gradient strategies are refused by the engine), no shared weights (no
``weight_step`` / ``context``), no batches (the training set is an input). ``result`` retrains the
derived architecture with the same settings and the fixed seed ``result_seed``.

MLP spaces (``space.name='mlp'``, tabular data) only; cell networks come with a later issue.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import optim
from jaxnas import schema as S
from jaxnas.evaluators.base import register
from jaxnas.spaces import MLPSpace
from jaxnas.standalone import TrainConfig, train_archs, train_member

REWARDS = ("neg_loss", "accuracy", "neg_balanced_error")
# How candidates batched by a ``vmap`` (lanes on one device, or a strategy's vmap over weights) run,
# always inside the one compiled program: "vmap" batches their ops (one batched matmul for all:
# the fast form on accelerators); "sequential" loops over them (``jax.custom_batching.sequential_vmap``:
# on XLA:CPU a batched matmul is no faster than separate ones, and slower for wide layers); "auto":
# sequential on CPU, vmap elsewhere. Results agree (to float rounding). No effect under shard_map.
LANE_MODES = ("auto", "vmap", "sequential")

# Defaults: TabNAS stand-alone training (Table 2 / App. B.2: batch 32, Adam lr 5e-4 cosine, eps 1e-3,
# 60 epochs). Lower ``epochs`` or set ``max_steps`` for a search: every sample is a full training.
SCHEMA = {   # the config keys of ``evaluator`` for this name: type, range and default (jaxnas.schema)
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
    if not isinstance(space, MLPSpace):
        raise ValueError(f"the standalone evaluator supports MLP spaces only (space.name='mlp' on tabular "
                         f"data), got {type(space).__name__}; cell networks come with a later issue")
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
    mode = o["lane_mode"]
    if mode == "auto":
        mode = "sequential" if jax.default_backend() == "cpu" else "vmap"
    return StandaloneEvaluator(space=space, data=data, train_cfg=tcfg, reward=o["reward"],
                               eval_batch=int(o["eval_batch"]), result_seed=int(o["result_seed"]),
                               max_lane_batch=int(o["max_lane_batch"]), lane_mode=mode)

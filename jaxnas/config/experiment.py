"""From a resolved config to data, space, task, strategy, evaluator and the compiled search.

Registries (``jaxnas.core.registry.Registry``), not if-chains: ``DATASETS`` (config ``data.name``),
``SPACES`` (``space.name``, each with its own keys), ``TASKS`` (the supernet task of a space); the
evaluators register in ``jaxnas.evaluators`` and the strategies in ``jaxnas.strategies``.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

import jax
import numpy as np

from jaxnas import data as D
from jaxnas.core import schema as S
from jaxnas.core.cpu_compile import compiler_options
from jaxnas.core.registry import Registry
from jaxnas.data.text import load_lm_data
from jaxnas.engine.distributed import check_lanes
from jaxnas.engine.lanes import AXIS, make_mesh
from jaxnas.engine.search import Phase, Search, check_phases, strategy_steps, weight_steps
from jaxnas.evaluators import get as get_evaluator
from jaxnas.models.ops.candidates import OP_SETS
from jaxnas.models.ops.conv import Kernels
from jaxnas.models.supernets import DartsNet, MLPSupernet, NasBench201Net
from jaxnas.spaces import TABNAS_WIDTHS, MLPSpace
from jaxnas.spaces.cells import DartsSpace, NasBench201Space
from jaxnas.spaces.product import AUG_OPS, AugSpace, HPOSpace, ProductSpace
from jaxnas.strategies import make as make_strategy
from jaxnas.tasks import language_model as LM
from jaxnas.tasks.classification import ClassificationTask

DATASETS = Registry("data set", fallback="tfds")
SPACES = Registry("space")
TASKS = Registry("task")


@dataclasses.dataclass
class Experiment:
    config: dict
    data: Any            # TabularData or ImageData (None for evaluators without data, e.g. a table)
    space: Any
    task: Optional[ClassificationTask]
    strategy: Any
    evaluator: Any
    search: Search
    phases: tuple[Phase, ...]


# ---- data sets -----------------------------------------------------------------------------------
# Each loader gets the ``data`` section and the split seed (``data.split_seed``, default the search
# ``seed``). Own splits: ``data.val_path`` (tabular / image_npz: a validation file in the format of
# ``data.path``; then ``val_fraction`` is not used) or tfds ``val_split``; a test split
# (``data.test_path`` / tfds ``test_split``) is loaded as ``data.x_test, data.y_test`` (None
# otherwise) and reported only after retraining, never seen by the search.
def _no_own_files(d: dict, instead: str):
    given = [k for k in ("val_path", "test_path") if d.get(k)]
    if given:
        raise ValueError(f"{', '.join('data.' + k for k in given)} apply to data.name='tabular' or "
                         f"'image_npz' (files); data.name={d['name']!r} {instead}")


@DATASETS.register("connect4")
def _connect4(d: dict, seed: int):
    _no_own_files(d, "is split with data.val_fraction")
    return D.load_tabular("connect4", val_fraction=d["val_fraction"], seed=seed, max_train=d["max_train"],
                          standardize=d["standardize"])


@DATASETS.register("tabular")
def _tabular(d: dict, seed: int):
    if not d["path"]:
        raise ValueError("data.name='tabular' needs data.path (an .npz with X, y or a .csv/.tsv file)")
    return D.load_tabular(d["path"], label=d["label"], val_fraction=d["val_fraction"], seed=seed,
                          max_train=d["max_train"], standardize=d["standardize"],
                          val_path=d["val_path"], test_path=d["test_path"], categorical=d.get("categorical") or ())


@DATASETS.register("image_npz")
def _image_npz(d: dict, seed: int):
    if not d["path"]:
        raise ValueError("data.name='image_npz' needs data.path (an .npz with X uint8 NHWC and y)")
    return D.load_image_npz(d["path"], val_fraction=d["val_fraction"], seed=seed, max_train=d["max_train"],
                            val_path=d["val_path"], test_path=d["test_path"])


@DATASETS.register("digits")
def _digits(d: dict, seed: int):
    """The embedded 8x8 handwritten digits (jaxnas/data/embedded/digits.npz, UCI / scikit-learn)."""
    _no_own_files(d, "is the embedded digits set, split with data.val_fraction")
    from pathlib import Path
    return D.load_image_npz(Path(D.__file__).with_name("embedded") / "digits.npz", val_fraction=d["val_fraction"],
                            seed=seed, max_train=d["max_train"])


@DATASETS.register("tfds")
def _tfds(d: dict, seed: int):
    name = d["name"]
    _no_own_files(d, "reads tfds splits: use data.val_split / data.test_split")
    if not d["data_dir"]:
        raise ValueError(f"data.name={name!r} reads a tfds data set from a local directory: set data.data_dir "
                         f"to a directory prepared with `tfds build {name} --file_format=array_record "
                         f"--data_dir DIR` (no download happens here)")
    return D.load_tfds_images(name, d["data_dir"], train_split=d["train_split"], val_split=d["val_split"],
                              test_split=d["test_split"], max_train=d["max_train"], max_val=d["max_val"])


def split_seed(cfg: dict) -> int:
    """The seed of the train/validation split: ``data.split_seed``, default the search ``seed``."""
    s = cfg["data"].get("split_seed")
    return cfg["seed"] if s is None else s


def load_data(cfg: dict):
    d = cfg["data"]
    return DATASETS.get(d["name"])(d, split_seed(cfg))


def num_classes(data, default: int = 10) -> int:
    if data is None:
        return default
    return int(getattr(data, "num_classes", None) or (int(np.max(data.y_train)) + 1))


# ---- spaces --------------------------------------------------------------------------------------
# Each space registers its config keys with a type, a range and a default (jaxnas.core.schema).
_WIDTHS = S.List(S.Int(ge=1), min_len=1, increasing=True)


def _ops_field(op_set: str) -> S.Field:
    return S.Optional(S.List(S.Choice(*OP_SETS[op_set]), min_len=1, unique=True))


@SPACES.register("mlp", {"num_layers": S.Int(2, ge=1),
                         # None: TabNAS's 20 widths; a list for every layer, or one list per layer
                         "widths": S.Optional(S.Either(_WIDTHS, S.List(_WIDTHS, min_len=1), doc=(
                             "a non-empty, strictly increasing list of ints >= 1 (or one such list per "
                             "layer)")))})
def _mlp_space(s: dict, data):
    if data is None or getattr(data, "x_train", None) is None or np.ndim(data.x_train) != 2:
        raise ValueError("space.name='mlp' needs tabular data (2-D features)")
    ncls = num_classes(data)
    widths = TABNAS_WIDTHS if s["widths"] is None else tuple(
        tuple(w) if isinstance(w, (list, tuple)) else w for w in s["widths"])
    if widths and isinstance(widths[0], tuple) and len(widths) != s["num_layers"]:
        raise ValueError(f"space.widths has {len(widths)} per-layer width lists for space.num_layers="
                         f"{s['num_layers']}")
    return MLPSpace.create(s["num_layers"], data.x_train.shape[1], 1 if ncls == 2 else ncls, widths)


# the kernel choices of a cell supernet (jaxnas.models.ops.conv.Kernels): static, part of the module
KERNEL_FIELDS = {"cpu_kernels": S.Bool(True),          # False: XLA's depthwise conv / max pool on CPU too
                 "cotangent_barrier": S.Bool(True),    # False: no barrier at dense edges' inputs
                 "sparse_edge_vjp": S.Bool(True),      # False: every sparse edge the modules' remat switch
                 "darts_edge_vjp": S.Bool(False)}      # True: DARTS's edges the edge VJP (slower step)


def kernels_of(s: dict) -> Kernels:
    return Kernels(cpu=s["cpu_kernels"], cotangent_barrier=s["cotangent_barrier"],
                   sparse_edge_vjp=s["sparse_edge_vjp"], darts_edge_vjp=s["darts_edge_vjp"])


def _ops(s):
    return {} if s["ops"] is None else {"ops": tuple(s["ops"])}


@SPACES.register("nb201", {"C": S.Int(16, ge=1), "cells_per_stage": S.Int(5, ge=1),
                           "unique_cells": S.Bool(False), "ops": _ops_field("nb201"),
                           "partial_channels": S.Int(1, ge=1),   # PC-DARTS K of the search supernet
                           "scan_edges": S.Optional(S.Bool()),   # a cell's edges compiled once; None: scan_edges_of
                           "scan_cells": S.Optional(S.Bool()),   # same-shape cells compiled once; None: scan_cells_of
                           **KERNEL_FIELDS})
def _nb201_space(s: dict, data):
    return NasBench201Space.create(C=s["C"], cells_per_stage=s["cells_per_stage"],
                                   num_classes=num_classes(data), unique_cells=s["unique_cells"], **_ops(s))


@SPACES.register("darts", {"C": S.Int(16, ge=1), "num_cells": S.Int(8, ge=3),   # >= 3: two reduction cells
                           "unique_cells": S.Bool(False), "ops": _ops_field("darts"),
                           "partial_channels": S.Int(1, ge=1),   # PC-DARTS K (Shapley-NAS sec. 4.1: 4)
                           "scan_edges": S.Optional(S.Bool()),   # a cell's edges compiled once; None: scan_edges_of
                           "scan_cells": S.Optional(S.Bool()),   # same-shape cells compiled once; None: scan_cells_of
                           **KERNEL_FIELDS})
def _darts_space(s: dict, data):
    return DartsSpace.create(C=s["C"], num_cells=s["num_cells"], unique_cells=s["unique_cells"], **_ops(s))


_GRID = S.Optional(S.List(S.Float(ge=0), min_len=1, unique=True))


@SPACES.register("pipeline", {"num_subpolicies": S.Int(2, ge=0),   # AUG agent: AutoAugment sub-policies (0: none)
                              "aug_ops": S.Optional(S.List(S.Choice(*AUG_OPS), min_len=1, unique=True)),
                              "C": S.Int(8, ge=1), "cells_per_stage": S.Int(1, ge=1),   # NAS agent: NB201 cell
                              # HPO agent: the grids it searches (None: the evaluator's fixed value)
                              "lr": _GRID, "weight_decay": _GRID, "label_smoothing": _GRID, "momentum": _GRID})
def _pipeline_space(s: dict, data):
    """MA2ML's pipeline: AUG (AutoAugment policy) x NAS (NB201 cell) x HPO (grids) agents."""
    if data is None or getattr(data, "x_train", None) is None or np.ndim(data.x_train) != 4:
        raise ValueError("space.name='pipeline' needs image data ([N, H, W, C])")
    agents = []
    if s["num_subpolicies"]:
        agents.append(("aug", AugSpace.create(s["num_subpolicies"], **({"ops": tuple(s["aug_ops"])} if s["aug_ops"] else {}))))
    agents.append(("nas", NasBench201Space.create(C=s["C"], cells_per_stage=s["cells_per_stage"],
                                                  num_classes=num_classes(data))))
    grids = {k: s[k] for k in ("lr", "weight_decay", "label_smoothing", "momentum") if s[k] is not None}
    if grids:
        agents.append(("hpo", HPOSpace.create(grids)))
    return ProductSpace.create(agents, nas="nas", image_hw=data.x_train.shape[1:3], in_channels=data.x_train.shape[3])


def build_space(cfg: dict, data):
    return SPACES.get(cfg["space"]["name"])(cfg["space"], data)


# ---- tasks: the supernet of a space --------------------------------------------------------------
def scan_edges_of(s: dict, mode: str) -> bool:
    """``space.scan_edges``, or where it is None (the default) the form that compiles fastest without a
    slower step: a DARTS cell's edges as one scanned edge for a sparse strategy (DARTS-8: first step 6x
    sooner, the step 0.86x; bench/results/vs_pytorch.json); one compiled edge each for a dense strategy
    (its scanned step is slower) and on NAS-Bench-201 (scanned: compiles in 13 s instead of 32 s, but the
    step is not faster and takes 1.4x the memory; docs/cpu-performance.md). Work dirs of either layout
    restore in the other (models/supernets/cells.py relayout)."""
    if s["scan_edges"] is not None:
        return s["scan_edges"]
    return s["name"] == "darts" and mode == "sparse"


def scan_cells_of(s: dict, mode: str) -> bool:
    """``space.scan_cells``, or where it is None (the default) one compiled cell each. A sparse
    NAS-Bench-201 step with the edge VJP (``space.sparse_edge_vjp``, the default) is faster per cell:
    the scan stacks every edge's saved conv output (C16 N5, the engine's step, 48 paired steps,
    ``python bench/engine_ab.py sparse_edge``: per cell 0.873 of the scanned step with rematerialised
    edges, scanned 0.978; tracing 2.5 -> 7.6 s). With ``sparse_edge_vjp=False`` a stage's cells
    are scanned (0.961 +- 0.052 of the per-cell step, tracing 20.9 -> 9.0 s, compile 31.5 -> 15.3 s);
    dense searches and DARTS keep their cells apart (20 cells: the step 1.15x slower;
    docs/cpu-performance.md)."""
    if s["scan_cells"] is not None:
        return s["scan_cells"]
    return s["name"] == "nb201" and mode == "sparse" and not s["sparse_edge_vjp"]


@TASKS.register("mlp")
def _mlp_task(cfg, space, data, mode):
    return ClassificationTask(space, MLPSupernet(space), (space.num_inputs,), reward=cfg["search"]["reward"])


def _image_task(net, cfg, space, data):
    mean, std = data.mean, data.std
    augment = D.random_crop_flip if cfg["data"]["augment"] else None
    return ClassificationTask(space, net, tuple(data.x_train.shape[1:]), augment=augment,
                              preprocess=lambda x: D.normalize(x, mean, std), reward=cfg["search"]["reward"],
                              control_flow=True)


@TASKS.register("nb201")
def _nb201_task(cfg, space, data, mode):
    s = cfg["space"]
    return _image_task(NasBench201Net(space, partial_channels=s["partial_channels"], scan_edges=scan_edges_of(s, mode),
                                      scan_cells=scan_cells_of(s, mode), kernels=kernels_of(s)),
                       cfg, space, data)


@TASKS.register("darts")
def _darts_task(cfg, space, data, mode):
    s = cfg["space"]
    return _image_task(DartsNet(space, num_classes(data), partial_channels=s["partial_channels"],
                                scan_edges=scan_edges_of(s, mode), scan_cells=scan_cells_of(s, mode),
                                kernels=kernels_of(s)),
                       cfg, space, data)


# ---- language modelling: PTB, the recurrent cell space (AdvantageNAS sec. 5.3), jaxnas/tasks/language_model.py
@DATASETS.register("ptb")
def _ptb(d: dict, seed: int):
    _no_own_files(d, "reads ptb.{train,valid,test}.txt(.gz) from data.data_dir")
    return load_lm_data(d["data_dir"], max_train=d["max_train"], max_val=d["max_val"])


@SPACES.register("rnn", LM.space_schema())
def _rnn_space(s: dict, data):
    return LM.space_from(s, data)


@TASKS.register("rnn")
def _rnn_task(cfg, space, data, mode):
    return LM.make_task(cfg, space, data)


@TASKS.register("pipeline")
def _pipeline_task(cfg, space, data, mode):
    return None          # the standalone evaluator builds and trains each pipeline's network itself


def build_task(cfg: dict, space, data, mode: str = "sparse") -> Optional[ClassificationTask]:
    """The supernet task of ``space``; ``mode``: the strategy's supernet mode (the default layout)."""
    if data is None:
        return None
    return TASKS.get(cfg["space"]["name"])(cfg, space, data, mode)


# ---- the schedule, devices and the whole experiment ----------------------------------------------
def build_phases(cfg: dict, has_weights: bool, evaluator_name: str) -> tuple[Phase, ...]:
    """``search.phases``, or warm-up (weights only) + both; 'strategy' alone without shared weights."""
    s = cfg["search"]
    if s["phases"] is not None:
        phases = [Phase(k, n) for k, n in s["phases"]]
    elif has_weights:
        phases = [Phase("weights", s["warmup_steps"]), Phase("both", s["steps"] - s["warmup_steps"])]
    else:
        if s["warmup_steps"]:
            raise ValueError(f"search.warmup_steps trains shared weights; the {evaluator_name!r} evaluator "
                             f"has none: set it to 0")
        phases = [Phase("strategy", s["steps"])]
    if s["phases"] is None and s["warmup_steps"] > s["steps"]:
        raise ValueError(f"search.warmup_steps ({s['warmup_steps']}) exceeds search.steps ({s['steps']})")
    return phases


def build_lanes(cfg: dict):
    """The device mesh (None for one device) and the samples per step."""
    s = cfg["search"]
    devices = s["devices"]
    mesh = None
    if devices == "all" or (isinstance(devices, int) and devices > 1):
        mesh = make_mesh(None if devices == "all" else devices)
        for key in ("batch_size", "val_batch_size"):
            if s[key] is not None and s[key] % mesh.size:
                procs = f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""
                raise ValueError(f"search.{key} {s[key]} must divide evenly over the {mesh.size} devices{procs} "
                                 f"(each takes an equal share of every batch): make it a multiple of {mesh.size}")
    check_lanes(mesh, devices)      # several processes: the mesh spans all their devices
    samples = int(s["samples"]) if s["samples"] is not None else (1 if mesh is None else mesh.size)
    if samples < 1:
        raise ValueError(f"search.samples must be >= 1, got {samples}")
    return mesh, samples


def build(cfg: dict, lanes=None) -> Experiment:
    """``lanes=(mesh, samples)`` replaces the config's devices/samples (tests compare lane layouts)."""
    ev_cfg = cfg["evaluator"]
    factory = get_evaluator(ev_cfg["name"])
    data = load_data(cfg) if factory.needs_data else None
    space = build_space(cfg, data)
    mesh, samples = build_lanes(cfg) if lanes is None else lanes
    axis = AXIS if (mesh is not None or samples > 1) else None
    # the schedule depends only on whether the evaluator has weights (a class-level fact)
    phases0 = build_phases(cfg, factory.has_weights, ev_cfg["name"])
    sopts = {k: v for k, v in cfg["strategy"].items() if k != "name"}

    def make_for(phases):
        return make_strategy(cfg["strategy"]["name"], space, axis_name=axis,
                             total_steps=max(strategy_steps(phases), 1), **sopts)
    strategy = make_for(phases0)
    if cfg["search"]["phases"] is None and strategy.phases is not None and factory.has_weights:
        # the strategy's own schedule (it trains weights: not for evaluators without them)
        phases0 = [Phase(k, n) for k, n in strategy.phases(cfg["search"]["steps"], cfg["search"]["warmup_steps"])]
        strategy = make_for(phases0)
    task = build_task(cfg, space, data, strategy.mode)
    evaluator = factory({k: v for k, v in ev_cfg.items() if k != "name"}, cfg=cfg, space=space, data=data,
                        task=task, axis_name=axis, mode=strategy.mode, weight_steps=weight_steps(phases0))
    phases = check_phases(phases0, evaluator, strategy)
    trace_key = json.dumps(cfg, sort_keys=True, default=str) if cfg["search"]["trace_cache"] else None
    platform = (mesh.devices.flat[0] if mesh is not None else jax.devices()[0]).platform
    options = compiler_options(cfg["search"]["cpu_convolutions"], platform)
    search = Search(evaluator, strategy, mesh, samples, trace_key=trace_key,
                    compiler_options=tuple(sorted(options.items())) if options else None)
    return Experiment(cfg, data, space, task, strategy, evaluator, search, phases)

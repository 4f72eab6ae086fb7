"""Every kind of compiled program lowers for GPU and TPU without one (``jax.export``, platforms cuda
and tpu): the search chunk of every strategy on the NB201 supernet (sparse and dense), each phase kind,
the DARTS supernet per edge and scanned, the recurrent (PTB) supernet, the table and standalone
evaluators (MLP members, MA2ML pipelines), and the retrain steps (the NB201 and DARTS evaluation
networks' training and evaluation steps, the language model's and the MLP members' training steps).
On CPU the accelerator branches (``lax.platform_dependent``: XLA's own convolution gradients, no
cotangent barrier) are never compiled; lowering them is what shows they build there."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
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


def _compiled_chunk_text(cfg: dict) -> str:
    """The optimized HLO of the search's compiled "both" chunk (two steps of batch 8) on this machine."""
    exp = build(cfg)
    search, data = exp.search, exp.data
    tb = gather((data.x_train, data.y_train), BatchSampler(len(data.y_train), 8, 0).chunk(0, 2))
    vb = gather((data.x_val, data.y_val), BatchSampler(len(data.y_val), 8, 1).chunk(0, 2))
    chunk, _ = search._chunk_fn("both")
    return chunk.lower(search.init(jax.random.key(0)), search.inputs,
                       search.shard_batches((tb, vb))).compile().as_text()


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


@needs_cifar
@pytest.mark.parametrize("space,strategy", [
    ({"name": "nb201", "C": 2, "cells_per_stage": 1}, "random"),     # sparse
    ({"name": "nb201", "C": 2, "cells_per_stage": 1}, "darts"),      # dense
    ({"name": "darts", "C": 2, "num_cells": 3, "ops": ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"]},
     "gdas"),                                                       # sparse: scanned edges (the default)
    ({"name": "darts", "C": 2, "num_cells": 3, "ops": ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"],
      "scan_edges": False}, "gdas")], ids=["nb201-sparse", "nb201-dense", "darts-sparse", "darts-sparse-per-edge"])
def test_cpu_search_chunk_has_only_standard_layout_convolutions(space, strategy):
    """The search step is a scan body: on CPU every conv and conv gradient in it must be a standard
    NHWC/HWIO convolution (ops/conv.py's CPU gradient). XLA's own conv gradient there lowers to
    convolutions with swapped dimension labels (``f01b_i01o->01bf``: the kernel gradient) that ran
    up to 50x slower; the stem and reduction-block convs took that path until the task passed
    ``control_flow`` (the NB201 search step was 2.5x slower)."""
    hlo = _compiled_chunk_text(_image_cfg(space, {"name": strategy}))
    labels = re.findall(r"= \S+ convolution\(.*?dim_labels=([^,\s]+)", hlo)
    assert len(labels) > 20, "no convolutions found: the HLO text format changed"
    assert set(labels) == {"b01f_01io->b01f"}, Counter(labels)


@needs_cifar
def test_cpu_dense_chunk_does_not_recompute_nodes_in_their_consumers():
    """A dense node (the weighted sum of every op output into it) is materialised once, its value by
    the edge's barrier (ops/conv.py cotangent_barrier) and a conv's input before the kernel gradient's
    transpose. Without them XLA:CPU fused the node into each consumer and recomputed it there (each
    activation-shaped loop fusion reading the op outputs of every earlier edge): here up to 98
    operands, on NB201 C16 N5 a 17.6 s dense step instead of 2.8 s."""
    hlo = _compiled_chunk_text(_image_cfg({"name": "nb201", "C": 2, "cells_per_stage": 2}, {"name": "darts"}))
    operands = {m.group(1): m.group(2).count("%") for m in
                re.finditer(r"%(\S+) = f32\[\d+,\d+,\d+,\d+\]\S* fusion\((.*?)\), kind=kLoop", hlo)}
    assert len(operands) > 20, "no activation fusions found: the HLO text format changed"
    worst = max(operands, key=operands.get)
    assert operands[worst] <= 40, (worst, operands[worst])


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


# ---- retrain steps: the programs `jaxnas retrain` compiles -------------------------------------------
# train_image_run / train_lm_run / train_members build their step inside the run (closures over the net,
# the optimizer and the settings); the one training loop (jaxnas.training.loop.run_chunks) is where they
# meet it. The tests put a capturing run_chunks in the module's namespace, so what is exported is the
# library's own step on the library's own initial state, scanned over a chunk as run_chunks scans it.
class _Captured(Exception):
    pass


def _capture_run(monkeypatch, module, finish=False):
    """Patches ``module.run_chunks`` to record (state, step, batches, consts); with ``finish`` it returns
    the initial state as a finished run (the run goes on to its evaluation), else stops the run."""
    from jaxnas.training.loop import Finished
    got = {}

    def fake(run_dir, state, step, batches, schedule, **kw):
        got.update(state=state, step=step, batches=batches, consts=kw.get("consts"), schedule=schedule)
        if finish:
            return Finished(state, 0.0, {"loss": 0.0, "accuracy": 0.0})
        raise _Captured
    monkeypatch.setattr(module, "run_chunks", fake)
    return got


def _export_chunk(got, length: int = 2):
    """The chunk run_chunks compiles (``lax.scan`` of the step over ``length`` batches), exported."""
    step, consts = got["step"], got["consts"]
    batch = jax.tree.map(jnp.asarray, got["batches"](0, length))
    if consts is None:
        fn = jax.jit(lambda state, batch: jax.lax.scan(step, state, batch))
        e = jax.export.export(fn, platforms=PLATFORMS)(got["state"], batch)
    else:
        fn = jax.jit(lambda state, batch, c: jax.lax.scan(lambda s, b: step(s, b, c), state, batch))
        e = jax.export.export(fn, platforms=PLATFORMS)(got["state"], batch, consts)
    assert tuple(e.platforms) == PLATFORMS and e.mlir_module_serialized
    return e


def _tiny_images(n: int = 16, hw: int = 32, seed: int = 0):
    from jaxnas.data.images import ImageData
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, hw, hw, 3), np.uint8)
    y = (np.arange(n) % 10).astype(np.int32)
    return ImageData(x_train=x, y_train=y, x_val=x[:8], y_val=y[:8], num_classes=10,
                     class_names=tuple(str(i) for i in range(10)), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _image_net(kind: str, arch_seed: int = 1):
    """The discrete network of a sampled architecture through jaxnas.models.specs (what retrain trains)."""
    from jaxnas.models.specs import build_model, darts_spec, nb201_spec
    from jaxnas.spaces.cells import DartsSpace, NasBench201Space
    if kind == "nb201":
        space = NasBench201Space.create(C=2, cells_per_stage=1)
        arch = space.sample(jax.random.key(arch_seed))
        return build_model(nb201_spec(space, arch, C=2, cells_per_stage=1, num_classes=10))
    space = DartsSpace.create(C=2, num_cells=3, ops=("none", "skip_connect", "sep_conv_3x3", "dil_conv_3x3",
                                                     "max_pool_3x3", "avg_pool_3x3"))
    arch = space.sample(jax.random.key(arch_seed))
    return build_model(darts_spec(space, arch, C=2, num_cells=3, num_classes=10, auxiliary=True))


@pytest.fixture(scope="module", params=["nb201", "darts"])
def image_retrain(request, tmp_path_factory):
    """The training step, its state, the batches and the evaluation function of a retrain of the
    NB201 / DARTS evaluation network (the protocol's settings: DARTS with cutout, drop-path, the
    auxiliary head and clipping), captured from train_image_run."""
    import copy

    from jaxnas.protocols.cells import DEFAULTS
    from jaxnas.training import image_runs
    mp = pytest.MonkeyPatch()
    try:
        got = _capture_run(mp, image_runs, finish=True)
        ev = {}

        def fake_eval(eval_fn, variables, x, y, num_classes, eval_batch, prefix):
            ev.update(eval_fn=eval_fn, variables=variables, x=np.asarray(x[:eval_batch]))
            return {}
        mp.setattr(image_runs, "evaluate_split", fake_eval)
        s = copy.deepcopy(DEFAULTS[request.param])
        s.update(batch_size=4, epochs=1, max_steps=2, eval_batch=4, chunk=2, log_every=2, checkpoint_every=2)
        image_runs.train_image_run(_image_net(request.param), _tiny_images(), s, 0,
                                   tmp_path_factory.mktemp(f"retrain_{request.param}"))
    finally:
        mp.undo()
    assert got and ev, "train_image_run no longer goes through run_chunks / evaluate_split"
    return request.param, got, ev


def test_image_retrain_step_lowers(image_retrain):
    _export_chunk(image_retrain[1])


def test_image_eval_step_lowers(image_retrain):
    _, _, ev = image_retrain
    e = jax.export.export(ev["eval_fn"], platforms=PLATFORMS)(ev["variables"], ev["x"])
    assert tuple(e.platforms) == PLATFORMS and e.mlir_module_serialized


def test_language_model_retrain_step_lowers(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from jaxnas.models.specs import build_model, rnn_spec
    from jaxnas.spaces.rnn import RNNCellSpace
    from jaxnas.training import language_model
    space = RNNCellSpace.create(num_nodes=2, vocab_size=32, emb_size=8, hidden_size=8)
    net = build_model(rnn_spec(space, space.sample(jax.random.key(1)), dropout=0.5))
    tokens = np.random.default_rng(0).integers(0, 32, 400).astype(np.int32)
    data = SimpleNamespace(x_train=tokens, x_val=tokens[:100], x_test=tokens[:100])
    s = {"batch_size": 4, "bptt": 5, "epochs": 1, "lr": 20.0, "momentum": 0.0, "weight_decay": 5e-7,
         "grad_clip": 0.25, "schedule": "cosine", "eval_batch": 2, "max_steps": 4, "log_every": 2,
         "checkpoint_every": 2, "chunk": 2}
    got = _capture_run(monkeypatch, language_model)
    with pytest.raises(_Captured):
        language_model.train_lm_run(net, data, s, 0, tmp_path / "lm")
    _export_chunk(got)


def test_mlp_members_retrain_step_lowers(monkeypatch, tmp_path):
    """The vmapped members' chunk of jaxnas.training.mlp_runs (member_step in lanes, the training set
    a const argument)."""
    from types import SimpleNamespace

    from jaxnas.spaces import MLPSpace
    from jaxnas.training import mlp_runs
    from jaxnas.training.standalone import TrainConfig
    rng = np.random.default_rng(0)
    data = SimpleNamespace(x_train=rng.normal(size=(32, 6)).astype(np.float32),
                           y_train=(np.arange(32) % 3).astype(np.int32))
    space = MLPSpace.create(2, 6, 3, (4, 8))
    got = _capture_run(monkeypatch, mlp_runs)
    with pytest.raises(_Captured):
        mlp_runs.train_members(tmp_path / "members", data, space, [[4, 8], [8, 4]], [0, 1],
                               TrainConfig(epochs=1, batch_size=8))
    _export_chunk(got)


def test_ma2ml_pipeline_retrain_step_lowers(monkeypatch, tmp_path):
    """The pipeline lanes' chunk of jaxnas.training.pipeline_runs (standalone.pipeline_step in vmapped
    lanes: augmentation, cell and hyper-parameters; the training set a const argument)."""
    from jaxnas.config import experiment as B
    from jaxnas.training import pipeline_runs
    from jaxnas.training.standalone import PipelineConfig
    data = B.DATASETS.get("digits")({"name": "digits", "val_fraction": 0.3, "max_train": 64, "val_path": None,
                                     "test_path": None}, 0)
    space = B.SPACES.get("pipeline")({"num_subpolicies": 1, "aug_ops": ["Rotate", "Invert"], "C": 2,
                                      "cells_per_stage": 1, "lr": [0.02, 0.1], "weight_decay": [0.0, 1e-3],
                                      "label_smoothing": None, "momentum": None}, data)
    got = _capture_run(monkeypatch, pipeline_runs)
    with pytest.raises(_Captured):
        pipeline_runs.train_pipelines(tmp_path / "lanes", data, space, space.sample(jax.random.key(0), shape=(2,)),
                                      [0, 1], PipelineConfig(steps=4, batch_size=8, eval_batch=32), lanes="vmap")
    _export_chunk(got)

"""Search -> retrain -> export -> load for every registered space (``jaxnas.protocols``): a tiny real
search, a tiny retrain over two seeds, the export, and ``jaxnas.export.load`` reproducing the retrained
run's validation metrics; a retrain killed with SIGKILL resumes to the uninterrupted result (an image
space and ``rnn``). Image spaces search on the embedded 8x8 digits (no download)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import pytest

from jaxnas import protocols
from jaxnas.config import load_config, resolve
from jaxnas.config.experiment import load_data
from jaxnas.export import export, input_transform, load
from jaxnas.retrain import retrain
from jaxnas.runner import run_search
from jaxnas.tasks.classification import classification_loss
from jaxnas.tasks.language_model import stream_loss

REPO = Path(__file__).resolve().parents[1]
PTB = REPO.parent / "shared" / "data" / "ptb"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
DIGITS = {"name": "digits", "val_fraction": 0.3, "max_train": 300}
IMAGE_SEARCH = {"steps": 2, "warmup_steps": 0, "batch_size": 16, "val_batch_size": 16, "chunk": 2,
                "checkpoint_every": 2}   # one compiled phase


def _configs() -> dict:
    """space -> (search config, retrain settings): the smallest of each that still trains for real."""
    return {
        "mlp": (resolve({"data": {"name": "connect4", "max_train": 2000, "val_fraction": 0.1},
                         "space": {"name": "mlp", "num_layers": 2, "widths": [4, 8, 16]},
                         "strategy": {"name": "reinforce", "lr": 0.05}, "optimizer": {"name": "adam", "lr": 1e-2},
                         "search": {"steps": 20, "batch_size": 32, "chunk": 10, "checkpoint_every": 10}}),
                {"epochs": 1, "max_steps": 20, "top": 1}),
        "nb201": (resolve({"data": DIGITS, "space": {"name": "nb201", "C": 4, "cells_per_stage": 1},
                           "strategy": {"name": "reinforce", "lr": 0.05}, "search": IMAGE_SEARCH}),
                  {"C": 4, "cells_per_stage": 1, "epochs": 1, "max_steps": 6, "batch_size": 16,
                   "eval_batch": 100, "checkpoint_every": 3, "augment": False}),
        "darts": (resolve({"data": DIGITS, "space": {"name": "darts", "C": 4, "num_cells": 3, "scan_edges": True},
                           "strategy": {"name": "reinforce", "lr": 0.05}, "search": IMAGE_SEARCH}),
                  {"C": 4, "num_cells": 3, "epochs": 1, "max_steps": 4, "batch_size": 16, "eval_batch": 100,
                   "checkpoint_every": 2, "augment": False, "cutout": 0}),
        "rnn": (load_config(REPO / "configs" / "advantagenas_ptb_tiny.py",
                            ["search.steps=6", "search.chunk=6", "search.checkpoint_every=6", "data.max_train=4000",
                             "data.max_val=800", "space.bptt=8"]),
                {"epochs": 1, "max_steps": 6, "eval_batch": 4, "checkpoint_every": 3}),
        "pipeline": (resolve({"data": DIGITS,
                              "space": {"name": "pipeline", "num_subpolicies": 1, "C": 4, "cells_per_stage": 1,
                                        "lr": [0.03, 0.1], "weight_decay": [0.0, 5e-4]},
                              "evaluator": {"name": "standalone", "max_steps": 4, "batch_size": 16,
                                            "eval_batch": 500, "lane_mode": "sequential"},
                              "strategy": {"name": "ma2ml", "lr": 0.1, "min_buffer": 2, "final": "process_best"},
                              "search": {"steps": 2, "samples": 2, "chunk": 2, "checkpoint_every": 2}}),
                     {"steps": 5, "eval_batch": 1000}),
    }


def test_every_space_has_a_protocol_and_a_test():
    assert set(protocols.kinds()) == set(_configs()) == {"mlp", "nb201", "darts", "rnn", "pipeline"}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """``space -> a fresh copy of one finished tiny search of that space`` (each space searched once)."""
    done: dict = {}

    def get(space: str) -> Path:
        if space == "rnn" and not PTB.exists():
            pytest.skip(f"Penn Treebank is not at {PTB} (development machines only)")
        if space not in done:
            wd = tmp_path_factory.mktemp(space) / "search"
            assert run_search(_configs()[space][0], wd, progress=None)["finished"]
            done[space] = wd
        copy = tmp_path_factory.mktemp(space) / "work"
        shutil.copytree(done[space], copy)
        return copy
    return get


def _metrics_of_export(space: str, out: Path, cfg: dict, settings: dict) -> dict:
    """The validation metrics of the exported model and variables, computed as its retrain did."""
    model, variables = load(out)
    assert variables is not None
    data = load_data(cfg)
    if space == "rnn":
        got = stream_loss(model, variables["params"], data.x_val, int(settings["eval_batch"]), int(settings["bptt"]))
        return {"val_loss": got["loss"], "val_perplexity": got["perplexity"]}
    # tabular rows are standardised by the loader already (input_transform maps the raw file's rows)
    x = jnp.asarray(data.x_val) if space == "mlp" else input_transform(out)(jnp.asarray(data.x_val))
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    loss, acc = classification_loss(logits, jnp.asarray(data.y_val, jnp.int32))
    return {"val_loss": float(loss), "val_accuracy": float(acc)}


@pytest.mark.parametrize("space", ["mlp", "nb201", "darts", "rnn", "pipeline"])
def test_search_retrain_export_load(searched, space):
    wd = searched(space)
    cfg, settings = _configs()[space]
    out = retrain(wd, settings, seeds=2, progress=None)
    assert out["space"] == space and out["seeds"] == [0, 1]
    (cand,) = out["candidates"]
    assert [r["seed"] for r in cand["runs"]] == [0, 1]
    assert cand["arch"] == json.loads((wd / "result.json").read_text())["arch"]
    best = out["best"]
    exported = export(wd, wd / "export")
    arch = json.loads((exported / "architecture.json").read_text())
    assert arch["retrained"] and arch["arch"] == cand["arch"]
    if space == "pipeline":   # the pipeline's three choices travel with the network
        assert set(arch["pipeline"]) == {"aug", "nas", "hpo"}
    got = _metrics_of_export(space, exported, cfg, out["settings"])
    want = {k: best[k] for k in got}
    chex.assert_trees_all_close(got, want, rtol=2e-4, atol=1e-5)


def _retrain_cli(wd: Path, settings: dict, quiet: bool = True) -> list[str]:
    return [sys.executable, "-m", "jaxnas", "retrain", str(wd), "--no-compile-cache"] + ["--quiet"] * quiet + \
        [f"{k}={v}" for k, v in settings.items()]


@pytest.mark.parametrize("space", ["nb201", "rnn"])
def test_retrain_killed_with_sigkill_resumes_to_the_uninterrupted_result(searched, space):
    wd, twin = searched(space), searched(space)
    settings = {**_configs()[space][1], "max_steps": 60, "checkpoint_every": 3}
    # killed as soon as its first checkpoint is written, then rerun: resumes from that checkpoint
    run_dir = wd / "retrain" / "c0_s0"
    proc = subprocess.Popen(_retrain_cli(wd, settings), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run_dir / "progress.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "run.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(_retrain_cli(wd, settings, quiet=False), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from step" in resumed.stderr
    # the twin, never interrupted
    assert subprocess.run(_retrain_cli(twin, settings), env=ENV, capture_output=True).returncode == 0
    a = json.loads((wd / "retrain.json").read_text())["best"]
    b = json.loads((twin / "retrain.json").read_text())["best"]
    keys = [k for k in a if k.startswith(("val_", "test_"))] + ["train_loss"] * ("train_loss" in a)
    assert keys and {k: a[k] for k in keys} == {k: b[k] for k in keys}

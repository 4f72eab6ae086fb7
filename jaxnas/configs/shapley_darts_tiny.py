"""A tiny Shapley-NAS search on the DARTS space that runs on a CPU.

The settings of ``shapley_darts.py`` on a 5-cell, C = 4 supernet (2 x 14 x 8 players, 196
evaluated) and the 5,000-image CIFAR-10 subset next to the repository: batch 32, validation batch
64, 60 steps (30 weights-only), an estimate every 10 steps with M = 4 permutations (eta = 0.5). The
dense DARTS supernet takes minutes to compile on a CPU; pass ``data.path=...`` for your own ``.npz``.
"""
from pathlib import Path

from jaxnas.config import raw_config

try:
    _REPO = Path(__file__).resolve().parents[2]
except NameError:
    _REPO = Path(".")
DEFAULT_PATH = (_REPO / "..").resolve() / "shared" / "data" / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"
STEPS, WARMUP, BATCH, VAL_BATCH, EVERY = 60, 30, 32, 64, 10


def get_config():
    cfg = raw_config(Path(__file__).resolve().with_name("shapley_darts.py"))
    cfg["data"] = {"name": "image_npz", "path": str(DEFAULT_PATH), "val_fraction": 0.5,
                   "augment": True}
    cfg["space"].update({"C": 4, "num_cells": 5})
    cfg["strategy"].update({"every": EVERY, "num_samples": 4, "prefix_chunk": 8})
    cfg["search"].update({"steps": STEPS, "warmup_steps": WARMUP, "batch_size": BATCH,
                          "val_batch_size": VAL_BATCH, "chunk": 10, "checkpoint_every": 30,
                          "eval_batch_size": 500})
    return cfg

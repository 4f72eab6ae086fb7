"""A tiny Shapley-NAS search on NAS-Bench-201, small enough for a CPU.

The settings of ``shapley_nb201.py`` (M = 10, eta = 0.5, mu = 0.8, eps = 0.1, accuracy as V(S),
SGD 0.1 cosine, half the steps weights-only) on a small network and data set: C = 4, 1 cell per
stage, batch 32 (validation 128, the batch every Shapley value is scored on), 400 steps (200
weights-only), an estimate every 10 steps (20 estimates, each about 10 x 24 masked forward passes
of the supernet on the validation batch; the dense supernet's compile takes minutes on a CPU).

Data: an ``.npz`` with ``X`` uint8 [N, 32, 32, 3] and ``y`` [N], split in halves (D for the
weights, V for the Shapley values). The default is the 5,000-image CIFAR-10 subset next to the
repository in ``../shared/data/cifar10_jpeg_test5k/``; pass your own with ``data.path=...``. The
derived cell is looked up in the NAS-Bench-201 table when it is there (``benchmark.nb201_table``).
"""
from pathlib import Path

from jaxnas.config import raw_config

try:
    _REPO = Path(__file__).resolve().parents[2]
except NameError:  # exec'd without a file: relative to the working directory
    _REPO = Path(".")
DEFAULT_PATH = (_REPO / "..").resolve() / "shared" / "data" / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"
DEFAULT_TABLE = (_REPO / "..").resolve() / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"
STEPS, WARMUP, BATCH, VAL_BATCH, EVERY = 400, 200, 32, 128, 10


def get_config():
    cfg = raw_config(Path(__file__).resolve().with_name("shapley_nb201.py"))
    cfg["data"] = {"name": "image_npz", "path": str(DEFAULT_PATH), "val_fraction": 0.5,
                   "augment": True}
    cfg["space"].update({"C": 4, "cells_per_stage": 1})
    cfg["strategy"].update({"every": EVERY})
    cfg["search"].update({"steps": STEPS, "warmup_steps": WARMUP, "batch_size": BATCH,
                          "val_batch_size": VAL_BATCH, "chunk": 50, "checkpoint_every": 200,
                          "eval_batch_size": 500})
    cfg["benchmark"] = {"nb201_table": str(DEFAULT_TABLE) if DEFAULT_TABLE.exists() else None}
    return cfg

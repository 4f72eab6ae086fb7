"""A tiny AdvantageNAS search on NAS-Bench-201 that runs on a CPU in a couple of minutes.

The settings of ``advantagenas_nb201.py`` (App. D: Nesterov SGD / Adam (0.5, 0.999), clipping 1.0,
theta frozen for the first half, zero op removed) on a small network and a small data set:
C = 4 channels, 1 cell per stage (3 cells), batch 32, 600 steps (300 weights-only); about two
minutes on 2 CPU cores.

Data: an ``.npz`` with ``X`` uint8 [N, 32, 32, 3] and ``y`` [N], split in halves (D for the
weights, V for theta). The default is the 5,000-image CIFAR-10 subset that sits next to the
repository in ``../shared/data/cifar10_jpeg_test5k/`` (development machines only); pass your own:

    python -m jaxnas search configs/advantagenas_nb201_tiny.py data.path=/path/to/images.npz

The derived cell is a NAS-Bench-201 string: look it up with ``jaxnas.benchmarks.nb201.annotate``.
"""
from pathlib import Path

from jaxnas.config import raw_config

try:
    _REPO = Path(__file__).resolve().parents[2]
except NameError:  # exec'd without a file: relative to the working directory
    _REPO = Path(".")
DEFAULT_PATH = (_REPO / "..").resolve() / "shared" / "data" / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"
# the NAS-Bench-201 accuracy table, when it is beside the repository (benchmark.nb201_table=PATH else)
DEFAULT_TABLE = (_REPO / "..").resolve() / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"
STEPS, WARMUP, BATCH = 600, 300, 32


def _base():
    return raw_config(Path(__file__).resolve().with_name("advantagenas_nb201.py"))


def get_config():
    cfg = _base()
    cfg["data"] = {"name": "image_npz", "path": str(DEFAULT_PATH), "val_fraction": 0.5,
                   "augment": True}
    cfg["space"].update({"C": 4, "cells_per_stage": 1})
    cfg["search"].update({"steps": STEPS, "warmup_steps": WARMUP, "batch_size": BATCH,
                          "val_batch_size": BATCH, "chunk": 50, "checkpoint_every": 300,
                          "eval_batch_size": 500})
    cfg["benchmark"] = {"nb201_table": str(DEFAULT_TABLE) if DEFAULT_TABLE.exists() else None}
    return cfg

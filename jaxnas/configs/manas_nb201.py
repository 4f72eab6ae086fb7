"""MANAS on NAS-Bench-201, CIFAR-10: one agent per edge of each of the 15 cells (unique cells).

MANAS searches cells that are not repeated (sec. 5); on NAS-Bench-201 the benchmark's answer exists
only for one cell repeated 15 times, so ``space.unique_cells`` is False here (6 agents, 5 ops, the
derived cell is a benchmark string; set it True for 90 agents). The AdvantageNAS/NAS-Bench-201
protocol otherwise: D = train[:50%] for the weights, V = train[50%:] for the losses, 25,000 each,
batch 64, 100 epochs (391 steps each), weights Nesterov SGD 0.1 cosine, momentum 0.9, weight decay
5e-4, clipping 1. MANAS: coordinated credit + EXP3 (App. B.1 starting lr / explore from steps x devices).

    python -m jaxnas search configs/manas_nb201.py data.data_dir=/path/to/tfds
"""
from pathlib import Path

from jaxnas.config import raw_config

try:
    _HERE = Path(__file__).resolve().parent
except NameError:  # exec'd without a file
    _HERE = Path("configs")


def get_config():
    cfg = raw_config(_HERE / "advantagenas_nb201.py")
    cfg["space"] = {"name": "nb201", "C": 16, "cells_per_stage": 5, "unique_cells": False}
    cfg["strategy"] = {"name": "manas", "credit": "coordinated", "sampler": "softmax", "final": "argmax"}
    cfg["search"]["warmup_steps"] = 0
    return cfg

"""A tiny MANAS search on NAS-Bench-201 that runs on a CPU in a couple of minutes.

``manas_nb201.py`` on a small network and data set (as ``advantagenas_nb201_tiny.py``): C = 4, one
cell per stage, batch 32, 600 steps, on the CIFAR-10 subset beside the repository (overridable:
``data.path=/path/to/images.npz``); the derived cell is a NAS-Bench-201 string, looked up in the
benchmark table when ``benchmark.nb201_table`` is set (the default when the table is beside the repo).
``strategy.name=manas_ls`` for MANAS-LS (its default schedule: rounds of 31 weight steps and 31
row-collection steps).

    python -m jaxnas search configs/manas_nb201_tiny.py
"""
from pathlib import Path

from jaxnas.config import raw_config

try:
    _HERE = Path(__file__).resolve().parent
except NameError:  # exec'd without a file
    _HERE = Path("configs")


def get_config():
    tiny = raw_config(_HERE / "advantagenas_nb201_tiny.py")
    cfg = raw_config(_HERE / "manas_nb201.py")
    cfg["data"], cfg["benchmark"] = tiny["data"], tiny["benchmark"]
    cfg["space"].update({"C": 4, "cells_per_stage": 1})
    cfg["search"].update({k: tiny["search"][k] for k in ("steps", "batch_size", "val_batch_size", "chunk",
                                                         "checkpoint_every", "eval_batch_size")})
    cfg["search"]["warmup_steps"] = 0
    return cfg

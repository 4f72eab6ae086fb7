"""Retrain settings: a tiny DARTS evaluation network that trains on a CPU in well under a minute.

The settings of ``retrain_darts.py`` (auxiliary head 0.4, cutout 16, drop-path 0.2, SGD 0.025
cosine, weight decay 3e-4, clipping 5) on a small network: 3 cells (the reductions are cells 1 and
2), C = 4, batch 16, 6 steps, evaluation on at most 200 images. A smoke test of the whole path
(genotype -> evaluation network -> training with checkpoints -> metrics -> export), not a result:

    jaxnas retrain WORKDIR --config configs/retrain_darts_tiny.py
"""
from pathlib import Path

from jaxnas.config import raw_config


def get_config():
    cfg = raw_config(Path(__file__).resolve().with_name("retrain_darts.py"))
    cfg.update({"C": 4, "num_cells": 3, "epochs": 1, "batch_size": 16, "max_steps": 6, "max_eval": 200,
                "eval_batch": 100, "checkpoint_every": 3, "log_every": 3})
    return cfg

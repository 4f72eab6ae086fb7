"""Retrain settings: a tiny NAS-Bench-201 network for a CPU smoke run (C = 4, one cell per stage,
batch 32, 10 steps, at most 200 evaluation images); the recipe of ``retrain_nb201.py`` otherwise.

    jaxnas retrain workdirs/advantagenas_nb201_tiny --config configs/retrain_nb201_tiny.py
"""
from pathlib import Path

from jaxnas.config import raw_config


def get_config():
    cfg = raw_config(Path(__file__).resolve().with_name("retrain_nb201.py"))
    cfg.update({"C": 4, "cells_per_stage": 1, "batch_size": 32, "epochs": 1, "max_steps": 10, "max_eval": 200,
                "eval_batch": 100, "checkpoint_every": 5, "log_every": 5})
    return cfg

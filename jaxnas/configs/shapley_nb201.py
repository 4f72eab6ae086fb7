"""Shapley-NAS on NAS-Bench-201, CIFAR-10 (Xiao et al., sec. 4.1.3 and App. A.3; a GPU run).

Search space: the NAS-Bench-201 cell (6 edges, 5 ops **with** the zero op: App. A.3 "the operation
set O has 5 elements"), stacked 5 cells per stage, C = 16, one shared cell: 6 x 5 players, 24 of
them evaluated (Alg. 1 skips the zero op).

App. A.3: "We keep the hyper-parameters in the search and evaluation phase the same as CIFAR-10"
(sec. 4.1.1 / A.3, the DARTS experiment): 50 epochs at batch 256 on D = half of the CIFAR-10
training set (``train[:50%]``; V = ``train[50%:]`` scores the Shapley values), SGD lr 0.1 cosine,
momentum 0.9, weight decay 3e-4 (official ``train_search.py``; its gradient clipping 5), M = 10
permutations, eta = 0.5, mu = 0.8, eps = 0.1, V(S) = validation accuracy.

The paper's settings, with one departure taken from the official code (Euphoria16/Shapley-NAS), and
the code's other choices as overrides:
- warm-up: 15 epochs of weights alone (sec. 4.1.1); the code's 25: ``search.warmup_steps=2450``;
- frequency (the departure): Alg. 2 estimates every step; the code once per epoch, and so does this
  config (``strategy.every`` = steps per epoch): per step, one estimate (~10 x 24 / 2 supernet
  forwards) per weight step cannot give the cost the paper reports ("comparable with DARTS", 0.3 GPU
  days); pass ``strategy.every=1`` for Alg. 2 as written;
- update: the paper's eq. 6-7 (``normalize='l2'``, mean over permutations); the code's z-score and
  mean - std are ``strategy.normalize=zscore strategy.subtract_std=true``;
- one validation batch per estimate (the code draws a fresh batch of 1,024 per permutation:
  ``strategy.fresh_batch=true search.val_batch_size=10240``). The validation batch is 1,024 as the
  code's ``valid_queue``.

    python -m jaxnas search configs/shapley_nb201.py data.data_dir=/path/to/tfds

Pass ``benchmark.nb201_table=PATH`` to look the derived cell up in the NAS-Bench-201 table.
"""
from pathlib import Path

from jaxnas.config import raw_config

try:
    _HERE = Path(__file__).resolve().parent
except NameError:  # exec'd without a file
    _HERE = Path("configs")


def get_config():
    # App. A.3: the search hyper-parameters of the CIFAR-10 (DARTS) experiment, shapley_darts.py's
    # schedule, optimisers and Alg. 1-2 settings; only the space and the batching knobs differ
    cfg = raw_config(_HERE / "shapley_darts.py")
    cfg["space"] = {"name": "nb201", "C": 16, "cells_per_stage": 5, "unique_cells": False}
    cfg["strategy"]["prefix_chunk"] = 8
    cfg["evaluator"]["vmap_chunk"] = 16
    cfg["search"]["eval_batch_size"] = 1000
    return cfg

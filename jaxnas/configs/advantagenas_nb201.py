"""AdvantageNAS on NAS-Bench-201, CIFAR-10 (Sato et al., AAAI 2021, sec. 5.2 and App. D).

Search space: the NAS-Bench-201 cell (6 edges) stacked 15 times, 16/32/64 channels, one shared
cell, **without the zero op** (sec. 5.2, footnote 5; ``advantagenas_nb201_zero.py`` keeps it).

Schedule: 100 epochs, theta frozen for the first 50 (weights pre-training). An epoch is one pass
over the weight-training set D of 25,000 images (the paper splits the 50,000 CIFAR-10 training
images into D and V, 25,000 each, as NAS-Bench-201) at batch 64: ceil(25000 / 64) = 391 steps, so
``search.steps`` = 39,100 and ``search.warmup_steps`` = 19,550 (one weight step and, after warm-up,
one theta step per batch, alternately).

Weights (App. D, after NAS-Bench-201): Nesterov SGD, momentum 0.9, weight decay 5e-4, lr 0.1
cosine-annealed to 0 over the 100 epochs. Theta (after DARTS): Adam, betas (0.5, 0.999), weight
decay 3e-3, lr 3e-4 cosine-annealed to 0 over the 50 epochs it moves (``lr_schedule='cosine'``; the engine
gives theta's step count). Gradient clipping 1.0 on both ("we applied a gradient clipping of 1.0 to both w and
theta"). Augmentation: random crop 32 after 4-pixel padding + horizontal flip. Final
architecture: argmax of theta. Reward: minus the validation loss of the sampled architecture.

Data: CIFAR-10 from tensorflow-datasets, prepared offline in array_record format; pass its folder:

    python -m jaxnas search configs/advantagenas_nb201.py data.data_dir=/path/to/tfds

The split: D = tfds ``train[:50%]`` (weights), V = ``train[50%:]`` (theta's reward), 25,000 each.
Pass ``benchmark.nb201_table=PATH`` (a CSV of NAS-Bench-201 accuracies) to get the derived cell's
benchmark accuracies in ``result.json`` (``jaxnas.benchmarks.nb201.annotate``).
"""
import math

TRAIN_IMAGES = 25_000          # |D| (sec. 5.2)
BATCH = 64                     # App. D, for D and V
EPOCHS, FROZEN_EPOCHS = 100, 50
NB201_OPS_NO_ZERO = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def get_config():
    per_epoch = math.ceil(TRAIN_IMAGES / BATCH)            # 391
    steps, warmup = EPOCHS * per_epoch, FROZEN_EPOCHS * per_epoch
    return {
        "seed": 0,
        "data": {"name": "cifar10", "data_dir": None, "train_split": "train[:50%]",
                 "val_split": "train[50%:]", "augment": True},
        "space": {"name": "nb201", "C": 16, "cells_per_stage": 5, "unique_cells": False,
                  "ops": list(NB201_OPS_NO_ZERO)},
        "strategy": {"name": "advantage", "lr": 3e-4, "b1": 0.5, "b2": 0.999, "weight_decay": 3e-3,
                     "clip": 1.0, "lr_schedule": "cosine", "final": "argmax",
                     "zero_op": "none", "decay": 0.95},   # AdvantageNAS gamma = 1 - decay
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
                      "weight_decay": 5e-4, "schedule": "cosine", "clip": 1.0},
        "search": {"steps": steps, "warmup_steps": warmup, "batch_size": BATCH,
                   "val_batch_size": BATCH, "chunk": per_epoch, "checkpoint_every": 5 * per_epoch,
                   "reward": "neg_loss", "eval_batch_size": 1000},
    }

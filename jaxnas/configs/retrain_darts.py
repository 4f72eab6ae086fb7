"""Retrain settings: the DARTS evaluation protocol for a DARTS-space genotype (full size, a GPU run).

DARTS (Liu et al. 2019, sec. 3.3 and A.2) as MANAS and Shapley-NAS (App.) retrain their cells: 20
cells (18 normal, 2 reduction at 1/3 and 2/3 of the depth), C = 36 initial channels, 600 epochs,
batch 96, SGD momentum 0.9, lr 0.025 cosine-annealed to 0, weight decay 3e-4, gradient clipping 5,
cutout 16, drop-path 0.2 (rising linearly from 0 over the epochs; 0.3 for ImageNet-size data, as
Shapley-NAS uses), auxiliary head (after the second reduction cell) weighted 0.4, random crop + flip.

    jaxnas retrain WORKDIR --config configs/retrain_darts.py

WORKDIR is a finished DARTS-space search (``space.name='darts'``); its data section decides the
data. The protocol trains on the full 50,000 CIFAR-10 training images and reports the test split:
when the search split the training set (tfds ``train_split='train[:50%]'``), pass e.g.
``data.train_split=train data.val_split=test`` (then ``val_*`` is the test set; there is no
separate choice to make with one candidate). These are also the defaults of ``jaxnas retrain`` for a
DARTS-space work dir; this file states them in one place.
"""


def get_config():
    return {
        "C": 36,
        "num_cells": 20,
        "epochs": 600,
        "batch_size": 96,
        "optimizer": "sgd",
        "lr": 0.025,
        "schedule": "cosine",
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 3e-4,
        "grad_clip": 5.0,
        "augment": True,
        "cutout": 16,
        "drop_path": 0.2,
        "auxiliary_weight": 0.4,
        "seeds": 1,
        "eval_batch": 500,
        "checkpoint_every": 2000,
        "log_every": 100,
    }

"""MANAS on CIFAR-10: 20 unique DARTS cells (Carlucci et al., sec. 5 and App. B.1).

Search space: the DARTS cell (2 inputs, 4 nodes, 14 edges, 8 ops incl. 'none'), **20 cells, all
unique** (280 agents, one per edge of every cell; reductions at 1/3 and 2/3 depth), searched directly
on the network that is retrained (sec. 5 "Search Space"). Sparse supernet: one op per edge runs.
``space.scan_edges=True``: each cell's edges are compiled once (twice in a reduction cell) instead of
14 times; on 2 CPU cores (batch 64) the step compiles in 50 s instead of 620 s and runs as fast
(bench/results/supernet_cost.json, ``darts20_unique``).

Search length (sec. 5 "Search Protocol"): "500 epochs during the search phase for architectures with
20 cells, 400 epochs for 14 cells, and 50 epochs for 8 cells" -- 500 here (DARTS searches 50 epochs of
8 cells); the length also sets the horizon n of the EXP3 rates below. DARTS settings otherwise
("all other metaparameters ... as in Liu et al. (2019)"; Liu et al. sec. 3.1): C = 16, batch 64, half of the CIFAR-10 training set for the weights and half for the validation
loss (sec. 5: "During the search phase we use half of the training set as validation"): 25,000
images each, ceil(25000 / 64) = 391 steps per epoch; weights: SGD momentum 0.9, lr 0.025 cosine,
weight decay 3e-4, clipping 5. Augmentation: random crop + flip (App. A).

MANAS = coordinated credit + softmax (EXP3) sampling; lr (eta) and explore (gamma) default to the
App. B.1 starting values from the number of architectures the search sees (steps x devices; the
paper's update, sec. 4.1, without a loss baseline: ``strategy.baseline=true`` is our variance option):
``strategy.lr=... strategy.explore=...`` to tune them, as the authors did. One weight step and one
MANAS step per batch (phase 'both'); final: each agent's best op (DARTS genotype rule, 2 inputs per node).

Data: CIFAR-10 from tensorflow-datasets in array_record format (prepared offline):

    python -m jaxnas search configs/manas_darts20.py data.data_dir=/path/to/tfds
"""
import math

TRAIN_IMAGES, BATCH, EPOCHS = 25_000, 64, 500    # sec. 5: 500 search epochs for 20 cells


def get_config():
    per_epoch = math.ceil(TRAIN_IMAGES / BATCH)      # 391
    return {
        "seed": 0,
        "data": {"name": "cifar10", "data_dir": None, "train_split": "train[:50%]",
                 "val_split": "train[50%:]", "augment": True},
        "space": {"name": "darts", "C": 16, "num_cells": 20, "unique_cells": True, "scan_edges": True},
        "strategy": {"name": "manas", "credit": "coordinated", "sampler": "softmax", "final": "argmax"},
        "optimizer": {"name": "sgd", "lr": 0.025, "momentum": 0.9, "weight_decay": 3e-4,
                      "schedule": "cosine", "clip": 5.0},
        "search": {"steps": EPOCHS * per_epoch, "warmup_steps": 0, "batch_size": BATCH,
                   "val_batch_size": BATCH, "chunk": per_epoch, "checkpoint_every": 5 * per_epoch,
                   "reward": "neg_loss", "eval_batch_size": 500},
    }

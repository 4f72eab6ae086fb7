"""Shapley-NAS on the DARTS space, CIFAR-10 (Xiao et al., sec. 4.1.1 and App. A.3; a GPU run).

Supernet: 8 cells (6 normal, 2 reduction at 1/3 and 2/3), C = 16, the 8 DARTS ops: 2 x 14 x 8
players, 196 evaluated (Alg. 1 skips the zero op). PC-DARTS partial channel connections with
K = 4 (sec. 4.1.1: ``space.partial_channels=4``; ``DartsNet(partial_channels=...)`` in
``jaxnas/models/supernets/cells.py``): each edge's ops see a quarter of the channels.

Schedule and optimisers (sec. 4.1.1, official ``train_search.py``): 50 epochs at batch 256 on half
of the CIFAR-10 training set (the other half scores the Shapley values), weights SGD lr 0.1
cosine-annealed, momentum 0.9, weight decay 3e-4, gradient clipping 5; warm-up 15 epochs (sec. 4.1.1;
the official code trains the weights alone for 25: ``search.warmup_steps=2450``). Alg. 1: M = 10, eta = 0.5, V(S) = validation
accuracy on a batch of 1,024 (the code's ``valid_queue``). Alg. 2: mu = 0.8, eps = 0.1, eq. 6-7's
normalisation. One departure from the paper, taken from the code: an estimate once per epoch
(``strategy.every``), not every step as Alg. 2 is written (``every=1``): per step, one estimate (~10 x
196 / 2 supernet forwards) per weight step cannot give the cost the paper reports (0.3 GPU days); see ``shapley_nb201.py`` for the code's other choices as overrides. Final: the DARTS
genotype of alpha (two strongest non-zero inputs per node).

    python -m jaxnas search configs/shapley_darts.py data.data_dir=/path/to/tfds
"""
import math

TRAIN_IMAGES = 25_000
BATCH, VAL_BATCH = 256, 1024
EPOCHS, WARMUP_EPOCHS = 50, 15      # sec. 4.1.1 (the official code: 25)


def get_config():
    per_epoch = math.ceil(TRAIN_IMAGES / BATCH)            # 98
    return {
        "seed": 0,
        "data": {"name": "cifar10", "data_dir": None, "train_split": "train[:50%]",
                 "val_split": "train[50%:]", "augment": True},
        "space": {"name": "darts", "C": 16, "num_cells": 8, "unique_cells": False,
                  "partial_channels": 4},
        "strategy": {"name": "shapley", "num_samples": 10, "eta": 0.5, "value": "accuracy",
                     "decay": 0.8, "lr": 0.1, "normalize": "l2", "subtract_std": False,
                     "every": per_epoch, "fresh_batch": False, "prefix_chunk": 4},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 3e-4,
                      "schedule": "cosine", "clip": 5.0},
        "evaluator": {"name": "shared_weights", "vmap_chunk": 8},
        # search.reward is the evaluator's reward (what a gradient strategy gets when switched to);
        # Shapley-NAS's V(S) is strategy.value: the validation accuracy from the reward's aux
        "search": {"steps": EPOCHS * per_epoch, "warmup_steps": WARMUP_EPOCHS * per_epoch,
                   "batch_size": BATCH, "val_batch_size": VAL_BATCH, "chunk": per_epoch,
                   "checkpoint_every": 5 * per_epoch, "reward": "neg_loss", "eval_batch_size": 500},
    }

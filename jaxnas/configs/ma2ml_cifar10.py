"""MA2ML on CIFAR-10 (tfds): AUG (5 AutoAugment sub-policies) x NAS-Bench-201 cell (C = 16, 5 cells
per stage: the benchmark's network) x HPO grids, the poster's reward with a FLOPs constraint
``R = Acc (FLOPs / FLOPs_constraint)^w`` (w = -0.07, MnasNet's soft constraint), pipelines trained
from scratch, 8 per round (one per device with search.devices=8, else vmapped on one device).

Needs CIFAR-10 prepared for tfds in array_record format (no download happens here):

    tfds build cifar10 --file_format=array_record --data_dir DIR
    python -m jaxnas search configs/ma2ml_cifar10.py data.data_dir=DIR

Every pipeline is a full training (here 4,000 SGD steps of batch 128, about 10 epochs): an
accelerator job. ``configs/ma2ml_cifar10_tiny.py`` is the CPU version on a 5,000-image subset.
"""


def get_config():
    return {
        "seed": 0,
        "data": {"name": "cifar10", "data_dir": None, "train_split": "train[:45000]",
                 "val_split": "train[45000:]"},
        "space": {"name": "pipeline", "num_subpolicies": 5, "C": 16, "cells_per_stage": 5,
                  "lr": [0.025, 0.05, 0.1, 0.2], "weight_decay": [1e-4, 3e-4, 5e-4, 1e-3],
                  "label_smoothing": [0.0, 0.1]},
        "evaluator": {"name": "standalone", "max_steps": 4000, "batch_size": 128, "optimizer": "sgd",
                      "momentum": 0.9, "lr": 0.1, "schedule": "cosine", "flip": True, "crop_padding": 4,
                      "eval_batch": 500, "flops_constraint": 1.0e8, "flops_exponent": -0.07,
                      "lane_mode": "auto", "result_steps": 20000},
        "strategy": {"name": "ma2ml", "lr": 0.1, "final": "process_best"},
        "search": {"steps": 50, "samples": 8, "chunk": 1, "checkpoint_every": 1},
    }

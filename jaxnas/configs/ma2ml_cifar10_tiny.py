"""The CPU version of ``ma2ml_cifar10.py``: the 5,000-image CIFAR-10 subset next to the repository
(``../shared/data/cifar10_jpeg_test5k/``; pass your own npz with data.path=...), half for training,
half for validation; a small NB201 skeleton (C = 4, one cell per stage), 2 AutoAugment sub-policies,
pipelines of 100 SGD steps of batch 32; 6 rounds x 8 pipelines; the same FLOPs-constrained reward
(constraint 2 MFLOPs per image).

    python -m jaxnas search configs/ma2ml_cifar10_tiny.py --workdir runs/ma2ml_cifar_tiny
"""
from pathlib import Path

try:
    _REPO = Path(__file__).resolve().parents[2]
except NameError:  # exec'd without a file
    _REPO = Path(".")
DEFAULT_PATH = (_REPO / "..").resolve() / "shared" / "data" / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"


def get_config():
    # lane_mode 'auto': a loop over the pipelines inside the one program on CPU (bench/standalone_batch.py,
    # M = 8: 685 pipelines/h vs 276 batched, whose convolutions become slow grouped ones), vmap elsewhere
    return {
        "seed": 0,
        "data": {"name": "image_npz", "path": str(DEFAULT_PATH), "val_fraction": 0.5},
        "space": {"name": "pipeline", "num_subpolicies": 2, "C": 4, "cells_per_stage": 1,
                  "lr": [0.025, 0.05, 0.1, 0.2], "weight_decay": [0.0, 5e-4, 5e-3],
                  "label_smoothing": [0.0, 0.1]},
        "evaluator": {"name": "standalone", "max_steps": 100, "batch_size": 32, "optimizer": "sgd",
                      "momentum": 0.9, "lr": 0.05, "schedule": "cosine", "flip": True, "crop_padding": 4,
                      "eval_batch": 500, "flops_constraint": 2.0e6, "flops_exponent": -0.07,
                      "lane_mode": "auto", "result_steps": 400},
        "strategy": {"name": "ma2ml", "lr": 0.1, "final": "process_best"},
        "search": {"steps": 6, "samples": 8, "chunk": 2, "checkpoint_every": 2},
    }

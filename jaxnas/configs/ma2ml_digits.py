"""MA2ML on the embedded 8x8 digits (UCI, shipped in the package): AUG x NB201 cell x HPO pipelines,
each trained from scratch, 8 per round in one compiled program.

Agents (space.name='pipeline'): AUG, 2 AutoAugment sub-policies (2 x (op, probability, magnitude)
each); NAS, the NAS-Bench-201 cell on a small skeleton (C = 8, one cell per stage); HPO, learning
rate x weight decay x label smoothing grids. Each pipeline trains 150 SGD steps of batch 64 on 1,257
images and is scored on 540 held-out images; reward = validation accuracy (no FLOPs constraint).
12 rounds x 8 pipelines = 96 pipelines; the derived pipeline is retrained for 600 steps.
Measured on 2 CPU cores shared with other jobs (load 6-9): 44 min of search + 2.6 min of retrain
(validation accuracy 0.991 on the 540 held-out images); expect less than half on a quiet machine.

    python -m jaxnas search configs/ma2ml_digits.py --workdir runs/ma2ml_digits
"""


def get_config():
    # lane_mode 'auto': a loop over the pipelines inside the one program on CPU (bench/standalone_batch.py,
    # M = 8: 685 pipelines/h vs 276 batched, whose convolutions become slow grouped ones), vmap elsewhere
    return {
        "seed": 0,
        "data": {"name": "digits", "val_fraction": 0.3},
        "space": {"name": "pipeline", "num_subpolicies": 2, "C": 8, "cells_per_stage": 1,
                  "lr": [0.01, 0.03, 0.1, 0.3], "weight_decay": [0.0, 5e-4, 5e-3],
                  "label_smoothing": [0.0, 0.1]},
        "evaluator": {"name": "standalone", "max_steps": 150, "batch_size": 64, "optimizer": "sgd",
                      "momentum": 0.9, "lr": 0.05, "schedule": "cosine", "eval_batch": 540,
                      "lane_mode": "auto", "result_steps": 600},
        "strategy": {"name": "ma2ml", "lr": 0.1, "min_buffer": 8, "final": "process_best"},
        "search": {"steps": 12, "samples": 8, "chunk": 4, "checkpoint_every": 4},
    }

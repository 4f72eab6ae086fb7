"""Retrain settings: the NAS-Bench-201 training of a cell (Dong & Yang 2020, sec. 3).

The benchmark's network (stem, 3 stages of 5 cells with 16/32/64 channels, residual reductions) and
recipe: 200 epochs, batch 256, SGD Nesterov momentum 0.9, lr 0.1 cosine-annealed to 0, weight decay
5e-4, random crop + horizontal flip. When ``table`` (or the search's ``benchmark.nb201_table``)
names a NAS-Bench-201 accuracy table, ``retrain.json`` also carries the cell's benchmark row.

    jaxnas retrain WORKDIR --config configs/retrain_nb201.py [table=PATH]
"""


def get_config():
    return {"C": 16, "cells_per_stage": 5, "epochs": 200, "batch_size": 256, "optimizer": "sgd", "lr": 0.1,
            "schedule": "cosine", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
            "augment": True, "seeds": 1, "checkpoint_every": 2000, "log_every": 100}

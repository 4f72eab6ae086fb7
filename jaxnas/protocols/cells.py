"""The retrain protocols of the cell spaces:

- ``nb201``: the NAS-Bench-201 network (C = 16, 5 cells per stage) of the derived cell trained with the
  benchmark's recipe (Dong & Yang 2020, sec. 3 / Table 1): SGD Nesterov 0.9, lr 0.1 cosine, weight
  decay 5e-4, batch 256, 200 epochs, random crop + flip; plus the table row when ``table`` (or the
  search's ``benchmark.nb201_table``) names one.
- ``darts``: the DARTS evaluation network of the genotype (``jaxnas.models.networks.DartsEvalNet``:
  20 cells, C = 36, auxiliary head weight 0.4, cutout 16, drop-path 0.2 rising linearly over the
  epochs, 600 epochs, batch 96, SGD momentum 0.9 lr 0.025 cosine, weight decay 3e-4, gradient
  clipping 5; DARTS sec. 3.3 / A.2, the protocol of MANAS and Shapley-NAS as well).
  ``drop_path=0.3`` for ImageNet-size data.

Runs train one (candidate, seed) at a time (``jaxnas.training.image_runs``), each with its own
checkpoints in ``retrain/c0_s<seed>/``: a killed run resumes from its newest checkpoint.
"""
from __future__ import annotations

import copy

from jaxnas.benchmarks.nb201 import annotate
from jaxnas.config.experiment import num_classes
from jaxnas.core.workdir import progress_line
from jaxnas.data.inputs import input_info
from jaxnas.models.specs import build_model, darts_spec, nb201_spec
from jaxnas.protocols.base import RETRAIN_DIR, RunContext, choose_best, mean_metrics, register, searched_arch, seed_list
from jaxnas.training.image_runs import train_image_run

_IMAGE_COMMON = {
    "seeds": 1,               # number of seeds (0 .. S-1) or a list of seeds
    "top": 1,                 # candidates (cell spaces derive one architecture)
    "epochs": 1,
    "batch_size": 96,
    "lr": 0.025,
    "optimizer": "sgd",       # sgd | adam
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 3e-4,     # L2 on the gradient (PyTorch SGD weight_decay)
    "grad_clip": None,        # global-norm clipping
    "schedule": "cosine",     # cosine (to 0 over all steps) | constant
    "max_steps": None,        # stop after this many steps (tests, smoke runs)
    "augment": True,          # random crop (pad 4) + horizontal flip
    "cutout": 0,              # cutout square side in pixels (0: off)
    "drop_path": 0.0,         # final drop-path rate (linear from 0 over the epochs)
    "auxiliary_weight": 0.0,  # weight of the auxiliary head's loss (0: no auxiliary head)
    "eval_batch": 500,
    "max_eval": None,         # evaluate on at most this many validation / test examples
    "checkpoint_every": 1000,  # steps between orbax checkpoints (and one at the end)
    "chunk": 1,               # steps per compiled call (a scan over host-gathered batches): on CPU 50 gave no
                              # speedup over 1 (bench/results/retrain_chunks.json); accelerators: unmeasured
    "log_every": 50,          # steps between progress lines
    # on CPU, who runs single convolutions (core/cpu_compile.py), as search.cpu_convolutions: XLA's own
    # made the NB201 C16 N5 training step 0.81x of YNNPACK's, DARTS-8 C16's 0.98x (within noise;
    # bench/retrain_convolutions.py)
    "cpu_convolutions": "xla",
}

DEFAULTS: dict[str, dict] = {
    # NAS-Bench-201 (Dong & Yang 2020, sec. 3 / Table 1): the benchmark's training of every cell
    "nb201": {**_IMAGE_COMMON, "C": 16, "cells_per_stage": 5, "epochs": 200, "batch_size": 256,
              "lr": 0.1, "nesterov": True, "weight_decay": 5e-4, "table": None},
    # DARTS (Liu et al. 2019, sec. 3.3 / A.2), the protocol of MANAS and Shapley-NAS as well
    "darts": {**_IMAGE_COMMON, "C": 36, "num_cells": 20, "epochs": 600, "batch_size": 96,
              "lr": 0.025, "weight_decay": 3e-4, "grad_clip": 5.0, "cutout": 16, "drop_path": 0.2,
              "auxiliary_weight": 0.4},
}


def default_settings(cfg: dict) -> dict:
    kind = cfg["space"]["name"]
    out = copy.deepcopy(DEFAULTS[kind])
    sp = cfg["space"]
    if kind == "nb201":
        out["table"] = (cfg.get("benchmark") or {}).get("nb201_table")
        if sp.get("unique_cells"):   # one cell per position: the network keeps the search's depth
            out["cells_per_stage"] = int(sp["cells_per_stage"])
    if kind == "darts" and sp.get("unique_cells"):
        out["num_cells"] = int(sp["num_cells"])
    return out


def spec(cfg: dict, space, arch, data, s: dict) -> dict:
    """The spec (``jaxnas.models.specs``) of the evaluation network of ``arch``."""
    kind, ncls = cfg["space"]["name"], num_classes(data)
    if kind == "nb201":
        return nb201_spec(space, arch, C=s["C"], cells_per_stage=s["cells_per_stage"], num_classes=ncls)
    return darts_spec(space, arch, C=s["C"], num_cells=s["num_cells"], num_classes=ncls,
                      auxiliary=s["auxiliary_weight"] > 0)


def run(ctx: RunContext):
    rdir, cfg, result, s, progress = ctx.rdir, ctx.cfg, ctx.result, ctx.settings, ctx.progress
    kind = cfg["space"]["name"]
    data, space, arch = searched_arch(cfg, result)
    table = None
    if kind == "nb201" and s.get("table"):
        table = annotate({"arch": space.encode(arch)}, s["table"])["nb201"]   # fails before training
    net_spec = spec(cfg, space, arch, data, s)
    net = build_model(net_spec)
    runs = []
    for seed in seed_list(s):
        label = f"c0_s{seed}"
        run = train_image_run(net, data, s, seed, rdir / label, progress, label, ctx.stop_after,
                              final_as=f"{RETRAIN_DIR}/{label}/final", stop=ctx.stop)
        if run is None:
            return None
        runs.append(run)
    cand = {"arch": space.encode(arch), "arch_indices": arch.tolist(), "param_count": runs[0]["param_count"],
            "runs": runs, "mean": mean_metrics(runs), "model": net_spec}
    if "genotype" in result:
        cand["genotype"] = result["genotype"]
    if table is not None:
        cand["nb201"] = table
    best = choose_best([cand])
    progress_line(progress, f"retrained {cand['arch']}: val accuracy {best['val_accuracy']:.4f} "
                   f"(loss {best['val_loss']:.4f}), {cand['param_count']:,} parameters")
    return {"protocol": kind, "seeds": seed_list(s), "candidates": [cand], "best": best,
            "input": input_info(data)}


for _name in ("nb201", "darts"):
    register(_name, default_settings=default_settings, spec=spec, run=run)

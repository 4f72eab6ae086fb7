"""Experiment configs: a Python file whose ``get_config()`` returns a nested dict.

Every key must exist in ``DEFAULTS`` (except ``strategy``, whose extra keys are the strategy's own
options, checked by the strategy; naming another strategy drops the previous one's options). Command-line overrides are ``dotted.key=value`` with Python
literals (``search.steps=200 strategy.lr=0.01 space.widths=[8,16]``).
"""
from __future__ import annotations

import ast
import copy
import importlib.util
from pathlib import Path

DEFAULTS: dict = {
    "seed": 0,
    "data": {
        "name": "connect4",   # connect4 (embedded) | tabular | image_npz | cifar10 | cifar100 | any tfds name
        "path": None,         # tabular / image_npz file
        "data_dir": None,     # tfds data_dir prepared in array_record format
        "train_split": "train",  # tfds: weights train on this split ...
        "val_split": "test",     # ... the strategy's reward (e.g. DARTS-style "train[50%:]")
        "label": None,        # tabular: label column (CSV) — default last
        "val_fraction": 0.2,
        "max_train": None,
        "max_val": None,
        "standardize": True,
        "augment": False,     # images: random crop (pad 4) + horizontal flip
    },
    "space": {
        "name": "mlp",        # mlp | nb201 | darts
        "num_layers": 2,
        "widths": None,       # mlp: list of widths (default: TabNAS's 20 sizes)
        "C": 16,
        "cells_per_stage": 5,
        "num_cells": 8,
        "unique_cells": False,
        "ops": None,          # cell spaces: a subset of the op names
    },
    "strategy": {"name": "reinforce"},
    "optimizer": {
        "name": "adam",       # adam | sgd
        "lr": 1e-3,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,          # Adam epsilon (TabNAS uses 1e-3)
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 0.0,
        "clip": None,
        "schedule": "constant",  # constant | cosine
    },
    "benchmark": {
        "nb201_table": None,  # CSV(.gz) of NAS-Bench-201 accuracies: the result gets the derived cell's
    },
    "search": {
        "steps": 1000,
        "warmup_steps": 0,    # weights only (the strategy does not move)
        "batch_size": 256,
        "val_batch_size": None,
        "chunk": 50,          # steps per compiled call (lax.scan)
        "checkpoint_every": 500,
        "devices": 1,         # 1, a number, or "all": data parallel over a device mesh
        "reward": "neg_loss", # neg_loss | accuracy
        "eval_batch_size": 2048,
    },
}


def _merge(base: dict, update: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        where = f"{path}{k}"
        if path == "strategy.":
            out[k] = v
            continue
        if k not in base:
            raise ValueError(f"unknown config key {where!r}; valid keys here: {', '.join(sorted(base))}")
        if k == "strategy" and not path and isinstance(v, dict) and v.get("name", base[k].get("name")) != base[k].get("name"):
            out[k] = dict(v)  # another strategy: the old one's options do not apply
            continue
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise ValueError(f"config key {where!r} must be a dict of {', '.join(sorted(base[k]))}")
            out[k] = _merge(base[k], v, where + ".")
        else:
            out[k] = v
    return out


def parse_overrides(items) -> dict:
    """``["search.steps=10", "strategy.lr=0.1"]`` -> nested dict (values as Python literals)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, _, raw = item.partition("=")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_config(path, overrides=()) -> dict:
    """Loads ``get_config()`` from ``path``, applies overrides, checks every key."""
    return resolve(raw_config(path), overrides)


def raw_config(path) -> dict:
    """``get_config()`` of a config file, unresolved (configs that extend another one call this)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {str(p)!r} not found (give the path of a Python file with "
                                f"get_config(), e.g. configs/quickstart.py)")
    spec = importlib.util.spec_from_file_location(f"jaxnas_config_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{p} has no get_config() function")
    return module.get_config()


def resolve(config: dict, overrides=()) -> dict:
    cfg = _merge(DEFAULTS, config)
    cfg = _merge(cfg, parse_overrides(overrides))
    if "name" not in cfg["strategy"]:
        raise ValueError("config key 'strategy.name' is required")
    if cfg["search"]["steps"] < 1 or cfg["search"]["chunk"] < 1:
        raise ValueError("search.steps and search.chunk must be >= 1")
    if cfg["search"]["checkpoint_every"] % cfg["search"]["chunk"]:
        raise ValueError(f"search.checkpoint_every ({cfg['search']['checkpoint_every']}) must be a multiple "
                         f"of search.chunk ({cfg['search']['chunk']})")
    return cfg

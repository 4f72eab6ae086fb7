"""Experiment configs: a Python file whose ``get_config()`` returns a nested dict.

Every key must exist in ``DEFAULTS``, except in the *tagged* sections ``space``, ``evaluator`` and
``strategy``, whose keys depend on their ``name``: a space's and an evaluator's keys are checked
against their registered defaults here, a strategy's options by the strategy; naming another one drops
the previous one's keys. Command-line overrides are ``dotted.key=value`` with Python literals
(``search.steps=200 strategy.lr=0.01 space.widths=[8,16]``).
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
    # tagged sections: the keys of each depend on its name (defaults from the registry of spaces /
    # evaluators, options of the strategy); naming another one drops the old one's keys
    "space": {"name": "mlp"},           # mlp | nb201 | darts (jaxnas.build.SPACES)
    "evaluator": {"name": "shared_weights"},  # shared_weights | table | standalone
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
        "phases": None,       # or [[kind, steps], ...], kind weights | strategy | both (then steps = their sum)
        "samples": None,      # samples (lanes) per step; default: one per device
        "batch_size": 256,
        "val_batch_size": None,
        "chunk": 50,          # steps per compiled call (lax.scan)
        "checkpoint_every": 500,
        "devices": 1,         # 1, a number, or "all": one sample per device, data parallel
        "reward": "neg_loss", # shared_weights: neg_loss | accuracy
        "eval_batch_size": 2048,
    },
}


TAGGED = ("space", "evaluator", "strategy")


def _merge(base: dict, update: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        where = f"{path}{k}"
        if path.rstrip(".") in TAGGED:
            out[k] = v
            continue
        if k not in base:
            raise ValueError(f"unknown config key {where!r}; valid keys here: {', '.join(sorted(base))}")
        if k in TAGGED and not path and isinstance(v, dict) and v.get("name", base[k].get("name")) != base[k].get("name"):
            out[k] = dict(v)  # another space/evaluator/strategy: the old one's keys do not apply
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


def _tagged(section: str, given: dict, registry) -> dict:
    """``given`` completed with the registered defaults of its name; unknown names/keys raise."""
    name = given.get("name")
    defaults = registry(name)   # raises, listing the valid names
    unknown = sorted(set(given) - {"name"} - set(defaults))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(f'{section}.{k}' for k in unknown)} for "
                         f"{section}.name={name!r}; its keys are: {', '.join(sorted(defaults)) or '(none)'}")
    return {"name": name, **copy.deepcopy(defaults), **{k: v for k, v in given.items() if k != "name"}}


def resolve(config: dict, overrides=()) -> dict:
    from jaxnas.build import SPACES
    from jaxnas.evaluators import get as get_evaluator
    cfg = _merge(DEFAULTS, config)
    cfg = _merge(cfg, parse_overrides(overrides))
    if "name" not in cfg["strategy"]:
        raise ValueError("config key 'strategy.name' is required")
    if "total_steps" in cfg["strategy"]:
        raise ValueError("strategy.total_steps is set by the engine (the strategy steps of the schedule: "
                         "search.steps minus search.warmup_steps, or the non-'weights' search.phases); "
                         "remove it from the config")
    cfg["space"] = _tagged("space", cfg["space"], lambda n: SPACES.get(n).defaults)
    cfg["evaluator"] = _tagged("evaluator", cfg["evaluator"], lambda n: get_evaluator(n).defaults)
    s = cfg["search"]
    if s["phases"] is not None:
        try:
            phases = [(str(k), int(n)) for k, n in s["phases"]]
        except (TypeError, ValueError):
            raise ValueError(f"search.phases must be a list of [kind, steps] pairs, got {s['phases']!r}") from None
        if s["warmup_steps"]:
            raise ValueError("give either search.phases or search.warmup_steps, not both (a warm-up is a "
                             "['weights', N] phase)")
        s["phases"] = [list(p) for p in phases]
        s["steps"] = sum(n for _, n in phases)
    if cfg["search"]["steps"] < 1 or cfg["search"]["chunk"] < 1:
        raise ValueError("search.steps and search.chunk must be >= 1")
    if cfg["search"]["checkpoint_every"] % cfg["search"]["chunk"]:
        raise ValueError(f"search.checkpoint_every ({cfg['search']['checkpoint_every']}) must be a multiple "
                         f"of search.chunk ({cfg['search']['chunk']})")
    return cfg

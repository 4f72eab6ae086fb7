"""Retrain protocols: how the answer of a search in each space is trained from scratch, a registry keyed
by the space's name (``cfg["space"]["name"]``). A protocol is a small unit with

- ``default_settings(cfg) -> dict``: its settings before overrides (the paper's recipe, or the search's own);
- ``spec(cfg, space, arch, data, settings) -> dict``: the discrete network (``jaxnas.models.specs``);
- ``run(ctx) -> dict | None``: trains the candidate(s) over the seeds in ``ctx.rdir`` (resumable),
  returns the ``retrain.json`` body (``candidates``, ``best``, ``input``...), None when stopped early.

``jaxnas retrain`` and ``jaxnas export`` look the protocol up here; a new space registers one
(``register(name, default_settings=..., spec=..., run=...)``) and nothing else changes.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from jaxnas.benchmarks.nb201 import BENCHMARK_DATA
from jaxnas.config.experiment import build_space, load_data
from jaxnas.config.settings import resolve
from jaxnas.core import schema as S
from jaxnas.core.cpu_compile import CPU_CONVOLUTIONS
from jaxnas.core.registry import Registry

RETRAIN_DIR = "retrain"
PROTOCOLS = Registry("retrain protocol")

_COUNT = S.Int(ge=1)
# The type and range of every retrain setting a protocol may declare (its defaults give the values):
# the one settings mechanism of the config (``jaxnas.core.schema``), so a bad value is reported the same way.
SETTINGS: dict = {
    "seeds": S.Either(S.Int(ge=1), S.List(S.Int(), min_len=1, unique=True),
                      doc="a count >= 1 or a non-empty list of distinct integer seeds"),
    **{k: _COUNT for k in ("top", "epochs", "steps", "batch_size", "eval_batch", "checkpoint_every", "log_every",
                           "chunk", "member_batch", "num_final_samples", "C", "num_cells", "cells_per_stage",
                           "bptt")},
    "max_steps": S.Optional(_COUNT), "max_eval": S.Optional(_COUNT),
    "lr": S.Float(gt=0), "eps": S.Float(gt=0), "b1": S.Float(ge=0, lt=1), "b2": S.Float(ge=0, lt=1),
    "optimizer": S.Choice("sgd", "adam"), "schedule": S.Choice("cosine", "constant"),
    "momentum": S.Float(ge=0), "weight_decay": S.Float(ge=0), "auxiliary_weight": S.Float(ge=0),
    "cutout": S.Int(ge=0), "drop_path": S.Float(ge=0, lt=1), "dropout": S.Float(ge=0, lt=1),
    "grad_clip": S.Optional(S.Float(gt=0)), "nesterov": S.Bool(), "augment": S.Bool(),
    "table": S.Optional(S.Path()),
    "cpu_convolutions": S.Choice(*CPU_CONVOLUTIONS),
}


@dataclasses.dataclass(eq=False)   # not frozen: the registry records its schema on it
class Protocol:
    name: str
    default_settings: Callable[[dict], dict]
    spec: Callable[..., dict]
    run: Callable[["RunContext"], Optional[dict]]


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What a protocol's ``run`` gets: the search work dir, the retrain folder inside it, the search
    config (data overrides applied), its result, the resolved settings and the progress stream."""
    workdir: Path
    rdir: Path
    cfg: dict
    result: dict
    settings: dict
    progress: Any = None
    stop_after: Optional[int] = None      # image / LM runs stop after this many steps (tests of resume)
    stop: Any = None                      # jaxnas.core.signals.StopSignals: SIGTERM / SIGINT end a run resumably


def register(name: str, *, default_settings, spec, run) -> Protocol:
    p = Protocol(name, default_settings, spec, run)
    PROTOCOLS.register(name)(p)
    return p


def get(name: str) -> Protocol:
    return PROTOCOLS.get(name)


def kinds() -> list[str]:
    return PROTOCOLS.names()


def seed_list(settings: dict) -> list[int]:
    s = settings["seeds"]
    return list(range(s)) if isinstance(s, int) else [int(x) for x in s]


def read_search(workdir) -> tuple[dict, dict]:
    """``(config, result)`` of a finished search work dir; says what to do when it is not one."""
    wd = Path(workdir)
    if not wd.is_dir():
        raise FileNotFoundError(f"work dir {str(wd)!r} does not exist; run `jaxnas search CONFIG "
                                f"--workdir {wd}` first")
    cfg_path, res_path = wd / "config.json", wd / "result.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{str(wd)!r} has no config.json: not a search work dir")
    if not res_path.exists():
        raise FileNotFoundError(f"{str(wd)!r} has no result.json: the search has not finished; run "
                                f"`jaxnas search CONFIG --workdir {wd}` to resume it to the end")
    cfg, result = read_json(cfg_path), read_json(res_path)
    if not result.get("finished", True) or "arch_indices" not in result:
        raise ValueError(f"{res_path} describes an unfinished search; resume it to the end first")
    if is_table_search(cfg):   # no data of its own: the benchmark's network is trained on its data set
        cfg = {**cfg, "data": resolve({"data": {"name": BENCHMARK_DATA}, "space": cfg["space"]})["data"]}
    return cfg, result


def is_table_search(cfg: dict) -> bool:
    return cfg.get("evaluator", {}).get("name") == "table"


def read_json(path: Path):
    """The JSON in ``path``; a damaged file is an error that names it and the command that rewrites it."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is damaged ({e}); rerun the command that wrote it (for a search's "
                         f"config.json / result.json: `jaxnas search CONFIG --workdir {path.parent}`)") from None


def searched_arch(cfg: dict, result: dict):
    """``(data, space, arch)``: the search's answer in its space, the data loaded as the retrain
    sees it (``cfg``: the search config with the retrain's data overrides)."""
    data = load_data(cfg)
    space = build_space(cfg, data)
    return data, space, space.check_arch(np.asarray(result["arch_indices"], np.int32))


def choose_best(candidates: list[dict]) -> dict:
    """The candidate with the lowest validation loss averaged over its seeds, and its best seed."""
    means = [float(np.mean([r["val_loss"] for r in c["runs"]])) for c in candidates]
    ci = int(np.argmin(means))
    runs = candidates[ci]["runs"]
    si = int(np.argmin([r["val_loss"] for r in runs]))
    best = {"candidate": ci, "arch": candidates[ci]["arch"], "arch_indices": candidates[ci]["arch_indices"],
            "mean_val_loss": means[ci], "run": si, "seed": runs[si]["seed"],
            **{k: v for k, v in runs[si].items() if k.startswith(("val_", "test_"))},
            "param_count": candidates[ci]["param_count"]}
    return best


def mean_metrics(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if k.startswith(("val_", "test_")) and runs[0][k] is not None]
    return {k: float(np.mean([r[k] for r in runs])) for k in keys}

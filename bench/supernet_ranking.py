"""How well does a trained NAS-Bench-201 supernet rank cells? Kendall tau / Spearman rho of the
supernet's scores against the table's 200-epoch CIFAR-10 test accuracy, over a grid of protocols.

    python bench/supernet_ranking.py [--configs c8-1-uniform-aug,...] [--steps 0,500,1000,2000,4000,8000]
                                     [--cells 200] [--top 50] [--report]

A *protocol* is a supernet configuration (channels C, cells per stage, warm-up mode, augmentation)
trained for a number of weight steps (its own cosine schedule over those steps; batch 64, Nesterov
SGD 0.05, wd 5e-4, clip 5, as NAS-Bench-201's weight recipe). Warm-up modes:
- ``uniform``: single-path, one cell drawn uniformly per step (the ``random`` strategy's samples,
  sparse supernet: SPOS / the papers' single-path methods);
- ``dense``: every op of every edge, weighted uniformly (the ``darts`` strategy's frozen uniform
  softmax, dense supernet: a DARTS warm-up).

Data: the 5,000-image CIFAR-10 subset (``../shared/data/cifar10_jpeg_test5k``), split once
(``split_seed=0``) into 4,000 training and 1,000 held-out images; every score is on all 1,000
held-out images (two batches of 500; the search BN uses batch statistics, as in the search).

Scored cells: ``--cells`` drawn uniformly from the 15,625 (one fixed draw, seed 0) plus the table's
``--top`` best by CIFAR-10 test accuracy. Tau and rho are reported on the uniform cells (the honest
measure: the population a search samples from) and on all of them; 95 % bootstrap intervals
(1,000 resamples of cells). Also the table accuracy of the supernet's top-1 / top-10 cells (among
the uniform cells, and among all), and the seconds each protocol cost (training and scoring).

Each finished (configuration, steps) unit is merged into ``bench/results/supernet_ranking.json`` at
once; the same command resumes (finished units are skipped). Units run breadth-first: every
configuration's short budgets before any long one, so the cheap part of the grid lands first.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

# the leaderboard's data, table and locked results-file update (bench/nb201_oneshot.py)
from nb201_oneshot import DATA, RESULTS, TABLE  # noqa: E402
from nb201_oneshot import update as update_file  # noqa: E402
from vs_pytorch import git_head  # noqa: E402  (the commit stamp every bench writes)

OUT = RESULTS / "supernet_ranking.json"
COLUMN = "cifar10_test"

# name -> (C, cells per stage, warm-up mode, augment); the default order is the run order
CONFIGS = {
    "c4-1-uniform-aug": (4, 1, "uniform", True),
    "c8-1-uniform-aug": (8, 1, "uniform", True),
    "c8-1-uniform-noaug": (8, 1, "uniform", False),
    "c8-2-uniform-aug": (8, 2, "uniform", True),
    "c8-1-dense-aug": (8, 1, "dense", True),
    "c16-1-uniform-aug": (16, 1, "uniform", True),
    "c16-2-uniform-aug": (16, 2, "uniform", True),
    "c4-1-dense-aug": (4, 1, "dense", True),
}
STEPS = (0, 500, 1000, 2000, 4000, 8000)
BATCH = 64
CHUNK = 100


def experiment(name: str, steps: int, data_path: Path):
    from jaxnas.config.experiment import build
    from jaxnas.config.settings import resolve
    C, cells, mode, augment = CONFIGS[name]
    strategy = {"name": "random"} if mode == "uniform" else {"name": "darts"}
    cfg = resolve({
        "seed": 0,
        "data": {"name": "image_npz", "path": str(data_path), "val_fraction": 0.2, "augment": augment,
                 "split_seed": 0},
        "space": {"name": "nb201", "C": C, "cells_per_stage": cells},
        "strategy": strategy,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                      "weight_decay": 5e-4, "schedule": "cosine", "clip": 5.0},
        # steps + 1 with a warm-up of ``steps``: the weight schedule spans exactly ``steps``
        "search": {"steps": max(steps, 1) + 1, "warmup_steps": max(steps, 1), "batch_size": BATCH,
                   "val_batch_size": BATCH, "chunk": CHUNK,
                   "cpu_convolutions": "ynnpack"},   # as its units ran (the default until 2026-12-07)
    })
    return build(cfg)


def train(exp, steps: int, seed: int = 0):
    from jaxnas.data.batching import BatchSampler, gather
    data, search = exp.data, exp.search
    state = search.init(jax.random.key(seed))
    sampler = BatchSampler(len(data.y_train), BATCH, seed)
    done = 0
    while done < steps:
        n = min(CHUNK, steps - done)
        tb = gather((data.x_train, data.y_train), sampler.chunk(done, n))
        state, metrics = search.run_chunk(state, tb, tb, kind="weights")
        done += n
    return state


def score_cells(exp, state, archs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Held-out (accuracy, -loss) of every cell in ``archs [N, 6]`` with the supernet's weights."""
    task, space, data = exp.task, exp.space, exp.data
    params = state.evaluator.params

    @jax.jit
    def one(params, arch, x, y):
        loss, m = task.loss(params, space.one_hot(arch), (x, y), None, "sparse", train=False)
        return loss, m["accuracy"]

    x, y = data.x_val, data.y_val
    halves = [(jnp.asarray(x[i:i + 500]), jnp.asarray(y[i:i + 500])) for i in range(0, len(y), 500)]
    acc, nl = [], []
    for a in archs:
        out = [one(params, jnp.asarray(a, jnp.int32), xb, yb) for xb, yb in halves]
        w = [len(yb) for _, yb in halves]
        acc.append(float(np.average([float(o[1]) for o in out], weights=w)))
        nl.append(-float(np.average([float(o[0]) for o in out], weights=w)))
    return np.asarray(acc), np.asarray(nl)


def rank_stats(score: np.ndarray, truth: np.ndarray, rng: np.random.Generator, n_boot: int = 1000) -> dict:
    from scipy.stats import kendalltau, spearmanr
    out = {}
    for name, f in (("kendall_tau", kendalltau), ("spearman_rho", spearmanr)):
        v = float(f(score, truth)[0])
        boot = []
        for _ in range(n_boot):
            i = rng.integers(0, len(score), len(score))
            b = f(score[i], truth[i])[0]
            if np.isfinite(b):
                boot.append(b)
        lo, hi = np.percentile(boot, [2.5, 97.5]) if boot else (np.nan, np.nan)
        out[name] = [round(v, 4), round(float(lo), 4), round(float(hi), 4)]
    top = np.argsort(-score, kind="stable")
    out["top1_table_acc"] = round(float(truth[top[0]]), 2)
    out["top10_table_acc"] = round(float(np.mean(truth[top[:10]])), 2)
    return out


def cells(table, space, n: int, top: int):
    truth_all = np.asarray(table.columns[COLUMN], np.float64)
    rng = np.random.default_rng(0)
    uni = rng.choice(len(table.archs), n, replace=False)
    best = np.argsort(-truth_all)[:top]
    idx = np.concatenate([uni, best])
    archs = np.stack([space.decode(table.archs[i]) for i in idx])
    return archs, truth_all[idx], n


def update(change) -> dict:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    return update_file(OUT, change)


def run_unit(name: str, steps: int, args, table) -> dict:
    t0 = time.perf_counter()
    exp = experiment(name, steps, args.data)
    archs, truth, n_uni = cells(table, exp.space, args.cells, args.top)
    t_build = time.perf_counter() - t0
    t1 = time.perf_counter()
    state = train(exp, steps)
    jax.block_until_ready(state)
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    acc, nl = score_cells(exp, state, archs)
    t_score = time.perf_counter() - t2
    rng = np.random.default_rng(1)
    stats = {}
    for score_name, s in (("val_accuracy", acc), ("neg_loss", nl)):
        stats[score_name] = {"uniform_cells": rank_stats(s[:n_uni], truth[:n_uni], rng),
                             "all_cells": rank_stats(s, truth, rng)}
    C, cpb, mode, augment = CONFIGS[name]
    return {"config": name, "C": C, "cells_per_stage": cpb, "warmup": mode, "augment": augment,
            "steps": steps, "seconds_train": round(t_train, 1), "seconds_score": round(t_score, 1),
            "seconds_build": round(t_build, 1), "ranking": stats,
            "uniform_cells_table_mean": round(float(np.mean(truth[:n_uni])), 2),
            "scores": {"val_accuracy": [round(float(v), 4) for v in acc],
                       "neg_loss": [round(float(v), 4) for v in nl]},
            "load_avg_1min": round(os.getloadavg()[0], 2), "git": git_head()}


def markdown(results: dict) -> str:
    lines = ["| config | steps | tau (val acc, uniform cells) [95 %] | rho | tau on -loss | top-1 / top-10 table acc | "
             "train + score s | commit |", "|---|---|---|---|---|---|---|---|"]
    for key in sorted(results.get("units", {}), key=lambda k: (list(CONFIGS).index(k.rsplit("@", 1)[0])
                                                               if k.rsplit("@", 1)[0] in CONFIGS else 99,
                                                               int(k.rsplit("@", 1)[1]))):
        u = results["units"][key]
        r = u["ranking"]["val_accuracy"]["uniform_cells"]
        rl = u["ranking"]["neg_loss"]["uniform_cells"]
        t = r["kendall_tau"]
        lines.append(f"| {u['config']} | {u['steps']} | {t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}] | "
                     f"{r['spearman_rho'][0]:+.3f} | {rl['kendall_tau'][0]:+.3f} | "
                     f"{r['top1_table_acc']:.2f} / {r['top10_table_acc']:.2f} | "
                     f"{u['seconds_train'] + u['seconds_score']:.0f} | {u.get('git') or 'before db34bc5'} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    by = {}
    for u in results.get("units", {}).values():
        by.setdefault(u["config"], []).append(u)
    for i, (name, us) in enumerate(sorted(by.items())):
        us = sorted(us, key=lambda u: u["steps"])
        x = [max(u["seconds_train"] + u["seconds_score"], 1.0) for u in us]
        t = np.array([u["ranking"]["val_accuracy"]["uniform_cells"]["kendall_tau"] for u in us])
        ax.errorbar(x, t[:, 0], yerr=[t[:, 0] - t[:, 1], t[:, 2] - t[:, 0]], marker="o", capsize=3,
                    label=name, color=f"C{i}")
        for xi, u, ti in zip(x, us, t[:, 0]):
            ax.annotate(str(u["steps"]), (xi, ti), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(0.2, color="C3", lw=0.8, ls="--", label="tau = 0.2")
    ax.set_xscale("log")
    ax.set_xlabel("CPU seconds (training + scoring), 2-core machine")
    ax.set_ylabel("Kendall tau (supernet val acc vs table CIFAR-10 test acc)")
    ax.set_title("NB201 supernet ranking of 200 uniform cells (95 % bootstrap), labels: weight steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    global OUT
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--steps", default=",".join(map(str, STEPS)))
    p.add_argument("--cells", type=int, default=200)
    p.add_argument("--top", type=int, default=50)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--table", type=Path, default=TABLE)
    p.add_argument("--out", type=Path, default=RESULTS / "supernet_ranking.json", help="results file (a smoke run: another path)")
    p.add_argument("--report", action="store_true", help="run nothing: print the table, redraw the plot")
    args = p.parse_args(argv)
    OUT = args.out
    if args.report:
        results = json.loads(OUT.read_text())
        print(markdown(results))
        plot(results, OUT.with_suffix(".png"))
        return
    names = [n for n in args.configs.split(",") if n]
    bad = [n for n in names if n not in CONFIGS]
    if bad:
        sys.exit(f"unknown configs {bad}; known: {', '.join(CONFIGS)}")
    for path, what in ((args.data, "--data"), (args.table, "--table")):
        if not path.exists():
            sys.exit(f"{path} not found: pass {what}")
    from jaxnas.benchmarks.nb201 import NasBench201Table
    table = NasBench201Table.load(args.table)
    steps = sorted(int(s) for s in args.steps.split(","))
    protocol = {"cells": args.cells, "top": args.top, "batch": BATCH, "column": COLUMN,
                "data": args.data.name, "held_out": 1000,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}"}
    update(lambda r: {**r, "protocol": protocol, "units": r.get("units", {})})
    for s in steps:                       # breadth-first: every config's short budget first
        for name in names:
            key = f"{name}@{s}"
            if key in json.loads(OUT.read_text()).get("units", {}):
                continue
            twin = next((u for u in json.loads(OUT.read_text())["units"].values() if s == 0 == u["steps"]
                         and (u["C"], u["cells_per_stage"]) == CONFIGS[name][:2]), None)
            if twin is not None:   # untrained: only C and the cells per stage matter
                C, cpb, mode, augment = CONFIGS[name]
                unit = {**twin, "config": name, "warmup": mode, "augment": augment, "copied_from": twin["config"]}
                update(lambda res, key=key, unit=unit: {**res, "units": {**res["units"], key: unit}})
                continue
            print(f"{key} ...", flush=True)
            unit = run_unit(name, s, args, table)
            r = unit["ranking"]["val_accuracy"]["uniform_cells"]
            print(f"{key}: tau {r['kendall_tau']} rho {r['spearman_rho']} top10 {r['top10_table_acc']} "
                  f"({unit['seconds_train']} s train, {unit['seconds_score']} s score)", flush=True)
            update(lambda res, key=key, unit=unit: {**res, "units": {**res["units"], key: unit}})
            plot(json.loads(OUT.read_text()), OUT.with_suffix(".png"))
    print(markdown(json.loads(OUT.read_text())))


if __name__ == "__main__":
    main()

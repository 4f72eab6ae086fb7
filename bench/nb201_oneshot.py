"""One NAS-Bench-201 leaderboard for every one-shot strategy: the same small supernet, the same
CIFAR-10 subset, the same number of weight and architecture steps, several seeds; the derived cells
rated by the NAS-Bench-201 table.

    python bench/nb201_oneshot.py [--quick] [--strategies advantage,darts,...] [--seeds 5]
                                  [--steps 400 --warmup 200] [--data NPZ] [--table CSV]

Protocol (stated in the results file):
- Space: the full NAS-Bench-201 cell (6 edges x 5 ops, ``none`` included, as the benchmark and the
  Shapley-NAS / NAS-Bench-201 tables use it), on the tiny network of
  ``configs/advantagenas_nb201_tiny.py`` (C = 4, one cell per stage, batch 32, random crop + flip).
- Data: the 5,000-image CIFAR-10 subset (``../shared/data/cifar10_jpeg_test5k``), split in halves
  (weights / architecture), the split fixed (``data.split_seed=0``); a seed changes the supernet's
  initialisation, the batch order and every sample.
- Schedule: ``--warmup`` weight-only steps, then ``--steps - --warmup`` steps of both (one weight
  step and one architecture step per batch), the same for every strategy.
- Architecture optimiser, for every strategy that takes one: AdvantageNAS App. D (Adam (0.5, 0.999),
  weight decay 3e-3, cosine, clip 1.0) with ``--lr`` scaled to the short budget (the paper's 3e-4
  over 19,550 steps moves theta about as far as 1e-2 over a few hundred). Strategies with their own
  update rule (``random``, MANAS, Shapley-NAS) keep their defaults. Final rule: argmax wherever a
  strategy has one (AdvantageNAS sec. 5.2 found it better than process best for every method).
- Rating: the derived cell's 200-epoch test accuracy on CIFAR-10 / CIFAR-100 / ImageNet16-120 from
  the table; "collapsed" = a cell without any convolution (every edge skip, pool or none: DARTS's
  failure mode, 54.30 in the NAS-Bench-201 / Shapley-NAS tables).

Results are merged into ``bench/results/nb201_oneshot.json`` by strategy (a run of some strategies
keeps the others' rows); ``--quick`` writes ``bench/results/nb201_oneshot_quick.json`` instead.
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

from jaxnas.benchmarks.nb201 import NasBench201Table  # noqa: E402
from jaxnas.config.experiment import build  # noqa: E402
from jaxnas.config.settings import resolve  # noqa: E402
from jaxnas.data.batching import BatchSampler, gather  # noqa: E402
from jaxnas.engine.search import schedule_chunks  # noqa: E402
from jaxnas.strategies import available  # noqa: E402
from jaxnas.strategies.base import options  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DATA = SHARED / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"
TABLE = SHARED / "nasbench201" / "nb201_accuracies.csv.gz"
RESULTS = REPO / "bench" / "results"
COLUMNS = {"cifar10": "cifar10_test", "cifar100": "cifar100_test", "imagenet16": "imagenet16_test"}
CONV_OPS = ("nor_conv_1x1", "nor_conv_3x3")

# Published NAS-Bench-201 CIFAR-10 test accuracies, mean and std, in spaces with the zero op as ours:
# AdvantageNAS Table 4 (App. F: 3 trials, argmax / process best; its Table 2 drops the zero op) and
# Shapley-NAS Table 3 (from the NAS-Bench-201 / DARTS protocols; its DARTS/GDAS/SNAS rows).
PUBLISHED = {
    "advantage": {"AdvantageNAS T4 argmax": (93.63, 0.18), "AdvantageNAS T4 process best": (93.18, 0.19)},
    "reinforce": {"AdvantageNAS T4 argmax": (65.15, 39.00), "AdvantageNAS T4 process best": (91.40, 0.45),
                  "Shapley-NAS T3": (93.85, 0.37)},
    "parsec": {"AdvantageNAS T4 argmax": (92.67, 0.55), "AdvantageNAS T4 process best": (91.75, 0.57)},
    "proxyless": {"AdvantageNAS T4 argmax": (10.00, 0.00)},
    "gdas": {"AdvantageNAS T4 argmax": (88.62, 0.00), "AdvantageNAS T4 process best": (92.82, 0.71),
             "Shapley-NAS T3": (93.23, 0.23)},
    "random": {"Shapley-NAS T3": (93.70, 0.36)},
    # T3's two DARTS rows (searched on CIFAR-10; searched on each data set) do not name the order
    "darts": {"Shapley-NAS T3": (54.30, 0.00)},
    "snas": {"Shapley-NAS T3": (92.77, 0.83)},
    "shapley": {"Shapley-NAS T3": (94.37, 0.00)},
}
OPTIMUM = 94.37   # the best CIFAR-10 test accuracy in the table (Shapley-NAS Table 3, "optimal")

OWN_RULES = ("random", "manas", "manas_ls", "shapley")   # strategies with their own update rule
EXTRA = {"advantage": {"zero_op": "none"}}               # App. B: the zero op's EMA rule
DEFAULT_STRATEGIES = ("advantage", "reinforce", "parsec", "proxyless", "gdas", "darts", "darts2",
                      "snas", "nasp", "random", "manas", "manas_ls", "shapley")


def theta_options(name: str, lr: float) -> dict:
    """App. D's architecture optimiser where the strategy has one (only the options it accepts)."""
    if name in OWN_RULES:
        return {}
    app_d = {"optimizer": "adam", "lr": lr, "b1": 0.5, "b2": 0.999, "weight_decay": 3e-3,
             "clip": 1.0, "lr_schedule": "cosine"}
    valid = options(name)
    out = {k: v for k, v in app_d.items() if k in valid}
    if "final" in valid:   # AdvantageNAS sec. 5.2: argmax beat process best for every method
        out["final"] = "argmax"
    out.update({k: v for k, v in EXTRA.get(name, {}).items() if k in valid})
    return out


def config(name: str, args) -> dict:
    return resolve({
        "seed": 0,
        "data": {"name": "image_npz", "path": str(args.data), "val_fraction": 0.5, "augment": True,
                 "split_seed": 0},
        "space": {"name": "nb201", "C": args.channels, "cells_per_stage": 1},
        "strategy": {"name": name, **theta_options(name, args.lr)},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
                      "weight_decay": 5e-4, "schedule": "cosine", "clip": 1.0},
        "search": {"steps": args.steps, "warmup_steps": args.warmup, "batch_size": args.batch,
                   "val_batch_size": args.batch, "chunk": args.chunk,
                   "checkpoint_every": args.steps, "reward": "neg_loss",
                   "cpu_convolutions": "ynnpack"},   # as its rows ran (the default until 2026-12-07)
    })


def summarise(name: str, cfg: dict, runs: list, seeds: int, build_seconds: float) -> dict:
    """A strategy's row from the seeds run so far; ``complete`` once all ``seeds`` are in."""
    # [mean, std] over seeds, std with ddof = 1 (the README shows mean ± s.e. from the runs)
    summary = {k: [round(float(np.mean([r[k] for r in runs])), 2),
                   round(float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0, 2)]
               for k in COLUMNS}
    warm = [r["seconds"] for r in runs if not r.get("with_compile")] or [r["seconds"] for r in runs]
    cold = [r["seconds"] for r in runs if r.get("with_compile")]
    return {"strategy_config": cfg["strategy"], "runs": runs, **summary,
            "collapsed_fraction": float(np.mean([r["collapsed"] for r in runs])),
            "seconds_per_search": round(float(np.mean(warm)), 1),
            "first_search_seconds_with_compile": cold[0] if cold else runs[0]["seconds"],
            "build_seconds": round(build_seconds, 1),
            "published": PUBLISHED.get(name),
            "seeds_done": len(runs), "complete": len(runs) >= seeds}


def run_strategy(name: str, args, table: NasBench201Table, done: list, save) -> None:
    """Runs the seeds not in ``done`` (a resumed row's runs); ``save(row)`` after every seed, so a
    kill loses at most the seed in progress and the same command resumes."""
    cfg = config(name, args)
    t_build = time.perf_counter()
    exp = build(cfg)
    search, data, space = exp.search, exp.data, exp.space
    derive = jax.jit(exp.strategy.derive)
    build_seconds = time.perf_counter() - t_build
    s = cfg["search"]
    runs = list(done)
    first = True
    for seed in range(args.seeds):
        if any(r["seed"] == seed for r in runs):
            continue
        t0 = time.perf_counter()
        train = BatchSampler(len(data.y_train), s["batch_size"], seed)
        val = BatchSampler(len(data.y_val), s["val_batch_size"], seed + 1)
        state = search.init(jax.random.key(seed))
        for kind, step, n in schedule_chunks(exp.phases, 0, args.steps, s["chunk"]):
            tb = gather((data.x_train, data.y_train), train.chunk(step, n))
            vb = gather((data.x_val, data.y_val), val.chunk(step, n))
            state, _ = search.run_chunk(state, tb, vb, kind=kind)
        arch = np.asarray(jax.device_get(derive(state.strategy)))
        seconds = time.perf_counter() - t0
        cell = space.describe(arch)["arch"]
        row = table.lookup(arch, space)
        ops = [space.choices[d][int(a)] for d, a in enumerate(arch)]
        runs.append({"seed": seed, "cell": cell, "seconds": round(seconds, 1), "with_compile": first,
                     "collapsed": not any(o in CONV_OPS for o in ops),
                     **{k: float(row[c]) for k, c in COLUMNS.items()}})
        first = False
        print(f"  {name} seed {seed}: {cell} c10 {runs[-1]['cifar10']:.2f} ({seconds:.0f} s)", flush=True)
        save(summarise(name, cfg, sorted(runs, key=lambda r: r["seed"]), args.seeds, build_seconds))


def update(out_path: Path, change) -> dict:
    """Applies ``change(results) -> results`` to the results file under a lock: runs of other
    strategies (other processes) write the same file."""
    import fcntl
    with open(out_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = change(json.loads(out_path.read_text()) if out_path.exists() else {})
        tmp = out_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, out_path)
    return results


def ranked(results: dict) -> list:
    """(name, row) of every strategy, best CIFAR-10 mean first."""
    return sorted(results["strategies"].items(), key=lambda kv: -kv[1]["cifar10"][0])


def _mean_se(values) -> str:
    """``mean ± s.e.`` with ddof = 1 (s.e. of the mean over seeds)."""
    a = np.asarray(values, float)
    se = a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan")
    return f"{a.mean():.2f} ± {se:.2f}"


def markdown(results: dict) -> str:
    """The leaderboard as the README shows it: rows by CIFAR-10 mean, published numbers beside."""
    lines = ["| strategy | CIFAR-10 (mean ± s.e.) | CIFAR-100 | ImageNet16-120 | collapsed | s / search | "
             "published CIFAR-10 (mean ± std) |", "|---|---|---|---|---|---|---|"]
    rows = ranked(results)
    for name, r in rows:
        pub = "; ".join(f"{src} {m:.2f} ± {sd:.2f}" for src, (m, sd) in (PUBLISHED.get(name) or {}).items())
        seeds = "" if r.get("complete", True) else f" ({r['seeds_done']} seeds so far)"
        lines.append(f"| {name}{seeds} | " + " | ".join(_mean_se([run[k] for run in r["runs"]]) for k in COLUMNS)
                     + f" | {r['collapsed_fraction']:.1f} | {r['seconds_per_search']:.0f} | {pub or '–'} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Every seed's CIFAR-10 / CIFAR-100 / ImageNet16 test accuracy per strategy (dots), mean +- std
    (bar), the papers' CIFAR-10 numbers (crosses) and the table's optimum (line)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    rows = ranked(results)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), sharey=False)
    xs = np.arange(len(rows))
    for ax, (col, title) in zip(axes, (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"),
                                       ("imagenet16", "ImageNet16-120"))):
        for x, (name, r) in zip(xs, rows):
            acc = [run[col] for run in r["runs"]]
            ax.scatter(np.full(len(acc), x) + np.linspace(-0.15, 0.15, len(acc)), acc, s=12, color="C0",
                       alpha=0.6, label="one seed" if x == 0 else None)
            ax.errorbar(x, r[col][0], yerr=r[col][1], fmt="o", color="k", capsize=3,
                        label="mean +- std" if x == 0 else None)
            if col == "cifar10":
                for j, (_, (m, _sd)) in enumerate((PUBLISHED.get(name) or {}).items()):
                    ax.scatter(x + 0.25, m, marker="x", color="C3", label="published" if x == 0 and j == 0 else None)
        if col == "cifar10":
            ax.axhline(results.get("optimum_cifar10", OPTIMUM), color="C2", ls="--", lw=1, label="table optimum")
        ax.set_xticks(xs, [n for n, _ in rows], rotation=60, ha="right")
        ax.set_title(f"{title} test accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    pr = results["protocol"]
    fig.suptitle(f"one-shot search on the tiny NB201 supernet: {pr['steps']} steps ({pr['warmup']} warm-up), "
                 f"batch {pr['batch']}, C = {pr['channels']}, {pr['seeds']} seeds per strategy; derived cells rated by "
                 "the NAS-Bench-201 table (200 epochs)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _main_v2(args) -> None:
    import oneshot_v2 as V
    table = NasBench201Table.load(args.table)
    out_path = args.out or RESULTS / "nb201_oneshot.json"
    png = out_path.with_name(out_path.stem + "_v2.png")
    if args.report:
        v2 = V.load(out_path)
        print(V.markdown_v2(v2))
        if v2.get("strategies"):
            V.plot_v2(v2, png, V.uniform_mean(table), OPTIMUM)
        return
    ranking = json.loads((RESULTS / "supernet_ranking.json").read_text())
    key, why = V.choose_protocol(ranking, force=args.force)
    unit = ranking["units"][key]
    tau = unit["ranking"]["val_accuracy"]["uniform_cells"]["kendall_tau"]
    from supernet_ranking import BATCH, CONFIGS
    args.channels, args.cells, args.warm_mode, args.augment = CONFIGS[unit["config"]]
    args.warmup, args.batch = int(unit["steps"]), BATCH
    args.source = (f"supernet_ranking unit {key} ({why['chosen_because']}): tau {tau[0]:+.3f} "
                   f"[{tau[1]:+.3f}, {tau[2]:+.3f}]")
    print(f"v2 protocol: {args.source}", flush=True)
    names = [n for n in args.strategies.split(",") if n]
    if "random" not in names:
        names = ["random"] + names              # the paired reference
    V.main_v2(args, names, table, theta_options, out_path, update)
    V.plot_v2(V.load(out_path), png, V.uniform_mean(table), OPTIMUM)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-2, help="architecture Adam lr (App. D's 3e-4, scaled)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--table", type=Path, default=TABLE)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 40 steps (20 warm-up)")
    p.add_argument("--report", action="store_true",
                   help="run nothing: print the stored rows as a markdown table and redraw the plot")
    p.add_argument("--protocol", choices=("v1", "v2"), default="v1",
                   help="v2: forks of one shared warm-up per seed on the supernet protocol that ranks cells best "
                        "(bench/results/supernet_ranking.json); --steps search steps after it (default 400), "
                        "--every: policy-movement records")
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--only-seeds", default=None,
                   help="v2: run these seeds only (e.g. 3,4: a second process on another core; the results "
                        "file is locked, rows merge)")
    p.add_argument("--force", action="store_true", help="v2 even on a protocol whose tau interval is not above 0")
    p.add_argument("--out", type=Path, default=None, help="v2: results file (a smoke run: another path)")
    args = p.parse_args(argv)
    if args.protocol == "v2":
        return _main_v2(args)
    out_path = RESULTS / ("nb201_oneshot_quick.json" if args.quick else "nb201_oneshot.json")
    if args.report:
        results = json.loads(out_path.read_text())
        print(markdown(results))
        plot(results, out_path.with_suffix(".png"))
        return
    if args.quick:
        args.seeds, args.steps, args.warmup, args.chunk = 2, 40, 20, 20
    for path, what in ((args.data, "--data (an .npz with X uint8 [N,32,32,3] and y)"),
                       (args.table, "--table (the NAS-Bench-201 accuracy CSV)")):
        if not path.exists():
            sys.exit(f"{path} not found: pass {what}")
    names = [n for n in args.strategies.split(",") if n]
    unknown = [n for n in names if n not in available()]
    if unknown:
        sys.exit(f"unknown strategies {unknown}; available: {', '.join(available())}")
    table = NasBench201Table.load(args.table)
    protocol = {k: getattr(args, k) for k in ("seeds", "steps", "warmup", "batch", "channels", "lr")}
    protocol.update(data=str(args.data.name), space="nb201 (5 ops incl. none), C=channels, 1 cell/stage",
                    machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} "
                            f"{jax.default_backend()}")

    def start(results):
        if results.get("protocol", {}).get("steps") not in (None, args.steps) and results.get("strategies"):
            print(f"note: {out_path.name} holds rows of another protocol; they are replaced", file=sys.stderr)
            results = {}
        results["protocol"] = protocol
        results.setdefault("strategies", {})
        results["optimum_cifar10"] = OPTIMUM
        return results

    results = update(out_path, start)
    for name in names:
        old = results["strategies"].get(name, {})
        done = old.get("runs", []) if old.get("complete") is False else []   # resume an unfinished row
        print(f"{name}:" + (f" resuming after seeds {[r['seed'] for r in done]}" if done else ""), flush=True)

        def put(row, name=name):
            update(out_path, lambda res: {**res, "strategies": {**res["strategies"], name: row}})
        run_strategy(name, args, table, done, put)
    results = json.loads(out_path.read_text())
    rows = ranked(results)
    print(f"{'strategy':12s} {'cifar10':>14s} {'cifar100':>14s} {'imgnet16':>14s} collapsed  s/search")
    for n, r in rows:
        print(f"{n:12s} " + " ".join(f"{r[k][0]:7.2f}±{r[k][1]:5.2f}" for k in COLUMNS)
              + f" {r['collapsed_fraction']:9.2f} {r['seconds_per_search']:8.1f}")
    plot(results, out_path.with_suffix(".png"))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()

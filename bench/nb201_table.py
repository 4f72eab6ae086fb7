"""Reward-only strategies on the NAS-Bench-201 table: the derived cell's 200-epoch CIFAR-10 test
accuracy over many seeds at a budget of table queries.

    python bench/nb201_table.py [--seeds 100] [--budgets 50 100 200] [--table PATH]

Every reward-only strategy (``needs == "reward"``) searches the NB201 space with the ``table``
evaluator: reward = the 12-epoch CIFAR-10 validation accuracy (``cifar10_valid_12ep``, the benchmark's
low-fidelity reward for its RL/random baselines); the derived cell is rated by its 200-epoch CIFAR-10
test accuracy (``cifar10_test``). One sample per step; a search stops once it has made ``budget``
queries (TabNAS-family searches reject infeasible samples without querying them, so they take more
steps for the same queries). The TabNAS family needs a resource budget: a parameter budget at the
median parameter count of the space (``--param-budget``), so its optimum differs; the best feasible
cell is reported next to it.

NAS-Bench-201 (Dong & Yang 2020, Table 5) gives REINFORCE 93.85 ± 0.37 and random search 93.70 ±
0.36 on CIFAR-10 test; its budget was simulated training time (12,000 s of the benchmark's recorded
training times), which our table does not have (no time column), so we report several query budgets.
Like NAS-Bench-201's REINFORCE and random search, ``final='process_best'`` returns the best cell
queried; ``argmax`` rows return the policy's mode.

Writes ``bench/results/nb201_table.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from jaxnas.config.experiment import build  # noqa: E402
from jaxnas.config.settings import resolve  # noqa: E402
from jaxnas.strategies import available, make  # noqa: E402

TABLE = REPO.parent / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"
PUBLISHED = {"reinforce": (93.85, 0.37), "random": (93.70, 0.36)}   # NAS-Bench-201 Table 5, CIFAR-10 test
CHUNK = 10


def variants(param_budget: float) -> dict:
    """Strategy configs: one per reward-only strategy (two final rules where a strategy has both)."""
    pol = {"lr": 0.05}
    shaped = {"lr": 0.05, "warmup_frac": 0.0, "q_offset": 0.0}
    out = {
        "random": {"name": "random"},
        "reinforce (process best)": {"name": "reinforce", **pol, "final": "process_best"},
        "reinforce (argmax)": {"name": "reinforce", **pol, "final": "argmax"},
        "parsec (process best)": {"name": "parsec", **pol, "final": "process_best"},
        "tabnas": {"name": "tabnas", "budget": param_budget, "num_mc_samples": 4096, **shaped},
        "tunas_abs": {"name": "tunas_abs", "target": param_budget, "beta": -1.0, **shaped},
        "mnas_soft": {"name": "mnas_soft", "target": param_budget, "beta": -0.07, **shaped},
        "mnas_hard": {"name": "mnas_hard", "target": param_budget, "beta": -1.0, **shaped},
        # MANAS: App. B.1 defaults (EXP3 rates from the budget; MANAS-LS solves every 31 queries)
        # MANAS: the paper's update (sec. 4.1, no baseline) and our baseline option
        "manas (argmax)": {"name": "manas", "final": "argmax"},
        "manas (process best)": {"name": "manas", "final": "process_best"},
        "manas + baseline (argmax)": {"name": "manas", "final": "argmax", "baseline": True},
        "manas + baseline (process best)": {"name": "manas", "final": "process_best", "baseline": True},
        "manas_ls (argmax)": {"name": "manas_ls", "final": "argmax"},
        # MA2ML on a plain cell space: one agent (its architecture agent), the tests' lr
        "ma2ml_lite": {"name": "ma2ml_lite", "lr": 0.05},
        "ma2ml": {"name": "ma2ml", "lr": 0.05},
    }
    return out


def run_variant(scfg: dict, table: str, seeds: int, budget: int) -> dict:
    cfg = resolve({"space": {"name": "nb201"}, "evaluator": {"name": "table", "path": table},
                   "strategy": scfg,
                   # the strategy's schedules (TabNAS warm-up, temperatures) span the budget
                   "search": {"steps": budget, "chunk": CHUNK, "checkpoint_every": budget * CHUNK}})
    exp = build(cfg)
    search, ev = exp.search, exp.evaluator
    derive = jax.jit(exp.strategy.derive)
    accs, queries, steps, feasible = [], [], [], []
    t0 = time.perf_counter()
    for seed in range(seeds):
        state = search.init(jax.random.key(seed))
        n = 0
        while int(state.evaluations) < budget and n < 20 * budget:   # rejections cost steps, not queries
            state, _ = search.run_chunk(state, kind="strategy", length=CHUNK)
            n += CHUNK
        arch = np.asarray(derive(state.strategy))
        row = ev.table.lookup(exp.space.encode(arch))
        accs.append(row["cifar10_test"])
        queries.append(int(state.evaluations))
        steps.append(n)
        if "budget" in scfg or "target" in scfg:
            feasible.append(float(exp.space.param_count(arch)) <= (scfg.get("budget") or scfg.get("target")))
    a = np.asarray(accs)
    out = {"cifar10_test_mean": float(a.mean()), "cifar10_test_std": float(a.std(ddof=1)),
           "cifar10_test_se": float(a.std(ddof=1) / np.sqrt(len(a))),
           "cifar10_test_median": float(np.median(a)), "cifar10_test": a.round(4).tolist(), "queries_mean": float(np.mean(queries)),
           "steps_mean": float(np.mean(steps)), "seconds": time.perf_counter() - t0}
    if feasible:
        out["feasible_fraction"] = float(np.mean(feasible))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--table", default=str(TABLE))
    ap.add_argument("--param-budget", type=float, default=None,
                    help="parameter budget of the TabNAS family (default: the space's median)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "nb201_table.json"))
    ap.add_argument("--only", nargs="+", default=None,
                    help="run only these variant labels and merge them into the existing --out file")
    args = ap.parse_args()
    from jaxnas.benchmarks.nb201 import NasBench201Table
    from jaxnas.spaces.cells import NasBench201Space
    table = NasBench201Table.load(args.table)
    space = NasBench201Space.create()
    costs = np.asarray(space.param_count(space.all_archs()))
    pb = float(np.median(costs)) if args.param_budget is None else args.param_budget
    test = table.columns["cifar10_test"]
    feasible_best = max(table.lookup(space.encode(a))["cifar10_test"]
                        for a in space.all_archs()[costs <= pb])
    covered = {v["name"] for v in variants(pb).values()}
    reward_only = [n for n in available() if make(n, space, **_minimal(n, pb)).needs == "reward"]
    missing = sorted(set(reward_only) - covered)
    if missing and args.only is None:
        raise SystemExit(f"add {missing} to variants() in bench/nb201_table.py")
    chosen = variants(pb) if args.only is None else {k: v for k, v in variants(pb).items() if k in args.only}
    if args.only is not None and len(chosen) != len(args.only):
        raise SystemExit(f"unknown variants {sorted(set(args.only) - set(chosen))}; have {list(variants(pb))}")
    results = {}
    if args.only is not None and Path(args.out).exists():      # merge into the previous run's rows
        results = json.loads(Path(args.out).read_text())["results"]
    for budget in args.budgets:
        for label, scfg in chosen.items():
            r = run_variant(scfg, args.table, args.seeds, budget)
            results.setdefault(str(budget), {})[label] = r
            print(f"budget {budget:4d} {label:26s} {r['cifar10_test_mean']:.2f} ± {r['cifar10_test_std']:.2f} "
                  f"(queries {r['queries_mean']:.0f}, {r['seconds']:.1f} s)", flush=True)
    out = {
        "command": "python bench/nb201_table.py " + " ".join(sys.argv[1:]),
        **({"previous_commands": _previous(args.out)} if args.only is not None else {}),
        "what": "derived cell's 200-epoch CIFAR-10 test accuracy (%) over seeds (std and s.e. with ddof = 1), "
                "per query budget; the per-seed values in cifar10_test (seed i = list index i)",
        "seeds": args.seeds, "reward": "cifar10_valid_12ep / 100", "samples_per_step": 1,
        "table_best_cifar10_test": float(np.nanmax(test)),
        "table_mean_cifar10_test": float(np.nanmean(test)),
        "tabnas_family_param_budget": pb, "tabnas_family_best_feasible_cifar10_test": float(feasible_best),
        "published_nasbench201": {k: {"mean": m, "std": s, "budget": "12,000 s simulated training time"}
                                  for k, (m, s) in PUBLISHED.items()},
        "budget_note": ("NAS-Bench-201 budgets simulated training time; our table has no time column, so the "
                        "budget is a number of table queries, reported at several values"),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


def markdown(results: dict, budgets=("100", "200")) -> str:
    """The README table: per variant and query budget, mean ± s.e. (ddof = 1) over the seeds, and the
    paired difference to random (the same seeds) with its s.e.; published numbers beside."""
    rows = results["results"]
    head = "| strategy | " + " | ".join(f"{b} queries: mean ± s.e. | − random (paired)" for b in budgets) + " |"
    lines = [head, "|---|" + "---|---|" * len(budgets)]
    pub = {"random": PUBLISHED["random"], "reinforce (process best)": PUBLISHED["reinforce"]}
    for label in rows[budgets[0]]:
        cells = []
        for b in budgets:
            r, ref = rows[b].get(label), rows[b].get("random")
            if r is None or "cifar10_test" not in r:
                cells += ["–", "–"]
                continue
            a = np.asarray(r["cifar10_test"])
            cells.append(f"{a.mean():.2f} ± {a.std(ddof=1) / np.sqrt(len(a)):.2f}")
            if label == "random" or ref is None or "cifar10_test" not in ref:
                cells.append("–")
            else:
                d = a - np.asarray(ref["cifar10_test"])
                cells.append(f"{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f}")
        name = label + (f" (published {pub[label][0]:.2f} ± {pub[label][1]:.2f} std)" if label in pub else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _previous(out: str) -> list:
    """The commands that produced the rows a merging (--only) run keeps."""
    if not Path(out).exists():
        return []
    old = json.loads(Path(out).read_text())
    return old.get("previous_commands", []) + [old["command"]]


def _minimal(name: str, pb: float) -> dict:
    """Just enough options to build ``name`` (to read its ``needs``)."""
    if name == "tabnas":
        return {"budget": pb, "total_steps": 10}
    if name in ("tunas_abs", "mnas_soft", "mnas_hard"):
        return {"target": pb, "beta": -1.0, "total_steps": 10}
    return {"total_steps": 10}


if __name__ == "__main__":
    main()

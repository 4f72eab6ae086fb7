"""Leaderboard v2 of ``bench/nb201_oneshot.py --protocol v2``: every one-shot strategy forked from one
shared warm-up per seed (``search.init_from``), on the supernet protocol that ranks cells best among
those ``bench/supernet_ranking.py`` measured (its Kendall tau stated with the rows).

Per seed s: one weights-only warm-up of ``--warmup`` uniform single-path steps (the ``random``
strategy's samples: the ranking bench's ``uniform`` mode), a search work dir stopped at that step;
then every strategy forks from it (:func:`jaxnas.engine.fork.fork_state`: the same supernet, weight
optimizer, step and key) and runs ``--steps`` steps of one weight and one architecture step per batch.
Paired: strategy and random share the warm-up and the batches of seed s, so their difference per
seed is the paired measure (mean, s.e. with ddof = 1, a 95 % bootstrap interval over seeds). Pairs are
keyed by (seed, warm-up digest): a warm-up retrained after a kernel change, or under another CPU
affinity (XLA:CPU's thread pool follows it), differs in rounding, so
before a strategy forks a seed whose random row came from another warm-up, the bench forks ``random``
from the current one too and keeps it under ``"random_references"`` (the random row itself stays the
first warm-ups' runs).
Every ``--every`` steps each run records how far its policy moved: the entropy per decision, the KL
divergence from the uniform policy, and the table accuracy of the policy's mode (the derived cell).

Rows land in ``bench/results/nb201_oneshot.json`` under ``"v2"`` as each (strategy, seed) finishes;
the same command resumes; warm-up work dirs live in ``bench/work/`` (not committed).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import numpy as np

from jaxnas.config.experiment import build
from jaxnas.config.settings import resolve
from jaxnas.core import workdir as W
from jaxnas.data.batching import BatchSampler, gather
from jaxnas.engine.fork import fork_state
from jaxnas.engine.search import schedule_chunks
from jaxnas.runner import run_search

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work" / "nb201_oneshot_v2"
CONV_OPS = ("nor_conv_1x1", "nor_conv_3x3")


def choose_protocol(ranking: dict, force: bool = False) -> tuple[str, dict]:
    """The ranking unit v2 searches on: the cheapest trained protocol whose tau (validation accuracy,
    uniform cells) has its 95 % interval above 0.2; without one, the best tau measured, but only if
    its interval lies above 0 (``force``: even then). Untrained supernets are left out: their -loss
    ranks cells (tau about +0.3) only because a cell whose output is zero (a disconnected one, 10 % in
    the table) has the lowest loss, so a search would find exactly the worst cells."""
    units = {k: u for k, u in ranking.get("units", {}).items() if u["steps"] > 0}
    if not units:
        raise SystemExit("bench/results/supernet_ranking.json has no trained protocol yet: run "
                         "bench/supernet_ranking.py first")
    tau = lambda u: u["ranking"]["val_accuracy"]["uniform_cells"]["kendall_tau"]   # noqa: E731
    good = [k for k, u in units.items() if tau(u)[1] > 0.2]
    if good:
        return min(good, key=lambda k: units[k]["seconds_train"]), {"chosen_because": "cheapest with tau > 0.2"}
    best = max(units, key=lambda k: tau(units[k])[0])
    if tau(units[best])[1] <= 0 and not force:
        raise SystemExit(f"no trained supernet protocol measured so far ranks cells: the best, {best}, has tau "
                         f"{tau(units[best])[0]:+.3f} [{tau(units[best])[1]:+.3f}, {tau(units[best])[2]:+.3f}]. "
                         f"A leaderboard on it would measure the supernet's bias again; run "
                         f"bench/supernet_ranking.py longer (or pass --force)")
    return best, {"chosen_because": "no measured protocol reached tau > 0.2: the best tau measured"}


def v2_config(name: str, seed: int, args, theta_options) -> dict:
    """The v2 search of strategy ``name``: the ranking bench's data split (4,000 / 1,000 images) and
    supernet, Nesterov SGD 0.05 as its warm-up, ``--warmup`` + ``--steps`` steps."""
    return resolve({
        "seed": int(seed),
        "data": {"name": "image_npz", "path": str(args.data), "val_fraction": 0.2, "augment": bool(args.augment),
                 "split_seed": 0},
        "space": {"name": "nb201", "C": args.channels, "cells_per_stage": args.cells},
        "strategy": {"name": name, **theta_options(name, args.lr)},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                      "weight_decay": 5e-4, "schedule": "cosine", "clip": 5.0},
        "search": {"steps": args.warmup + args.steps, "warmup_steps": args.warmup, "batch_size": args.batch,
                   "val_batch_size": args.batch, "chunk": args.every,
                   "checkpoint_every": args.warmup, "reward": "neg_loss",
                   # the protocol as its first seeds ran (XLA:CPU's YNNPACK convolutions, the default
                   # until 2026-12-07): every strategy of a seed forks the same warm-up, bit for bit
                   "cpu_convolutions": "ynnpack"},
    })


def warmup(seed: int, args, theta_options) -> Path:
    """The seed's shared warm-up (a search work dir stopped at ``--warmup``; resumable): ``random``'s
    uniform single paths, or (``--warm-mode dense``) ``darts``'s frozen uniform mixture."""
    wd = WORK / f"warm_c{args.channels}_k{args.cells}_{args.warm_mode}_w{args.warmup}_s{seed}"
    ck = wd / "checkpoints" / str(args.warmup)
    if not ck.exists():
        t0 = time.perf_counter()
        mode = "random" if args.warm_mode == "uniform" else "darts"
        run_search(v2_config(mode, seed, args, theta_options), wd, progress=None, stop_after=args.warmup)
        print(f"  warm-up seed {seed}: {args.warmup} steps ({time.perf_counter() - t0:.0f} s)", flush=True)
    return wd


def warm_digest(seed: int, args, theta_options) -> str:
    """The digest (16 hex) that a fork of seed ``seed``'s warm-up records, without running the fork."""
    warm = warmup(seed, args, theta_options)
    cfg = v2_config("random", seed, args, theta_options)
    cfg["search"]["init_from"] = f"{warm}:{args.warmup}"
    exp = build(cfg)
    state = exp.search.init(jax.random.key(seed))
    _, record = fork_state(cfg["search"]["init_from"], state, W.fingerprint(cfg, exp.data)["data_sha256"])
    return record["evaluator_digest"][:16]


def random_runs(v2: dict) -> list:
    """Every random fork: the random row's runs and the references forked from later warm-ups."""
    return v2.get("strategies", {}).get("random", {}).get("runs", []) + v2.get("random_references", [])


def movement(probs, derive, space, state, table) -> dict:
    """Entropy per decision, KL from the uniform policy (valid ops), the mode's table accuracy
    (``probs`` / ``derive``: the strategy's, jitted)."""
    p = np.asarray(jax.device_get(probs(state)), np.float64)
    mask = np.asarray(space.mask)
    logp = np.log(np.where(p > 0, p, 1.0))
    h = -np.sum(np.where(mask, p * logp, 0.0), -1)                        # per decision
    kl = np.log(mask.sum(-1)) - h                                          # KL(p || uniform)
    mode = np.asarray(jax.device_get(derive(state)))
    return {"entropy": float(h.mean()), "kl_uniform": float(kl.mean()),
            "mode_cifar10": float(table.lookup(mode, space)["cifar10_test"])}


def run_fork(name: str, seed: int, args, table, theta_options) -> dict:
    warm = warmup(seed, args, theta_options)
    cfg = v2_config(name, seed, args, theta_options)
    cfg["search"]["init_from"] = f"{warm}:{args.warmup}"
    exp = build(cfg)
    search, data, space, strategy = exp.search, exp.data, exp.space, exp.strategy
    s = cfg["search"]
    t0 = time.perf_counter()
    state = search.init(jax.random.key(seed))
    state, record = fork_state(s["init_from"], state, W.fingerprint(cfg, data)["data_sha256"])
    state = search.replicate(state)
    train = BatchSampler(len(data.y_train), s["batch_size"], seed)        # the samplers of run_search
    val = BatchSampler(len(data.y_val), s["val_batch_size"], seed + 1)
    probs, derive = jax.jit(strategy.probs), jax.jit(strategy.derive)
    moves = [{"step": args.warmup, **movement(probs, derive, space, state.strategy, table)}]
    total = args.warmup + args.steps
    for kind, step, n in schedule_chunks(exp.phases, args.warmup, total, s["chunk"]):
        tb = gather((data.x_train, data.y_train), train.chunk(step, n))
        vb = gather((data.x_val, data.y_val), val.chunk(step, n))
        state, m = search.run_chunk(state, tb, vb, kind=kind)
        if (step + n) % args.every == 0 or step + n == total:
            moves.append({"step": step + n, **movement(probs, derive, space, state.strategy, table)})
            print(f"    {name} seed {seed}: step {step + n}/{total} ({time.perf_counter() - t0:.0f} s)", flush=True)
    arch = np.asarray(jax.device_get(derive(state.strategy)))
    row = table.lookup(arch, space)
    ops = [space.choices[d][int(a)] for d, a in enumerate(arch)]
    return {"seed": seed, "cell": space.describe(arch)["arch"], "seconds": round(time.perf_counter() - t0, 1),
            "collapsed": not any(o in CONV_OPS for o in ops), "warmup_digest": record["evaluator_digest"][:16],
            "cpus": len(os.sched_getaffinity(0)),     # XLA:CPU's thread pool, hence the rounding, follows it
            "cifar10": float(row["cifar10_test"]), "cifar100": float(row["cifar100_test"]),
            "imagenet16": float(row["imagenet16_test"]), "movement": moves}


def paired(values: dict, ref: dict, seeds: list, rng=None) -> dict:
    """``strategy - random`` per shared seed: mean, s.e. (ddof = 1) and a 95 % bootstrap interval."""
    common = [s for s in seeds if s in values and s in ref]
    d = np.asarray([values[s] - ref[s] for s in common])
    if len(d) < 2:
        return {"seeds": len(d)}
    rng = rng or np.random.default_rng(0)
    boot = d[rng.integers(0, len(d), (2000, len(d)))].mean(1)
    return {"seeds": len(d), "mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))),
            "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]}


def summarise_v2(v2: dict) -> dict:
    """Per strategy: mean ± s.e. (ddof = 1) of each column, the paired difference to random."""
    rows = v2.get("strategies", {})
    rand = rows.get("random", {}).get("runs", [])
    ref = {r["seed"]: r["cifar10"] for r in rand}
    by_warmup = {(r["seed"], r["warmup_digest"]): r["cifar10"] for r in random_runs(v2)}
    first = {r["seed"]: r["warmup_digest"] for r in rand}
    for name, row in rows.items():
        runs = row["runs"]
        for col in ("cifar10", "cifar100", "imagenet16"):
            a = np.asarray([r[col] for r in runs])
            row[col] = [float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else None]
        row["collapsed_fraction"] = float(np.mean([r["collapsed"] for r in runs]))
        row["seconds_per_search"] = float(np.mean([r["seconds"] for r in runs]))
        if name != "random":
            # paired only with a random fork of the same warm-up, bit for bit (a warm-up run after a
            # kernel change or on another CPU count differs in rounding, then in everything)
            matched = [r for r in runs if (r["seed"], r["warmup_digest"]) in by_warmup]
            same = {r["seed"]: r["cifar10"] for r in matched}
            mine = {r["seed"]: by_warmup[(r["seed"], r["warmup_digest"])] for r in matched}
            d = paired(same, mine, sorted(mine))
            d["re_run_references"] = sum(first.get(r["seed"]) != r["warmup_digest"] for r in matched)
            if len(same) < len(runs):
                d["other_warmups"] = len(runs) - len(same)
                if len(same) < 2 and len(runs) >= 2 and len(ref) >= 2:     # unpaired: difference of means
                    a, b = np.asarray([r["cifar10"] for r in runs]), np.asarray(list(ref.values()))
                    d.update(unpaired_mean=float(a.mean() - b.mean()), unpaired_se=float(np.sqrt(
                        a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))))
            row["minus_random_cifar10"] = d
    return v2


def markdown_v2(v2: dict) -> str:
    if not v2.get("strategies"):
        return "(no v2 rows yet)"
    pr = v2["protocol"]
    head = (f"Protocol v2: {pr['source']}; {pr['warmup']} shared warm-up steps + {pr['steps']} search steps, "
            f"batch {pr['batch']}, C = {pr['channels']}, {pr['cells']} cell(s) per stage; mean ± s.e. over seeds "
            f"(ddof = 1), paired difference to random with a 95 % bootstrap interval")
    refs = v2.get("random_references", [])
    if refs:
        head += (f"; {len(refs)} more random fork(s), of warm-ups other than the random row's (another CPU count "
                 f"or kernel changes the rounding), pair the strategies forked from those warm-ups (seeds "
                 f"{sorted({r['seed'] for r in refs})}; the random row is its first warm-ups' forks)")
    head += ".\n\n"
    lines = ["| strategy | seeds | CIFAR-10 | − random (paired) [95 %] | CIFAR-100 | ImageNet16-120 | collapsed | "
             "mode KL from uniform at the end | s / search |", "|---|---|---|---|---|---|---|---|---|"]
    rows = sorted(v2["strategies"].items(), key=lambda kv: -kv[1]["cifar10"][0])
    fmt = lambda v: f"{v[0]:.2f} ± {v[1]:.2f}" if v[1] is not None else f"{v[0]:.2f}"   # noqa: E731
    for name, r in rows:
        d = r.get("minus_random_cifar10") or {}
        diff = (f"{d['mean']:+.2f} ± {d['se']:.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
                if "mean" in d else
                f"unpaired {d['unpaired_mean']:+.2f} ± {d['unpaired_se']:.2f} (own warm-ups)"
                if "unpaired_mean" in d else "–")
        kl = np.mean([run["movement"][-1]["kl_uniform"] for run in r["runs"]])
        lines.append(f"| {name} | {len(r['runs'])} | {fmt(r['cifar10'])} | {diff} | {fmt(r['cifar100'])} | "
                     f"{fmt(r['imagenet16'])} | {r['collapsed_fraction']:.1f} | {kl:.3f} | "
                     f"{r['seconds_per_search']:.0f} |")
    return head + "\n".join(lines)


def plot_v2(v2: dict, path: Path, uniform_mean: float, optimum: float) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = sorted(v2["strategies"].items(), key=lambda kv: -kv[1]["cifar10"][0])
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(17, 4.6))
    for x, (name, r) in enumerate(rows):
        acc = [run["cifar10"] for run in r["runs"]]
        a0.scatter(np.full(len(acc), x), acc, s=12, color="C0", alpha=0.6)
        if r["cifar10"][1] is not None:
            a0.errorbar(x, r["cifar10"][0], yerr=r["cifar10"][1], fmt="o", color="k", capsize=3)
    a0.axhline(uniform_mean, color="C1", ls=":", label=f"uniform cell mean {uniform_mean:.2f}")
    a0.axhline(optimum, color="C2", ls="--", label=f"table optimum {optimum:.2f}")
    a0.set_xticks(range(len(rows)), [n for n, _ in rows], rotation=60, ha="right")
    a0.set_title("derived cell, CIFAR-10 test (table)"); a0.legend(fontsize=8)
    for i, (name, r) in enumerate(rows):
        steps = np.asarray([m["step"] for m in r["runs"][0]["movement"]])
        kl = np.mean([[m["kl_uniform"] for m in run["movement"]] for run in r["runs"]
                      if len(run["movement"]) == len(steps)], 0)
        mode = np.mean([[m["mode_cifar10"] for m in run["movement"]] for run in r["runs"]
                        if len(run["movement"]) == len(steps)], 0)
        a1.plot(steps, kl, label=name, color=f"C{i % 10}", ls="-" if i < 10 else "--")
        a2.plot(steps, mode, label=name, color=f"C{i % 10}", ls="-" if i < 10 else "--")
    a1.set_title("policy KL from uniform (nats per decision)"); a1.set_xlabel("step")
    a2.set_title("table accuracy of the policy's mode"); a2.set_xlabel("step")
    a2.axhline(uniform_mean, color="k", ls=":", lw=0.8)
    a2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main_v2(args, names, table, theta_options, out_path: Path, update) -> None:
    protocol = {k: getattr(args, k) for k in ("seeds", "steps", "warmup", "batch", "channels", "cells", "lr",
                                               "augment", "every", "warm_mode")}
    protocol["source"] = args.source

    def start(results):
        v2 = results.get("v2") or {}
        if v2.get("protocol") and {k: v for k, v in v2["protocol"].items() if k != "seeds"} != \
                {k: v for k, v in protocol.items() if k != "seeds"}:
            raise SystemExit(f"{out_path} holds v2 rows of another protocol {v2['protocol']}; move them first")
        v2["protocol"] = protocol
        v2.setdefault("strategies", {})
        return {**results, "v2": v2}

    results = update(out_path, start)
    seeds = [int(x) for x in args.only_seeds.split(",")] if args.only_seeds else range(args.seeds)
    for seed in seeds:                      # seed-major: every strategy of a seed shares its warm-up
        digest = None
        for name in names:
            done = {r["seed"]: r for r in results["v2"]["strategies"].get(name, {}).get("runs", [])}
            if name != "random":
                digest = digest or warm_digest(seed, args, theta_options)
                if seed in done and done[seed]["warmup_digest"] != digest:
                    print(f"  v2 {name} seed {seed}: its row forked warm-up {done[seed]['warmup_digest']}, this "
                          f"code trains {digest}: it stays unpaired (delete the row to rerun it)", flush=True)
                    continue
                if (seed, digest) not in {(r["seed"], r["warmup_digest"]) for r in random_runs(results["v2"])}:
                    results = reference(seed, digest, args, table, theta_options, out_path, update)
            if seed in done:
                continue
            run = run_fork(name, seed, args, table, theta_options)
            print(f"  v2 {name} seed {seed}: {run['cell']} c10 {run['cifar10']:.2f} ({run['seconds']:.0f} s)",
                  flush=True)

            def put(res, name=name, run=run):
                v2 = res["v2"]
                row = v2["strategies"].get(name, {"runs": []})
                row["runs"] = sorted([r for r in row["runs"] if r["seed"] != run["seed"]] + [run],
                                     key=lambda r: r["seed"])
                row["strategy_config"] = v2_config(name, 0, args, theta_options)["strategy"]
                v2["strategies"][name] = row
                return {**res, "v2": summarise_v2(v2)}
            results = update(out_path, put)
    print(markdown_v2(results["v2"]))


def reference(seed: int, digest: str, args, table, theta_options, out_path: Path, update) -> dict:
    """Fork ``random`` from the current warm-up of ``seed`` (digest ``digest``) as the pairing reference
    of the strategies forked from it; kept under ``"random_references"``."""
    run = run_fork("random", seed, args, table, theta_options)
    if run["warmup_digest"] != digest:
        raise SystemExit(f"seed {seed}: random forked warm-up {run['warmup_digest']}, expected {digest}")
    print(f"  v2 random reference seed {seed} (warm-up {digest}): c10 {run['cifar10']:.2f}", flush=True)

    def put(res):
        v2 = res["v2"]
        refs = [r for r in v2.get("random_references", []) if (r["seed"], r["warmup_digest"]) != (seed, digest)]
        v2["random_references"] = sorted(refs + [run], key=lambda r: (r["seed"], r["warmup_digest"]))
        return {**res, "v2": summarise_v2(v2)}
    return update(out_path, put)


def uniform_mean(table) -> float:
    return float(np.nanmean(table.columns["cifar10_test"]))


def load(out_path: Path) -> dict:
    v2 = json.loads(out_path.read_text()).get("v2") or {}
    return summarise_v2(v2) if v2.get("strategies") else v2   # summaries follow the current rules


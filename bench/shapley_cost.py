"""The cost of one Shapley-NAS estimate (Alg. 1, M = 10, eta = 0.5) on the tiny NAS-Bench-201 and
the DARTS-8 dense supernets, on the CIFAR-10 subset beside the repository.

Per supernet (weights warmed up for ``--warmup`` weight steps at uniform mixing weights, Alg. 2's
stage 1, so that V(N) is an accuracy worth truncating against):

- wall time of one compiled estimate + update (``strategy.step``), median of ``--repeats``, with
  truncation (eta = 0.5) and without (eta = None), and its compile time and compiled temporary memory
  (``memory_analysis().temp_size_in_bytes``);
- evaluations: done (whole prefix chunks) vs |N| * M (no truncation) vs the removals a sequential
  loop of Alg. 1 makes (the paper: truncation "reduces nearly half of computation cost");
- the time of one DARTS (first-order) architecture step on the same supernet and batch (the paper:
  the overall cost is "comparable with gradient-based architecture parameter optimization in DARTS");
- the same evaluations made one at a time (one jitted reward_fn call per coalition, a Python loop
  of Alg. 1): the speedup vmap buys. With ``--one-at-a-time K`` only the first K evaluations are
  timed and the per-evaluation time is multiplied by the loop's evaluation count (marked
  ``extrapolated``).

The timings are interleaved (each repeat times every variant once) and reported as medians and
ratios; run on a quiet machine. Writes ``bench/results/shapley_cost.json``.

    python bench/shapley_cost.py                     # both supernets
    python bench/shapley_cost.py --nets nb201 --warmup 50
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxnas.config.experiment import build  # noqa: E402
from jaxnas.config.settings import raw_config, resolve  # noqa: E402
from jaxnas.strategies import make  # noqa: E402
from jaxnas.strategies import shapley_values as SH  # noqa: E402
from jaxnas.strategies.shapley import players_of  # noqa: E402

NETS = {
    "nb201": ("configs/shapley_nb201_tiny.py", []),                              # C = 4, 3 cells
    "darts8": ("configs/shapley_darts_tiny.py", ["space.num_cells=8"]),          # C = 4, 8 cells
}


def timed(f, *a):
    t = time.perf_counter()
    out = jax.block_until_ready(f(*a))
    return time.perf_counter() - t, out


def run_net(name, args):
    path, over = NETS[name]
    over = over + [f"search.val_batch_size={args.val_batch}", f"search.batch_size={args.batch}",
                   "strategy.prefix_chunk=" + str(args.prefix_chunk),
                   f"evaluator.vmap_chunk={args.vmap_chunk}"]
    exp = build(resolve(raw_config(REPO / path), over))
    ev, space, data = exp.evaluator, exp.space, exp.data
    key = jax.random.key(0)
    evs = ev.init(key)
    # Alg. 2 stage 1: weights only, uniform mixing weights
    uniform = jnp.where(space.mask, 1.0, 0.0) / jnp.sum(space.mask, -1, keepdims=True)
    wstep = jax.jit(lambda s, b, k: ev.weight_step(s, (), uniform, b, k)[0])
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in range(args.warmup):
        idx = rng.integers(0, len(data.y_train), args.batch)
        evs = wstep(evs, (jnp.asarray(data.x_train[idx]), jnp.asarray(data.y_train[idx])),
                    jax.random.fold_in(key, i))
    jax.block_until_ready(evs)
    warm_s = time.perf_counter() - t0
    vb = (jnp.asarray(data.x_val[:args.val_batch]), jnp.asarray(data.y_val[:args.val_batch]))
    # parameters and batch are arguments of every compiled function (closed-over arrays would be
    # constants that XLA tries to fold: minutes of compile)
    single_ = jax.jit(lambda es, b, w: ev.reward_fn(es, (), b, None)(w))
    single = lambda w: single_(evs, vb, w)

    common = dict(num_samples=args.M, prefix_chunk=args.prefix_chunk, total_steps=10)
    strat = {"truncated": make("shapley", space, eta=0.5, **common),              # packed batches
             "truncated_lockstep": make("shapley", space, eta=0.5, packed=False, **common),
             "full": make("shapley", space, eta=None, **common)}
    strat = {k: v for k, v in strat.items() if k == "truncated" or k in args.variants.split(",")}
    darts = make("darts", space, total_steps=10)
    st0 = strat["truncated"].init(jax.random.key(1))
    dst0 = darts.init(jax.random.key(1))
    fns, info = {}, {}
    for k, s in strat.items():
        t = time.perf_counter()
        c = jax.jit(lambda st, kk, es, b, s=s: s.step(st, kk, ev.batched_reward_fn(es, (), b, None))).lower(
            st0, key, evs, vb).compile()
        info[k] = {"compile_s": round(time.perf_counter() - t, 2),
                   "temp_bytes": int(c.memory_analysis().temp_size_in_bytes)}
        fns[k] = lambda st, kk, c=c: c(st, kk, evs, vb)
    t = time.perf_counter()
    dc = jax.jit(lambda st, kk, es, b: darts.step(st, kk, ev.reward_fn(es, (), b, None))).lower(
        dst0, key, evs, vb).compile()
    info["darts_step"] = {"compile_s": round(time.perf_counter() - t, 2),
                          "temp_bytes": int(dc.memory_analysis().temp_size_in_bytes)}
    fns["darts_step"] = lambda st, kk: dc(st, kk, evs, vb)

    # the one-at-a-time loop of Alg. 1 on the same permutations as the truncated estimate
    players = players_of(space, "none")
    full = np.asarray(strat["truncated"].sample(st0, key)[1]).reshape(-1)
    perms = np.asarray(SH.permutations(key, len(players), args.M))

    def one_at_a_time(limit):
        evals = 0
        for p in perms:
            w = full.copy()
            v_n = v = float(single(jnp.asarray(w.reshape(space.shape)))[1]["accuracy"])
            for i in p:
                if not v > 0.5 * v_n:
                    break
                if limit is not None and evals >= limit:
                    return evals
                w[players[i]] = 0.0
                v = float(single(jnp.asarray(w.reshape(space.shape)))[1]["accuracy"])
                evals += 1
        return evals
    one_at_a_time(1)                                   # compile

    times = {k: [] for k in (*strat, "darts_step", "one_at_a_time")}
    metrics = {}
    one_evals = None
    for r in range(args.repeats):                      # interleaved
        for k in strat:
            dt, (_, m) = timed(fns[k], st0, key)
            times[k].append(dt)
            metrics[k] = {q: float(v) for q, v in m.items()}
        dt, _ = timed(fns["darts_step"], dst0, key)
        times["darts_step"].append(dt)
        t = time.perf_counter()
        one_evals = one_at_a_time(args.one_at_a_time)
        times["one_at_a_time"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    loop_evals = int(metrics["truncated"]["removals"])
    one_per_eval = med["one_at_a_time"] / max(one_evals + args.M, 1)   # + the M V(N) calls
    vmapped_per_eval = med["truncated"] / metrics["truncated"]["evaluations"]
    extrapolated = args.one_at_a_time is not None and one_evals < loop_evals
    one_total = one_per_eval * (loop_evals + args.M)
    return {
        "supernet": {"space": name, "C": space.C, "cells": getattr(space, "num_cells", None)
                     or 3 * space.cells_per_stage, "players": int(len(players)),
                     "decisions_x_choices": list(space.shape)},
        "warmup_steps": args.warmup, "warmup_seconds": round(warm_s, 1),
        "val_batch": args.val_batch, "M": args.M, "eta": 0.5, "prefix_chunk": args.prefix_chunk,
        "vmap_chunk": args.vmap_chunk,
        "V_N_accuracy": metrics["truncated"]["reward"],
        "evaluations": {"truncated_done": metrics["truncated"]["evaluations"],
                        **({"truncated_lockstep_done": metrics["truncated_lockstep"]["evaluations"]}
                           if "truncated_lockstep" in metrics else {}),
                        "sequential_alg1": metrics["truncated"]["removals"] + 1,
                        **({"no_truncation": metrics["full"]["evaluations"]} if "full" in metrics else {}),
                        "N_times_M": metrics["truncated"]["evaluations_full"],
                        "saved_fraction_done": 1 - metrics["truncated"]["evaluations"]
                        / metrics["truncated"]["evaluations_full"],
                        "saved_fraction_sequential": 1 - (metrics["truncated"]["removals"] + 1)
                        / metrics["truncated"]["evaluations_full"],
                        "truncated_permutations": metrics["truncated"]["truncated"]},
        "seconds_median": {k: round(v, 4) for k, v in med.items()},
        "seconds_all": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "one_at_a_time": {"evaluations_timed": one_evals + args.M, "per_eval_s": round(one_per_eval, 5),
                          "total_s": round(one_total, 3), "extrapolated": bool(extrapolated)},
        "vmapped_per_eval_s": round(vmapped_per_eval, 5),
        "ratios": {**({"truncated_over_full_time": med["truncated"] / med["full"]} if "full" in med else {}),
                   **({"lockstep_over_full_time": med["truncated_lockstep"] / med["full"]}
                      if {"full", "truncated_lockstep"} <= set(med) else {}),
                   "estimate_over_darts_step": med["truncated"] / med["darts_step"],
                   "vmap_speedup_same_evaluations": one_total / med["truncated"]},
        "compile": info,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default="nb201,darts8")
    p.add_argument("--warmup", type=int, default=100, help="weight steps before the estimate")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--val-batch", type=int, default=128)
    p.add_argument("--M", type=int, default=10)
    p.add_argument("--prefix-chunk", type=int, default=8)
    p.add_argument("--vmap-chunk", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default="truncated_lockstep,full",
                   help="estimates timed beside the packed truncated one (each is one more compile)")
    p.add_argument("--one-at-a-time", type=int, default=None,
                   help="time only the first K one-at-a-time evaluations (extrapolate)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "shapley_cost.json"))
    args = p.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("nets", {})
    for name in args.nets.split(","):
        r = run_net(name, args)
        # per net: its command, when, and the machine's load (absolute seconds depend on it)
        r.update({"command": " ".join(["python", "bench/shapley_cost.py"] + sys.argv[1:]),
                  "measured_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                  "load_average_1m_at_end": round(os.getloadavg()[0], 1)})
        print(name, json.dumps(r), flush=True)
        results["nets"][name] = r
        results["machine"] = {"backend": jax.default_backend(), "devices": str(jax.devices()),
                              "cpu": platform.processor() or platform.machine(),
                              "jax": jax.__version__}
        results.pop("command", None)
        results.pop("note", None)   # notes and commands are per net now
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Stand-alone evaluator: 32 MLP candidates trained from scratch in ONE vmapped program (the search
loop's lanes, ``jax.vmap(axis_name="data")``) vs the same 32 trained one at a time by the jitted
single-lane program, same process, same steps, same keys.

Candidates: random architectures of the TabNAS Connect-4 space ``MLPSpace.create(2, 42, 3)``
(configs/tabnas_connect4.py: 2 layers, the 20 TabNAS widths 8..512) and of the smaller space of
bench/tabnas_connect4.py (widths 8..96); the embedded Connect-4 data (80/20 split, standardised).
Every candidate trains ``--steps`` Adam steps of batch ``--batch`` then is evaluated on the whole
validation split (13,512 rows). Compile time is measured apart; the two timings are interleaved
(batched, sequential, batched, ...) ``--repeats`` times and the medians reported.

    python bench/standalone_batch.py [--candidates 32] [--steps 200] [--batch 256] [--repeats 3]

Writes bench/results/standalone_batch.json and prints it as the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.data import load_tabular
from jaxnas.evaluators.standalone import make
from jaxnas.spaces import MLPSpace, TABNAS_WIDTHS

RESULTS = Path(__file__).resolve().parent / "results" / "standalone_batch.json"
SPACES = {"tabnas_connect4": TABNAS_WIDTHS, "small_8_96": (8, 16, 24, 32, 48, 64, 80, 96)}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def _timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, out


def bench_space(data, widths, opts, n, repeats, seed=0) -> dict:
    space = MLPSpace.create(2, data.num_inputs, 3, widths)
    ev = make(opts, cfg={}, space=space, data=data, task=None, axis_name="data")
    inputs, state = ev.inputs(), ev.init(jax.random.key(0))
    archs = np.random.default_rng(seed).integers(0, len(widths), (n, 2)).astype(np.int32)
    weights = jax.vmap(space.one_hot)(jnp.asarray(archs))
    keys = jax.random.split(jax.random.key(seed), n)

    def lane(inputs, w, k):
        r, aux = ev.reward_fn(state, inputs, None, k)(w)
        return r, aux["val_accuracy"]

    t_cb, batched = _timed(lambda: jax.jit(jax.vmap(lane, in_axes=(None, 0, 0), axis_name="data"))
                           .lower(inputs, weights, keys).compile())
    t_cs, single = _timed(lambda: jax.jit(lane).lower(inputs, weights[0], keys[0]).compile())
    log(f"  compile: batched {t_cb:.1f} s, single {t_cs:.1f} s")

    def run_single():
        return [jax.block_until_ready(single(inputs, weights[i], keys[i])) for i in range(n)]

    tb, ts = [], []
    for r in range(repeats):                       # interleaved
        t, (rb, accb) = _timed(lambda: batched(inputs, weights, keys))
        tb.append(t)
        t, outs = _timed(run_single)
        ts.append(t)
        log(f"  repeat {r}: batched {tb[-1]:.2f} s, one at a time {ts[-1]:.2f} s")
    rs = np.array([float(o[0]) for o in outs])
    accs = np.array([float(o[1]) for o in outs])
    rb, accb = np.asarray(rb), np.asarray(accb)
    med_b, med_s = float(np.median(tb)), float(np.median(ts))
    return {
        "widths": list(widths), "max_width": int(max(widths)), "steps_per_candidate": int(ev.total_steps),
        "archs": [space.encode(a) for a in archs],
        "batched_seconds": round(med_b, 3), "one_at_a_time_seconds": round(med_s, 3),
        "speedup": round(med_s / med_b, 2),
        "batched_seconds_all": [round(t, 3) for t in tb], "one_at_a_time_seconds_all": [round(t, 3) for t in ts],
        "compile_seconds_batched": round(t_cb, 2), "compile_seconds_single": round(t_cs, 2),
        "candidate_steps_per_s_batched": round(n * ev.total_steps / med_b, 1),
        "candidate_steps_per_s_one_at_a_time": round(n * ev.total_steps / med_s, 1),
        "rewards_max_abs_diff": float(np.max(np.abs(rb - rs))),
        "val_accuracy_max_abs_diff": float(np.max(np.abs(accb - accs))),
        "reward_neg_val_loss_min_mean_max": [round(float(v), 4) for v in (rb.min(), rb.mean(), rb.max())],
        "val_accuracy_mean": round(float(accb.mean()), 4),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=32)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spaces", default=",".join(SPACES), help=f"comma-separated subset of {list(SPACES)}")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    data = load_tabular("connect4", val_fraction=0.2, seed=0)
    opts = {"epochs": 1, "batch_size": args.batch, "lr": args.lr, "schedule": "cosine", "optimizer": "adam",
            "eps": 1e-3, "max_steps": args.steps, "reward": "neg_loss"}
    res = {"command": "python " + " ".join(["bench/standalone_batch.py", *sys.argv[1:]]),
           "what": "N candidates trained from scratch by the standalone evaluator: one vmapped program "
                   "(vmap over lanes, axis_name='data') vs N calls of the jitted single-lane program; "
                   "medians of interleaved repeats, compile excluded (reported apart)",
           "candidates": args.candidates, "repeats": args.repeats,
           "evaluator_options": opts,
           "data": {"name": "connect4", "train": data.num_train, "val": data.num_val, "inputs": data.num_inputs,
                    "classes": data.num_classes},
           "machine": {"backend": jax.default_backend(), "devices": len(jax.devices()),
                       "cpu_count": os.cpu_count(), "jax": jax.__version__, "python": platform.python_version()}}
    for name in args.spaces.split(","):
        log(f"{name}: {args.candidates} candidates x {args.steps} steps")
        res[name] = bench_space(data, SPACES[name], opts, args.candidates, args.repeats)
        log(f"{name}: {res[name]['speedup']}x ({res[name]['one_at_a_time_seconds']} s one at a time, "
            f"{res[name]['batched_seconds']} s batched); rewards max diff {res[name]['rewards_max_abs_diff']:.2e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()

"""Steps per second of the compiled chunked loop (lax.scan over `chunk` steps per call) against one
jitted call per step driven from Python, same process, same strategy, data and state.

    python bench/search_step.py [--steps 400] [--chunk 100]

Writes bench/results/search_step.json and prints it as the last line.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from jaxnas.config.experiment import build
from jaxnas.config.settings import resolve
from jaxnas.data import BatchSampler, gather

RESULTS = Path(__file__).resolve().parent / "results" / "search_step.json"


def _cifar_like(n=512, seed=0):
    """In-memory images for the NB201 case (the step's speed does not depend on pixel values)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), np.uint8), rng.integers(0, 10, n)


CASES = {
    "mlp_connect4": {"data": {"name": "connect4"}, "space": {"name": "mlp", "num_layers": 3},
                     "strategy": {"name": "reinforce"}, "search": {"batch_size": 256}},
    "mlp_small": {"data": {"name": "connect4"}, "space": {"name": "mlp", "num_layers": 2, "widths": [4, 8, 16]},
                  "strategy": {"name": "reinforce"}, "search": {"batch_size": 32}},
    "nb201_tiny": {"data": {"name": "image_npz"}, "space": {"name": "nb201", "C": 4, "cells_per_stage": 1},
                   "strategy": {"name": "reinforce"}, "search": {"batch_size": 8}},
}


def time_case(name, cfg, steps, chunk, tmp):
    if cfg["data"]["name"] == "image_npz":
        x, y = _cifar_like()
        path = Path(tmp) / "imgs.npz"
        np.savez(path, X=x, y=y)
        cfg = {**cfg, "data": {"name": "image_npz", "path": str(path)}}
    exp = build(resolve(cfg))
    d, s = exp.data, exp.config["search"]
    tr = BatchSampler(len(d.y_train), s["batch_size"], 0)
    va = BatchSampler(len(d.y_val), s["batch_size"], 1)
    out = {}
    for label, per_call in (("chunked", chunk), ("per_step", 1)):
        state = exp.search.init(jax.random.key(0))
        warm = gather((d.x_train, d.y_train), tr.chunk(0, per_call)), gather((d.x_val, d.y_val), va.chunk(0, per_call))
        state, _ = exp.search.run_chunk(state, *warm)  # compile
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        for start in range(0, steps, per_call):
            tb = gather((d.x_train, d.y_train), tr.chunk(start, per_call))
            vb = gather((d.x_val, d.y_val), va.chunk(start, per_call))
            state, m = exp.search.run_chunk(state, tb, vb)
        jax.block_until_ready(state)
        out[f"{label}_steps_per_s"] = steps / (time.perf_counter() - t0)
    out["speedup"] = out["chunked_steps_per_s"] / out["per_step_steps_per_s"]
    out["batch_size"] = s["batch_size"]
    return out


def main():
    import tempfile
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--chunk", type=int, default=100)
    args = ap.parse_args()
    results = {"meta": {"steps": args.steps, "chunk": args.chunk, "backend": jax.default_backend(),
                        "jax": jax.__version__}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in CASES.items():
            results[name] = time_case(name, cfg, args.steps, args.chunk, tmp)
            print(name, results[name], flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""Memory and time of one search step (weight step + strategy step): MANAS on the 20-unique-cell DARTS
network vs DARTS (first order, dense) on the 8-cell network, same batch (Carlucci et al. sec. 5: "an
order of magnitude less memory" than DARTS, and 20 cells searched directly).

    python bench/manas_memory.py [--batch 64] [--C 16] [--reps 2] [--with-ls]

Each step is the engine's compiled search step (``Search`` phase 'both', one lane) built from
``configs/manas_darts20.py`` / ``manas_ls_darts20.py`` and the DARTS settings on the CIFAR-10 subset
(images are images: the data only fixes shapes). temp_bytes:
``jax.jit(step).lower(...).compile().memory_analysis().temp_size_in_bytes``; state_bytes: the search
state (supernet parameters, optimizer, strategy state: MANAS-LS's normal equations are 2,240^2
floats); step_s: median wall time of the compiled step. Writes bench/results/manas_memory.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from jaxnas.config.experiment import build  # noqa: E402
from jaxnas.config.settings import load_config  # noqa: E402

OUT = REPO / "bench" / "results" / "manas_memory.json"


def setups(C: int):
    common = ["data.max_train=512", "search.eval_batch_size=64"]
    return {
        "manas_darts20_unique": ("configs/manas_darts20_tiny.py", [f"space.C={C}"] + common),
        "manas_ls_darts20_unique": ("configs/manas_ls_darts20_tiny.py", [f"space.C={C}"] + common),
        # DARTS 1st order: the dense 8-cell supernet (normal + reduce cells repeated), same optimizer
        "darts_dense_8cells": ("configs/manas_darts20_tiny.py",
                               [f"space.C={C}", "space.num_cells=8", "space.unique_cells=False",
                                "strategy={'name': 'darts'}"] + common),
    }


def measure(path, overrides, batch, reps):
    cfg = load_config(REPO / path, overrides + [f"search.batch_size={batch}", f"search.val_batch_size={batch}"])
    exp = build(cfg)
    search, data = exp.search, exp.data
    state = search.init(jax.random.key(0))
    idx = np.arange(batch)
    tb = (data.x_train[idx][None], data.y_train[idx][None])          # one step: [1, batch, ...]
    vb = (data.x_val[idx][None], data.y_val[idx][None])
    f, _ = search._chunk_fn("both")
    args = (state, search.inputs, search.shard_batches((tb, vb)))
    t0 = time.perf_counter()
    compiled = f.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    times = []
    out = compiled(*args)
    jax.block_until_ready(out)
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    nbytes = lambda tree: int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)
                                  if hasattr(x, "dtype") and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)))
    return {"config": path, "overrides": overrides, "space_shape": list(exp.space.shape),
            "strategy": exp.strategy.name, "mode": exp.strategy.mode,
            "temp_bytes": int(mem.temp_size_in_bytes), "state_bytes": nbytes(state),
            "supernet_params": int(sum(x.size for x in jax.tree.leaves(state.evaluator.params))),
            "strategy_state_bytes": nbytes(state.strategy),
            "compile_s": round(compile_s, 1), "step_s": statistics.median(times), "reps": reps}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--with-ls", action="store_true", help="also MANAS-LS (its 2,240-column solve)")
    ap.add_argument("--xla-kernels", action="store_true",
                    help="XLA's own depthwise conv / max pool (space.cpu_kernels=False), as before "
                         "the CPU kernels: to compare with rows measured then")
    ap.add_argument("--only", nargs="+", choices=list(setups(16)),
                    help="measure only these (merged with the results file's others of the same batch/C)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    old = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    same = old.get("batch") == args.batch and old.get("C") == args.C
    res = dict(old.get("results", {})) if args.only and same else {}
    for name, (path, ov) in setups(args.C).items():
        if (name.startswith("manas_ls") and not args.with_ls) or (args.only and name not in args.only):
            continue
        res[name] = measure(path, ov + (["space.cpu_kernels=False"] if args.xla_kernels else []), args.batch,
                            args.reps)
        res[name]["kernels"] = "xla" if args.xla_kernels else "jaxnas"
        res[name]["measured_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        print(name, json.dumps(res[name]), flush=True)
    if not {"manas_darts20_unique", "darts_dense_8cells"} <= set(res):
        Path(args.out).write_text(json.dumps({"batch": args.batch, "C": args.C, "results": res}, indent=1))
        return
    m, d = res["manas_darts20_unique"], res["darts_dense_8cells"]
    out = {"command": "python bench/manas_memory.py " + " ".join(sys.argv[1:]),
           "batch": args.batch, "C": args.C, "backend": jax.default_backend(),
           "device": str(jax.devices()[0]), "results": res,
           "darts8_dense_over_manas20_temp": d["temp_bytes"] / m["temp_bytes"],
           "darts8_dense_over_manas20_step_time": d["step_s"] / m["step_s"]}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

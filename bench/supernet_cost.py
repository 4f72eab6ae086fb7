"""Memory and time of one training step (forward + backward w.r.t. the supernet parameters) of the
sparse supernet, the dense supernet and the discrete network of a sampled architecture.

    python bench/supernet_cost.py [--skeletons darts8 darts20_unique nb201] [--batch 64]

temp_bytes: ``jax.jit(step).lower(...).compile().memory_analysis().temp_size_in_bytes``.
step_ms: median wall time of the compiled step, all forms measured in this process; sparse over
several sampled architectures (changing the architecture does not recompile).
search_step (the NB201 number; default for nb201, ``--forms search_step`` for the others): what a
search step costs, the engine's compiled chunk (``Search.run_chunk``'s program, one step per call) of
the ``random`` strategy's weight phase on a config built like bench/vs_pytorch.py's weight-step
workload (NB201: the AdvantageNAS weight optimizer, Nesterov SGD; DARTS: DARTS's SGD): a new uniformly
sampled architecture every step, the gradient and the optimizer update included, random uint8 images
(no augmentation); median over ``2 * --archs * --reps`` steps after one warm step. Its temp_bytes are the
chunk's, the optimizer state included.
compile_s: ``lower`` + ``compile``; lower_s: its first part (Python tracing, autodiff, StableHLO),
which the persistent compilation cache does not save.
Writes bench/results/supernet_cost.json (merged per skeleton) and prints it as the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxnas.models.ops.conv import Kernels
from jaxnas.models.supernets import DartsNet, NasBench201Net, init_params
from jaxnas.models.supernets.cells import layout_of
from jaxnas.spaces.cells import DartsSpace, NasBench201Space

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_ab  # noqa: E402  (the engine's weight chunk, as bench/engine_ab.py times it)
import vs_pytorch  # noqa: E402  (the workloads' configs, shared so the two benches time the same step)

RESULTS = Path(__file__).resolve().parent / "results" / "supernet_cost.json"
SCANNED = ("sparse_scan", "dense_scan", "sparse_cells", "dense_cells", "sparse_scan_cells")
SEARCH_STEP = ("search_step", "search_step_scan")   # the engine's step; _scan: space.scan_edges

SKELETONS = {
    "darts8": lambda: (DartsSpace.create(C=16, num_cells=8), DartsNet),
    "darts20_unique": lambda: (DartsSpace.create(C=16, num_cells=20, unique_cells=True), DartsNet),
    "nb201": lambda: (NasBench201Space.create(C=16, cells_per_stage=5), NasBench201Net),
}


# --vs: other lowerings timed interleaved with the default one, as *_<name> fields
ALTERNATIVES = {"xla": Kernels(cpu=False),                     # XLA's own depthwise conv / max pool (ops/conv.py)
                "no_barrier": Kernels(cotangent_barrier=False)}  # no cotangent barrier at the edges' inputs


def measure(net, space, mode, x, y, archs, reps, vs=()):
    key = jax.random.key(0)
    w0 = space.one_hot(archs[0])
    params = init_params(net, key, x[:2], w0)

    def loss(net, p, w, x, y):   # the batch an argument, as in training (a closed-over one is a constant)
        logits = net.apply({"params": p}, x, w, mode=mode)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    def compile_(alternative=None):
        variant = net.clone(kernels=ALTERNATIVES[alternative]) if alternative else net   # a static field
        t0 = time.perf_counter()
        step = jax.value_and_grad(lambda p, w, x, y: loss(variant, p, w, x, y))
        lowered = jax.jit(step).lower(params, w0, x, y)   # tracing + autodiff + StableHLO
        t1 = time.perf_counter()
        return lowered.compile(), (t1 - t0, time.perf_counter() - t0)

    lowerings = {"": compile_()} | {f"_{v}": compile_(v) for v in vs}
    times = {k: [] for k in lowerings}
    for a in archs:
        w = space.one_hot(a)
        for c, _ in lowerings.values():
            jax.block_until_ready(c(params, w, x, y))  # warm
        for _ in range(reps):
            for k, (c, _) in lowerings.items():
                t0 = time.perf_counter()
                jax.block_until_ready(c(params, w, x, y))
                times[k].append(time.perf_counter() - t0)
    out = {"num_params": int(sum(v.size for v in jax.tree.leaves(params)))}
    for k, (c, (lower_s, compile_s)) in lowerings.items():   # compile_s: lower + XLA compile
        out.update({f"temp_bytes{k}": int(c.memory_analysis().temp_size_in_bytes),
                    f"step_ms{k}": 1000 * statistics.median(times[k]), f"compile_s{k}": round(compile_s, 1),
                    f"lower_s{k}": round(lower_s, 1)})
    return out


def measure_search_step(name, batch, steps, scan_edges=False):
    """The engine's compiled weight-phase chunk (one step per call) of the random strategy: a new
    architecture every step, the update included (module docstring)."""
    from jaxnas.config.experiment import build
    from jaxnas.config.settings import resolve
    space_args = {"nb201": {"C": 16, "cells": 5}, "darts8": {"C": 16, "num_cells": 8}}
    if name not in space_args:
        raise ValueError(f"search_step is measured for {', '.join(space_args)}, not {name!r}")
    workload = ("nb201_weights" if name == "nb201" else
                "darts8_sparse_scan_edges" if scan_edges else "darts8_sparse")
    with tempfile.TemporaryDirectory() as tmp:
        data = vs_pytorch.make_images(Path(tmp) / "images.npz")
        cfg = resolve(vs_pytorch.jaxnas_config(workload, data, batch=batch, **space_args[name]))
        if name == "nb201":
            cfg["space"]["scan_edges"] = scan_edges
        exp = build(cfg)
    search = exp.search
    compiled, state, batches, lower_s, compile_s = engine_ab.weight_chunk(exp, batch)
    compile_s += lower_s     # compile_s: lower + compile (the module docstring)
    archs, times = set(), []
    for i in range(steps + 1):
        b = batches(i)
        t = time.perf_counter()
        state, m = compiled(state, search.inputs, b)
        jax.block_until_ready(state)
        if i:   # the first call is a warm step
            times.append(time.perf_counter() - t)
        archs.add(tuple(int(a) for a in m["sample/arch"][0, 0]))
    return {"num_params": int(sum(v.size for v in jax.tree.leaves(state.evaluator.params))),
            "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
            "step_ms": 1000 * statistics.median(times), "compile_s": round(compile_s, 1),
            "lower_s": round(lower_s, 1), "steps": steps, "distinct_archs": len(archs),
            "config": {"workload": workload, "strategy": cfg["strategy"]["name"],
                       "optimizer": {k: cfg["optimizer"][k] for k in ("name", "lr", "momentum", "nesterov",
                                                                       "weight_decay", "schedule", "clip")},
                       "ops": list(exp.space.choices[0]),
                       "layout": dict(zip(("scan_edges", "scan_cells"), layout_of(exp.task.net)))}}


def run_skeleton(name, batch, num_archs, reps, full, forms=None, vs=()):
    space, net_cls = SKELETONS[name]()
    key = jax.random.key(1)
    x = jax.random.normal(key, (batch, 32, 32, 3))
    y = jax.random.randint(key, (batch,), 0, 10)
    archs = [space.sample(jax.random.fold_in(key, i)) for i in range(num_archs)]
    out = {"shape": list(space.shape), "arch": space.encode(archs[0])}
    default = forms is None
    forms = forms or ("discrete", "sparse", "sparse_noremat", "dense") + (("search_step",) if name == "nb201" else ())
    if name == "darts20_unique" and not full and default:
        forms = ("discrete", "sparse")  # dense: ~20 min of compile on 2 cores; --full includes it
    for form in forms:
        if form in SEARCH_STEP:
            r = measure_search_step(name, batch, num_archs * reps * 2, scan_edges=form.endswith("_scan"))
        elif form == "discrete":
            net = net_cls(space, arch=tuple(int(a) for a in archs[0]))
            r = measure(net, space, "sparse", x, y, archs[:1], reps * num_archs, vs)
        elif form == "dense":
            r = measure(net_cls(space), space, "dense", x, y, archs[:1], 1, vs)
        elif form in SCANNED:   # _scan: a cell's edges compiled once (Cell.scan_edges); _cells: each
            mode, *flags = form.split("_")   # run of same-shape cells compiled once (cell_runs)
            net = net_cls(space, scan_edges="scan" in flags, scan_cells="cells" in flags)
            r = measure(net, space, mode, x, y,
                        archs if mode == "sparse" else archs[:1], reps if mode == "sparse" else 1, vs)
        else:
            r = measure(net_cls(space, remat=form == "sparse"), space, "sparse", x, y, archs, reps, vs)
        # stamped: a --forms run merges into an entry whose other forms may be older
        r["measured"] = {"utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "git": vs_pytorch.git_head(),
                         "load_average_1m": round(os.getloadavg()[0], 1)}
        out[form] = r
        print(name, form, r, flush=True)
    return out


def add_ratios(out):
    if "dense" in out and "sparse" in out:
        out["sparse_over_dense_temp"] = out["sparse"]["temp_bytes"] / out["dense"]["temp_bytes"]
    if "sparse" in out and "discrete" in out:
        out["sparse_over_discrete_temp"] = out["sparse"]["temp_bytes"] / out["discrete"]["temp_bytes"]
        out["sparse_over_discrete_time"] = out["sparse"]["step_ms"] / out["discrete"]["step_ms"]
    same_run = lambda a, b: (a.get("measured", {}).get("git") == b.get("measured", {}).get("git") and
                             a.get("measured", {}).get("utc", "")[:10] == b.get("measured", {}).get("utc", "-")[:10])
    if "search_step" in out and "sparse" in out:   # the whole search step against the loss gradient alone
        if same_run(out["search_step"], out["sparse"]):   # never a ratio across days or commits
            out["search_step_over_sparse"] = {k: out["search_step"][k] / out["sparse"][k]
                                              for k in ("step_ms", "temp_bytes")}
        else:
            out.pop("search_step_over_sparse", None)
    for form in SCANNED:   # a scanned form against the per-edge, per-cell one
        mode = form.split("_")[0]
        if form in out and mode in out:
            a, b = out[mode], out[form]
            out[f"{form}_over_{mode}"] = {k: b[k] / a[k] for k in ("compile_s", "step_ms", "temp_bytes")}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skeletons", nargs="+", default=list(SKELETONS), choices=list(SKELETONS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--archs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="also the dense darts20_unique supernet")
    ap.add_argument("--forms", nargs="+", choices=["discrete", "sparse", "sparse_noremat", "dense", *SCANNED, *SEARCH_STEP],
                    help="only these forms (merged into the skeleton's existing entry)")
    ap.add_argument("--vs", nargs="+", default=(), choices=list(ALTERNATIVES),
                    help="also these lowerings, timed interleaved (*_<name> fields): xla = XLA's own "
                         "depthwise conv / max pool, no_barrier = no cotangent barrier at edge inputs")
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["meta"] = {"batch": args.batch, "input": [32, 32, 3], "backend": jax.default_backend(),
                       "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
                       "jax": jax.__version__, "machine": platform.machine()}
    for name in args.skeletons:
        entry = run_skeleton(name, args.batch, args.archs, args.reps, args.full, args.forms and tuple(args.forms),
                             tuple(args.vs))
        # re-read before writing: another run (other skeletons or forms) may have written meanwhile
        results = {**(json.loads(RESULTS.read_text()) if RESULTS.exists() else {}), "meta": results["meta"]}
        prev = results.get(name, {}) if args.forms else {}
        results[name] = add_ratios({**prev, **entry})
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))
    if all(k in results for k in ("darts8", "darts20_unique", "nb201")):
        d8, d20 = results["darts8"], results["darts20_unique"]
        results["targets"] = {
            "darts8_sparse_le_dense_over_6": d8["sparse"]["temp_bytes"] <= d8["dense"]["temp_bytes"] / 6,
            "darts20_unique_sparse_le_darts8_dense": d20["sparse"]["temp_bytes"] <= d8["dense"]["temp_bytes"],
            "sparse_le_1.5x_discrete_temp": all(results[k]["sparse_over_discrete_temp"] <= 1.5
                                                for k in SKELETONS),
            "sparse_le_1.5x_discrete_time": all(results[k]["sparse_over_discrete_time"] <= 1.5
                                                for k in SKELETONS),
        }
        RESULTS.write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()

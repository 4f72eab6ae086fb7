"""Memory and time of one training step (forward + backward w.r.t. the supernet parameters) of the
sparse supernet, the dense supernet and the discrete network of a sampled architecture.

    python bench/supernet_cost.py [--skeletons darts8 darts20_unique nb201] [--batch 64]

temp_bytes: ``jax.jit(step).lower(...).compile().memory_analysis().temp_size_in_bytes``.
step_ms: median wall time of the compiled step, all forms measured in this process; sparse over
several sampled architectures (changing the architecture does not recompile).
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
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxnas.models.ops.conv import Kernels
from jaxnas.models.supernets import DartsNet, NasBench201Net, init_params
from jaxnas.spaces.cells import DartsSpace, NasBench201Space

RESULTS = Path(__file__).resolve().parent / "results" / "supernet_cost.json"
SCANNED = ("sparse_scan", "dense_scan", "sparse_cells", "dense_cells", "sparse_scan_cells")

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


def _git_head():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except OSError:
        return None


def run_skeleton(name, batch, num_archs, reps, full, forms=None, vs=()):
    space, net_cls = SKELETONS[name]()
    key = jax.random.key(1)
    x = jax.random.normal(key, (batch, 32, 32, 3))
    y = jax.random.randint(key, (batch,), 0, 10)
    archs = [space.sample(jax.random.fold_in(key, i)) for i in range(num_archs)]
    out = {"shape": list(space.shape), "arch": space.encode(archs[0])}
    default = forms is None
    forms = forms or ("discrete", "sparse", "sparse_noremat", "dense")
    if name == "darts20_unique" and not full and default:
        forms = ("discrete", "sparse")  # dense: ~20 min of compile on 2 cores; --full includes it
    for form in forms:
        if form == "discrete":
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
        r["measured"] = {"utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "git": _git_head(),
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
    ap.add_argument("--forms", nargs="+", choices=["discrete", "sparse", "sparse_noremat", "dense", *SCANNED],
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

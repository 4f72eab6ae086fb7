"""Retained host memory against glibc's default, process against process (each variant is a property of
its process): ``default``; ``retained``, glibc tunables read at process start (jaxnas's mechanism
until 2026-12-07); ``in_process``, ``jaxnas.core.host_memory.retain_in_process()`` (the CLI's default).

    python bench/host_memory_ab.py [--workloads nb201_weights darts8_sparse_scan_edges] [--pairs 3]
                                   [--steps 16] [--variants default retained in_process]
                                   [--out bench/results/host_memory_ab.json]

Per workload (bench/vs_pytorch.py's configs: the engine's compiled weight chunk, one step per call, a
new architecture every step), ``--pairs`` pairs of worker processes, one per variant, the order
alternating; each traces and compiles the chunk (no persistent cache: the compile seconds are a
cold start's), runs one warm step, then ``--steps`` steps, and reports the median step, the minor
page faults per step (``getrusage``), the compile seconds and its peak RSS. Paired ratios of each
variant to the default: median and mean +- s.e. (ddof = 1) over the pairs. Writes ``--out`` (merged
per workload), stamped with the commit and the load.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "host_memory_ab.json"
PREFIX = "@@host_memory_ab "
# glibc's default; TUNABLES at process start (jaxnas's mechanism until 2026-12-07: one malloc arena, no
# mmap, no trim below 16 GB); mallopt and synchronous CPU dispatch in the running process
# (host_memory.retain_in_process, the CLI's default since)
VARIANTS = ("default", "retained", "in_process")
TUNABLES = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"


def worker(workload: str, data: str, steps: int, in_process: bool) -> None:
    import resource
    import time

    import jax
    if in_process:
        from jaxnas.core import host_memory
        host_memory.retain_in_process()
    import vs_pytorch
    from engine_ab import weight_chunk  # the engine's weight chunk, traced and compiled, timed

    from jaxnas.config.experiment import build
    from jaxnas.config.settings import resolve
    exp = build(resolve(vs_pytorch.jaxnas_config(workload, data)))
    search = exp.search
    compiled, state, batches, lower_s, compile_s = weight_chunk(exp, 64)
    compile_s += lower_s      # a cold start's tracing and compile
    state, _ = compiled(state, search.inputs, batches(0))
    jax.block_until_ready(state)
    times = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(1, steps + 1):
        b = batches(i)
        t = time.perf_counter()
        state, _ = compiled(state, search.inputs, b)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
    print(PREFIX + json.dumps({"step_ms": 1000 * statistics.median(times), "faults_per_step": faults,
                               "compile_s": compile_s, "temp_mb": compiled.memory_analysis().temp_size_in_bytes / 1e6,
                               "peak_rss_mb": vs_pytorch.peak_rss_mb(),
                               "tunables": os.environ.get("GLIBC_TUNABLES")}), flush=True)


def run(workload: str, data: str, steps: int, variant: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if variant == "retained":
        env["GLIBC_TUNABLES"] = TUNABLES
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent)] + [p for p in [env.get("PYTHONPATH")] if p])
    out = subprocess.run([sys.executable, __file__, "--worker", workload, "--data", data, "--steps", str(steps)]
                         + (["--in-process"] if variant == "in_process" else []),
                         env=env, capture_output=True, text=True, check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith(PREFIX)]
    if not lines:
        raise RuntimeError(f"worker failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(lines[-1][len(PREFIX):])


def _ratio_stats(a, b):
    r = [x / y for x, y in zip(a, b)]
    se = statistics.stdev(r) / math.sqrt(len(r)) if len(r) > 1 else float("nan")
    return {"median": statistics.median(r), "mean": statistics.fmean(r), "se": se}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=["nb201_weights", "darts8_sparse_scan_edges"])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.data, args.steps, args.in_process)
    import vs_pytorch
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        data = str(vs_pytorch.make_images(Path(tmp) / "images.npz"))
        for wl in args.workloads:
            load = os.getloadavg()
            runs = {v: [] for v in ["default"] + [v for v in args.variants if v != "default"]}
            for p in range(args.pairs):
                for variant in (list(runs) if p % 2 == 0 else list(runs)[::-1]):
                    r = run(wl, data, args.steps, variant)
                    runs[variant].append(r)
                    print(f"{wl} pair {p} {variant}: step {r['step_ms']:.0f} ms, {r['faults_per_step']:.0f} faults "
                          f"a step, compile {r['compile_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
            get = lambda v, k: [r[k] for r in runs[v]]   # noqa: E731
            others = [v for v in runs if v != "default"]
            results[wl] = {
                "runs": runs, "pairs": args.pairs, "steps": args.steps, "git": vs_pytorch.git_head(),
                "load_average_before": list(load), "load_average_after": list(os.getloadavg()),
                "step_ratio_over_default": {v: _ratio_stats(get(v, "step_ms"), get("default", "step_ms"))
                                            for v in others},
                "compile_ratio_over_default": {v: _ratio_stats(get(v, "compile_s"), get("default", "compile_s"))
                                               for v in others},
                "faults_per_step": {v: statistics.median(get(v, "faults_per_step")) for v in runs},
                "step_ms": {v: statistics.median(get(v, "step_ms")) for v in runs},
                "compile_s": {v: statistics.median(get(v, "compile_s")) for v in runs}}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
            for v, s in results[wl]["step_ratio_over_default"].items():
                print(f"{wl}: {v} / default step {s['median']:.3f} ({s['mean']:.3f} +- {s['se']:.3f})", flush=True)


if __name__ == "__main__":
    main()

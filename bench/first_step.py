"""Process start to a search's first step, cold and warm, and where the time goes; optionally paired
against another checkout of jaxnas, one process at a time, alternating.

    python bench/first_step.py [--workload darts8_sparse_scan_edges] [--pairs 4] [--against PATH]
    python bench/first_step.py --smoke        # NB201 C 4, one cell per stage, one cold + warm run

Each run is a fresh process with ``PYTHONPATH`` set to its checkout (this one, or ``--against``'s
``jaxnas/``): a cold start (a fresh compilation cache directory, so no stored trace either), then a
warm one (the same directory). The process keeps its compiled calls' temporary blocks as ``jaxnas
search`` does, builds bench/vs_pytorch.py's config of the workload, initialises and runs one compiled
weight-phase chunk of one step, and reports wall-clock seconds from its start (import, build, init,
first chunk) and jax.monitoring's seconds of tracing, lowering, XLA compile and cache retrieval. With
``--against`` the two checkouts alternate (A B, B A, ...): the machine's pace drifts over an hour, so
the paired differences (this checkout minus the other, mean +- s.e., ddof 1), not the means, carry
the comparison. Writes bench/results/first_step.json under the workload's name (``--out``)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "first_step.json"
EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lowering_s",
          "/jax/core/compile/backend_compile_duration": "backend_compile_s",
          "/jax/compilation_cache/cache_retrieval_time_sec": "cache_retrieval_s"}


def child(workload: str, data: str, cache: str, small: bool) -> None:
    """One process's first step; prints one JSON line."""
    t0 = time.time()
    import jax
    import jax.monitoring as monitoring

    from jaxnas.core import host_memory
    host_memory.retain_in_process()
    seconds = dict.fromkeys(EVENTS.values(), 0.0)

    def listen(event, duration, **_):
        if event in EVENTS:
            seconds[EVENTS[event]] += duration
    monitoring.register_event_duration_secs_listener(listen)
    sys.path.insert(0, str(HERE))
    import vs_pytorch

    from jaxnas.config.experiment import build
    from jaxnas.config.settings import resolve
    from jaxnas.data import BatchSampler, gather
    from jaxnas.engine import compile_cache
    t_import = time.time() - t0
    compile_cache.enable(cache)
    size = {"C": 4, "cells": 1} if small else {}
    exp = build(resolve(vs_pytorch.jaxnas_config(workload, data, **size)))
    t_build = time.time() - t0
    search, d = exp.search, exp.data
    state = search.init(jax.random.key(0))
    jax.block_until_ready(state)
    t_init = time.time() - t0
    tr, va = BatchSampler(len(d.y_train), 64, 0), BatchSampler(len(d.y_val), 64, 1)
    batches = gather((d.x_train, d.y_train), tr.chunk(0, 1)), gather((d.x_val, d.y_val), va.chunk(0, 1))
    state, _ = search.run_chunk(state, *batches, kind="weights")
    jax.block_until_ready(state)
    t_first = time.time() - t0
    print(json.dumps({"start_to_first_step_s": t_first, "import_s": t_import, "build_s": t_build - t_import,
                      "init_s": t_init - t_build, "first_chunk_s": t_first - t_init,
                      **{k: round(v, 3) for k, v in seconds.items()}}), flush=True)


def run(checkout: Path, workload: str, data: str, cache: Path, small: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    t = time.time()
    cmd = [sys.executable, __file__, "--child", workload, data, str(cache)] + (["--small"] if small else [])
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    if r.returncode != 0:
        raise RuntimeError(f"the first-step process failed ({checkout}):\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["process_s"] = round(time.time() - t, 2)     # interpreter start and exit included
    return out


def _git(checkout: Path):
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=checkout,
                       check=False)
    return r.stdout.strip() or None


def _mean_se(xs):
    from readme_tables import mean_se  # ddof = 1, as every bench reports its spreads
    m, se = mean_se(xs)
    return {"mean": round(m, 2), "se": round(se, 2) if len(xs) > 1 else None, "n": len(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="darts8_sparse_scan_edges")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--against", help="another checkout of this repository (e.g. a git worktree)")
    ap.add_argument("--smoke", action="store_true", help="NB201 C 4, one cell per stage, one run")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--small", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, small=args.small)
    sys.path.insert(0, str(HERE))
    import vs_pytorch
    workload, pairs = ("nb201_weights", 1) if args.smoke else (args.workload, args.pairs)
    checkouts = {"this": REPO}
    if args.against:
        checkouts["against"] = Path(args.against).resolve()
        if not (checkouts["against"] / "jaxnas").is_dir():
            raise SystemExit(f"--against {args.against}: no jaxnas/ there (give a checkout of this repository)")
    load_before = os.getloadavg()
    runs = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        data = vs_pytorch.make_images(Path(tmp) / "images.npz")
        for i in range(pairs):
            order = list(checkouts) if i % 2 == 0 else list(checkouts)[::-1]
            for name in order:
                cache = Path(tmp) / f"cache-{name}-{i}"
                cold = run(checkouts[name], workload, str(data), cache, args.smoke)
                warm = run(checkouts[name], workload, str(data), cache, args.smoke)
                runs[name].append({"cold": cold, "warm": warm})
                print(f"{name} {i}: cold {cold['start_to_first_step_s']:.1f} s, "
                      f"warm {warm['start_to_first_step_s']:.1f} s", file=sys.stderr, flush=True)
    out = {"measured": {"utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "git": vs_pytorch.git_head(),
                        "against_git": _git(checkouts["against"]) if args.against else None,
                        "load_average_before": [round(x, 1) for x in load_before],
                        "load_average_after": [round(x, 1) for x in os.getloadavg()], "smoke": args.smoke},
           "runs": runs, "start_to_first_step_s": {}}
    for start in ("cold", "warm"):
        summary = {name: _mean_se([r[start]["start_to_first_step_s"] for r in rs]) for name, rs in runs.items()}
        if args.against:
            summary["this_minus_against"] = _mean_se([
                a[start]["start_to_first_step_s"] - b[start]["start_to_first_step_s"]
                for a, b in zip(runs["this"], runs["against"])])
        out["start_to_first_step_s"][start] = summary
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.exists() else {}
    results[workload] = out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(json.dumps({workload: out["start_to_first_step_s"]}))


if __name__ == "__main__":
    main()

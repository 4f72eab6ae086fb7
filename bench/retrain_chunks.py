"""Retrain time of an image network: ``chunk`` steps per compiled call (a scan over host-gathered
batches, the default 50) against one jitted step per batch (``chunk=1``, the loop before), each
retrain a fresh process, the two interleaved (A, B, A, B, ...) so the machine's load hits both alike.

    python bench/retrain_chunks.py [--reps 3] [--steps 10,200]

Work: ``configs/retrain_nb201_tiny.py`` (NB201 network C = 4, one cell per stage, batch 32, 200
validation images) on a finished tiny NAS-Bench-201 search of the CIFAR-10 subset; ``--steps`` sets
``max_steps`` (10: the config as it is, where compile dominates; more: a longer run, logging every 50
and checkpointing every 100 steps instead of the config's 5). Wall seconds of
the whole ``jaxnas retrain`` process (start, compile, training, evaluation), median over ``--reps``.
Also (``steady_state``) compile and steady-state seconds of 200 steps in one process, one step per
call against a 50-step scan, with XLA's conv gradient and with the CPU one. Results:
``bench/results/retrain_chunks.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CIFAR = REPO.parent / "shared" / "data" / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"
OUT = REPO / "bench" / "results" / "retrain_chunks.json"


def searched(root: Path) -> Path:
    from jaxnas.config import resolve
    from jaxnas.runner import run_search
    wd = root / "search"
    run_search(resolve({"data": {"name": "image_npz", "path": str(CIFAR), "val_fraction": 0.5},
                        "space": {"name": "nb201", "C": 4, "cells_per_stage": 1},
                        "strategy": {"name": "reinforce", "lr": 0.05},
                        "search": {"steps": 4, "warmup_steps": 2, "batch_size": 32, "chunk": 4,
                                   "checkpoint_every": 4}}), wd, progress=None)
    return wd


def one(search: Path, root: Path, chunk: int, steps: int, rep: int) -> float:
    wd = root / f"c{chunk}_s{steps}_r{rep}"
    shutil.copytree(search, wd)
    cmd = [sys.executable, "-m", "jaxnas", "retrain", str(wd), "--config", str(REPO / "configs/retrain_nb201_tiny.py"),
           f"chunk={chunk}", f"max_steps={steps}", "--quiet", "--no-compile-cache"]
    if steps > 10:   # the config logs and checkpoints every 5 steps (a smoke run); a longer run less often
        cmd += ["log_every=50", "checkpoint_every=100"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    return time.perf_counter() - t0


def steady_state(steps: int = 200) -> dict:
    """In one process: compile and steady-state seconds of ``steps`` weight steps of the NB201 tiny
    retrain network (batch 32), one step per compiled call or a 50-step scan, with XLA's own conv
    gradient or the CPU one (``control_flow=True``, models/ops/conv.py): both are loops to XLA."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxnas.models.specs import build_model, nb201_spec
    from jaxnas.models.supernets.init import init_variables
    from jaxnas.spaces.cells import NasBench201Space
    from jaxnas.tasks.classification import classification_loss
    sp = NasBench201Space.create(C=4, cells_per_stage=1)
    arch = sp.decode("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    net = build_model(nb201_spec(sp, arch, C=4, cells_per_stage=1, num_classes=10))
    x = jnp.zeros((32, 32, 32, 3))
    v = init_variables(net, jax.random.key(0), x[:2], train=False)
    tx = optax.sgd(0.1, 0.9)
    state = {"p": v["params"], "b": v["batch_stats"], "o": tx.init(v["params"])}

    def step(control_flow):
        def f(st, batch):
            def loss(p):
                out, upd = net.apply({"params": p, "batch_stats": st["b"]}, batch[0], train=True,
                                     mutable=["batch_stats"], control_flow=control_flow)
                return classification_loss(out, batch[1])[0], upd["batch_stats"]
            (l, b), g = jax.value_and_grad(loss, has_aux=True)(st["p"])
            u, o = tx.update(g, st["o"], st["p"])
            return {"p": optax.apply_updates(st["p"], u), "b": b, "o": o}, l
        return f

    out = {}
    for n, cf in ((1, False), (1, True), (50, True), (50, False)):
        f = jax.jit(lambda st, b, cf=cf: jax.lax.scan(step(cf), st, b))
        batch = (jnp.zeros((n,) + x.shape), jnp.zeros((n, 32), jnp.int32))
        t0 = time.perf_counter()
        c = f.lower(state, batch).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(c(state, batch))
        st, t0 = state, time.perf_counter()
        for _ in range(steps // n):
            st, _ = c(st, batch)
        jax.block_until_ready(st)
        key = f"{'per_step' if n == 1 else f'scan_{n}'}_{'cpu' if cf else 'xla'}_conv_grad"
        out[key] = {"compile_s": round(compile_s, 1), f"seconds_{steps}_steps": round(time.perf_counter() - t0, 2)}
        print(key, out[key], flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", default="10,200")
    args = p.parse_args(argv)
    if not CIFAR.exists():
        sys.exit(f"{CIFAR} not found")
    out = {"command": "python bench/retrain_chunks.py " + " ".join(argv or sys.argv[1:]),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        search = searched(root)
        for steps in (int(s) for s in args.steps.split(",")):
            times = {1: [], 50: []}
            for rep in range(args.reps):
                for chunk in times:            # interleaved
                    times[chunk].append(one(search, root, chunk, steps, rep))
                    print(f"steps {steps} chunk {chunk} rep {rep}: {times[chunk][-1]:.1f} s", flush=True)
            med = {c: statistics.median(v) for c, v in times.items()}
            out["results"][f"max_steps={steps}"] = {
                "per_step_loop_s": [round(t, 1) for t in times[1]], "scanned_chunks_s": [round(t, 1) for t in times[50]],
                "median_per_step_loop_s": round(med[1], 1), "median_scanned_chunks_s": round(med[50], 1),
                "speedup": round(med[1] / med[50], 2), "load_avg_1min": round(os.getloadavg()[0], 2)}
    out["steady_state"] = steady_state()
    OUT.write_text(json.dumps(out, indent=1))
    print(json.dumps(out["results"], indent=1))


if __name__ == "__main__":
    main()

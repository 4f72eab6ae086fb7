"""``retrain.cpu_convolutions``: a discrete network's training step compiled with XLA's own convolutions
("xla", the default) against XLA:CPU's default YNNPACK ones ("ynnpack"), paired in one process.

    python bench/retrain_convolutions.py [--nets nb201 darts8] [--rounds 14] [--warmup 2]

The step is the retrain loop's (jaxnas/training/image_runs.py) without its data augmentation: the
network in training mode with tracked batch norm (``control_flow=True``, as in the loop's scan), the
cross-entropy, its gradient and an SGD-momentum update, one step per compiled call; batch 64 of
32x32x3. Nets: NAS-Bench-201 C 16, 5 cells per stage (a fixed cell of 3x3 and 1x1 convs, a skip and an
average pooling); the DARTS evaluation network C 16, 8 cells, a random genotype (seed 0). Both programs
are compiled first, then stepped in turn, the order alternating by round. Writes
bench/results/retrain_convolutions.json: per net the step medians, the ratio xla / ynnpack (median of
rounds; mean +- s.e., ddof 1) and the compile times (the first compile of a process carries its
warm-up: compare ratios, not compiles).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas.core import host_memory

HERE = Path(__file__).resolve().parent


def build_net(name: str):
    from jaxnas.models.specs import build_model, darts_spec, nb201_spec
    from jaxnas.spaces.cells import DartsSpace, NasBench201Space
    if name == "nb201":
        sp = NasBench201Space.create(C=16, cells_per_stage=5)
        arch = np.array([3, 3, 2, 1, 3, 4])     # 3x3, 3x3, 1x1, skip, 3x3, avg pool
        return build_model(nb201_spec(sp, arch, C=16, cells_per_stage=5, num_classes=10)), sp.encode(arch)
    sp = DartsSpace.create(C=16, num_cells=8)
    arch = np.random.default_rng(0).integers(1, len(sp.ops), sp.num_decisions)   # no 'none' edge
    return build_model(darts_spec(sp, arch, C=16, num_cells=8, num_classes=10, auxiliary=False)), sp.encode(arch)


def measure(name: str, rounds: int, warmup: int) -> dict:
    from jaxnas.core.cpu_compile import compiler_options
    from jaxnas.models.supernets.init import init_variables
    from jaxnas.training.image_runs import call_network
    net, arch = build_net(name)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 64))
    v = init_variables(net, jax.random.key(0), x[:2], train=False)
    tx = optax.sgd(0.025, momentum=0.9)
    state = {"params": v["params"], "batch_stats": v.get("batch_stats", {}), "opt": tx.init(v["params"])}

    def step(st, _):
        def loss_fn(p):
            out, upd = call_network(net, {"params": p, "batch_stats": st["batch_stats"]}, x, True, 0.0,
                                    jax.random.key(1), mutable=["batch_stats"], control_flow=True)
            out = out[0] if isinstance(out, tuple) else out
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out), y[:, None], 1)), upd["batch_stats"]
        (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(st["params"])
        u, opt = tx.update(g, st["opt"], st["params"])
        return {"params": optax.apply_updates(st["params"], u), "batch_stats": stats, "opt": opt}, loss

    compiled, states, compile_s = {}, {}, {}
    for lib in ("ynnpack", "xla"):
        t = time.perf_counter()
        compiled[lib] = jax.jit(lambda st: jax.lax.scan(step, st, None, length=1),
                                compiler_options=compiler_options(lib, "cpu")).lower(state).compile()
        compile_s[lib] = time.perf_counter() - t
        states[lib] = state
    times = {lib: [] for lib in compiled}
    for r in range(warmup + rounds):
        for lib in (list(compiled) if r % 2 == 0 else list(compiled)[::-1]):
            t = time.perf_counter()
            states[lib], _ = compiled[lib](states[lib])
            jax.block_until_ready(states[lib])
            if r >= warmup:
                times[lib].append(time.perf_counter() - t)
    ratio = np.array(times["xla"]) / np.array(times["ynnpack"])
    return {"arch": arch, "rounds": rounds,
            "step_ms": {lib: 1000 * float(np.median(t)) for lib, t in times.items()},
            "ratio_median": float(np.median(ratio)), "ratio_mean": float(ratio.mean()),
            "ratio_se": float(ratio.std(ddof=1) / np.sqrt(len(ratio))),
            "compile_s": compile_s, "steps_ms": {lib: [1000 * s for s in t] for lib, t in times.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="+", default=["nb201", "darts8"], choices=["nb201", "darts8"])
    ap.add_argument("--rounds", type=int, default=14)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "retrain_convolutions.json"))
    args = ap.parse_args()
    host_memory.retain_in_process()      # as `jaxnas retrain` runs
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    out = {"meta": {"git": git, "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "jax": jax.__version__,
                    "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()}, "nets": {}}
    for name in args.nets:
        out["nets"][name] = r = measure(name, args.rounds, args.warmup)
        print(f"{name}: ynnpack {r['step_ms']['ynnpack']:.1f} ms, xla {r['step_ms']['xla']:.1f} ms, xla / ynnpack "
              f"{r['ratio_median']:.3f} ({r['ratio_mean']:.3f} +- {r['ratio_se']:.3f}, {r['rounds']} rounds)", flush=True)
    out["meta"]["load_average_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

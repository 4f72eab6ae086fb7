"""``retrain.cpu_convolutions``: a discrete network's training step compiled with XLA's own convolutions
("xla", the default) against XLA:CPU's default YNNPACK ones ("ynnpack"), paired in one process.

    python bench/retrain_convolutions.py [--nets nb201 darts8] [--rounds 14] [--warmup 2]

The step is the retrain loop's own (``train_image_run``'s, taken where it hands it to ``run_chunks``:
``bench/device_check.py retrain_step``) with its space's default settings (augmentation, cutout and
drop-path as configured; no auxiliary head), one step per compiled call; batch 64 of random 32x32x3
images. Nets: NAS-Bench-201 C 16, 5 cells per stage (a fixed cell of 3x3 and 1x1 convs, a skip and an
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
import numpy as np

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
    from device_check import retrain_step

    from jaxnas.core.cpu_compile import compiler_options
    from jaxnas.data.images import ImageData
    from jaxnas.protocols.cells import DEFAULTS
    net, arch = build_net(name)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (256, 32, 32, 3), np.uint8)
    y = (np.arange(256) % 10).astype(np.int32)
    data = ImageData(x_train=x, y_train=y, x_val=x[:64], y_val=y[:64], num_classes=10,
                     class_names=tuple(map(str, range(10))), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    settings = {**DEFAULTS["nb201" if name == "nb201" else "darts"], "batch_size": 64, "epochs": 1,
                "auxiliary_weight": 0.0}
    step, state, batches, _ = retrain_step(net, data, settings)    # the retrain loop's own step
    batch = jax.device_put(batches(0, 1))

    compiled, states, compile_s = {}, {}, {}
    for lib in ("ynnpack", "xla"):
        t = time.perf_counter()
        compiled[lib] = jax.jit(lambda st, b: jax.lax.scan(step, st, b),
                                compiler_options=compiler_options(lib, "cpu")).lower(state, batch).compile()
        compile_s[lib] = time.perf_counter() - t
        states[lib] = state
    times = {lib: [] for lib in compiled}
    for r in range(warmup + rounds):
        for lib in (list(compiled) if r % 2 == 0 else list(compiled)[::-1]):
            t = time.perf_counter()
            states[lib], _ = compiled[lib](states[lib], batch)
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

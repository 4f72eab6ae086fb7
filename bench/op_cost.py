"""Forward+backward time of every candidate op alone, XLA's kernels ("xla") vs this library's CPU
lowering ("jaxnas": depthwise convs and 3x3 max pooling as shifted slices, ops/conv.py), timed
interleaved in one process so the ratio survives a noisy machine.

    python bench/op_cost.py [--batch 64] [--size 32] [--C 16] [--reps 7]

Each op is a Flax module of ``ops/candidates.py`` on an NHWC input ``[batch, size, size, C]``
(DARTS-8's first stage at batch 64), stride 1 and 2; the timed function is
``jit(grad(sum(op(x)**2)))`` w.r.t. input and parameters (BN on batch statistics, as in search).
Writes bench/results/op_cost.json and prints one line per op.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxnas.ops.candidates import DARTS_OPS, NB201_OPS, build_op  # noqa: E402
from jaxnas.ops.conv import xla_kernels  # noqa: E402

OUT = REPO / "bench" / "results" / "op_cost.json"


def compiled_step(op, x, xla: bool):
    params = op.init(jax.random.key(0), x, True)

    def loss(p, x):
        return jnp.sum(jnp.square(op.apply(p, x, True)))

    def traced():
        return jax.jit(jax.grad(loss, (0, 1))).lower(params, x).compile()

    if xla:
        with xla_kernels():
            f = traced()
    else:
        f = traced()
    return f, (params, x)


def timed(f, args):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--ops", nargs="+", help="only these op names (default: every op)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    x = jax.random.normal(jax.random.key(1), (args.batch, args.size, args.size, args.C))
    rows = {}
    ops = [("darts", n) for n in DARTS_OPS] + [("nb201", n) for n in NB201_OPS if n.startswith("nor_conv")]
    for op_set, name in ops:
        if name == "none" or (args.ops and name not in args.ops):
            continue
        for stride in (1, 2):
            op = build_op(op_set, name, args.C, stride, False, False)
            fs = {"xla": compiled_step(op, x, True), "jaxnas": compiled_step(op, x, False)}
            for f, a in fs.values():
                timed(f, a)                                    # warm
            times = {k: [] for k in fs}
            for _ in range(args.reps):                         # interleaved A, B, A, B, ...
                for k, (f, a) in fs.items():
                    times[k].append(timed(f, a))
            row = {k: 1000 * statistics.median(v) for k, v in times.items()}
            row["xla_over_jaxnas"] = row["xla"] / row["jaxnas"]
            rows[f"{op_set}/{name}/s{stride}"] = row
            print(f"{op_set}/{name}/s{stride}", json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
    out = {"command": "python bench/op_cost.py " + " ".join(sys.argv[1:]),
           "input": [args.batch, args.size, args.size, args.C], "unit": "ms per forward+backward (median)",
           "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
           "machine": platform.machine(), "jax": jax.__version__,
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "ops": rows}
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Forward+backward time of every candidate op alone, XLA's kernels ("xla") vs this library's CPU
lowering ("jaxnas": depthwise convs and 3x3 max pooling as shifted slices, ops/conv.py), timed
interleaved in one process so the ratio survives a noisy machine.

    python bench/op_cost.py [--batch 64] [--size 32] [--C 16] [--reps 7] [--chains]

Each op is a Flax module of ``ops/candidates.py`` on an NHWC input ``[batch, size, size, C]``
(DARTS-8's first stage at batch 64), stride 1 and 2; the timed function is
``jit(grad(sum(op(x)**2)))`` w.r.t. input and parameters (BN on batch statistics, as in search).
``--chains`` also times dense DARTS edges (all ops, ``MixedEdge(mode="dense")``) chained 1, 2 and 4
deep, with and without the cotangent barrier at each edge's input (ops/conv.py), and reports each
program's FLOPs (``cost_analysis()``): without it XLA:CPU recomputes the chain's cotangents.
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

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxnas.models.ops.candidates import build_op  # noqa: E402
from jaxnas.models.ops.conv import Kernels  # noqa: E402
from jaxnas.models.supernets.cells import MixedEdge  # noqa: E402
from jaxnas.spaces.op_costs import DARTS_OPS, NB201_OPS  # noqa: E402

OUT = REPO / "bench" / "results" / "op_cost.json"


def compiled_step(op, x, xla: bool = False, barrier: bool = True):
    if hasattr(op, "kernels"):   # the kernel choices: a static field of the op (ops/conv.py)
        op = op.clone(kernels=Kernels(cpu=not xla, cotangent_barrier=barrier))
    params = op.init(jax.random.key(0), x, True)

    def loss(p, x):
        return jnp.sum(jnp.square(op.apply(p, x, True)))

    f = jax.jit(jax.grad(loss, (0, 1))).lower(params, x).compile()
    return f, (params, x)


class DenseChain(nn.Module):
    """``depth`` dense DARTS edges (every op, uniform weights) one after another."""
    channels: int
    depth: int
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x, train=True):
        w = jnp.full(len(DARTS_OPS), 1.0 / len(DARTS_OPS))
        for _ in range(self.depth):
            x = MixedEdge("darts", DARTS_OPS, self.channels, 1, kernels=self.kernels)(x, w, "dense", train)
        return x


def interleaved(fs, reps):
    """Median ms of each compiled step, timed A, B, A, B, ... after one warm call each."""
    for f, a in fs.values():
        timed(f, a)
    times = {k: [] for k in fs}
    for _ in range(reps):
        for k, (f, a) in fs.items():
            times[k].append(timed(f, a))
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def chains(x, C, reps):
    rows = {}
    for depth in (1, 2, 4):
        fs = {"no_barrier": compiled_step(DenseChain(C, depth), x, barrier=False),
              "barrier": compiled_step(DenseChain(C, depth), x)}
        row = interleaved(fs, reps)
        for k, (f, _) in fs.items():
            cost = f.cost_analysis()
            row[f"{k}_gflops"] = (cost[0] if isinstance(cost, list) else cost)["flops"] / 1e9
        row["no_barrier_over_barrier"] = row["no_barrier"] / row["barrier"]
        rows[f"darts/dense_chain/{depth}"] = row
        print(f"darts/dense_chain/{depth}", json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
    return rows


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
    ap.add_argument("--chains", action="store_true", help="also dense DARTS edge chains, barrier or not")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    x = jax.random.normal(jax.random.key(1), (args.batch, args.size, args.size, args.C))
    old = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    rows = old.get("ops", {}) if args.ops else {}   # --ops: re-measure those, keep the other rows
    ops = [("darts", n) for n in DARTS_OPS] + [("nb201", n) for n in NB201_OPS if n.startswith("nor_conv")]
    for op_set, name in ops:
        if name == "none" or (args.ops and name not in args.ops):
            continue
        for stride in (1, 2):
            op = build_op(op_set, name, args.C, stride, False, False)
            row = interleaved({"xla": compiled_step(op, x, True), "jaxnas": compiled_step(op, x, False)},
                              args.reps)
            row["xla_over_jaxnas"] = row["xla"] / row["jaxnas"]
            rows[f"{op_set}/{name}/s{stride}"] = row
            print(f"{op_set}/{name}/s{stride}", json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
    out = {"command": old.get("command") if args.ops else "python bench/op_cost.py " + " ".join(sys.argv[1:]),
           "input": [args.batch, args.size, args.size, args.C], "unit": "ms per forward+backward (median)",
           "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
           "machine": platform.machine(), "jax": jax.__version__,
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "ops": rows}
    if args.chains:
        out["dense_chains"] = chains(x, args.C, args.reps)
        out["dense_chains_command"] = "python bench/op_cost.py " + " ".join(sys.argv[1:])
    elif "dense_chains" in old:
        out["dense_chains"], out["dense_chains_command"] = old["dense_chains"], old.get("dense_chains_command")
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

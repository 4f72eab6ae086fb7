"""A/B of supernet forms and CPU kernels on the engine's weight step, interleaved in one process:
what a search step costs (a new architecture every step, the update included).

    python bench/engine_ab.py layouts      # NB201 C16 N5 sparse: per cell vs scan_cells (the default)
    python bench/engine_ab.py barrier      # NB201 C16 N5 dense: the node barrier on (default) vs off
    python bench/engine_ab.py bn_one_pass  # NB201 sparse: two-pass BN moments (before) vs one pass
    python bench/engine_ab.py pointwise    # 1x1 conv gradients: conv form + transposes (before) vs dots
    python bench/engine_ab.py pointwise --skeleton darts8 --steps 10
    python bench/engine_ab.py sparse_edge  # NB201 sparse edges rematerialised or keeping their conv
                                           # output (the edge VJP), scanned cells or one per cell
    python bench/engine_ab.py edge_output  # NB201 sparse edges saving the conv's pre-BN output and a
                                           # zero slot for other ops (before) vs the edge's output
    python bench/engine_ab.py cpu_convolutions [--skeleton darts8 --scan-edges --steps 10]
                                           # XLA:CPU's YNNPACK convolutions (before) vs XLA's own
    python bench/engine_ab.py darts_edge_vjp --skeleton darts8 --steps 12
                                           # DARTS sparse edges rematerialised (before) vs the edge VJP,
                                           # per-edge cells (scanned edges take the remat switch since
                                           # 2026-12-07; the committed result is from before, scanned)

Each variant is bench/vs_pytorch.py's weight-step workload (random strategy for sparse, darts for
dense) with its ``space`` (and ``search``) overrides, or with one of the library's kernels swapped for its previous
implementation (PATCHES, kept here) while the variant compiles; all variants are compiled first
(tracing and compile seconds, temp memory), then stepped in turn on the same batches and the same
architecture each round (the strategies share keys). Paired ratios to the first variant: median and
mean +- s.e. (ddof = 1). Results merge into bench/results/engine_ab.json under the study's name
(``study/skeleton`` for DARTS-8), stamped with the commit and load; prints them as the last line.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_pytorch  # noqa: E402  (the workloads' configs)

from jaxnas.config.experiment import build  # noqa: E402
from jaxnas.config.settings import resolve  # noqa: E402
from jaxnas.data import BatchSampler, gather  # noqa: E402
from jaxnas.models.ops import conv, layers  # noqa: E402
from jaxnas.models.supernets import cells  # noqa: E402
from jaxnas.models.supernets.cells import layout_of  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "engine_ab.json"


# The kernels a study compares against the library's: the previous implementations, kept here so
# that a claimed speed-up can be re-measured. Each patch swaps a function in while its variant is
# traced and compiled, and puts the library's back after.
def _two_pass_bn(x, epsilon=1e-5):
    """Batch normalisation as it was before the one-pass moments: the mean, then the mean square of
    x - mean (x read twice)."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.mean(jnp.square(x - mean), axes)
    return (x - mean) * jnp.reciprocal(jnp.sqrt(var + epsilon))


def _switch_edge_pre_bn():
    """ops/sparse_edge.py's switch_edge as it was before it kept the edge's output: a ReLU-conv-BN
    branch saved its conv's pre-BN output and both moments, every other op an activation-sized zero
    slot in their place."""
    from functools import partial

    from jax import lax

    def forward(op, x, kernels):
        if op.kind == "relu_conv_bn":
            z = conv.conv2d_reference(jax.nn.relu(x), kernels[op.kernel], op.stride)
            mean, rstd = layers.batch_moments(z, op.epsilon)
            return (z - mean) * rstd, (z, mean, rstd)
        if op.kind == "zero":
            return jnp.zeros(layers.downsampled_shape(x.shape, op.stride), x.dtype), None
        return (x if op.kind == "identity" else conv.avg_pool3(x, op.stride, op.cpu)), None

    @partial(jax.custom_vjp, nondiff_argnums=(0,))
    def switch_edge(ops, idx, x, kernels):
        return lax.switch(idx, [lambda x, k, op=op: forward(op, x, k)[0] for op in ops], x, kernels)

    def fwd(ops, idx, x, kernels):
        shape = layers.downsampled_shape(x.shape, ops[0].stride)
        c = shape[-1]

        def branch(op):
            def run(x, k):
                y, saved = forward(op, x, k)
                if saved is None:
                    saved = (jnp.zeros(shape, x.dtype), jnp.zeros((c,), x.dtype), jnp.zeros((c,), x.dtype))
                return y, saved
            return run
        y, saved = lax.switch(idx, [branch(op) for op in ops], x, kernels)
        return y, (idx, x, kernels, saved)

    def bwd(ops, res, g):
        idx, x, kernels, saved = res

        def branch(op):
            def run(x, kernels, saved, g):
                dk = [jnp.zeros_like(k) for k in kernels]
                if op.kind == "relu_conv_bn":
                    z, mean, rstd = saved
                    dz = layers.batch_normalize_backward((z - mean) * rstd, rstd, g)
                    dr, dk[op.kernel] = conv.conv2d_backward(jax.nn.relu(x), kernels[op.kernel], dz, op.stride)
                    dx = jnp.where(x > 0, dr, jnp.zeros_like(dr))
                elif op.kind == "zero":
                    dx = jnp.zeros_like(x)
                elif op.kind == "identity":
                    dx = g
                else:
                    dx = jax.vjp(lambda x: conv.avg_pool3(x, op.stride, op.cpu), x)[1](g)[0]
                return dx, tuple(dk)
            return run
        dx, dk = lax.switch(idx, [branch(op) for op in ops], x, kernels, saved, g)
        return None, dx, dk

    switch_edge.defvjp(fwd, bwd)
    return switch_edge


PATCHES = {   # name -> (module, attribute, replacement)
    "two_pass_bn": (layers, "batch_normalize", _two_pass_bn),
    # 1x1 kernels through the general conv-form gradient (transposes), as before the dots
    "conv_form_1x1": (conv, "_cpu_backward", conv.conv_form_backward),
    # NB201 sparse edges saving the conv's pre-BN output (a zero slot for the other ops), as before
    "pre_bn_slot": (cells, "switch_edge", _switch_edge_pre_bn()),
}

# study -> (strategy, {variant: {"space": overrides, "patch": PATCHES key}}); the first variant is the
# reference
STUDIES = {
    "layouts": ("random", {"per_cell": {"space": {"scan_cells": False}},
                           "scan_cells": {"space": {"scan_cells": True}}}),
    "barrier": ("darts", {"barrier": {}, "no_barrier": {"space": {"cotangent_barrier": False}}}),
    "bn_one_pass": ("random", {"two_pass": {"patch": "two_pass_bn"}, "one_pass": {}}),
    "pointwise": ("random", {"conv_form": {"patch": "conv_form_1x1"}, "dots": {}}),
    "sparse_edge": ("random", {   # the reference: the default before the edge VJP
        "scan_remat": {"space": {"sparse_edge_vjp": False, "scan_cells": True}},
        "scan_saved": {"space": {"scan_cells": True}},
        "cell_remat": {"space": {"sparse_edge_vjp": False, "scan_cells": False}},
        "cell_saved": {"space": {"scan_cells": False}}}),
    "edge_output": ("random", {"pre_bn_slot": {"patch": "pre_bn_slot"}, "edge_output": {}}),
    "cpu_convolutions": ("random", {"ynnpack": {"search": {"cpu_convolutions": "ynnpack"}},
                                    "xla": {"search": {"cpu_convolutions": "xla"}}}),
    # DARTS sparse edges rematerialised (before) or with the edge VJP (ops/sparse_edge.py)
    "darts_edge_vjp": ("random", {"remat": {"space": {"sparse_edge_vjp": False}}, "jit_remat": {},
                                  "edge_vjp": {"space": {"darts_edge_vjp": True}}}),
}


def variant(data, skeleton, size, strategy, spec, batch):
    """One variant: ``spec["space"]`` / ``spec["search"]`` override the workload's, ``spec["patch"]``
    (a PATCHES name) swaps a kernel in while the chunk is traced and compiled."""
    workload = {"nb201": "nb201_weights", "darts8": "darts8_sparse",
                "darts8_scan_edges": "darts8_sparse_scan_edges"}[skeleton]
    cfg = resolve({**vs_pytorch.jaxnas_config(workload, data, batch=batch, **size),
                   "strategy": {"name": strategy}})
    cfg["space"].update(spec.get("space", {}))
    cfg["search"].update(spec.get("search", {}))
    exp = build(cfg)
    patch = mock.patch.object(*PATCHES[spec["patch"]]) if "patch" in spec else contextlib.nullcontext()
    # jitted kernels (the sparse edge's ops) keep their traces: a patched variant traces afresh, and
    # leaves none of its traces to the next variant
    jax.clear_caches()
    with patch:
        compiled, state, batches, lower_s, compile_s = weight_chunk(exp, batch)
    jax.clear_caches()
    state, _ = compiled(state, exp.search.inputs, batches(0))     # a warm step
    jax.block_until_ready(state)
    info = {"lower_s": round(lower_s, 1), "compile_s": round(compile_s, 1),
            "temp_mb": round(compiled.memory_analysis().temp_size_in_bytes / 1e6, 1),
            "program_sha1": hashlib.sha1(compiled.as_text().encode()).hexdigest()[:12],  # variants differ?
            "layout": dict(zip(("scan_edges", "scan_cells"), layout_of(exp.task.net))), **spec}
    return compiled, state, exp.search, batches, info


def weight_chunk(exp, batch: int):
    """The engine's compiled weight-phase chunk of ``exp`` (one step per call: what
    ``Search.run_chunk(kind="weights")`` runs), a fresh state, ``batches(i)`` (step i's training and
    validation batch, placed) and the tracing and compile seconds."""
    search, d = exp.search, exp.data
    state = search.init(jax.random.key(0))
    tr, va = BatchSampler(len(d.y_train), batch, 0), BatchSampler(len(d.y_val), batch, 1)

    def batches(i):
        return search.shard_batches((gather((d.x_train, d.y_train), tr.chunk(i, 1)),
                                     gather((d.x_val, d.y_val), va.chunk(i, 1))))
    chunk, _ = search._chunk_fn("weights")
    t0 = time.perf_counter()
    lowered = chunk.lower(state, search.inputs, batches(0))
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return compiled, state, batches, t1 - t0, time.perf_counter() - t1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=list(STUDIES))
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--skeleton", choices=("nb201", "darts8"), default="nb201")
    ap.add_argument("--scan-edges", action="store_true", help="DARTS-8 with scanned edges (its default form)")
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--cells", type=int, default=5, help="NB201 cells per stage")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    strategy, variants = STUDIES[args.study]
    skeleton = args.skeleton + ("_scan_edges" if args.scan_edges and args.skeleton == "darts8" else "")
    size = {"C": args.C, "cells": args.cells} if args.skeleton == "nb201" else {"C": args.C, "num_cells": 8}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        data = vs_pytorch.make_images(Path(tmp) / "images.npz")
        runs = {name: list(variant(data, skeleton, size, strategy, o, args.batch)) for name, o in variants.items()}
    ref = list(runs)[0]
    for name, r in runs.items():    # the same computation? (after the warm step; one layout only)
        a, b = r[1].evaluator.params, runs[ref][1].evaluator.params
        r[4]["max_param_diff_vs_" + ref] = (
            max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
            if jax.tree.structure(a) == jax.tree.structure(b) else None)
    times = {name: [] for name in runs}
    for i in range(1, args.steps + 1):
        order = list(runs) if i % 2 else list(runs)[::-1]
        for name in order:                     # interleaved: the same round's batch and architecture
            r = runs[name]
            compiled, state, search, batches, _ = r
            b = batches(i)
            t = time.perf_counter()
            state, _ = compiled(state, search.inputs, b)
            jax.block_until_ready(state)
            times[name].append(time.perf_counter() - t)
            r[1] = state
    out = {"skeleton": skeleton, "size": size, "batch": args.batch, "strategy": strategy, "steps": args.steps,
           "measured": {"utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "git": vs_pytorch.git_head(),
                        "load_average_before": [round(x, 1) for x in load_before],
                        "load_average_after": [round(x, 1) for x in os.getloadavg()]},
           "variants": {}}
    for name, r in runs.items():
        ratio = np.asarray(times[name]) / np.asarray(times[ref])
        out["variants"][name] = {**r[4], "step_ms_median": round(1000 * statistics.median(times[name]), 1),
                                 f"over_{ref}": {"median": round(float(np.median(ratio)), 3),
                                                 "mean": round(float(ratio.mean()), 3),
                                                 "se": round(float(ratio.std(ddof=1) / np.sqrt(len(ratio))), 3)}}
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.exists() else {}
    key = args.study if skeleton == "nb201" else f"{args.study}/{skeleton}"
    results[key] = out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(json.dumps({key: out}))


if __name__ == "__main__":
    main()

"""A sparse edge's switch whose backward pass does not rematerialise the chosen op.

Differentiating ``lax.switch`` gives every branch the union of all branches' residuals, so a sparse
edge rematerialises its branches (``MixedEdge.remat``): only the edge input is saved and the chosen
op's forward, convolutions and BN moments included, runs again, differentiated, in the backward
pass. For edges whose ops are all of the kinds below (the NAS-Bench-201 and DARTS search ops: BNs
without affine parameters or running statistics) a hand-written VJP (:func:`switch_edge`) keeps the
edge input, the edge's output (for an op ending in BN its normalised output, all that BN's backward
pass reads besides its ``1/std``) and the chosen op's BN moments (per-channel slots shared by the
branches, zeros for a branch with fewer). The backward pass is one switch over the ops' own backward
passes: the activations they read recomputed from the edge input with the saved moments (no
reduction; what a branch does not read, XLA drops), BN's backward from the output, the convs'
through :func:`conv.conv2d_backward` / :func:`conv.depthwise_backward` (the CPU kernels, XLA's own
elsewhere), ReLU's mask from its input. A scan body (the scanned edges), whose saved values are
stacked over its steps, takes :func:`rematerialised_switch` instead: the edge input alone saved. Each
op's passes are jitted functions of the static op, traced once per op and shape however many edges
call them.

NAS-Bench-201 (per cell): one activation per edge more than rematerialising (what PyTorch keeps), no
conv forward in the backward pass (``python bench/engine_ab.py sparse_edge``); saving the output
rather than the conv's pre-BN output spares every other op an activation-sized zero fill (``python
bench/engine_ab.py edge_output``). DARTS's ops take :func:`rematerialised_switch` by default: the
candidate modules' rematerialised switch, the same values and step, but the jitted ops trace once per
op and shape (the DARTS-8 chunk's trace and lowering 11.9 -> 7.1 s). The edge VJP for them
(``Kernels.darts_edge_vjp``, per-edge cells only) traced shorter still but stepped 1.04x slower in
the scan, whether it rematerialised inside or kept the moments (1.05x) or a sep conv's inner
activations (1.27x, 2.3x the temp memory): ``python bench/engine_ab.py darts_edge_vjp --skeleton
darts8 --scan-edges`` (measured before the scan bodies left the VJP for the rematerialised switch).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxnas.models.ops.conv import (
    avg_pool3,
    conv2d,
    conv2d_backward,
    depthwise_backward,
    depthwise_conv2d,
    max_pool3,
)
from jaxnas.models.ops.layers import batch_moments, batch_normalize_backward, downsampled_shape

# kind -> how many conv kernels the op reads (consecutive in the kernels tuple, from ``kernel``)
KERNELS_OF = {"zero": 0, "identity": 0, "avg_pool": 0, "pool_bn": 0, "relu_conv_bn": 1, "dil_conv": 2,
              "sep_conv": 4, "factorized_reduce": 2}
# the kinds of DARTS's ops (the others are NAS-Bench-201's)
DARTS_KINDS = ("pool_bn", "dil_conv", "sep_conv", "factorized_reduce")
# kind -> its batch norms (each saves its moments for the backward pass)
_BATCH_NORMS = {"sep_conv": 2, "dil_conv": 1, "relu_conv_bn": 1, "factorized_reduce": 1, "pool_bn": 1}


class EdgeOp(NamedTuple):
    """A static op of :func:`switch_edge`, ``kind`` one of :data:`KERNELS_OF`: "zero", "identity",
    "avg_pool" (3x3, no BN: NAS-Bench-201's), "pool_bn" (``pool`` "max" or "avg", then BN: DARTS's),
    "relu_conv_bn" (NAS-Bench-201's), "dil_conv" / "sep_conv" (DARTS's: ReLU, depthwise conv of
    ``dilation``, pointwise conv, BN; twice for a sep conv, the stride on the first),
    "factorized_reduce" (DARTS's stride-2 skip). ``kernel``: the index of its first kernel in the
    kernels tuple (HWIO; depthwise ``[k, k, 1, C]``); ``epsilon``: its BNs'; ``cpu``: Kernels.cpu."""
    kind: str
    stride: int = 1
    kernel: int = -1
    epsilon: float = 1e-5
    cpu: bool = True
    dilation: int = 1
    pool: str = "avg"


def _bn(z, epsilon, saved):
    """Batch normalisation with the batch's moments, or with ``saved`` ones (``(mean, rstd)``, no
    reduction: the backward pass recomputing an op's activations)."""
    mean, rstd = batch_moments(z, epsilon) if saved is None else saved
    return (z - mean) * rstd, (mean, rstd)


def _shifted(r):
    """FactorizedReduce's second path input: ``x[:, 1:, 1:]`` padded back at the end."""
    n, h, w, c = r.shape
    return lax.pad(lax.slice(r, (0, 1, 1, 0), (n, h, w, c)), jnp.zeros((), r.dtype),
                   ((0, 0, 0), (0, 1, 0), (0, 1, 0), (0, 0, 0)))


def _forward(op: EdgeOp, x, kernels, saved=None):
    """``(y, acts, moments)``: the op's output (its candidate module's, ops/candidates.py), the
    activations its backward pass reads (a depthwise conv's output: the pointwise conv's input; a
    sep conv's inner BN output) and its BNs' ``(mean, 1/std)`` in order. ``saved``: those moments,
    so the activations are recomputed without a reduction."""
    k, i, s, eps = kernels, op.kernel, op.stride, op.epsilon
    m = iter(saved or ())
    bn = lambda z: _bn(z, eps, next(m, None))
    if op.kind == "relu_conv_bn":
        y, m1 = bn(conv2d(jax.nn.relu(x), k[i], s))
        return y, {}, (m1,)
    if op.kind == "dil_conv":
        a = depthwise_conv2d(jax.nn.relu(x), k[i], s, op.dilation, op.cpu)
        y, m1 = bn(conv2d(a, k[i + 1]))
        return y, {"a": a}, (m1,)
    if op.kind == "sep_conv":
        a1 = depthwise_conv2d(jax.nn.relu(x), k[i], s, 1, op.cpu)
        y1, m1 = bn(conv2d(a1, k[i + 1]))
        a2 = depthwise_conv2d(jax.nn.relu(y1), k[i + 2], 1, 1, op.cpu)
        y, m2 = bn(conv2d(a2, k[i + 3]))
        return y, {"a1": a1, "y1": y1, "a2": a2}, (m1, m2)
    if op.kind == "factorized_reduce":
        rx = jax.nn.relu(x)
        y, m1 = bn(jnp.concatenate([conv2d(rx, k[i], 2), conv2d(_shifted(rx), k[i + 1], 2)],
                                   -1))
        return y, {}, (m1,)
    if op.kind == "pool_bn":
        pool = max_pool3 if op.pool == "max" else avg_pool3
        y, m1 = bn(pool(x, s, op.cpu))
        return y, {}, (m1,)
    if op.kind == "zero":
        return jnp.zeros(downsampled_shape(x.shape, s), x.dtype), {}, ()
    if op.kind == "identity":
        return x, {}, ()
    return avg_pool3(x, s, op.cpu), {}, ()


def _relu_backward(x, d):
    return jnp.where(x > 0, d, jnp.zeros_like(d))


def _backward(op: EdgeOp, x, kernels, y, moments, g):
    """``(dx, {kernel index: its gradient})`` of :func:`_forward` from its saved values: its output
    ``y`` and BN moments; the activations it reads are recomputed from ``x`` without a reduction
    (what a branch does not read, XLA drops)."""
    k, i, s = kernels, op.kernel, op.stride
    _, acts, _ = _forward(op, x, kernels, moments)
    rstds = [r for _, r in moments]
    if op.kind == "relu_conv_bn":
        dz = batch_normalize_backward(y, rstds[0], g)                     # BN (batch statistics)
        dr, dk = conv2d_backward(jax.nn.relu(x), k[i], dz, s)
        return _relu_backward(x, dr), {i: dk}
    if op.kind == "dil_conv":
        dz = batch_normalize_backward(y, rstds[0], g)
        da, dpw = conv2d_backward(acts["a"], k[i + 1], dz)                # pointwise
        dr, ddw = depthwise_backward(jax.nn.relu(x), k[i], da, s, op.dilation, op.cpu)
        return _relu_backward(x, dr), {i: ddw, i + 1: dpw}
    if op.kind == "sep_conv":
        a1, y1, a2 = acts["a1"], acts["y1"], acts["a2"]
        dz2 = batch_normalize_backward(y, rstds[1], g)
        da2, dpw2 = conv2d_backward(a2, k[i + 3], dz2)
        dr2, ddw2 = depthwise_backward(jax.nn.relu(y1), k[i + 2], da2, 1, 1, op.cpu)
        dz1 = batch_normalize_backward(y1, rstds[0], _relu_backward(y1, dr2))
        da1, dpw1 = conv2d_backward(a1, k[i + 1], dz1)
        dr1, ddw1 = depthwise_backward(jax.nn.relu(x), k[i], da1, s, 1, op.cpu)
        return _relu_backward(x, dr1), {i: ddw1, i + 1: dpw1, i + 2: ddw2, i + 3: dpw2}
    if op.kind == "factorized_reduce":
        dz = batch_normalize_backward(y, rstds[0], g)
        half = k[i].shape[-1]
        rx = jax.nn.relu(x)
        dra, dka = conv2d_backward(rx, k[i], dz[..., :half], 2)
        rs, shift_vjp = jax.vjp(_shifted, rx)
        drs, dkb = conv2d_backward(rs, k[i + 1], dz[..., half:], 2)
        return _relu_backward(x, dra + shift_vjp(drs)[0]), {i: dka, i + 1: dkb}
    if op.kind == "pool_bn":
        pool = max_pool3 if op.pool == "max" else avg_pool3
        dz = batch_normalize_backward(y, rstds[0], g)
        return jax.vjp(lambda x: pool(x, s, op.cpu), x)[1](dz)[0], {}   # max: its taps from x again
    if op.kind == "zero":
        return jnp.zeros_like(x), {}
    if op.kind == "identity":
        return g, {}
    # avg pooling is linear: its VJP reads nothing of x's values
    return jax.vjp(lambda x: avg_pool3(x, s, op.cpu), x)[1](g)[0], {}


# Each op's forward and backward pass as a jitted function of the static op: traced once per op and
# shape, where a supernet calls them for every edge group of that shape (a DARTS-8 chunk: 10 scanned
# edge groups of 5 shapes), in the primal and the VJP's forward switch alike (the same trace)
_traced_forward = jax.jit(_forward, static_argnums=0)


@partial(jax.jit, static_argnums=0)
def _traced_backward(op, x, kernels, y, moments, g):
    """``(dx, dkernels)``: :func:`_backward` with a gradient (zeros if the op does not read it) for
    every kernel of the edge."""
    dx, dks = _backward(op, x, kernels, y, moments, g)
    return dx, tuple(dks[j] if j in dks else lax.full_like(kj, 0) for j, kj in enumerate(kernels))


def _check(ops, kernels):
    for op in ops:
        if op.kind not in KERNELS_OF:
            raise ValueError(f"sparse edge: unknown op kind {op.kind!r}; valid: {', '.join(KERNELS_OF)}")
        if op.kind == "identity" and op.stride != 1:
            raise ValueError("sparse edge: identity needs stride 1")
        if op.kind == "factorized_reduce" and op.stride != 2:
            raise ValueError("sparse edge: factorized_reduce has stride 2")
        if op.kind == "pool_bn" and op.pool not in ("max", "avg"):
            raise ValueError(f"sparse edge: pool must be 'max' or 'avg', got {op.pool!r}")
        if KERNELS_OF[op.kind] and not 0 <= op.kernel <= len(kernels) - KERNELS_OF[op.kind]:
            raise ValueError(f"sparse edge: {op.kind} reads kernels {op.kernel}.. of {len(kernels)}")


def _outputs(ops):
    """The switch's branches: each op's output, ``(x, kernels) -> y``, through its jitted forward."""
    return [lambda x, k, op=op: _traced_forward(op, x, k)[0] for op in ops]


def rematerialised_switch(ops: tuple[EdgeOp, ...], idx, x, kernels: tuple):
    """``ops[idx](x)`` through ``lax.switch`` over rematerialised branches (``jax.checkpoint``: the edge
    input saved, the chosen op's forward run again, differentiated, in the backward pass), each op a
    jitted function traced once per op and shape, so JAX's derivatives of it are built once too."""
    _check(ops, kernels)
    return lax.switch(idx, [jax.checkpoint(f) for f in _outputs(ops)], x, kernels)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def switch_edge(ops: tuple[EdgeOp, ...], idx, x, kernels: tuple):
    """``ops[idx](x)``: one ``lax.switch``, with the VJP above (``kernels``: the conv ops' kernels,
    in x's dtype). Ops keep the edge's channels (a stride changes height and width). The backward
    pass reads the edge input, the chosen op's output and BN moments and runs the op's own backward
    pass, traced once per op and shape."""
    _check(ops, kernels)
    return lax.switch(idx, _outputs(ops), x, kernels)


def _fwd(ops, idx, x, kernels):
    _check(ops, kernels)
    n_bn = max(_BATCH_NORMS.get(op.kind, 0) for op in ops)
    c = x.shape[-1]

    def branch(op):
        def run(x, k):
            y, _, moments = _traced_forward(op, x, k)
            # the moments' slots, shared by the branches; a branch with fewer BNs fills the rest with zeros
            zero = jnp.zeros((c,), x.dtype)
            return y, moments + ((zero, zero),) * (n_bn - len(moments))
        return run
    y, moments = lax.switch(idx, [branch(op) for op in ops], x, kernels)
    return y, (idx, x, kernels, y, moments)


def _bwd(ops, res, g):
    idx, x, kernels, y, moments = res

    def branch(op):
        def run(x, kernels, y, moments, g):
            return _traced_backward(op, x, kernels, y, moments[:_BATCH_NORMS.get(op.kind, 0)], g)
        return run
    dx, dk = lax.switch(idx, [branch(op) for op in ops], x, kernels, y, moments, g)
    return None, dx, dk


switch_edge.defvjp(_fwd, _bwd)

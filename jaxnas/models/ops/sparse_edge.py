"""A sparse edge's switch whose backward pass does not recompute the chosen op.

Differentiating ``lax.switch`` gives every branch the union of all branches' residuals, so a sparse
edge rematerialises its branches (``MixedEdge.remat``): only the edge input is saved and the chosen
op's forward, convolution included, runs again in the backward pass. For edges whose ops are all
zero, identity, 3x3 average pooling or ReLU-conv-BN without affine or running statistics (the five
NAS-Bench-201 ops) a hand-written VJP keeps the edge's output (for a ReLU-conv-BN branch the normalised
conv output, all its BN's backward pass reads) and the BN's per-channel ``1/std``, in a slot shared by
the conv branches (zeros for the others). The backward pass is one switch over the ops' own backward
passes: BN's from the saved output, the conv's through :func:`conv.conv2d_backward` (the CPU kernels,
XLA's own elsewhere), ReLU's mask from the edge input. Memory: one activation per edge more than
rematerialising (what PyTorch keeps); time: no conv forward in the backward pass
(``python bench/engine_ab.py sparse_edge``). Saving the output rather than the conv's pre-BN output
spares every other op an activation-sized zero fill (``python bench/engine_ab.py edge_output``).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxnas.models.ops.conv import avg_pool3, conv2d_backward, conv2d_reference
from jaxnas.models.ops.layers import batch_moments, batch_normalize_backward, downsampled_shape


class EdgeOp(NamedTuple):
    """A static op of :func:`switch_edge`: ``kind`` one of "zero", "identity", "avg_pool" or
    "relu_conv_bn" (``kernel``: its index in the kernels tuple; ``epsilon``: the BN's)."""
    kind: str
    stride: int = 1
    kernel: int = -1
    epsilon: float = 1e-5
    cpu: bool = True     # avg_pool: Kernels.cpu


def _forward(op: EdgeOp, x, kernels):
    """``(y, rstd)``: the op's output and, for ReLU-conv-BN, its BN's ``1/std`` (its backward reads
    that and ``y``)."""
    if op.kind == "relu_conv_bn":
        z = conv2d_reference(jax.nn.relu(x), kernels[op.kernel], op.stride)
        mean, rstd = batch_moments(z, op.epsilon)
        return (z - mean) * rstd, rstd
    if op.kind == "zero":
        y = jnp.zeros(downsampled_shape(x.shape, op.stride), x.dtype)
    elif op.kind == "identity":
        y = x
    else:
        y = avg_pool3(x, op.stride, op.cpu)
    return y, None


def _check(ops):
    for op in ops:
        if op.kind not in ("zero", "identity", "avg_pool", "relu_conv_bn"):
            raise ValueError(f"switch_edge: unknown op kind {op.kind!r}")
        if op.kind == "identity" and op.stride != 1:
            raise ValueError("switch_edge: identity needs stride 1")


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def switch_edge(ops: tuple[EdgeOp, ...], idx, x, kernels: tuple):
    """``ops[idx](x)``: one ``lax.switch``, with the VJP above (``kernels``: the conv ops' HWIO
    kernels, in x's dtype)."""
    _check(ops)
    return lax.switch(idx, [lambda x, k, op=op: _forward(op, x, k)[0] for op in ops], x, kernels)


def _fwd(ops, idx, x, kernels):
    _check(ops)
    c = x.shape[-1]     # edges keep their channels (a stride changes height and width)

    def branch(op):
        def run(x, k):
            y, rstd = _forward(op, x, k)
            return y, jnp.zeros((c,), x.dtype) if rstd is None else rstd
        return run
    y, rstd = lax.switch(idx, [branch(op) for op in ops], x, kernels)
    return y, (idx, x, kernels, y, rstd)


def _bwd(ops, res, g):
    idx, x, kernels, y, rstd = res

    def branch(op):
        def run(x, kernels, y, rstd, g):
            dk = [jnp.zeros_like(k) for k in kernels]
            if op.kind == "relu_conv_bn":
                dz = batch_normalize_backward(y, rstd, g)                    # BN (batch statistics)
                w = kernels[op.kernel]
                dr, dk[op.kernel] = conv2d_backward(jax.nn.relu(x), w, dz, op.stride)
                dx = jnp.where(x > 0, dr, jnp.zeros_like(dr))                # ReLU
            elif op.kind == "zero":
                dx = jnp.zeros_like(x)
            elif op.kind == "identity":
                dx = g
            else:   # avg pooling is linear: its VJP reads nothing of x's values
                dx = jax.vjp(lambda x: avg_pool3(x, op.stride, op.cpu), x)[1](g)[0]
            return dx, tuple(dk)
        return run
    dx, dk = lax.switch(idx, [branch(op) for op in ops], x, kernels, y, rstd, g)
    return None, dx, dk


switch_edge.defvjp(_fwd, _bwd)

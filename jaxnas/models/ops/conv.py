"""2-D convolution whose gradient stays fast inside ``lax.switch`` and ``scan`` on CPU.

XLA:CPU leaves the transposed convolutions of a conv's gradient in a layout its fast (Eigen) path
does not take when they sit inside a conditional (jax-ml/jax#12868): a switch over conv branches
is ~50x slower to differentiate than the same convs outside it (and a scanned dense DARTS cell
2.8x slower, ops/layers.py). The forward conv is fast
everywhere, so only the backward pass is replaced, and only on CPU (``lax.platform_dependent``):

- input gradient: a stride-1 conv in the standard NHWC/HWIO layout of the (zero-upsampled, for
  stride > 1) cotangent with the flipped kernel, its I/O axes swapped by an explicit transpose;
- kernel gradient: a standard-layout conv with batch and feature axes swapped by explicit
  transposes, the padding inside the conv (depthwise: one contraction over (batch, height, width)
  per kernel tap).

On GPU/TPU the backward pass is JAX's own (cuDNN / the TPU convolution emitter). One code path.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(frozen=True)
class Kernels:
    """Which kernels a network's ops lower to: static configuration, the field ``kernels`` of every
    module that has a choice, so a variant is part of the module and of every trace of it (two
    variants in one process never share a compiled program). The defaults are what jaxnas runs.

    - ``cpu``: on CPU, depthwise convolutions and 3x3 max and average pooling as shifted slices
      (max pooling and depthwise convs with their own gradients; below; ``lax.platform_dependent``,
      so GPU/TPU keep XLA's ops); False: XLA's own ops
      on every platform (bench/op_cost.py's "before" column).
    - ``cotangent_barrier``: a dense edge's input cotangent computed once, into one buffer, on CPU
      (:func:`cotangent_barrier`); False: left to XLA's fusion.
    - ``sparse_edge_vjp``: a sparse edge of NAS-Bench-201's ops takes a switch with a hand-written
      VJP that keeps its output and BN moments instead of rematerialising the chosen op, and one of
      DARTS's ops a rematerialised switch over jitted ops, traced once per op and shape
      (ops/sparse_edge.py; every platform); False: the candidate modules' rematerialised switch.
    - ``darts_edge_vjp``: DARTS's ops in per-edge cells take the hand-written VJP too (with
      ``sparse_edge_vjp``; a scan body, the scanned edges, always takes the rematerialised switch):
      a shorter trace, but in the scanned edges, where it was measured, the DARTS-8 step 1.04x
      slower (``bench/results/engine_ab.json``, ``darts_edge_vjp/darts8_scan_edges``), so it is off
      by default.

    Where an op is traced (inside a ``lax.switch`` branch or a scan body, where XLA's own conv
    gradient is slow on CPU) is not a choice but a fact of the call: ops take it as the call
    argument ``control_flow`` (ops/layers.py)."""
    cpu: bool = True
    cotangent_barrier: bool = True
    sparse_edge_vjp: bool = True
    darts_edge_vjp: bool = False


def _same_pad(kernel: int, dilation: int) -> int:
    return dilation * (kernel - 1) // 2


def conv2d_reference(x, w, stride: int = 1, dilation: int = 1, groups: int = 1):
    """Plain ``lax.conv_general_dilated`` with symmetric 'same' padding (odd kernels)."""
    p = _same_pad(w.shape[0], dilation)
    return lax.conv_general_dilated(x, w, (stride, stride), [(p, p), (p, p)],
                                    rhs_dilation=(dilation, dilation), dimension_numbers=_DN,
                                    feature_group_count=groups)


def _cpu_backward(x, w, g, stride, dilation, groups):
    if w.shape[:2] == (1, 1) and groups == 1:
        return _pointwise_backward(x, w, g, stride)
    return conv_form_backward(x, w, g, stride, dilation, groups)


def _pointwise_backward(x, w, g, stride):
    """A 1x1 conv is a matmul over the pixels it reads: both gradients as dots, no transposes
    (2.0-2.5x faster than :func:`conv_form_backward`, 64 x 32x32..8x8 x 16..64, in a scan body;
    `python bench/engine_ab.py pointwise`)."""
    cin, cout = w.shape[2:]
    x = _materialise(x)      # as in the conv form: a dense node is not recomputed in the dot
    xs = x[:, ::stride, ::stride] if stride > 1 else x                         # the pixels it read
    dxs = lax.dot_general(g, w[0, 0], (((3,), (1,)), ((), ())))              # [N, Ho, Wo, C_in]
    dw = lax.dot_general(xs.reshape(-1, cin), g.reshape(-1, cout), (((0,), (0,)), ((), ())))
    dx = dxs if stride == 1 else jnp.zeros_like(x).at[:, ::stride, ::stride].set(dxs)
    return dx, dw.reshape(w.shape)


def conv_form_backward(x, w, g, stride, dilation, groups):
    """Both gradients of any kernel through standard-layout convolutions (the CPU form for k > 1;
    bench/engine_ab.py's reference for 1x1)."""
    kh, kw, _, cout = w.shape
    n, h, wd, _ = x.shape
    ho, wo = g.shape[1:3]
    p = _same_pad(kh, dilation)
    if stride > 1:  # transposed strided conv = stride-1 conv of the zero-upsampled cotangent
        g_up = jnp.zeros((n, ho * stride, wo * stride, cout), g.dtype).at[:, ::stride, ::stride].set(g)
        g_up = g_up[:, :h, :wd]
    else:
        g_up = g
    w_flip = w[::-1, ::-1]
    if groups == 1:
        w_flip = jnp.transpose(w_flip, (0, 1, 3, 2))
    pr = dilation * (kh - 1) - p
    dx = lax.conv_general_dilated(
        g_up, w_flip, (1, 1), [(pr, pr + h - g_up.shape[1]), (pr, pr + wd - g_up.shape[2])],
        rhs_dilation=(dilation, dilation), dimension_numbers=_DN, feature_group_count=groups)
    if groups == 1:
        # dw[a, b, i, o] = sum_{n,h,w} x[n, h*s + a*d - p, w*s + b*d - p, i] g[n, h, w, o]: a forward conv
        # with batch and features swapped by explicit transposes (standard layouts, the fast path) and
        # the 'same' padding inside the conv (high side: what the last window reaches, may be < p).
        # An explicitly padded input with a VALID conv ran 4.3x slower (40 vs 9.3 ms for both
        # gradients, 64x32x32x16, 3x3, in a scan body); XLA's own gradient there: 459 ms.
        hi = lambda size, out: (kh - 1) * dilation + (out - 1) * stride + 1 - size - p
        # x materialised first: else XLA fused x's producers (a dense node: the weighted sum of every
        # op output before it, ~180 operands) into each transpose, recomputed per consumer with
        # transposed reads (most of a dense NB201 C16 N5 step; docs/cpu-performance.md)
        xt = jnp.transpose(_materialise(x), (3, 1, 2, 0))  # [C_in, H, W, N]
        gt = jnp.transpose(g, (1, 2, 0, 3))  # [Ho, Wo, N, C_out]
        out = lax.conv_general_dilated(xt, gt, (dilation, dilation), [(p, hi(h, ho)), (p, hi(wd, wo))],
                                       rhs_dilation=(stride, stride), dimension_numbers=_DN)
        return dx, jnp.transpose(out, (1, 2, 0, 3))
    if not (groups == x.shape[-1] and w.shape[2] == 1):
        raise NotImplementedError("grouped conv other than depthwise")
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    taps = []  # depthwise: one per-channel contraction per tap (as fast as XLA's own on CPU)
    for a in range(kh):
        for b in range(kw):
            xs = xp[:, a * dilation:a * dilation + stride * (ho - 1) + 1:stride,
                    b * dilation:b * dilation + stride * (wo - 1) + 1:stride, :]
            taps.append(jnp.einsum("nhwc,nhwc->c", xs, g)[None, :])
    return dx, jnp.stack(taps).reshape(w.shape)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x, w, stride: int = 1, dilation: int = 1, groups: int = 1):
    """'Same'-padded NHWC conv (odd kernels); kernel HWIO; groups 1 or depthwise."""
    return conv2d_reference(x, w, stride, dilation, groups)


def _fwd(x, w, stride, dilation, groups):
    return conv2d_reference(x, w, stride, dilation, groups), (x, w)


def _bwd(stride, dilation, groups, res, g):
    return conv2d_backward(*res, g, stride, dilation, groups)


def conv2d_backward(x, w, g, stride: int = 1, dilation: int = 1, groups: int = 1):
    """``(dx, dw)`` of :func:`conv2d` at ``(x, w)`` for output cotangent ``g``: the CPU kernels
    above on CPU, XLA's own gradient elsewhere."""
    def generic(x, w, g):
        _, vjp = jax.vjp(lambda x, w: conv2d_reference(x, w, stride, dilation, groups), x, w)
        return vjp(g)

    def cpu(x, w, g):
        return _cpu_backward(x, w, g, stride, dilation, groups)

    return lax.platform_dependent(x, w, g, cpu=cpu, default=generic)


conv2d.defvjp(_fwd, _bwd)


# ---------------------------------------------------------------------------------------------
# Depthwise convolution and 3x3 max pooling as k*k shifted slices on CPU.
#
# XLA:CPU has no fast depthwise kernel: a grouped ``conv_general_dilated`` with one channel per
# group runs as a generic loop. The k*k fused multiply-adds of shifted input slices ran ~30x faster
# forward, and the DARTS sep/dil convs 4-19x faster forward+backward, than XLA's grouped conv
# (bench/results/op_cost.json: batch 64, 32x32x16, 2 cores); 3x3 max pooling's select_and_scatter
# gradient becomes one fused shifted sum of the routed cotangent (4.9x). GPU/TPU keep XLA's own ops
# (cuDNN / the TPU convolution emitter): one code path, a platform-dependent lowering.
# ---------------------------------------------------------------------------------------------

# These helpers trace lax primitives, not jnp's operators and indexing: jnp's wrap every call in a
# jit of its own, and a DARTS-8 step traces thousands of these taps and products (~2 s of its trace).
def _taps(xp, k: int, stride: int, dilation: int, ho: int, wo: int):
    """The k*k strided windows ``xp[:, a*d + i*s, b*d + j*s]`` of a padded input, tap-major."""
    n, _, _, c = xp.shape
    span = lambda o: stride * (o - 1) + 1
    return [lax.slice(xp, (0, a * dilation, b * dilation, 0), (n, a * dilation + span(ho), b * dilation + span(wo), c),
                      (1, stride, stride, 1))
            for a in range(k) for b in range(k)]


def _shift_sum(xp, w2, stride, dilation, ho, wo):
    """sum_{a,b} xp[:, a*d + i*s, b*d + j*s, c] * w2[a, b, c]: one fused elementwise loop."""
    k, c = w2.shape[0], w2.shape[-1]
    out = None
    for t, xs in enumerate(_taps(xp, k, stride, dilation, ho, wo)):
        wt = lax.reshape(lax.slice(w2, (t // k, t % k, 0), (t // k + 1, t % k + 1, c)), (c,))
        y = lax.mul(xs, lax.broadcast_in_dim(wt, xs.shape, (3,)))
        out = y if out is None else lax.add(out, y)
    return out


def _upsample(g, stride: int, h: int, w: int):
    """Zero-upsampled cotangent of a strided op, cropped to the input size: g[i, j] at (i*s, j*s)."""
    if stride == 1:
        return g
    n, ho, wo, c = g.shape
    up = jnp.zeros((n, ho * stride, wo * stride, c), g.dtype).at[:, ::stride, ::stride].set(g)
    return up[:, :h, :w]


def _pad(x, p, value=0.0):
    return lax.pad(x, lax.convert_element_type(value, x.dtype), ((0, 0, 0), (p, p, 0), (p, p, 0), (0, 0, 0)))


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_shift(x, w, stride, dilation):
    k = w.shape[0]
    ho, wo = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    return _shift_sum(_pad(x, _same_pad(k, dilation)), w[:, :, 0], stride, dilation, ho, wo)


def _depthwise_fwd(x, w, stride, dilation):
    return _depthwise_shift(x, w, stride, dilation), (x, w)


def _depthwise_bwd(stride, dilation, res, g):
    x, w = res
    k, p = w.shape[0], _same_pad(w.shape[0], dilation)
    h, wd = x.shape[1:3]
    # input gradient: the stride-1 correlation of the (upsampled) cotangent with the flipped kernel
    dx = _shift_sum(_pad(_upsample(g, stride, h, wd), p), lax.rev(w[:, :, 0], (0, 1)), 1, dilation, h, wd)
    # kernel gradient: one (batch, height, width) contraction per tap, looped (lax.map): unrolled,
    # XLA:CPU stores every shifted copy of x for its reductions (k*k x the input in temp memory);
    # the loop keeps one, compiles one body and ran 2.6x faster (5x5, 64x32x32x16)
    n, _, _, c = x.shape
    ho, wo = g.shape[1:3]
    xp = _pad(x, p)

    def tap(t):
        xs = lax.dynamic_slice(xp, (0, (t // k) * dilation, (t % k) * dilation, 0),
                               (n, stride * (ho - 1) + 1, stride * (wo - 1) + 1, c))
        return jnp.sum(xs[:, ::stride, ::stride] * g, (0, 1, 2))

    dw = lax.map(tap, jnp.arange(k * k)).reshape(w.shape)
    return dx, dw


_depthwise_shift.defvjp(_depthwise_fwd, _depthwise_bwd)


def depthwise_conv2d(x, w, stride: int = 1, dilation: int = 1, cpu: bool = True):
    """'Same'-padded depthwise conv (kernel [k, k, 1, C]): shifted slices on CPU, XLA elsewhere
    (``cpu=False``: XLA everywhere, :class:`Kernels`)."""
    if not cpu:
        return conv2d_reference(x, w, stride, dilation, x.shape[-1])
    return lax.platform_dependent(
        x, w, cpu=lambda x, w: _depthwise_shift(x, w, stride, dilation),
        default=lambda x, w: conv2d_reference(x, w, stride, dilation, x.shape[-1]))


def depthwise_backward(x, w, g, stride: int = 1, dilation: int = 1, cpu: bool = True):
    """``(dx, dw)`` of :func:`depthwise_conv2d` at ``(x, w)`` for output cotangent ``g``: the shifted
    slices' gradient above on CPU, XLA's own elsewhere (``cpu=False``: XLA's everywhere)."""
    def generic(x, w, g):
        return jax.vjp(lambda x, w: conv2d_reference(x, w, stride, dilation, x.shape[-1]), x, w)[1](g)

    if not cpu:
        return generic(x, w, g)
    return lax.platform_dependent(x, w, g, cpu=lambda x, w, g: _depthwise_bwd(stride, dilation, (x, w), g),
                                  default=generic)


def _max_pool_xla(x, stride):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                             ((0, 0), (1, 1), (1, 1), (0, 0)))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_shift(x, stride):
    return _max_pool_xla(x, stride)


def _max_pool_fwd(x, stride):
    out = _max_pool_xla(x, stride)
    # the tap that holds each window's maximum (the first on ties, as XLA's select_and_scatter)
    taps = _taps(_pad(x, 1, -jnp.inf), 3, stride, 1, *out.shape[1:3])
    first = jnp.full(out.shape, 9, jnp.int8)
    for t in reversed(range(9)):
        first = jnp.where(taps[t] == out, jnp.int8(t), first)
    return out, (first, x.shape)


def _max_pool_bwd(stride, res, g):
    first, (n, h, w, c) = res
    # each window's cotangent goes to its maximum: dx[y] = sum_t [first = t] g at (y - tap offset),
    # slices of two padded arrays, one fused loop (no select_and_scatter)
    gp = _pad(_upsample(g, stride, h, w), 1)
    fp = _pad(_upsample(first, stride, h, w) if stride == 1 else
              _upsample(first + 1, stride, h, w) - 1, 1, -1)  # -1: no window at this position
    dx = None
    for t in range(9):
        a, b = divmod(t, 3)
        sl = (slice(None), slice(2 - a, 2 - a + h), slice(2 - b, 2 - b + w))
        y = jnp.where(fp[sl] == t, gp[sl], 0)
        dx = y if dx is None else dx + y
    return (dx,)


_max_pool_shift.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool3(x, stride: int = 1, cpu: bool = True):
    """3x3 max pooling, padding 1 (PyTorch's MaxPool2d(3, stride, 1)); CPU gradient as above
    (``cpu=False``: XLA's select_and_scatter gradient everywhere, :class:`Kernels`)."""
    if not cpu:
        return _max_pool_xla(x, stride)
    return lax.platform_dependent(x, cpu=lambda x: _max_pool_shift(x, stride),
                                  default=lambda x: _max_pool_xla(x, stride))


def _avg_pool_xla(x, stride):
    window, strides, pad = (1, 3, 3, 1), (1, stride, stride, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, pad)
    count = lax.reduce_window(jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype), 0.0, lax.add, window, strides, pad)
    return total / count


def _avg_pool_shift(x, stride):
    ho, wo = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    total = sum(_taps(_pad(x, 1), 3, stride, 1, ho, wo))
    count = sum(_taps(_pad(jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype), 1), 3, stride, 1, ho, wo))
    return total / count


def avg_pool3(x, stride: int = 1, cpu: bool = True):
    """3x3 average pooling, padding 1, over the valid inputs only (PyTorch's AvgPool2d(3, stride, 1,
    count_include_pad=False)). On CPU nine shifted slices, whose gradient is nine shifted slices of
    the cotangent, one fused loop: reduce_window's gradient ran 2.1x slower in a scan body (9.7 vs
    4.6 ms forward + backward, 64x32x32x16; 70 ms of an NB201 C16 N5 search step). ``cpu=False``:
    XLA's reduce_window everywhere (:class:`Kernels`)."""
    if not cpu:
        return _avg_pool_xla(x, stride)
    return lax.platform_dependent(x, cpu=lambda x: _avg_pool_shift(x, stride),
                                  default=lambda x: _avg_pool_xla(x, stride))


def _materialise(g):
    # a conditional's operand is one buffer; optimization_barrier would not do: XLA:CPU expands it
    # before fusion. The predicate is read from g so that it is not folded (False only at a NaN,
    # where both branches give g anyway).
    same = lax.convert_element_type(g.reshape(-1)[0] == g.reshape(-1)[0], jnp.int32)
    return lax.switch(same, [lambda g: g + 0.0, lambda g: g], g)


def cotangent_barrier(x, enabled: bool = True):
    """Identity whose value and cotangent are each computed once, into one buffer, on CPU (a dense
    edge's input: a node, the weighted sum of every op output into it).

    Backward: an edge's input cotangent is the sum of its ops' input gradients. On CPU those are
    elementwise shifted sums (above), and skip_connect passes the cotangent straight through, so XLA
    fused each edge's cotangent into every consumer of the next one and recomputed the chain per
    consumer: a dense chain of 4 DARTS edges (64x32x32x16) had 18x one edge's FLOPs and ran in 5.1 s;
    with the barrier 3.9x the FLOPs and 0.46 s (bench/op_cost.py --chains). Forward, the same for the
    node's value: XLA fused a node (~180 operands by the last cells) into the backward's consumers of
    the ops' inputs and recomputed it in each (docs/cpu-performance.md; tests/test_lowering.py).
    GPU/TPU: identity. ``enabled=False``: the identity
    everywhere (:class:`Kernels`).
    """
    return _barrier(x) if enabled else x


def _on_cpu_materialised(x):
    return lax.platform_dependent(x, cpu=_materialise, default=lambda x: x)


@jax.custom_vjp
def _barrier(x):
    return _on_cpu_materialised(x)


_barrier.defvjp(lambda x: (_on_cpu_materialised(x), None), lambda _, g: (_on_cpu_materialised(g),))

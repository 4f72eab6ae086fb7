"""2-D convolution whose gradient stays fast inside ``lax.switch`` on CPU.

XLA:CPU leaves the transposed convolutions of a conv's gradient in a layout its fast (Eigen) path
does not take when they sit inside a conditional (jax-ml/jax#12868): a switch over conv branches
is ~50x slower to differentiate than the same convs outside it. The forward conv is fast
everywhere, so only the backward pass is replaced, and only on CPU (``lax.platform_dependent``):

- input gradient: a stride-1 conv in the standard NHWC/HWIO layout of the (zero-upsampled, for
  stride > 1) cotangent with the flipped kernel, its I/O axes swapped by an explicit transpose;
- kernel gradient: a standard-layout conv with batch and feature axes swapped by explicit
  transposes (depthwise: one contraction over (batch, height, width) per kernel tap).

On GPU/TPU the backward pass is JAX's own (cuDNN / the TPU convolution emitter). One code path.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def _same_pad(kernel: int, dilation: int) -> int:
    return dilation * (kernel - 1) // 2


def conv2d_reference(x, w, stride: int = 1, dilation: int = 1, groups: int = 1):
    """Plain ``lax.conv_general_dilated`` with symmetric 'same' padding (odd kernels)."""
    p = _same_pad(w.shape[0], dilation)
    return lax.conv_general_dilated(x, w, (stride, stride), [(p, p), (p, p)],
                                    rhs_dilation=(dilation, dilation), dimension_numbers=_DN,
                                    feature_group_count=groups)


def _cpu_backward(x, w, g, stride, dilation, groups):
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
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    if groups == 1:
        # dw[a, b, i, o] = sum_{n,h,w} xp[n, h*s + a*d, w*s + b*d, i] g[n, h, w, o]: a forward conv
        # with batch and features swapped by explicit transposes (standard layouts, fast path)
        xt = jnp.transpose(xp, (3, 1, 2, 0))  # [C_in, Hp, Wp, N]
        gt = jnp.transpose(g, (1, 2, 0, 3))   # [Ho, Wo, N, C_out]
        out = lax.conv_general_dilated(xt, gt, (dilation, dilation), "VALID", rhs_dilation=(stride, stride),
                                       dimension_numbers=_DN)
        return dx, jnp.transpose(out[:, :kh, :kw], (1, 2, 0, 3))
    if not (groups == x.shape[-1] and w.shape[2] == 1):
        raise NotImplementedError("grouped conv other than depthwise")
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
    x, w = res

    def generic(x, w, g):
        _, vjp = jax.vjp(lambda x, w: conv2d_reference(x, w, stride, dilation, groups), x, w)
        return vjp(g)

    def cpu(x, w, g):
        return _cpu_backward(x, w, g, stride, dilation, groups)

    return lax.platform_dependent(x, w, g, cpu=cpu, default=generic)


conv2d.defvjp(_fwd, _bwd)

"""Building blocks shared by every candidate operation."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from jaxnas.models.ops.conv import Kernels, conv2d, conv2d_reference, depthwise_conv2d


class Conv(nn.Module):
    """Bias-free 'same' conv (odd kernel) on NHWC; ``groups == in channels`` is depthwise.

    ``control_flow`` (call argument): the conv is traced inside a ``lax.switch`` branch or a scan
    body, where it takes conv2d's CPU gradient (ops/conv.py; inside a loop XLA's own kernel gradient
    ran up to 50x slower). Every jaxnas training step is a scan body (the engine's chunk, the retrain
    loop), so their tasks pass True; outside any loop XLA's own gradient is a little faster."""
    features: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    depthwise: bool = False
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x, control_flow: bool = False):
        cin = x.shape[-1]
        if self.depthwise and self.features != cin:
            raise ValueError(f"depthwise conv needs features == input channels ({cin}), got {self.features}")
        shape = (self.kernel, self.kernel, 1 if self.depthwise else cin, self.features)
        w = self.param("kernel", nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal"), shape)
        if self.depthwise:  # shifted slices on CPU (ops/conv.py), no conv inside a switch; at init
            # XLA's grouped conv (the same shape; tracing the CPU branch was half a DARTS init's trace)
            return depthwise_conv2d(x, w.astype(x.dtype), self.stride, self.dilation,
                                    self.kernels.cpu and not self.is_initializing())
        conv = conv2d if control_flow else conv2d_reference
        return conv(x, w.astype(x.dtype), self.stride, self.dilation, 1)


class Norm(nn.Module):
    """Batch normalisation.

    ``track=False`` (search): normalise with the batch's statistics, no running state, so the
    supernet is a pure function of its params (DARTS/NAS-Bench-201 search use BN without affine
    parameters on batch statistics). ``track=True`` (stand-alone training): Flax BatchNorm with
    running averages in the ``batch_stats`` collection.
    """
    affine: bool = False
    track: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool = True):
        if self.track:
            return nn.BatchNorm(use_running_average=not train, use_scale=self.affine,
                                use_bias=self.affine, momentum=self.momentum, epsilon=self.epsilon)(x)
        y = batch_normalize(x, self.epsilon)
        if self.affine:
            y = y * self.param("scale", nn.initializers.ones, (x.shape[-1],)) + \
                self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return y


def batch_normalize(x, epsilon: float = 1e-5):
    """``(x - mean) / sqrt(var + epsilon)`` over every axis but the last, with the batch's statistics.

    var = E[x^2] - E[x]^2 (clamped at 0): both moments from one read of ``x`` (sibling reductions XLA
    fuses), as Flax's BatchNorm computes them by default (``use_fast_variance``). The two-pass form
    (the mean, then the mean square of x - mean) was 1.3-1.4x slower forward + backward on CPU
    (64 x 32x32x16 and 16x16x32 in a scan body); a shift by one sample per channel, against
    cancellation at large means, lost most of the gain."""
    mean, rstd = batch_moments(x, epsilon)
    return (x - mean) * rstd


def batch_moments(x, epsilon: float = 1e-5):
    """``(mean, 1 / sqrt(var + epsilon))`` of :func:`batch_normalize`, per channel."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0.0)
    return mean, lax.rsqrt(var + epsilon)


def batch_normalize_backward(xhat, rstd, g):
    """The input cotangent of :func:`batch_normalize` for output cotangent ``g``, from its output
    ``xhat`` and ``rstd``: ``rstd (g - E[g] - xhat E[g xhat])`` (batch statistics, where var > 0). The
    output, not the input, so a caller keeps one activation (the op's output) for its backward pass."""
    axes = tuple(range(xhat.ndim - 1))
    return rstd * (g - jnp.mean(g, axes) - xhat * jnp.mean(g * xhat, axes))


def downsampled_shape(shape, stride: int):
    """NHWC shape after a 'same'-padded op of the given stride."""
    n, h, w, c = shape
    return (n, -(-h // stride), -(-w // stride), c)

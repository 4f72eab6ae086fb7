"""Candidate operations of the DARTS and NAS-Bench-201 cell spaces, as Flax modules.

Every op maps ``[N, H, W, C] -> [N, H/stride, W/stride, C]`` and is called ``op(x, train,
control_flow=False)`` (``control_flow``: traced inside a switch branch or a scan body, ops/layers.py);
``kernels`` (ops/conv.py's :class:`Kernels`) is a static field of every op that has a choice.
Orders follow the papers: ReLU-Conv-BN (DARTS, NAS-Bench-201). ``affine``/``track`` configure the
BatchNorms (search: affine=False, batch statistics; stand-alone: affine, running statistics).
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxnas.models.ops.conv import Kernels, avg_pool3, max_pool3
from jaxnas.models.ops.layers import Conv, Norm, downsampled_shape


class Zero(nn.Module):
    """The 'none' op: no connection."""
    stride: int = 1

    def __call__(self, x, train: bool = True, control_flow: bool = False):
        return jnp.zeros(downsampled_shape(x.shape, self.stride), x.dtype)


class Identity(nn.Module):
    def __call__(self, x, train: bool = True, control_flow: bool = False):
        return x


class ReLUConvBN(nn.Module):
    features: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    affine: bool = False
    track: bool = False
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x, train: bool = True, control_flow: bool = False):
        x = Conv(self.features, self.kernel, self.stride, self.dilation, kernels=self.kernels)(nn.relu(x), control_flow)
        return Norm(self.affine, self.track)(x, train)


class DilConv(nn.Module):
    """DARTS dil_conv: ReLU, depthwise k x k (dilation), pointwise 1x1, BN."""
    features: int
    kernel: int
    stride: int = 1
    dilation: int = 2
    affine: bool = False
    track: bool = False
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x, train: bool = True, control_flow: bool = False):
        x = Conv(x.shape[-1], self.kernel, self.stride, self.dilation, depthwise=True,
                 kernels=self.kernels)(nn.relu(x), control_flow)
        x = Conv(self.features, 1, kernels=self.kernels)(x, control_flow)
        return Norm(self.affine, self.track)(x, train)


class SepConv(nn.Module):
    """DARTS sep_conv: two stacked DilConv blocks with dilation 1 (stride on the first)."""
    features: int
    kernel: int
    stride: int = 1
    affine: bool = False
    track: bool = False
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x, train: bool = True, control_flow: bool = False):
        x = DilConv(x.shape[-1], self.kernel, self.stride, 1, self.affine, self.track, self.kernels)(
            x, train, control_flow)
        return DilConv(self.features, self.kernel, 1, 1, self.affine, self.track, self.kernels)(
            x, train, control_flow)


class FactorizedReduce(nn.Module):
    """DARTS skip_connect at stride 2: two offset 1x1 stride-2 convs, concatenated, BN."""
    features: int
    affine: bool = False
    track: bool = False
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x, train: bool = True, control_flow: bool = False):
        if self.features % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {self.features}")
        x = nn.relu(x)
        a = Conv(self.features // 2, 1, 2, kernels=self.kernels)(x, control_flow)
        xs = jnp.pad(x[:, 1:, 1:], ((0, 0), (0, 1), (0, 1), (0, 0)))
        b = Conv(self.features // 2, 1, 2, kernels=self.kernels)(xs, control_flow)
        return Norm(self.affine, self.track)(jnp.concatenate([a, b], -1), train)


class Pool(nn.Module):
    """3x3 max or average pooling (average excludes padding, as PyTorch count_include_pad=False),
    followed by a BN in the DARTS search network (``bn=True``)."""
    kind: str
    stride: int = 1
    bn: bool = False
    affine: bool = False
    track: bool = False
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x, train: bool = True, control_flow: bool = False):
        cpu = self.kernels.cpu and not self.is_initializing()    # at init XLA's op: the same shape, a shorter trace
        if self.kind == "max":
            y = max_pool3(x, self.stride, cpu)
        else:   # average over the valid (unpadded) inputs, as count_include_pad=False
            y = avg_pool3(x, self.stride, cpu)
        return Norm(self.affine, self.track)(y, train) if self.bn else y


OpFactory = Callable[..., nn.Module]  # (C, stride, affine, track, kernels) -> module


def _darts_ops() -> dict[str, OpFactory]:
    return {
        "none": lambda C, s, a, t, k: Zero(s),
        "max_pool_3x3": lambda C, s, a, t, k: Pool("max", s, bn=not t, affine=False, track=t, kernels=k),
        "avg_pool_3x3": lambda C, s, a, t, k: Pool("avg", s, bn=not t, affine=False, track=t, kernels=k),
        "skip_connect": lambda C, s, a, t, k: Identity() if s == 1 else FactorizedReduce(C, a, t, k),
        "sep_conv_3x3": lambda C, s, a, t, k: SepConv(C, 3, s, a, t, k),
        "sep_conv_5x5": lambda C, s, a, t, k: SepConv(C, 5, s, a, t, k),
        "dil_conv_3x3": lambda C, s, a, t, k: DilConv(C, 3, s, 2, a, t, k),
        "dil_conv_5x5": lambda C, s, a, t, k: DilConv(C, 5, s, 2, a, t, k),
    }


def _nb201_ops() -> dict[str, OpFactory]:
    return {
        "none": lambda C, s, a, t, k: Zero(s),
        "skip_connect": lambda C, s, a, t, k: Identity() if s == 1 else FactorizedReduce(C, a, t, k),
        "nor_conv_1x1": lambda C, s, a, t, k: ReLUConvBN(C, 1, s, 1, a, t, k),
        "nor_conv_3x3": lambda C, s, a, t, k: ReLUConvBN(C, 3, s, 1, a, t, k),
        "avg_pool_3x3": lambda C, s, a, t, k: Pool("avg", s, kernels=k),
    }


OP_SETS: dict[str, dict[str, OpFactory]] = {"darts": _darts_ops(), "nb201": _nb201_ops()}


def build_op(op_set: str, name: str, channels: int, stride: int, affine: bool, track: bool,
             kernels: Kernels = Kernels()) -> nn.Module:
    if op_set not in OP_SETS:
        raise ValueError(f"unknown op set {op_set!r}; valid: {', '.join(OP_SETS)}")
    ops = OP_SETS[op_set]
    if name not in ops:
        raise ValueError(f"unknown op {name!r} in op set {op_set!r}; valid: {', '.join(ops)}")
    return ops[name](channels, stride, affine, track, kernels)

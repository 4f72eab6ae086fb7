"""Cell supernets (NAS-Bench-201 and DARTS skeletons), sparse or dense, and their discrete nets.

``net.apply({'params': p}, x, weights, mode=...)`` with ``weights: float[D, K]`` of the space:

- ``mode="sparse"``: on each edge only op ``argmax(weights[d])`` runs (``nn.switch``, i.e.
  ``lax.switch``) and its output is scaled by ``weights[d, argmax]``; so ``d loss / d weights[d, j]``
  at the chosen ``j`` is ``dL/dO_d . O_d^j``, the AdvantageNAS eq. 7 quantity. Memory and FLOPs are
  those of one architecture.
- ``mode="dense"``: every op runs; the edge output is ``sum_k weights[d, k] op_k(x)`` (DARTS, SNAS,
  NASP, Shapley masks). The 'none' op contributes nothing and is skipped.

Both modes share one parameter tree. ``partial_channels=K`` (PC-DARTS, Xu et al. 2020) sends only
the first C/K channels of each edge input through the ops (the rest bypass the edge) and shuffles
the channels after the edge; memory and FLOPs of the mixed ops fall by ~K. Built with ``arch=`` (a tuple of op indices, length D), the same
module is the *discrete* network of that architecture: only the chosen op of each edge exists and
'none' edges are dropped; with ``track=True`` its BatchNorms keep running statistics for
stand-alone training (``mutable=['batch_stats']``).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnas.ops.candidates import FactorizedReduce, ReLUConvBN, build_op
from jaxnas.ops.layers import Conv, Norm, inside_switch
from jaxnas.spaces.cells import CellSpace, DartsSpace, NasBench201Space, reduction_cells

MODES = ("sparse", "dense")


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def channel_shuffle(x, groups: int):
    """PC-DARTS's channel shuffle on NHWC: channels viewed as ``[groups, C / groups]``, transposed
    (PyTorch ``x.view(b, groups, C // groups, h, w).transpose(1, 2)``): output channel
    ``j * groups + g`` is input channel ``g * (C / groups) + j``."""
    *lead, c = x.shape
    return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


def _in_switch_call(op, x, train):
    with inside_switch():
        return op(x, train)


class MixedEdge(nn.Module):
    """One edge: all candidate ops of the space (or only ``fixed`` for a discrete net)."""
    op_set: str
    ops: tuple[str, ...]
    channels: int
    stride: int = 1
    fixed: Optional[int] = None
    affine: bool = False
    track: bool = False
    remat: bool = True  # sparse mode: rematerialise the chosen op (memory of one architecture)
    # PC-DARTS partial channel connections (Xu et al. 2020, sec. 3.1): the ops see the first
    # C / partial_channels channels, the rest bypass the edge (max-pooled 2x2 on a stride-2 edge), the
    # two are concatenated and channel-shuffled; 1: every channel through every op (DARTS). Search
    # supernets only (a discrete net, ``fixed``, keeps all channels).
    partial_channels: int = 1

    def setup(self):
        names = self.ops if self.fixed is None else (self.ops[self.fixed],)
        ch = self.channels if self.fixed is not None else self.channels // self.partial_channels
        self.candidates = [build_op(self.op_set, n, ch, self.stride, self.affine, self.track)
                           for n in names]

    def __call__(self, x, w=None, mode: str = "sparse", train: bool = True):
        if self.fixed is not None:
            return self.candidates[0](x, train)
        K = self.partial_channels
        if K == 1:
            return self._mixed(x, w, mode, train)
        c = x.shape[-1]
        if c % K or self.channels % K:
            raise ValueError(f"partial_channels={K} must divide the edge's channels ({c} in, "
                             f"{self.channels} out)")
        part, rest = x[..., :c // K], x[..., c // K:]      # PC-DARTS: xtemp, xtemp2
        if self.stride == 2:
            rest = nn.max_pool(rest, (2, 2), (2, 2))
        return channel_shuffle(jnp.concatenate([self._mixed(part, w, mode, train), rest], -1), K)

    def _mixed(self, x, w, mode, train):
        if mode == "dense":
            out = None
            for k, (name, op) in enumerate(zip(self.ops, self.candidates)):
                if name == "none":
                    continue
                y = w[k].astype(x.dtype) * op(x, train)
                out = y if out is None else out + y
            if out is None:  # every op is 'none'
                out = self.candidates[0](x, train)
            return out
        idx = jnp.argmax(w)
        # remat=True: JAX gives every branch of a differentiated switch the same residual outputs
        # (the union over branches), so without remat the saved activations approach the dense
        # supernet's; with it only the edge input is saved and the chosen op's forward is
        # recomputed in the backward pass (memory of one architecture, one more forward in time).
        branches = [lambda mdl, x, k=k: _in_switch_call(mdl.candidates[k], x, train)
                    for k in range(len(self.ops))]
        if self.remat:
            branches = [nn.checkpoint(b) for b in branches]
        if self.is_initializing():  # nn.switch runs every branch at init; make sure all params exist
            for k in range(len(self.ops)):
                self.candidates[k](x, train)
        out = nn.switch(idx, branches, self, x)
        # hooks for tests/analysis: d loss / d output (collection 'perturbations') and the output
        # itself ('intermediates'); both are no-ops unless those collections are requested
        self.sow("intermediates", "op_output", out)
        return self.perturb("op_output", out) * w[idx].astype(x.dtype)


class Cell(nn.Module):
    """A cell of ``space``: ``num_input_nodes`` inputs, intermediate nodes summing their edges.

    Output: the last node (NAS-Bench-201) or the concatenation of all intermediate nodes (DARTS).
    """
    space: CellSpace
    channels: int
    reduction: bool = False
    concat_output: bool = False
    arch: Optional[tuple[int, ...]] = None  # this cell's edges, for a discrete net
    affine: bool = False
    track: bool = False
    remat: bool = True
    partial_channels: int = 1   # PC-DARTS K (MixedEdge)

    @nn.compact
    def __call__(self, inputs, w=None, mode: str = "sparse", train: bool = True):
        sp = self.space
        states = list(inputs)
        ref = inputs[-1]
        stride = 2 if self.reduction else 1
        node_shape = (ref.shape[0], -(-ref.shape[1] // stride), -(-ref.shape[2] // stride), self.channels)
        for e, (j, i) in enumerate(sp.edges):
            if j == len(states):
                states.append(None)
            edge_stride = stride if i < sp.num_input_nodes else 1
            fixed = None if self.arch is None else int(self.arch[e])
            if fixed is not None and sp.ops[fixed] == "none":
                continue  # a discrete net drops 'none' edges
            src = jnp.zeros(node_shape, ref.dtype) if states[i] is None else states[i]  # all-'none' node
            y = MixedEdge(sp.op_set, sp.ops, self.channels, edge_stride, fixed, self.affine, self.track,
                          self.remat, self.partial_channels,
                          name=f"edge_{j}_{i}")(src, None if w is None else w[e], mode, train)
            states[j] = y if states[j] is None else states[j] + y
        states = [jnp.zeros(node_shape, ref.dtype) if s is None else s for s in states]
        if self.concat_output:
            return jnp.concatenate(states[sp.num_input_nodes:], -1)
        return states[-1]


def _block_weights(space: CellSpace, weights, arch):
    if arch is not None:
        if len(arch) != space.num_decisions:
            raise ValueError(f"arch has {len(arch)} entries; the space has {space.num_decisions} decisions")
        space.check_arch(arch)
        return None
    if weights is None:
        raise ValueError("a supernet needs architecture weights [D, K] (or build it with arch=...)")
    if tuple(weights.shape) != space.shape:
        raise ValueError(f"weights have shape {tuple(weights.shape)}; this space needs {space.shape} "
                         f"= (decisions, choices)")
    return space.block_weights(weights)


def _cell_arch(space, arch, block):
    if arch is None:
        return None
    E = space.edges_per_cell
    return tuple(int(a) for a in arch[block * E:(block + 1) * E])


class ResidualReduction(nn.Module):
    """NAS-Bench-201 ResNet basic block between stages: stride-2 3x3, 3x3, avg-pool+1x1 shortcut."""
    features: int
    track: bool = False

    @nn.compact
    def __call__(self, x, train: bool = True):
        y = ReLUConvBN(self.features, 3, 2, affine=True, track=self.track)(x, train)
        y = ReLUConvBN(self.features, 3, 1, affine=True, track=self.track)(y, train)
        sc = nn.avg_pool(x, (2, 2), (2, 2))
        return y + Conv(self.features, 1)(sc)


class NasBench201Net(nn.Module):
    """NAS-Bench-201 TinyNetwork: stem, 3 stages of N cells (C, 2C, 4C) with residual reductions,
    BN-ReLU, global pooling, classifier. Cells repeat one weight block or use one each."""
    space: NasBench201Space
    arch: Optional[tuple[int, ...]] = None
    track: bool = False  # running BN statistics (stand-alone training of a discrete net)
    remat: bool = True   # sparse mode: recompute the chosen op in the backward pass (less memory)
    partial_channels: int = 1   # PC-DARTS partial channel connections K (search supernet only)

    @nn.compact
    def __call__(self, x, weights=None, mode: str = "sparse", train: bool = True):
        _check_mode(mode)
        sp = self.space
        wb = _block_weights(sp, weights, self.arch)
        affine_cells = self.arch is not None  # discrete nets: affine BN, as the benchmark trains them
        x = Conv(sp.C, 3)(x)
        x = Norm(True, self.track)(x, train)
        c = 0
        for stage in range(3):
            ch = sp.C * 2 ** stage
            if stage:
                x = ResidualReduction(ch, self.track)(x, train)
            for _ in range(sp.cells_per_stage):
                block = c if sp.num_blocks > 1 else 0
                x = Cell(sp, ch, arch=_cell_arch(sp, self.arch, block), affine=affine_cells,
                         track=self.track, remat=self.remat, partial_channels=self.partial_channels,
                         name=f"cell{c}")([x], None if wb is None else wb[block], mode, train)
                c += 1
        x = nn.relu(Norm(True, self.track)(x, train))
        return nn.Dense(sp.num_classes)(jnp.mean(x, (1, 2)))


class DartsNet(nn.Module):
    """DARTS search network: stem (3C), ``num_cells`` cells with reductions at 1/3 and 2/3 (channels
    doubled), each cell preprocessing its two inputs, output concat of 4 nodes, global pool, linear."""
    space: DartsSpace
    num_classes: int = 10
    stem_multiplier: int = 3
    arch: Optional[tuple[int, ...]] = None
    track: bool = False
    remat: bool = True
    partial_channels: int = 1   # PC-DARTS partial channel connections K (Shapley-NAS sec. 4.1: 4)

    @nn.compact
    def __call__(self, x, weights=None, mode: str = "sparse", train: bool = True):
        _check_mode(mode)
        sp = self.space
        wb = _block_weights(sp, weights, self.arch)
        affine = self.arch is not None
        s0 = s1 = Norm(affine, self.track)(Conv(self.stem_multiplier * sp.C, 3)(x), train)
        red = reduction_cells(sp.num_cells)
        ch, reduction_prev = sp.C, False
        for c in range(sp.num_cells):
            reduction = c in red
            if reduction:
                ch *= 2
            if reduction_prev:
                p0 = FactorizedReduce(ch, affine, self.track, name=f"pre0_{c}")(s0, train)
            else:
                p0 = ReLUConvBN(ch, 1, affine=affine, track=self.track, name=f"pre0_{c}")(s0, train)
            p1 = ReLUConvBN(ch, 1, affine=affine, track=self.track, name=f"pre1_{c}")(s1, train)
            block = sp.block_of_cell(c)
            out = Cell(sp, ch, reduction, concat_output=True, arch=_cell_arch(sp, self.arch, block),
                       affine=affine, track=self.track, remat=self.remat,
                       partial_channels=self.partial_channels, name=f"cell{c}")(
                [p0, p1], None if wb is None else wb[block], mode, train)
            s0, s1, reduction_prev = s1, out, reduction
        return nn.Dense(self.num_classes)(jnp.mean(s1, (1, 2)))

"""The DARTS evaluation network (Liu et al. 2019, sec. 3.3 / ``model.py:NetworkCIFAR``), built from a
genotype, for training a found cell from scratch.

Stem (3x3 conv to ``stem_multiplier * C`` channels, BN), ``num_cells`` cells with reductions at 1/3
and 2/3 of the depth (channels doubled there), each cell preprocessing its two inputs (1x1
ReLU-conv-BN, or a factorized reduce after a reduction cell), then intermediate nodes that each *sum
their chosen inputs* (the genotype's two per node; 'none' edges do not exist), and the cell output is
the concatenation of the intermediate nodes; global average pooling and a linear classifier.
Every BatchNorm is affine and keeps running statistics (``batch_stats``); pooling ops carry no BN
(unlike the search network). Drop-path (Zoph et al.) zeroes a whole op output per example with
probability ``drop_path`` (rescaled by ``1 / keep``) on every op that is not an identity, in
training only. The auxiliary head (``auxiliary=True``) reads the output of the second reduction cell
(``2 * num_cells // 3``) and returns its own logits in training (weight 0.4 in the loss).

Usage::

    net = DartsEvalNet(cells=cells_from_arch(space, arch), block_names=space.block_names, C=36,
                       num_cells=20, num_classes=10, auxiliary=True)
    variables = net.init({"params": key}, x, train=False)
    logits = net.apply(variables, x, train=False)
    (logits, aux), upd = net.apply(variables, x, train=True, drop_path=0.2,
                                   rngs={"dropout": key}, mutable=["batch_stats"])

``cells``: per block (``normal``/``reduce``, or one block per cell for a unique-cell search) a tuple
of nodes, each node a tuple of ``(op, source)`` pairs (source 0 and 1 are the cell inputs, 2.. the
earlier intermediate nodes); ``cells_from_arch`` and ``cells_from_genotype`` build it.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.models.ops.candidates import FactorizedReduce, ReLUConvBN, build_op
from jaxnas.models.ops.conv import Kernels
from jaxnas.models.ops.layers import Conv, Norm
from jaxnas.spaces.cells import reduction_cells

Cells = tuple  # tuple[block] of tuple[node] of tuple[(op, src)]


def cells_from_arch(space, arch) -> Cells:
    """The cells of a DARTS-space architecture (``int[D]``, unselected edges 'none'): every node keeps
    its non-'none' edges (two for a derived DARTS genotype)."""
    a = space.check_arch(arch).reshape(space.num_blocks, space.edges_per_cell)
    out = []
    for b in range(space.num_blocks):
        nodes, e = [], 0
        for j in range(space.num_input_nodes, space.num_input_nodes + space.num_nodes):
            node = []
            for i in range(j):
                op = space.ops[int(a[b, e])]
                if op != "none":
                    node.append((op, i))
                e += 1
            nodes.append(tuple(node))
        out.append(tuple(nodes))
    return tuple(out)


def cells_from_genotype(genotype: dict, block_names: Sequence[str] = ("normal", "reduce"),
                        inputs_per_node: int = 2) -> Cells:
    """The cells of a DARTS ``Genotype``-style dict ``{block: [(op, src), ...]}`` (``inputs_per_node``
    consecutive pairs per node, as DARTS lists them). Each node's inputs are put in source order (as
    ``cells_from_arch`` gives them), so both give the same network and parameter names."""
    out = []
    for b in block_names:
        if b not in genotype:
            raise ValueError(f"genotype lacks block {b!r}; has {sorted(genotype)}")
        gene = [(str(op), int(src)) for op, src in genotype[b]]
        if len(gene) % inputs_per_node:
            raise ValueError(f"genotype block {b!r} has {len(gene)} entries, not a multiple of "
                             f"{inputs_per_node} inputs per node")
        out.append(tuple(tuple(sorted(gene[k:k + inputs_per_node], key=lambda p: p[1]))
                         for k in range(0, len(gene), inputs_per_node)))
    return tuple(out)


def cells_to_json(cells: Cells) -> list:
    return [[[[op, int(src)] for op, src in node] for node in nodes] for nodes in cells]


def cells_from_json(obj) -> Cells:
    return tuple(tuple(tuple((str(op), int(src)) for op, src in node) for node in nodes) for nodes in obj)


def drop_path(x, rate, key):
    """Zero each example's ``x`` with probability ``rate`` (may be traced), rescale by 1/keep."""
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / jnp.maximum(keep, 1e-6).astype(x.dtype), jnp.zeros((), x.dtype))


class EvalCell(nn.Module):
    """One cell of the evaluation network: ``nodes`` as in ``cells``, all ops affine, tracked BN."""
    nodes: tuple
    channels: int
    reduction: bool = False
    reduction_prev: bool = False
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, s0, s1, train: bool = False, drop_rate=0.0, control_flow: bool = False):
        C = self.channels
        if self.reduction_prev:
            s0 = FactorizedReduce(C, True, True, self.kernels, name="pre0")(s0, train, control_flow)
        else:
            s0 = ReLUConvBN(C, 1, affine=True, track=True, kernels=self.kernels, name="pre0")(s0, train, control_flow)
        s1 = ReLUConvBN(C, 1, affine=True, track=True, kernels=self.kernels, name="pre1")(s1, train, control_flow)
        states = [s0, s1]
        for n, node in enumerate(self.nodes):
            j = 2 + n
            h = None
            for op, src in node:
                if not 0 <= src < j:
                    raise ValueError(f"node {j} of a cell reads node {src}; valid sources are 0..{j - 1}")
                stride = 2 if (self.reduction and src < 2) else 1
                y = build_op("darts", op, C, stride, True, True, self.kernels)(states[src], train, control_flow)
                identity = op == "skip_connect" and stride == 1
                if train and not identity and op != "none":
                    y = drop_path(y, drop_rate, self.make_rng("dropout"))
                h = y if h is None else h + y
            if h is None:  # a node without inputs: zeros of the node's shape
                ref = states[1]
                stride = 2 if self.reduction else 1
                h = jnp.zeros((ref.shape[0], -(-ref.shape[1] // stride), -(-ref.shape[2] // stride), C),
                              ref.dtype)
            states.append(h)
        return jnp.concatenate(states[2:], -1)


class AuxiliaryHead(nn.Module):
    """DARTS ``AuxiliaryHeadCIFAR``: ReLU, 5x5 average pool stride 3 (no padding), 1x1 conv 128, BN,
    ReLU, 2x2 conv 768, BN, ReLU, linear (on an 8x8 input; smaller maps pool what they have)."""
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(x)
        k = min(5, x.shape[1], x.shape[2])
        x = nn.avg_pool(x, (k, k), (3, 3), "VALID")
        x = nn.relu(Norm(True, True)(Conv(128, 1)(x), train))
        k2 = min(2, x.shape[1], x.shape[2])
        x = nn.Conv(768, (k2, k2), padding="VALID", use_bias=False,
                    kernel_init=nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal"))(x)
        x = nn.relu(Norm(True, True)(x, train))
        return nn.Dense(self.num_classes)(jnp.mean(x, (1, 2)))


class DartsEvalNet(nn.Module):
    """The DARTS evaluation network of a genotype (see the module docstring).

    ``__call__(x, train=False, drop_path=0.0)`` on NHWC float images returns the logits; with
    ``train=True`` and ``auxiliary=True`` it returns ``(logits, aux_logits)``. Training needs
    ``rngs={"dropout": key}`` (drop-path) and ``mutable=["batch_stats"]``."""
    cells: Cells
    block_names: tuple = ("normal", "reduce")
    C: int = 36
    num_cells: int = 20
    num_classes: int = 10
    auxiliary: bool = False
    stem_multiplier: int = 3
    kernels: Kernels = Kernels()   # static kernel choices of every op (ops/conv.py)

    def _block_of(self, c: int, red) -> int:
        if tuple(self.block_names) == ("normal", "reduce"):
            return 1 if c in red else 0
        return c

    @nn.compact
    def __call__(self, x, train: bool = False, drop_path=0.0, control_flow: bool = False):
        """``control_flow``: traced inside a scan body (the scanned training loop): the convs take
        the CPU gradient (models/ops/layers.py)."""
        if self.num_cells < 3:
            raise ValueError(f"num_cells must be >= 3 (two reduction cells), got {self.num_cells}")
        if len(self.cells) != len(self.block_names):
            raise ValueError(f"{len(self.cells)} cell blocks for block names {self.block_names}")
        if tuple(self.block_names) != ("normal", "reduce") and len(self.cells) != self.num_cells:
            raise ValueError(f"a unique-cell genotype has {len(self.cells)} cells; num_cells must be "
                             f"{len(self.cells)}, got {self.num_cells}")
        red = reduction_cells(self.num_cells)
        stem = Conv(self.stem_multiplier * self.C, 3, kernels=self.kernels, name="stem")(x, control_flow)
        s0 = s1 = Norm(True, True, name="stem_bn")(stem, train)
        ch, reduction_prev, aux = self.C, False, None
        for c in range(self.num_cells):
            reduction = c in red
            if reduction:
                ch *= 2
            out = EvalCell(self.cells[self._block_of(c, red)], ch, reduction, reduction_prev, self.kernels,
                           name=f"cell{c}")(s0, s1, train, drop_path, control_flow)
            s0, s1, reduction_prev = s1, out, reduction
            if c == 2 * self.num_cells // 3 and self.auxiliary and (train or self.is_initializing()):
                aux = AuxiliaryHead(self.num_classes, name="aux_head")(s1, train)
        logits = nn.Dense(self.num_classes, name="classifier")(jnp.mean(s1, (1, 2)))
        if aux is not None and train:
            return logits, aux
        return logits


def param_count(params, exclude: Sequence[str] = ("aux_head",)) -> int:
    """Parameters of a tree, without the top-level subtrees in ``exclude`` (DARTS reports the network
    without its auxiliary head)."""
    return int(sum(np.size(v) for k, sub in params.items() if k not in exclude
                   for v in jax.tree.leaves(sub)))

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
stand-alone training (``mutable=['batch_stats']``). ``scan_edges=True`` (search supernets) runs
a cell's edges as one scanned edge (two in a reduction cell) over stacked parameters
(``Cell._scanned``, ``edge_groups``; trees convert with
``scan_edge_params`` / ``unscan_edge_params``); ``scan_cells=True`` runs each run of same-shape cells
(``cell_runs``) as one scanned cell (trees convert with ``scan_cell_params`` / ``unscan_cell_params``,
after / before the edge conversion when both are on).
"""
from __future__ import annotations

import re
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnas.models.ops.candidates import DilConv, FactorizedReduce, Identity, Pool, ReLUConvBN, SepConv, Zero, build_op
from jaxnas.models.ops.conv import Kernels, cotangent_barrier
from jaxnas.models.ops.layers import Conv, Norm
from jaxnas.models.ops.sparse_edge import DARTS_KINDS, EdgeOp, rematerialised_switch, switch_edge
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
    kernels: Kernels = Kernels()
    # the edge is a scan body (the scanned edges), where a scan stacks every saved value over its
    # steps: the jitted ops' rematerialised switch, never the sparse edge VJP (which keeps the output)
    scan_body: bool = False

    def setup(self):
        names = self.ops if self.fixed is None else (self.ops[self.fixed],)
        ch = self.channels if self.fixed is not None else self.channels // self.partial_channels
        self.candidates = [build_op(self.op_set, n, ch, self.stride, self.affine, self.track, self.kernels)
                           for n in names]

    def __call__(self, x, w=None, mode: str = "sparse", train: bool = True, control_flow: bool = False):
        """``control_flow``: the edge itself runs in a scan body (the scanned cells and edges)."""
        if self.fixed is None and mode == "dense":  # on CPU: the input's cotangent in one buffer
            # (ops/conv.py; a switch's operand already is one; a discrete DARTS-8 step was unchanged
            # by it, supernet_cost --vs no_barrier)
            x = cotangent_barrier(x, self.kernels.cotangent_barrier)
        if self.fixed is not None:
            return self.candidates[0](x, train, control_flow)
        K = self.partial_channels
        if K == 1:
            return self._mixed(x, w, mode, train, control_flow)
        c = x.shape[-1]
        if c % K or self.channels % K:
            raise ValueError(f"partial_channels={K} must divide the edge's channels ({c} in, "
                             f"{self.channels} out)")
        part, rest = x[..., :c // K], x[..., c // K:]      # PC-DARTS: xtemp, xtemp2
        if self.stride == 2:
            rest = nn.max_pool(rest, (2, 2), (2, 2))
        return channel_shuffle(jnp.concatenate([self._mixed(part, w, mode, train, control_flow), rest], -1), K)

    def _mixed(self, x, w, mode, train, control_flow):
        if mode == "dense":
            out = None
            for k, (name, op) in enumerate(zip(self.ops, self.candidates)):
                if name == "none":
                    continue
                y = w[k].astype(x.dtype) * op(x, train, control_flow)
                out = y if out is None else out + y
            if out is None:  # every op is 'none'
                out = self.candidates[0](x, train, control_flow)
            return out
        idx = jnp.argmax(w)
        edge = self._edge_ops()
        if edge is not None and not self.is_initializing():
            # the search ops (ops/sparse_edge.py): per edge, NAS-Bench-201's a switch whose VJP keeps
            # what the chosen op's backward pass reads; DARTS's (and every scan body's) a
            # rematerialised switch over jitted ops (with kernels.darts_edge_vjp, per edge, the VJP)
            ops, paths = edge
            kernels = []
            for k, op_paths in enumerate(paths):
                for path in op_paths:
                    tree = self.candidates[k].variables["params"]
                    for name in path:
                        tree = tree[name]
                    kernels.append(tree["kernel"].astype(x.dtype))
            darts = any(op.kind in DARTS_KINDS for op in ops)
            vjp = not self.scan_body and (self.kernels.darts_edge_vjp or not darts)
            out = (switch_edge if vjp else rematerialised_switch)(ops, idx, x, tuple(kernels))
            return self._scaled(out, w, idx, x.dtype)
        # remat=True: JAX gives every branch of a differentiated switch the same residual outputs
        # (the union over branches), so without remat the saved activations approach the dense
        # supernet's; with it only the edge input is saved and the chosen op's forward is
        # recomputed in the backward pass (memory of one architecture, one more forward in time).
        if self.is_initializing():  # every op's params; the chosen op's output without a switch (tracing
            # one, remat'd, again at init was ~2 s of a DARTS-8 init's shape trace)
            outs = [self.candidates[k](x, train, control_flow) for k in range(len(self.ops))]
            return self._scaled(jax.lax.select_n(idx, *outs), w, idx, x.dtype)
        branches = [lambda mdl, x, k=k: mdl.candidates[k](x, train, control_flow=True)   # a switch branch
                    for k in range(len(self.ops))]
        if self.remat:
            branches = [nn.checkpoint(b) for b in branches]
        return self._scaled(nn.switch(idx, branches, self, x), w, idx, x.dtype)

    def _scaled(self, out, w, idx, dtype):
        # hooks for tests/analysis: d loss / d output (collection 'perturbations') and the output
        # itself ('intermediates'); both are no-ops unless those collections are requested
        self.sow("intermediates", "op_output", out)
        return self.perturb("op_output", out) * w[idx].astype(dtype)

    def _edge_ops(self):
        """``(ops, paths)``: the candidates as ops/sparse_edge.py's static ops and, per op, the
        module paths of its conv kernels (numbered in this order); None where one is not of its
        kinds (BNs with affine parameters or running statistics) or ``kernels.sparse_edge_vjp`` is off."""
        if not self.kernels.sparse_edge_vjp:
            return None
        ops, paths = [], []
        for c in self.candidates:
            if isinstance(c, (ReLUConvBN, DilConv, SepConv, FactorizedReduce)) and (c.affine or c.track):
                return None
            first = sum(len(p) for p in paths)
            if isinstance(c, Zero):
                op, path = EdgeOp("zero", c.stride), ()
            elif isinstance(c, Identity):
                op, path = EdgeOp("identity"), ()
            elif isinstance(c, Pool) and not c.bn:
                if c.kind != "avg":
                    return None
                op, path = EdgeOp("avg_pool", c.stride, cpu=c.kernels.cpu), ()
            elif isinstance(c, Pool):
                if c.affine or c.track:
                    return None
                op, path = EdgeOp("pool_bn", c.stride, epsilon=Norm.epsilon, cpu=c.kernels.cpu, pool=c.kind), ()
            elif isinstance(c, ReLUConvBN) and c.dilation == 1:
                op, path = EdgeOp("relu_conv_bn", c.stride, first, Norm.epsilon), (("Conv_0",),)
            elif isinstance(c, DilConv):
                op = EdgeOp("dil_conv", c.stride, first, Norm.epsilon, c.kernels.cpu, c.dilation)
                path = (("Conv_0",), ("Conv_1",))
            elif isinstance(c, SepConv):
                op = EdgeOp("sep_conv", c.stride, first, Norm.epsilon, c.kernels.cpu)
                path = tuple((d, conv) for d in ("DilConv_0", "DilConv_1") for conv in ("Conv_0", "Conv_1"))
            elif isinstance(c, FactorizedReduce):
                op, path = EdgeOp("factorized_reduce", 2, first, Norm.epsilon), (("Conv_0",), ("Conv_1",))
            else:
                return None
            ops.append(op)
            paths.append(path)
        return tuple(ops), tuple(paths)


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
    scan_edges: bool = False    # search supernets: one compiled edge per cell (edge_groups)
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, inputs, w=None, mode: str = "sparse", train: bool = True, control_flow: bool = False):
        if self.scan_edges and self.arch is None:
            return self._scanned(inputs, w, mode, train)
        sp = self.space
        states = list(inputs)
        ref = inputs[-1]
        stride = 2 if self.reduction else 1
        node_shape = self._node_shape(ref)
        for e, (j, i) in enumerate(sp.edges):
            if j == len(states):
                states.append(None)
            edge_stride = stride if i < sp.num_input_nodes else 1
            fixed = None if self.arch is None else int(self.arch[e])
            if fixed is not None and sp.ops[fixed] == "none":
                continue  # a discrete net drops 'none' edges
            src = jnp.zeros(node_shape, ref.dtype) if states[i] is None else states[i]  # all-'none' node
            y = MixedEdge(sp.op_set, sp.ops, self.channels, edge_stride, fixed, self.affine, self.track,
                          self.remat, self.partial_channels, self.kernels,
                          name=f"edge_{j}_{i}")(src, None if w is None else w[e], mode, train, control_flow)
            states[j] = y if states[j] is None else states[j] + y
        states = [jnp.zeros(node_shape, ref.dtype) if s is None else s for s in states]
        return self._output(states)

    def _node_shape(self, ref):
        stride = 2 if self.reduction else 1
        return (ref.shape[0], -(-ref.shape[1] // stride), -(-ref.shape[2] // stride), self.channels)

    def _output(self, states):
        if self.concat_output:
            return jnp.concatenate(states[self.space.num_input_nodes:], -1)
        return states[-1]

    def _scanned(self, inputs, w, mode, train):
        """The same cell with its edges as scanned edges over stacked parameters (issue 15: compile
        time grew with the edges), each step reading its source node and adding to its target by
        index (:func:`edge_groups`): the ops are traced and compiled once per group instead of once
        per edge, and every node still sums its edges in the per-edge loop's order. The scan's
        carry is the stack of intermediate nodes; its saved residuals are the edges' inputs."""
        sp = self.space
        ref = inputs[-1]
        nodes = jnp.zeros((sp.num_nodes,) + self._node_shape(ref), ref.dtype)   # intermediate nodes
        bank = jnp.stack(inputs)
        n_in = sp.num_input_nodes
        for name, edge_stride, members in edge_groups(sp, self.reduction):
            srcs = [i for _, _, i in members]   # the group reads its sources from inputs, nodes or either
            reads = "inputs" if max(srcs) < n_in else "nodes" if min(srcs) >= n_in else "both"
            dst = jnp.asarray([j - n_in for _, j, _ in members])
            ws = w[jnp.asarray([e for e, _, _ in members])]
            nodes, _ = _ScannedEdges(sp.op_set, sp.ops, self.channels, edge_stride, self.affine, self.track,
                                     self.remat, self.partial_channels, mode, train, reads, self.kernels,
                                     name=name)(nodes, (jnp.asarray(srcs), dst, ws), bank)
        return self._output(list(inputs) + [nodes[k] for k in range(sp.num_nodes)])


def edge_groups(space: CellSpace, reduction: bool = False):
    """The scanned form's groups of a cell's edges, ``(name, stride, [(edge, j, i), ...])``, each in
    the per-edge loop's order. A normal cell: one group, ``edges``, all of them. A reduction cell:
    ``edges_in``, the edges from the input nodes (stride 2), then ``edges_mid``, those between
    intermediate nodes. So every node sums its edges in that loop's order, and an edge runs after
    every edge into its source. Group ``name``'s parameters stack its edges' on axis 0."""
    members = [(e, j, i) for e, (j, i) in enumerate(space.edges)]
    if not reduction:
        return [("edges", 1, members)]
    n_in = space.num_input_nodes
    return [(name, stride, group) for name, stride, group in
            (("edges_in", 2, [m for m in members if m[2] < n_in]),
             ("edges_mid", 1, [m for m in members if m[2] >= n_in])) if group]


class _EdgeStep(nn.Module):
    """One step of the scanned edges: a :class:`MixedEdge` with weights ``w`` on the cell's node
    ``src`` (an input, in ``bank``, or an intermediate node, in ``nodes``), added to intermediate
    node ``dst``."""
    op_set: str
    ops: tuple[str, ...]
    channels: int
    stride: int
    affine: bool
    track: bool
    remat: bool
    partial_channels: int
    mode: str
    train: bool
    reads: str   # the source nodes: "inputs", "nodes" (intermediate) or "both"
    kernels: Kernels

    @nn.compact
    def __call__(self, nodes, step, bank):
        src, dst, w = step
        n_in = bank.shape[0]
        if self.reads == "inputs":
            x = bank[src]
        elif self.reads == "nodes":
            x = nodes[src - n_in]
        else:   # both have the nodes' shape; one buffer of inputs and nodes in the carry made the
                # DARTS cell's step 1.9x slower (360 vs 193 ms, 64x32x32x16) than this select
            x = jnp.where(src < n_in, bank[jnp.minimum(src, n_in - 1)], nodes[jnp.maximum(src - n_in, 0)])
        edge = MixedEdge(self.op_set, self.ops, self.channels, self.stride, None, self.affine, self.track,
                         self.remat, self.partial_channels, self.kernels, scan_body=True, name="edge")
        y = edge(x, w, self.mode, self.train, control_flow=True)   # a scan body
        return nodes.at[dst].add(y), None


# every collection a MixedEdge may write is stacked per scan step; each step initialised with its own key
_STACKED = {c: 0 for c in ("params", "batch_stats", "intermediates", "perturbations")}
_ScannedEdges = nn.scan(_EdgeStep, variable_axes=_STACKED, split_rngs={"params": True},
                        in_axes=(0, nn.broadcast))


def _regroup_cells(params, space: CellSpace, reductions, prefix, regroup):
    """Each cell of ``params`` holding keys ``prefix*``: those keys replaced by what
    ``regroup(tree, name, members)`` returns for each of its :func:`edge_groups`."""
    out = dict(params)
    for cell, tree in params.items():
        # cell{c} only: a scan_cells group (cells{a}_{b}) is stacked after this conversion, undone before
        if not cell.startswith("cell") or not cell[4:].isdigit() or not any(k.startswith(prefix) for k in tree):
            continue
        new = {k: v for k, v in tree.items() if not k.startswith(prefix)}
        for name, _, members in edge_groups(space, int(cell[4:]) in reductions):
            new.update(regroup(tree, name, members))
        out[cell] = new
    return out


def scan_edge_params(params, space: CellSpace, reductions=()):
    """Per-edge supernet parameters (``cell{c}/edge_{j}_{i}``) -> the scanned form's
    (``cell{c}/<group>/edge``, each group of :func:`edge_groups` stacked on axis 0); ``reductions``:
    the reduction cells' ids."""
    def stack(tree, name, members):
        return {name: {"edge": jax.tree.map(lambda *a: jnp.stack(a),
                                            *[tree[f"edge_{j}_{i}"] for _, j, i in members])}}
    return _regroup_cells(params, space, reductions, "edge_", stack)


def unscan_edge_params(params, space: CellSpace, reductions=()):
    """Inverse of :func:`scan_edge_params`."""
    def unstack(tree, name, members):
        return {f"edge_{j}_{i}": jax.tree.map(lambda a, n=n: a[n], tree[name]["edge"])
                for n, (_, j, i) in enumerate(members)}
    return _regroup_cells(params, space, reductions, "edges", unstack)


def cell_runs(net) -> list[tuple[int, int]]:
    """The runs ``(first, last)`` of cells that ``scan_cells=True`` compiles once (issue 15: compile
    time grew with the number of cells): consecutive cells whose inputs have their output's shape, two
    or more. NAS-Bench-201: every stage's cells. DARTS: cell ``c >= 2`` when neither it nor cell
    ``c - 1`` is a reduction (so ``s0`` comes from a cell of the stage's shape and is preprocessed by
    a 1x1 ReLUConvBN, not a FactorizedReduce): 2 of 8 cells alone in their stage (nothing to scan),
    14 of 20 in three runs."""
    sp = net.space
    if isinstance(net, NasBench201Net):
        n = sp.cells_per_stage
        return [(s * n, s * n + n - 1) for s in range(3)] if n >= 2 else []
    red = reduction_cells(sp.num_cells)
    steady = [c for c in range(2, sp.num_cells) if c not in red and c - 1 not in red]
    runs = []
    for c in steady:
        if runs and runs[-1][1] == c - 1:
            runs[-1] = (runs[-1][0], c)
        else:
            runs.append((c, c))
    return [r for r in runs if r[1] > r[0]]


class _CellStep(nn.Module):
    """One step of the scanned cells: a search cell on the carry (NAS-Bench-201: ``x``; DARTS:
    ``(s0, s1)`` with the cell's two 1x1 preprocessing convolutions, giving ``(s1, out)``)."""
    space: CellSpace
    channels: int
    darts: bool
    track: bool
    remat: bool
    partial_channels: int
    scan_edges: bool
    mode: str
    train: bool
    kernels: Kernels

    @nn.compact
    def __call__(self, carry, w):   # a scan body: control_flow=True (the preprocessing convs' gradient)
        cell = Cell(self.space, self.channels, concat_output=self.darts, track=self.track, remat=self.remat,
                    partial_channels=self.partial_channels, scan_edges=self.scan_edges, kernels=self.kernels,
                    name="cell")
        if not self.darts:
            return cell([carry], w, self.mode, self.train, control_flow=True), None
        s0, s1 = carry
        p0 = ReLUConvBN(self.channels, 1, affine=False, track=self.track, kernels=self.kernels,
                        name="pre0")(s0, self.train, control_flow=True)
        p1 = ReLUConvBN(self.channels, 1, affine=False, track=self.track, kernels=self.kernels,
                        name="pre1")(s1, self.train, control_flow=True)
        return (s1, cell([p0, p1], w, self.mode, self.train, control_flow=True)), None


_ScannedCells = nn.scan(_CellStep, variable_axes=_STACKED, split_rngs={"params": True}, in_axes=0)


def _scanned_runs(net) -> dict:
    """``{first: last}`` of the runs ``net`` scans (none unless ``scan_cells``); discrete nets refuse."""
    if not net.scan_cells:
        return {}
    if net.arch is not None:
        raise ValueError("scan_cells is for search supernets; a discrete net (arch=...) has "
                         "different ops in every cell")
    return dict(cell_runs(net))


def _cell_keys(net, c):
    """A per-cell net's top-level keys of cell ``c``, by their name inside a scanned cell step."""
    pre = {"pre0": f"pre0_{c}", "pre1": f"pre1_{c}"} if isinstance(net, DartsNet) else {}
    return {"cell": f"cell{c}", **pre}


def scan_cell_params(params, net):
    """Per-cell supernet parameters (``cell{c}``, DARTS also ``pre0_{c}``, ``pre1_{c}``) -> the
    ``scan_cells=True`` form (``cells{first}_{last}/{cell,pre0,pre1}``, stacked on axis 0)."""
    out = dict(params)
    for first, last in cell_runs(net):
        group = {}
        for inner in _cell_keys(net, first):
            trees = [out.pop(_cell_keys(net, c)[inner]) for c in range(first, last + 1)]
            group[inner] = jax.tree.map(lambda *a: jnp.stack(a), *trees)
        out[f"cells{first}_{last}"] = group
    return out


def unscan_cell_params(params, net):
    """Inverse of :func:`scan_cell_params`."""
    out = dict(params)
    for first, last in cell_runs(net):
        group = out.pop(f"cells{first}_{last}")
        for inner, tree in group.items():
            for n, c in enumerate(range(first, last + 1)):
                out[_cell_keys(net, c)[inner]] = jax.tree.map(lambda a, n=n: a[n], tree)
    return out


# ---- parameter layouts: per edge / scanned edges, per cell / scanned cells ---------------------------
SCANNED_EDGE_GROUPS = ("edges", "edges_in", "edges_mid")     # edge_groups' names
_CELL_KEY = re.compile(r"cells?\d+(_\d+)?$")                 # cell{c} or a scanned run cells{a}_{b}


def layout_of(net) -> Optional[tuple[bool, bool]]:
    """``(scan_edges, scan_cells)`` of a cell supernet's parameter tree; None for any other net."""
    if not isinstance(net, (NasBench201Net, DartsNet)):
        return None
    return bool(net.scan_edges), bool(net.scan_cells)


def layout_of_paths(paths) -> tuple[bool, bool]:
    """The layout of a stored tree from its key paths (tuples of names, e.g. a checkpoint's metadata):
    scanned edges hold an :func:`edge_groups` name, scanned cells a ``cells{a}_{b}`` key."""
    names = {n for p in paths for n in p}
    return (bool(names & set(SCANNED_EDGE_GROUPS)),
            any(re.fullmatch(r"cells\d+_\d+", str(n)) for n in names))


def _is_supernet_params(x) -> bool:
    return isinstance(x, dict) and any(isinstance(k, str) and _CELL_KEY.match(k) for k in x)


def relayout(tree, net, src: tuple[bool, bool], dst: tuple[bool, bool]):
    """``tree`` (any pytree: a search state, an optimizer state, bare parameters) with every cell
    supernet parameter dict in it (a dict with ``cell{c}`` / ``cells{a}_{b}`` keys; the optimizer's
    moments mirror the parameters) converted from layout ``src`` to ``dst`` (:func:`layout_of`):
    work dirs and warm-ups saved in another layout (``space.scan_edges`` / ``scan_cells``) restore.
    Works on arrays and on ``jax.ShapeDtypeStruct`` alike (under ``jax.eval_shape``)."""
    if tuple(src) == tuple(dst):
        return tree
    sp = net.space
    reds = tuple(reduction_cells(sp.num_cells)) if isinstance(net, DartsNet) else ()

    def convert(p):
        if not _is_supernet_params(p):
            return p
        if src[1]:                 # cells before edges on the way out, after them on the way in
            p = unscan_cell_params(p, net)
        if src[0]:
            p = unscan_edge_params(p, sp, reds)
        if dst[0]:
            p = scan_edge_params(p, sp, reds)
        if dst[1]:
            p = scan_cell_params(p, net)
        return p
    return jax.tree.map(convert, tree, is_leaf=_is_supernet_params)


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
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x, train: bool = True, control_flow: bool = False):
        k = self.kernels
        y = ReLUConvBN(self.features, 3, 2, affine=True, track=self.track, kernels=k)(x, train, control_flow)
        y = ReLUConvBN(self.features, 3, 1, affine=True, track=self.track, kernels=k)(y, train, control_flow)
        sc = nn.avg_pool(x, (2, 2), (2, 2))
        return y + Conv(self.features, 1, kernels=self.kernels)(sc, control_flow)


class NasBench201Net(nn.Module):
    """NAS-Bench-201 TinyNetwork: stem, 3 stages of N cells (C, 2C, 4C) with residual reductions,
    BN-ReLU, global pooling, classifier. Cells repeat one weight block or use one each."""
    space: NasBench201Space
    arch: Optional[tuple[int, ...]] = None
    track: bool = False  # running BN statistics (stand-alone training of a discrete net)
    remat: bool = True   # sparse mode: recompute the chosen op in the backward pass (less memory)
    partial_channels: int = 1   # PC-DARTS partial channel connections K (search supernet only)
    scan_edges: bool = False    # search supernet: a cell's edges compiled once (Cell.scan_edges)
    scan_cells: bool = False    # search supernet: same-shape cells compiled once (cell_runs)
    kernels: Kernels = Kernels()   # static kernel choices of every op (ops/conv.py)

    @nn.compact
    def __call__(self, x, weights=None, mode: str = "sparse", train: bool = True, control_flow: bool = False):
        """``control_flow``: traced inside a scan body (a scanned training loop): the convs take the
        CPU gradient (models/ops/layers.py)."""
        _check_mode(mode)
        sp = self.space
        wb = _block_weights(sp, weights, self.arch)
        affine_cells = self.arch is not None  # discrete nets: affine BN, as the benchmark trains them
        x = Conv(sp.C, 3, kernels=self.kernels)(x, control_flow)
        x = Norm(True, self.track)(x, train)
        c = 0
        runs = _scanned_runs(self)
        for stage in range(3):
            ch = sp.C * 2 ** stage
            if stage:
                x = ResidualReduction(ch, self.track, self.kernels)(x, train, control_flow)
            if c in runs:   # the stage's cells as one scanned cell (cell_runs)
                first, last = c, runs[c]
                ws = jnp.stack([wb[b if sp.num_blocks > 1 else 0] for b in range(first, last + 1)])
                x, _ = _ScannedCells(sp, ch, False, self.track, self.remat, self.partial_channels,
                                     self.scan_edges, mode, train, self.kernels, name=f"cells{first}_{last}")(x, ws)
                c = last + 1
                continue
            for _ in range(sp.cells_per_stage):
                block = c if sp.num_blocks > 1 else 0
                x = Cell(sp, ch, arch=_cell_arch(sp, self.arch, block), affine=affine_cells,
                         track=self.track, remat=self.remat, partial_channels=self.partial_channels,
                         scan_edges=self.scan_edges, kernels=self.kernels, name=f"cell{c}")(
                    [x], None if wb is None else wb[block], mode, train, control_flow)
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
    scan_edges: bool = False    # search supernet: a cell's edges compiled once (Cell.scan_edges)
    scan_cells: bool = False    # search supernet: same-shape cells compiled once (cell_runs)
    kernels: Kernels = Kernels()   # static kernel choices of every op (ops/conv.py)

    @nn.compact
    def __call__(self, x, weights=None, mode: str = "sparse", train: bool = True, control_flow: bool = False):
        """``control_flow``: traced inside a scan body (a scanned training loop): the convs take the
        CPU gradient (models/ops/layers.py)."""
        _check_mode(mode)
        sp = self.space
        wb = _block_weights(sp, weights, self.arch)
        affine = self.arch is not None
        s0 = s1 = Norm(affine, self.track)(Conv(self.stem_multiplier * sp.C, 3, kernels=self.kernels)(x, control_flow),
                                           train)
        red = reduction_cells(sp.num_cells)
        runs = _scanned_runs(self)
        ch, reduction_prev = sp.C, False
        c = 0
        while c < sp.num_cells:
            if c in runs:   # steady-state cells as one scanned cell (cell_runs)
                first, last = c, runs[c]
                ws = jnp.stack([wb[sp.block_of_cell(b)] for b in range(first, last + 1)])
                (s0, s1), _ = _ScannedCells(sp, ch, True, self.track, self.remat, self.partial_channels,
                                            self.scan_edges, mode, train, self.kernels,
                                            name=f"cells{first}_{last}")((s0, s1), ws)
                c, reduction_prev = last + 1, False
                continue
            reduction = c in red
            if reduction:
                ch *= 2
            if reduction_prev:
                p0 = FactorizedReduce(ch, affine, self.track, self.kernels, name=f"pre0_{c}")(s0, train, control_flow)
            else:
                p0 = ReLUConvBN(ch, 1, affine=affine, track=self.track, kernels=self.kernels,
                                name=f"pre0_{c}")(s0, train, control_flow)
            p1 = ReLUConvBN(ch, 1, affine=affine, track=self.track, kernels=self.kernels,
                            name=f"pre1_{c}")(s1, train, control_flow)
            block = sp.block_of_cell(c)
            out = Cell(sp, ch, reduction, concat_output=True, arch=_cell_arch(sp, self.arch, block),
                       affine=affine, track=self.track, remat=self.remat,
                       partial_channels=self.partial_channels, scan_edges=self.scan_edges, kernels=self.kernels,
                       name=f"cell{c}")(
                [p0, p1], None if wb is None else wb[block], mode, train, control_flow)
            s0, s1, reduction_prev = s1, out, reduction
            c += 1
        return nn.Dense(self.num_classes)(jnp.mean(s1, (1, 2)))

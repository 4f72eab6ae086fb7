"""Cell search spaces: NAS-Bench-201 and DARTS.

A cell is a DAG: ``num_input_nodes`` inputs, then intermediate nodes, each the sum of one op per
edge from every earlier node. One decision per edge; decisions are grouped in *blocks*, one block
per distinct cell: a repeated search (one block per cell type: ``cell`` for NAS-Bench-201,
``normal``/``reduce`` for DARTS) or a unique-cell search (one block per cell, as MANAS searches 20
unique cells). Weights ``[D, K]`` reshape block-major to ``[num_blocks, edges_per_cell, K]``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

import jax.numpy as jnp
import numpy as np

from jaxnas.spaces.base import Space
from jaxnas.spaces.op_costs import DARTS_OPS, NB201_OPS, op_param_count


def cell_edges(num_input_nodes: int, num_nodes: int) -> tuple[tuple[int, int], ...]:
    """``(dst, src)`` pairs in the order of the papers: by destination, then source."""
    return tuple((j, i) for j in range(num_input_nodes, num_input_nodes + num_nodes) for i in range(j))


def decode_cell(text: str, num_input_nodes: int, num_nodes: int, op_index: Callable[[int, str], int],
                cell: str = "cell") -> list[int]:
    """The op indices of one cell from its NAS-Bench-201 string ``|op~0|+|op~0|op~1|+...`` (node j
    lists its inputs 0..j-1; edges in :func:`cell_edges` order). ``op_index(d, name)``: the index of
    op ``name`` on the cell's d-th edge (raises on an unknown op); ``cell`` names the cell in errors."""
    nodes = text.strip().split("+")
    if len(nodes) != num_nodes:
        raise ValueError(f"{text!r}: {len(nodes)} nodes, the {cell} has {num_nodes} "
                         f"(format: |op~0|+|op~0|op~1|+...)")
    out = []
    for n, node in enumerate(nodes):
        j = num_input_nodes + n
        items = [s for s in node.strip().strip("|").split("|") if s]
        if len(items) != j:
            raise ValueError(f"{text!r}: node {j} lists {len(items)} inputs, needs {j}")
        for i, item in enumerate(items):
            m = re.fullmatch(r"([A-Za-z0-9_]+)~(\d+)", item)
            if not m or int(m.group(2)) != i:
                raise ValueError(f"{text!r}: entry {item!r} of node {j} must be 'op~{i}'")
            out.append(op_index(len(out), m.group(1)))
    return out


@dataclasses.dataclass(frozen=True)
class CellSpace(Space):
    ops: tuple[str, ...] = ()
    op_set: str = ""
    num_input_nodes: int = 1
    num_nodes: int = 3
    block_names: tuple[str, ...] = ("cell",)
    # linear cost model: param_count(arch) = cost_const + sum_d cost_table[d, arch[d]]
    cost_const: float = 0.0
    cost_table: tuple[tuple[float, ...], ...] = ()

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        return cell_edges(self.num_input_nodes, self.num_nodes)

    @property
    def edges_per_cell(self) -> int:
        return len(self.edges)

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)

    def block_weights(self, weights):
        """``[..., D, K] -> [..., num_blocks, edges_per_cell, K]``."""
        self.check_weights(weights)
        return weights.reshape(weights.shape[:-2] + (self.num_blocks, self.edges_per_cell, weights.shape[-1]))

    @property
    def zero_op(self) -> int | None:
        return self.ops.index("none") if "none" in self.ops else None

    # ---- strings: NAS-Bench-201 format per block, blocks as 'name:' ... ';' -------------------
    def _encode_block(self, ops_idx) -> str:
        parts, k = [], 0
        for j in range(self.num_input_nodes, self.num_input_nodes + self.num_nodes):
            node = []
            for i in range(j):
                node.append(f"{self.ops[int(ops_idx[k])]}~{i}")
                k += 1
            parts.append("|" + "|".join(node) + "|")
        return "+".join(parts)

    def _decode_block(self, text: str, block: str) -> list[int]:
        def op_index(d: int, name: str) -> int:
            if name not in self.ops:
                raise ValueError(f"{text!r}: unknown op {name!r}; valid: {', '.join(self.ops)}")
            return self.ops.index(name)
        return decode_cell(text, self.num_input_nodes, self.num_nodes, op_index, f"{block} cell")

    def encode(self, arch) -> str:
        a = self.check_arch(arch).reshape(self.num_blocks, self.edges_per_cell)
        if self.num_blocks == 1:
            return self._encode_block(a[0])
        return ";".join(f"{b}:{self._encode_block(x)}" for b, x in zip(self.block_names, a))

    def decode(self, text: str) -> np.ndarray:
        if self.num_blocks == 1:
            return np.array(self._decode_block(text, self.block_names[0]), np.int32)
        parts = [p for p in text.split(";") if p.strip()]
        names = [p.partition(":")[0].strip() for p in parts]
        if names != list(self.block_names):
            raise ValueError(f"{text!r}: blocks {names}, expected {list(self.block_names)} "
                             f"(format: 'normal:|op~0|+...;reduce:|op~0|+...')")
        return np.array(sum((self._decode_block(p.partition(":")[2], b)
                             for p, b in zip(parts, self.block_names)), []), np.int32)

    # ---- costs ---------------------------------------------------------------------------------
    def param_count(self, arch) -> jnp.ndarray:
        """Parameter count of the network the space describes, vectorised over ``int[..., D]``."""
        table = jnp.asarray(self.cost_table, jnp.float32)
        arch = jnp.asarray(arch)
        per_edge = jnp.take_along_axis(jnp.broadcast_to(table, arch.shape + table.shape[-1:]),
                                       arch[..., None], -1)[..., 0]
        return self.cost_const + jnp.sum(per_edge, -1)

    # ---- DARTS genotype ------------------------------------------------------------------------
    def genotype(self, weights, k: int = 2):
        """DARTS derivation: per node the ``k`` inputs with the strongest non-zero op, each with its
        strongest non-zero op. Returns ``{block: [(op, src), ...]}`` (DARTS ``Genotype`` lists)."""
        w = np.asarray(self.block_weights(np.asarray(weights)))
        zero = self.zero_op
        out = {}
        for b, name in enumerate(self.block_names):
            gene, e = [], 0
            for j in range(self.num_input_nodes, self.num_input_nodes + self.num_nodes):
                rows = w[b, e:e + j].copy()
                if zero is not None:
                    rows[:, zero] = -np.inf
                strength = rows.max(-1)
                for i in np.argsort(-strength, kind="stable")[:k]:  # strongest first, as DARTS
                    gene.append((self.ops[int(rows[i].argmax())], int(i)))
                e += j
            out[name] = gene
        return out

    def genotype_string(self, arch) -> str:
        """``normal=[(op, src), ...] reduce=[...]`` of an architecture whose dropped edges are 'none'
        (as DARTS prints its ``Genotype``)."""
        g = self.genotype(self.one_hot(self.check_arch(arch)))
        return " ".join(f"{b}={g[b]}" for b in self.block_names)

    def genotype_to_arch(self, genotype: dict) -> np.ndarray:
        """The architecture whose unselected edges are 'none' (inverse of ``genotype`` on archs)."""
        if self.zero_op is None:
            raise ValueError("genotype_to_arch needs a 'none' op in the space")
        arch = np.full((self.num_blocks, self.edges_per_cell), self.zero_op, np.int32)
        for b, name in enumerate(self.block_names):
            if name not in genotype:
                raise ValueError(f"genotype lacks block {name!r}; has {sorted(genotype)}")
            node_start = {j: sum(range(self.num_input_nodes, j)) for j in
                          range(self.num_input_nodes, self.num_input_nodes + self.num_nodes)}
            for pos, (op, src) in enumerate(genotype[name]):
                j = self.num_input_nodes + pos // 2
                arch[b, node_start[j] + src] = self.ops.index(op)
        return arch.reshape(-1)


def _cell_space(ops, op_set, num_input_nodes, num_nodes, block_names, cost_const, cost_rows):
    edges = cell_edges(num_input_nodes, num_nodes)
    names = tuple(f"{b}:{j}<-{i}" if len(block_names) > 1 else f"{j}<-{i}"
                  for b in block_names for (j, i) in edges)
    return dict(decision_names=names, choices=tuple(tuple(ops) for _ in names), ops=tuple(ops),
                op_set=op_set, num_input_nodes=num_input_nodes, num_nodes=num_nodes,
                block_names=tuple(block_names), cost_const=float(cost_const),
                cost_table=tuple(tuple(float(c) for c in row) for row in cost_rows))


@dataclasses.dataclass(frozen=True)
class NasBench201Space(CellSpace):
    """NAS-Bench-201 cell: 4 nodes, 6 edges, 5 ops; strings ``|nor_conv_3x3~0|+|...|``.

    ``param_count`` is the benchmark's TinyNetwork (C, N cells per stage, 3 stages, affine BN).
    """
    C: int = 16
    cells_per_stage: int = 5
    num_classes: int = 10

    @classmethod
    def create(cls, C: int = 16, cells_per_stage: int = 5, num_classes: int = 10,
               unique_cells: bool = False, ops=NB201_OPS) -> "NasBench201Space":
        widths = [C * 2 ** s for s in range(3) for _ in range(cells_per_stage)]
        blocks = tuple(f"cell{c}" for c in range(len(widths))) if unique_cells else ("cell",)
        # stem conv+BN, two residual reduction blocks, last BN, classifier
        const = 9 * 3 * C + 2 * C + 2 * 4 * C + 4 * C * num_classes + num_classes
        for c in (C, 2 * C):
            const += 9 * c * 2 * c + 4 * c + 9 * 4 * c * c + 4 * c + c * 2 * c
        edges = cell_edges(1, 3)
        rows = []
        for b in range(len(blocks)):
            cells = [widths[b]] if unique_cells else widths
            for _ in edges:
                rows.append([sum(op_param_count("nb201", op, w, 1, True) for w in cells) for op in ops])
        return cls(**_cell_space(ops, "nb201", 1, 3, blocks, const, rows), C=C,
                   cells_per_stage=cells_per_stage, num_classes=num_classes)

    @property
    def cell_channels(self) -> tuple[int, ...]:
        return tuple(self.C * 2 ** s for s in range(3) for _ in range(self.cells_per_stage))


@dataclasses.dataclass(frozen=True)
class DartsSpace(CellSpace):
    """DARTS CNN cell: 2 input nodes, 4 intermediate nodes, 14 edges, 8 ops; normal and reduction
    cells, repeated (2 blocks) or unique (one block per cell). Reductions at 1/3 and 2/3 depth.

    ``param_count`` counts the searchable ops of the search network (C, num_cells; BN without
    affine parameters as in search) — the part the architecture changes.
    """
    C: int = 16
    num_cells: int = 8

    @classmethod
    def create(cls, C: int = 16, num_cells: int = 8, unique_cells: bool = False,
               ops=DARTS_OPS) -> "DartsSpace":
        if num_cells < 3:
            raise ValueError(f"num_cells must be >= 3 (two reduction cells), got {num_cells}")
        red = reduction_cells(num_cells)
        chans, c = [], C
        for i in range(num_cells):
            if i in red:
                c *= 2
            chans.append(c)
        edges = cell_edges(2, 4)
        if unique_cells:
            blocks = tuple(f"cell{i}" for i in range(num_cells))
        else:
            blocks = ("normal", "reduce")
        rows = []
        for b in range(len(blocks)):
            cells = [b] if unique_cells else [i for i in range(num_cells) if (i in red) == (b == 1)]
            for (j, i) in edges:
                rows.append([sum(op_param_count("darts", op, chans[cell], 2 if (cell in red and i < 2) else 1,
                                                False) for cell in cells) for op in ops])
        return cls(**_cell_space(ops, "darts", 2, 4, blocks, 0.0, rows), C=C, num_cells=num_cells)

    @property
    def unique_cells(self) -> bool:
        return self.num_blocks != 2 or self.block_names != ("normal", "reduce")

    def derive(self, scores, exclude=(), inputs_per_node: int = 2) -> jnp.ndarray:
        """The DARTS genotype as an architecture (DARTS sec. 2.4): per edge the strongest non-zero op;
        per node the ``inputs_per_node`` incoming edges with the strongest such op are kept (ties: the
        lower source, as DARTS's stable sort) and every other edge becomes 'none'. ``exclude`` also
        removes other ops from the choice. Traceable; ``genotype`` is the same rule on the host."""
        zero = self.zero_op
        ex = tuple(exclude) + (("none",) if zero is not None else ())
        m = jnp.asarray(self.derive_mask(ex))
        s = jnp.where(m, jnp.asarray(scores, jnp.float32), -jnp.inf)
        op = jnp.argmax(s, -1).astype(jnp.int32)
        if zero is None:
            return op
        strength = jnp.max(s, -1).reshape(self.num_blocks, self.edges_per_cell)
        keep, e = [], 0
        for j in range(self.num_input_nodes, self.num_input_nodes + self.num_nodes):
            st = strength[:, e:e + j]                                    # [blocks, j]
            # rank of each source among the node's inputs: stronger first, lower index on ties
            better = (st[:, None, :] > st[:, :, None]) | (
                (st[:, None, :] == st[:, :, None]) & (jnp.arange(j)[None, :] < jnp.arange(j)[:, None]))
            keep.append(jnp.sum(better, -1) < inputs_per_node)
            e += j
        keep = jnp.concatenate(keep, -1).reshape(-1)
        return jnp.where(keep, op, zero).astype(jnp.int32)

    def describe(self, arch) -> dict:
        out = super().describe(arch)
        if self.zero_op is not None:
            out["genotype"] = self.genotype_string(arch)
        return out

    def block_of_cell(self, cell: int) -> int:
        if self.unique_cells:
            return cell
        return 1 if cell in reduction_cells(self.num_cells) else 0


def reduction_cells(num_cells: int) -> tuple[int, int]:
    return (num_cells // 3, 2 * num_cells // 3)

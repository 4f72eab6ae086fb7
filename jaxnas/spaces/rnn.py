"""The recurrent cell space of AdvantageNAS sec. 5.3 / App. E (after the DARTS RNN cell).

Input node 0 mixes the word embedding ``x_e`` and the previous hidden state ``h``; intermediate
nodes ``1..N`` take an edge from every earlier node (``i -> j`` for ``i < j <= N``: 6 edges for
N = 3); the cell output (node N+1, the next ``h``) is the mean of the intermediate nodes. One
decision per edge: the activation ``act`` applied after the edge's linear map,

    y_i = x_Q(i) + c_i * (act(W^h_i x_Q(i)) - x_Q(i)),   c_i = sigmoid(W^c_i x_Q(i))   (App. E)

with ``act`` in {none (zero), tanh, relu, sigmoid, identity} (sec. 5.3: |J| = 5). The zero
activation keeps the gate: its edge is ``(1 - c_i) * x_Q(i)`` and has no ``W^h``.

Strings: the NAS-Bench-201 form over the cell's nodes, ``|tanh~0|+|relu~0|identity~1|+|...|``
(node j lists its inputs 0..j-1). The full network (App. E's macro skeleton) is embedding ->
cell -> linear decoder; ``param_count`` counts all of it.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxnas.spaces.base import Space
from jaxnas.spaces.cells import cell_edges, decode_cell

RNN_OPS = ("none", "tanh", "relu", "sigmoid", "identity")   # DARTS rnn/genotypes.py order


@dataclasses.dataclass(frozen=True)
class RNNCellSpace(Space):
    """``num_nodes`` intermediate nodes, one decision per edge ``j <- i`` (``i < j``).

    ``vocab_size``, ``emb_size`` and ``hidden_size`` size the whole language model (embedding
    ``V x E``, input node ``(E + H) x 2H``, per edge ``W^c, W^h: H x H``, decoder ``H x V`` + bias).
    """
    ops: tuple[str, ...] = RNN_OPS
    num_nodes: int = 3
    vocab_size: int = 10000
    emb_size: int = 300
    hidden_size: int = 300

    @classmethod
    def create(cls, num_nodes: int = 3, vocab_size: int = 10000, emb_size: int = 300,
               hidden_size: int = 300, ops=RNN_OPS) -> "RNNCellSpace":
        ops = tuple(ops)
        unknown = [o for o in ops if o not in RNN_OPS]
        if unknown or not ops:
            raise ValueError(f"recurrent cell ops {unknown or ops}: choose from {RNN_OPS}")
        for name, v in (("num_nodes", num_nodes), ("vocab_size", vocab_size), ("emb_size", emb_size),
                        ("hidden_size", hidden_size)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        edges = cell_edges(1, num_nodes)
        return cls(decision_names=tuple(f"{j}<-{i}" for j, i in edges), choices=(ops,) * len(edges),
                   ops=ops, num_nodes=int(num_nodes), vocab_size=int(vocab_size), emb_size=int(emb_size),
                   hidden_size=int(hidden_size))

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """``(dst, src)`` per decision, by destination then source."""
        return cell_edges(1, self.num_nodes)

    @property
    def zero_op(self):
        return self.ops.index("none") if "none" in self.ops else None

    # ---- strings -------------------------------------------------------------------------------
    def encode(self, arch) -> str:
        a = self.check_arch(arch)
        parts, k = [], 0
        for j in range(1, self.num_nodes + 1):
            parts.append("|" + "|".join(f"{self.ops[int(a[k + i])]}~{i}" for i in range(j)) + "|")
            k += j
        return "+".join(parts)

    def decode(self, text: str) -> np.ndarray:
        # node j lists its inputs 0..j-1; one input node (node 0)
        return np.array(decode_cell(text, 1, self.num_nodes, self.choice_index), np.int32)

    # ---- costs ---------------------------------------------------------------------------------
    @property
    def fixed_params(self) -> int:
        """Parameters every architecture has: embedding, input node, decoder (weights + bias)."""
        V, E, H = self.vocab_size, self.emb_size, self.hidden_size
        return V * E + (E + H) * 2 * H + H * V + V

    def edge_params(self) -> np.ndarray:
        """``[K]``: parameters of one edge per op: ``W^c`` and ``W^h`` (``W^c`` only for 'none')."""
        H = self.hidden_size
        return np.array([H * H if op == "none" else 2 * H * H for op in self.ops], np.float64)

    def param_count(self, arch) -> jnp.ndarray:
        """Parameters of the discrete language model of ``int[..., D]`` (vectorised)."""
        table = jnp.asarray(self.edge_params(), jnp.float32)
        return self.fixed_params + jnp.sum(table[jnp.asarray(arch)], -1)

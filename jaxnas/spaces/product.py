"""Product spaces of named sub-spaces: one *agent* per module of an ML pipeline (MA2ML).

MA2ML (poster ``shared/papers/002``, "Joint optimization") makes a pipeline the joint action of n
agents, AUG (data augmentation), NAS (architecture) and HPO (hyper-parameters), with a factorised
policy ``pi(A|S) = prod_i pi_i(A_i|S_i)``. :class:`ProductSpace` concatenates the decisions of its
sub-spaces, so the engine and every strategy see one ordinary :class:`~jaxnas.spaces.base.Space`
(``[D, K]`` with a ragged mask: sub-spaces with fewer choices are masked), and it keeps the agent
boundaries (:attr:`ProductSpace.agent_slices`) for the strategies that assign credit per agent. A
categorical policy per decision is then a product over agents of products over each agent's own
decisions (each agent's policy factorises over its decisions; choice documented in docs/guides/ma2ml.md).

The agents' spaces:

- :class:`AugSpace` -- an AutoAugment policy (Cubuk et al. 2019, sec. 3): ``num_subpolicies``
  sub-policies of two ``(op, probability, magnitude)`` triples; probabilities on AutoAugment's 11
  values ``0.0, 0.1, ..., 1.0``, magnitudes on its 10 integers ``0..9``; the 15 image ops the issue
  lists (AutoAugment's 16 without SamplePairing, which mixes two images). The ops are
  :mod:`jaxnas.data.augment`.
- the NAS agent: any space (NAS-Bench-201 cell, TabNAS MLP widths); its FLOPs are analytic
  (:func:`nb201_flops_table`, checked against XLA's ``cost_analysis`` in tests).
- :class:`HPOSpace` -- named discrete grids (learning rate, weight decay, label smoothing, ...).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from jaxnas.spaces.base import Space
from jaxnas.spaces.cells import NasBench201Space
from jaxnas.spaces.mlp import MLPSpace

# AutoAugment's op list (Cubuk et al. 2019, App. A.1 table), without SamplePairing
AUG_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "AutoContrast", "Invert",
           "Equalize", "Solarize", "Posterize", "Contrast", "Color", "Brightness", "Sharpness", "Cutout")
AUG_PROBS = tuple(round(0.1 * i, 1) for i in range(11))     # AutoAugment: 11 uniform probabilities
AUG_MAGNITUDES = tuple(range(10))                            # AutoAugment: 10 uniform magnitudes
SEP = " # "                                                  # between agents in encode()


@dataclasses.dataclass(frozen=True)
class AugSpace(Space):
    """An AutoAugment policy: ``num_subpolicies`` x 2 decisions ``op``, ``prob``, ``mag``.

    Decision order per sub-policy ``s`` and slot ``j``: ``p{s}.op{j}``, ``p{s}.prob{j}``,
    ``p{s}.mag{j}``. Strings: ``ShearX:0.9:7+Invert:0.2:3/...`` (sub-policies joined by ``/``)."""
    num_subpolicies: int = 5
    ops: tuple[str, ...] = AUG_OPS
    probs: tuple[float, ...] = AUG_PROBS
    magnitudes: tuple[int, ...] = AUG_MAGNITUDES

    @classmethod
    def create(cls, num_subpolicies: int = 5, ops: Sequence[str] = AUG_OPS,
               probs: Sequence[float] = AUG_PROBS, magnitudes: Sequence[int] = AUG_MAGNITUDES) -> "AugSpace":
        if num_subpolicies < 1:
            raise ValueError(f"num_subpolicies must be >= 1, got {num_subpolicies}")
        unknown = [o for o in ops if o not in AUG_OPS]
        if unknown or not ops:
            raise ValueError(f"unknown augmentation op(s) {unknown}; valid: {', '.join(AUG_OPS)}")
        if any(not 0.0 <= p <= 1.0 for p in probs) or not probs:
            raise ValueError(f"probabilities must lie in [0, 1], got {tuple(probs)}")
        if any(not 0 <= m <= 9 for m in magnitudes) or not magnitudes:
            raise ValueError(f"magnitudes must be integers 0..9 (AutoAugment's scale), got {tuple(magnitudes)}")
        names, choices = [], []
        for s in range(num_subpolicies):
            for j in range(2):
                names += [f"p{s}.op{j}", f"p{s}.prob{j}", f"p{s}.mag{j}"]
                choices += [tuple(ops), tuple(f"{p:.1f}" for p in probs), tuple(str(int(m)) for m in magnitudes)]
        return cls(decision_names=tuple(names), choices=tuple(choices), num_subpolicies=int(num_subpolicies),
                   ops=tuple(ops), probs=tuple(float(p) for p in probs),
                   magnitudes=tuple(int(m) for m in magnitudes))

    def policy(self, arch):
        """``(op int32[..., S, 2], prob float32[..., S, 2], magnitude float32[..., S, 2])``: indices into
        :data:`AUG_OPS` (the global op list), probabilities and magnitudes 0..9. Traceable."""
        a = jnp.asarray(arch).reshape(jnp.shape(arch)[:-1] + (self.num_subpolicies, 2, 3))
        op_ids = jnp.asarray([AUG_OPS.index(o) for o in self.ops], jnp.int32)
        return (op_ids[a[..., 0]], jnp.asarray(self.probs, jnp.float32)[a[..., 1]],
                jnp.asarray(self.magnitudes, jnp.float32)[a[..., 2]])

    def encode(self, arch) -> str:
        a = self.check_arch(arch).reshape(self.num_subpolicies, 2, 3)
        return "/".join("+".join(f"{self.ops[o]}:{self.probs[p]:.1f}:{self.magnitudes[m]}" for o, p, m in sub)
                        for sub in a)

    def decode(self, text: str) -> np.ndarray:
        subs = text.strip().split("/")
        if len(subs) != self.num_subpolicies:
            raise ValueError(f"{text!r}: {len(subs)} sub-policies, the space has {self.num_subpolicies} "
                             f"(format: Op:prob:mag+Op:prob:mag/...)")
        out = []
        for sub in subs:
            items = sub.split("+")
            if len(items) != 2:
                raise ValueError(f"{sub!r}: a sub-policy has 2 ops joined by '+'")
            for item in items:
                parts = item.split(":")
                if len(parts) != 3:
                    raise ValueError(f"{item!r}: write Op:prob:mag, e.g. ShearX:0.9:7")
                op, p, m = parts
                if op not in self.ops:
                    raise ValueError(f"{item!r}: unknown op {op!r}; valid: {', '.join(self.ops)}")
                pi = [i for i, q in enumerate(self.probs) if abs(q - float(p)) < 1e-6]
                if not pi or not m.isdigit() or int(m) not in self.magnitudes:
                    raise ValueError(f"{item!r}: probability must be one of {self.probs} and magnitude "
                                     f"one of {self.magnitudes}")
                out += [self.ops.index(op), pi[0], self.magnitudes.index(int(m))]
        return np.asarray(out, np.int32)


@dataclasses.dataclass(frozen=True)
class HPOSpace(Space):
    """Named discrete hyper-parameter grids; ``values(arch)`` gives the floats. Strings as the base
    space: ``lr=0.1,weight_decay=0.0005``."""
    grids: tuple[tuple[float, ...], ...] = ()

    @classmethod
    def create(cls, grids: Mapping[str, Sequence[float]]) -> "HPOSpace":
        if not grids:
            raise ValueError("an HPO space needs at least one grid, e.g. {'lr': (0.01, 0.1)}")
        names, vals = [], []
        for name, g in grids.items():
            g = tuple(float(v) for v in g)
            if not g or len(set(g)) != len(g):
                raise ValueError(f"hyper-parameter {name!r}: its grid {g} must be non-empty without repeats")
            names.append(str(name))
            vals.append(g)
        return cls(decision_names=tuple(names), choices=tuple(tuple(f"{v:g}" for v in g) for g in vals),
                   grids=tuple(vals))

    def index(self, name: str) -> int:
        if name not in self.decision_names:
            raise ValueError(f"no hyper-parameter {name!r}; the grids are {', '.join(self.decision_names)}")
        return self.decision_names.index(name)

    def values(self, arch) -> jnp.ndarray:
        """``float32[..., H]``: the chosen value of every grid. Traceable."""
        t = np.zeros(self.shape, np.float32)
        for d, g in enumerate(self.grids):
            t[d, :len(g)] = g
        arch = jnp.asarray(arch)
        return jnp.asarray(t)[jnp.arange(self.num_decisions), arch]

    def value(self, arch, name: str, default: float | None = None) -> jnp.ndarray:
        if name not in self.decision_names and default is not None:
            return jnp.full(jnp.shape(arch)[:-1], default, jnp.float32)
        return self.values(arch)[..., self.index(name)]


# ---- FLOPs of the NAS agents ---------------------------------------------------------------------
def valid_taps(n: int, k: int, stride: int = 1) -> int:
    """Multiply-adds per channel pair along one axis of a 'same' convolution (symmetric padding
    ``(k-1)//2``) that read a real input, not padding: what XLA's ``cost_analysis`` counts."""
    p = (k - 1) // 2
    out = (n + 2 * p - k) // stride + 1
    return sum(1 for i in range(out) for j in range(k) if 0 <= i * stride - p + j < n)


def _conv_flops(h: int, w: int, k: int, cin: int, cout: int, stride: int = 1) -> float:
    return 2.0 * valid_taps(h, k, stride) * valid_taps(w, k, stride) * cin * cout


def _nb201_op_flops(op: str, c: int, h: int, w: int) -> float:
    """FLOPs (2 per multiply-add that reads a real input) of one NB201 op, stride 1."""
    if op.startswith("nor_conv_"):
        return _conv_flops(h, w, int(op[-1]), c, c)
    if op == "avg_pool_3x3":
        return float(valid_taps(h, 3) * valid_taps(w, 3) * c)
    return 0.0                                   # none, skip_connect


def nb201_flops_table(space: NasBench201Space, image_hw=(32, 32), in_channels: int = 3):
    """The NAS-Bench-201 network's forward FLOPs per image as ``const + sum_d table[d, arch[d]]``.

    Counted: convolutions and the classifier, 2 FLOPs per multiply-add that reads a real input (not
    'same' padding, as XLA counts them), average pools one per valid window element; not counted:
    BN, ReLU, additions (XLA counts them; see tests). Returns ``(const float, table float64[D, K])``."""
    H, W = int(image_hw[0]), int(image_hw[1])
    C, N = space.C, space.cells_per_stage
    sizes = [(H, W)]
    for _ in range(2):
        H, W = -(-H // 2), -(-W // 2)
        sizes.append((H, W))
    const = _conv_flops(*sizes[0], 3, in_channels, C)                  # stem 3x3
    for s in (1, 2):                                                   # residual reductions
        c_in, c = C * 2 ** (s - 1), C * 2 ** s
        (h0, w0), (h1, w1) = sizes[s - 1], sizes[s]
        const += _conv_flops(h0, w0, 3, c_in, c, 2) + _conv_flops(h1, w1, 3, c, c) \
            + _conv_flops(h1, w1, 1, c_in, c) + 4.0 * c_in * h1 * w1   # + 2x2 avg pool shortcut
    const += 2.0 * 4 * C * space.num_classes                           # classifier
    cells = [(C * 2 ** s,) + sizes[s] for s in range(3) for _ in range(N)]
    table = np.zeros(space.shape, np.float64)
    for b in range(space.num_blocks):
        members = [cells[b]] if space.num_blocks > 1 else cells
        for e in range(space.edges_per_cell):
            d = b * space.edges_per_cell + e
            for k, op in enumerate(space.ops):
                table[d, k] = sum(_nb201_op_flops(op, c, h, w) for c, h, w in members)
    return const, table


def mlp_flops(space: MLPSpace, arch) -> jnp.ndarray:
    """Forward FLOPs per example of an MLP (2 per multiply-add), vectorised over ``int[..., L]``."""
    w = space.arch_widths(arch).astype(jnp.float32)
    fan_in = jnp.concatenate([jnp.full(w.shape[:-1] + (1,), float(space.num_inputs)), w], -1)
    fan_out = jnp.concatenate([w, jnp.full(w.shape[:-1] + (1,), float(space.num_outputs))], -1)
    return 2.0 * jnp.sum(fan_in * fan_out, -1)


# ---- the product -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ProductSpace(Space):
    """The decisions of named sub-spaces (agents), concatenated in order.

    ``agent_slices[i] = (start, stop)``: agent i's decisions. ``nas``: the name of the agent whose
    architecture has a cost model (FLOPs, parameters), or "" for none. ``image_hw``/``in_channels``:
    the input the cell FLOPs are counted for."""
    agents: tuple[str, ...] = ()
    subspaces: tuple[Space, ...] = ()
    nas: str = ""
    image_hw: tuple[int, int] = (32, 32)
    in_channels: int = 3

    @classmethod
    def create(cls, agents, nas: str | None = None, image_hw=(32, 32), in_channels: int = 3) -> "ProductSpace":
        """``agents``: ``{name: space}`` or ``[(name, space), ...]`` in order. ``nas``: the agent with
        the cost model (default: the one called ``"nas"`` if any)."""
        items = list(agents.items()) if isinstance(agents, Mapping) else [tuple(a) for a in agents]
        if not items:
            raise ValueError("a product space needs at least one agent")
        names = [str(n) for n, _ in items]
        if len(set(names)) != len(names) or any(not n or "/" in n for n in names):
            raise ValueError(f"agent names must be distinct, non-empty and without '/': {names}")
        for n, s in items:
            if not isinstance(s, Space):
                raise ValueError(f"agent {n!r}: {type(s).__name__} is not a Space")
            if isinstance(s, ProductSpace):
                raise ValueError(f"agent {n!r}: nested product spaces are not supported")
        nas = ("nas" if "nas" in names else "") if nas is None else nas
        if nas and nas not in names:
            raise ValueError(f"nas={nas!r} is not an agent; agents: {names}")
        dn = tuple(f"{n}/{d}" for n, s in items for d in s.decision_names)
        ch = tuple(c for _, s in items for c in s.choices)
        return cls(decision_names=dn, choices=ch, agents=tuple(names), subspaces=tuple(s for _, s in items),
                   nas=nas, image_hw=(int(image_hw[0]), int(image_hw[1])), in_channels=int(in_channels))

    # ---- agents --------------------------------------------------------------------------------
    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def agent_slices(self) -> tuple[tuple[int, int], ...]:
        out, start = [], 0
        for s in self.subspaces:
            out.append((start, start + s.num_decisions))
            start += s.num_decisions
        return tuple(out)

    @property
    def agent_of_decision(self) -> np.ndarray:
        """``int32[D]``: the agent of every decision."""
        return np.concatenate([np.full(s.num_decisions, i, np.int32) for i, s in enumerate(self.subspaces)])

    def agent_index(self, name: str) -> int:
        if name not in self.agents:
            raise ValueError(f"no agent {name!r}; agents: {', '.join(self.agents)}")
        return self.agents.index(name)

    def sub(self, name: str) -> Space:
        return self.subspaces[self.agent_index(name)]

    def agent_actions(self, i: int) -> int:
        """Joint actions of agent i (the product of its decisions' choice counts)."""
        return math.prod(len(c) for c in self.subspaces[i].choices)

    def split(self, arch, name: str):
        """Agent ``name``'s decisions of ``arch`` (``int[..., D]`` -> ``int[..., D_i]``); traceable."""
        s, e = self.agent_slices[self.agent_index(name)]
        return arch[..., s:e]

    def join(self, parts: Mapping[str, Sequence[int]]) -> np.ndarray:
        missing = [a for a in self.agents if a not in parts]
        if missing:
            raise ValueError(f"join: no decisions for agent(s) {missing}")
        return np.concatenate([self.subspaces[i].check_arch(parts[a]) for i, a in enumerate(self.agents)])

    # ---- strings -------------------------------------------------------------------------------
    def encode(self, arch) -> str:
        a = self.check_arch(arch)
        return SEP.join(f"{n}: {s.encode(a[i:j])}" for n, s, (i, j) in zip(self.agents, self.subspaces,
                                                                           self.agent_slices))

    def decode(self, text: str) -> np.ndarray:
        parts = text.split(SEP)
        if len(parts) != self.num_agents:
            raise ValueError(f"{text!r}: {len(parts)} parts, the space has {self.num_agents} agents "
                             f"({', '.join(self.agents)}), written 'name: ...' joined by {SEP!r}")
        out = {}
        for n, p in zip(self.agents, parts):
            head, _, body = p.partition(": ")
            if head.strip() != n:
                raise ValueError(f"{text!r}: expected agent {n!r}, got {head.strip()!r}")
            out[n] = self.sub(n).decode(body)
        return self.join(out)

    # ---- costs ---------------------------------------------------------------------------------
    def _nas(self):
        if not self.nas:
            raise ValueError("this product space has no NAS agent with a cost model (ProductSpace.create(nas=...))")
        return self.sub(self.nas)

    def flops(self, arch) -> jnp.ndarray:
        """Forward FLOPs per example of the NAS agent's network, vectorised over ``int[..., D]``."""
        sub, a = self._nas(), self.split(jnp.asarray(arch), self.nas)
        if isinstance(sub, NasBench201Space):
            const, table = nb201_flops_table(sub, self.image_hw, self.in_channels)
            t = jnp.asarray(table, jnp.float32)
            return const + jnp.sum(jnp.take_along_axis(jnp.broadcast_to(t, a.shape + t.shape[-1:]),
                                                       a[..., None], -1)[..., 0], -1)
        if isinstance(sub, MLPSpace):
            return mlp_flops(sub, a)
        raise ValueError(f"no FLOPs model for a {type(sub).__name__} NAS agent")

    def param_count(self, arch) -> jnp.ndarray:
        return self._nas().param_count(self.split(jnp.asarray(arch), self.nas))

    def describe(self, arch) -> dict:
        a = self.check_arch(arch)
        out = {"arch": self.encode(a), "arch_indices": a.tolist(),
               "agents": {n: s.encode(a[i:j]) for n, s, (i, j) in zip(self.agents, self.subspaces, self.agent_slices)}}
        if self.nas and hasattr(self._nas(), "param_count"):
            out["param_count"] = float(self.param_count(a))
        if self.nas:
            try:
                out["flops"] = float(self.flops(a))
            except ValueError:
                pass
        return out

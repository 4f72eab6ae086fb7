"""The search-space protocol: D categorical decisions of up to K choices each.

An architecture is ``int32[D]`` (the chosen index per decision); architecture weights are
``float[D, K]``. Ragged spaces (decisions with fewer than K choices) carry a ``[D, K]`` validity
mask; strategies keep the probability of masked choices at exactly zero.

Spaces are frozen dataclasses of tuples, so they are hashable and can be passed to ``jax.jit`` as
static arguments.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -1e9  # logit given to invalid choices (finite: keeps softmax gradients NaN-free)


@dataclasses.dataclass(frozen=True)
class Space:
    """A generic categorical space; subclasses add encodings and cost functions.

    Attributes:
      decision_names: one name per decision (edge ``"3<-1"``, layer ``"layer2"``, ...).
      choices: per decision, the names of its choices (op names, widths as strings, ...).
    """

    decision_names: tuple[str, ...]
    choices: tuple[tuple[str, ...], ...]

    def __post_init__(self):
        if len(self.decision_names) != len(self.choices):
            raise ValueError(
                f"{len(self.decision_names)} decision names but {len(self.choices)} choice lists")
        for name, ch in zip(self.decision_names, self.choices):
            if len(ch) == 0:
                raise ValueError(f"decision {name!r} has no choices")

    # ---- shape -------------------------------------------------------------------------------
    @property
    def num_decisions(self) -> int:
        return len(self.choices)

    @property
    def max_choices(self) -> int:
        return max(len(c) for c in self.choices)

    @property
    def shape(self) -> tuple[int, int]:
        """``(D, K)``: the shape of architecture weights and logits."""
        return (self.num_decisions, self.max_choices)

    @property
    def num_choices(self) -> np.ndarray:
        return np.array([len(c) for c in self.choices], np.int32)

    @property
    def mask(self) -> np.ndarray:
        """``bool[D, K]``: True where a choice exists."""
        return np.arange(self.max_choices)[None, :] < self.num_choices[:, None]

    @property
    def num_archs(self) -> int:
        return math.prod(len(c) for c in self.choices)

    # ---- validation --------------------------------------------------------------------------
    def check_arch(self, arch) -> np.ndarray:
        """Returns ``arch`` as ``int32[D]`` or raises ValueError naming the bad entry."""
        a = np.asarray(arch)
        if a.shape != (self.num_decisions,):
            raise ValueError(
                f"architecture has shape {a.shape}; this space needs ({self.num_decisions},)")
        for d, (i, ch) in enumerate(zip(a, self.choices)):
            if not 0 <= int(i) < len(ch):
                raise ValueError(
                    f"decision {self.decision_names[d]!r}: index {int(i)} is not one of "
                    f"0..{len(ch) - 1} ({', '.join(ch)})")
        return a.astype(np.int32)

    def check_weights(self, weights, name: str = "weights"):
        shape = tuple(np.shape(weights))
        if shape[-2:] != self.shape:
            raise ValueError(f"{name} have shape {shape}; this space needs (..., {self.shape[0]}, "
                             f"{self.shape[1]}) = (decisions, choices)")
        return weights

    def choice_index(self, decision: int, name: str) -> int:
        ch = self.choices[decision]
        if name not in ch:
            raise ValueError(f"{name!r} is not a choice of decision "
                             f"{self.decision_names[decision]!r}; valid: {', '.join(ch)}")
        return ch.index(name)

    # ---- encodings ---------------------------------------------------------------------------
    def encode(self, arch) -> str:
        """Human-readable string; subclasses use the format their papers use."""
        a = self.check_arch(arch)
        return ",".join(f"{n}={ch[i]}" for n, ch, i in zip(self.decision_names, self.choices, a))

    def decode(self, text: str) -> np.ndarray:
        parts = [p for p in text.split(",") if p]
        if len(parts) != self.num_decisions:
            raise ValueError(f"{text!r}: expected {self.num_decisions} 'name=choice' entries")
        out = []
        for d, part in enumerate(parts):
            name, _, choice = part.partition("=")
            if name != self.decision_names[d]:
                raise ValueError(f"{text!r}: entry {d} is {name!r}, expected "
                                 f"{self.decision_names[d]!r}")
            out.append(self.choice_index(d, choice))
        return np.array(out, np.int32)

    # ---- enumeration and sampling ------------------------------------------------------------
    def arch_to_id(self, arch) -> int:
        """Mixed-radix id in [0, num_archs): decision 0 is the most significant digit."""
        a = self.check_arch(arch)
        idx = 0
        for i, n in zip(a, self.num_choices):
            idx = idx * int(n) + int(i)
        return idx

    def id_to_arch(self, idx: int) -> np.ndarray:
        if not 0 <= idx < self.num_archs:
            raise ValueError(f"id {idx} outside [0, {self.num_archs})")
        out = []
        for n in self.num_choices[::-1]:
            out.append(idx % int(n))
            idx //= int(n)
        return np.array(out[::-1], np.int32)

    def all_archs(self, limit: int = 2_000_000) -> np.ndarray:
        """Every architecture, ``int32[num_archs, D]`` in id order (refuses huge spaces)."""
        if self.num_archs > limit:
            raise ValueError(f"{self.num_archs} architectures exceed the enumeration limit {limit}")
        grids = np.meshgrid(*[np.arange(n) for n in self.num_choices], indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], -1).astype(np.int32)

    def uniform_logits(self) -> jnp.ndarray:
        """Logits of the uniform policy over valid choices (invalid ones at NEG_INF)."""
        return jnp.where(jnp.asarray(self.mask), 0.0, NEG_INF)

    def sample(self, key, logits=None, shape: Sequence[int] = ()) -> jnp.ndarray:
        """Samples architectures ``int32[*shape, D]`` from independent categoricals."""
        logits = self.uniform_logits() if logits is None else logits
        logits = jnp.where(jnp.asarray(self.mask), logits, NEG_INF)
        return jax.random.categorical(key, logits, axis=-1,
                                      shape=tuple(shape) + (self.num_decisions,)).astype(jnp.int32)

    # ---- derivation and description ----------------------------------------------------------
    def derive_mask(self, exclude=()) -> np.ndarray:
        """``bool[D, K]``: valid choices not named in ``exclude``; a decision left empty keeps all."""
        m = self.mask.copy()
        for d, ch in enumerate(self.choices):
            keep = np.array([c not in exclude for c in ch] + [False] * (self.max_choices - len(ch)))
            if (m[d] & keep).any():
                m[d] &= keep
        return m

    def derive(self, scores, exclude=()) -> jnp.ndarray:
        """The final architecture of per-choice ``scores float[D, K]`` (logits, alpha, probabilities):
        the best valid choice per decision that is not named in ``exclude``. Traceable. Spaces with
        a derivation rule of their own (DARTS: two inputs per node) override it."""
        m = jnp.asarray(self.derive_mask(tuple(exclude)))
        return jnp.argmax(jnp.where(m, scores, -jnp.inf), axis=-1).astype(jnp.int32)

    def describe(self, arch) -> dict:
        """What a result reports about ``arch``: its string, indices and, where the space has a cost
        model, its parameter count."""
        a = self.check_arch(arch)
        out = {"arch": self.encode(a), "arch_indices": a.tolist()}
        if hasattr(self, "param_count"):
            out["param_count"] = float(self.param_count(a))
        return out

    def one_hot(self, arch) -> jnp.ndarray:
        """``float32[..., D, K]`` one-hot weights of architectures ``int[..., D]``."""
        return jax.nn.one_hot(arch, self.max_choices, dtype=jnp.float32)

"""TabNAS width space: L hidden layers, each picking its width from a list (TabNAS, sec. 3.1)."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxnas.spaces.base import Space

# TabNAS App. C, Criteo / Volkert 4-layer: 20 sizes per layer.
TABNAS_WIDTHS = (8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256,
                 384, 512)
# TabNAS App. C, Volkert 9-layer: 12 sizes per layer.
TABNAS_WIDTHS_12 = TABNAS_WIDTHS[:12]


@dataclasses.dataclass(frozen=True)
class MLPSpace(Space):
    """Widths of ``num_layers`` hidden ReLU layers; architectures print as ``32-144-24``.

    ``num_outputs`` is the number of logits: 1 for a binary task (TabNAS counts one logit),
    else the number of classes.
    """

    widths: tuple[tuple[int, ...], ...] = ()
    num_inputs: int = 0
    num_outputs: int = 1

    @classmethod
    def create(cls, num_layers: int, num_inputs: int, num_outputs: int = 1,
               widths=TABNAS_WIDTHS) -> "MLPSpace":
        """Every layer chooses from ``widths`` (or pass a list of per-layer width lists)."""
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        per_layer = widths if widths and isinstance(widths[0], (tuple, list)) else [widths] * num_layers
        if len(per_layer) != num_layers:
            raise ValueError(f"{len(per_layer)} width lists for {num_layers} layers")
        per_layer = tuple(tuple(int(w) for w in ws) for ws in per_layer)
        for i, ws in enumerate(per_layer):
            if any(w < 1 for w in ws) or list(ws) != sorted(set(ws)):
                raise ValueError(f"layer {i} widths {ws} must be positive, distinct and increasing")
        if num_inputs < 1 or num_outputs < 1:
            raise ValueError(f"num_inputs={num_inputs} and num_outputs={num_outputs} must be >= 1")
        return cls(decision_names=tuple(f"layer{i + 1}" for i in range(num_layers)),
                   choices=tuple(tuple(str(w) for w in ws) for ws in per_layer),
                   widths=per_layer, num_inputs=int(num_inputs), num_outputs=int(num_outputs))

    @property
    def num_layers(self) -> int:
        return len(self.widths)

    @property
    def max_widths(self) -> tuple[int, ...]:
        return tuple(max(ws) for ws in self.widths)

    @property
    def width_table(self) -> np.ndarray:
        """``int32[L, K]`` width of choice k in layer l (0 where the choice does not exist)."""
        t = np.zeros(self.shape, np.int32)
        for l, ws in enumerate(self.widths):
            t[l, :len(ws)] = ws
        return t

    def arch_widths(self, arch) -> jnp.ndarray:
        """Widths ``int32[..., L]`` of architectures ``int[..., L]``."""
        arch = jnp.asarray(arch)
        return jnp.take_along_axis(jnp.asarray(self.width_table)[None],
                                   arch.reshape(-1, self.num_layers)[:, :, None], -1
                                   )[..., 0].reshape(arch.shape)

    def encode(self, arch) -> str:
        a = self.check_arch(arch)
        return "-".join(str(self.widths[l][i]) for l, i in enumerate(a))

    def decode(self, text: str) -> np.ndarray:
        parts = text.strip().split("-")
        if len(parts) != self.num_layers:
            raise ValueError(f"{text!r} has {len(parts)} layers; this space has {self.num_layers} "
                             f"(write widths joined by '-', e.g. "
                             f"{'-'.join(str(ws[0]) for ws in self.widths)})")
        out = []
        for l, p in enumerate(parts):
            if not p.isdigit() or int(p) not in self.widths[l]:
                raise ValueError(f"width {p!r} is not a choice of layer {l + 1}; valid: "
                                 f"{', '.join(map(str, self.widths[l]))}")
            out.append(self.widths[l].index(int(p)))
        return np.array(out, np.int32)

    def param_count(self, arch) -> jnp.ndarray:
        """Weights and biases of the MLP (TabNAS counts them so): ``float32[...]``, vectorised."""
        w = self.arch_widths(arch).astype(jnp.float32)
        fan_in = jnp.concatenate([jnp.full(w.shape[:-1] + (1,), float(self.num_inputs)), w], -1)
        fan_out = jnp.concatenate([w, jnp.full(w.shape[:-1] + (1,), float(self.num_outputs))], -1)
        return jnp.sum(fan_in * fan_out + fan_out, -1)

    def layer_cost_terms(self):
        """The parameter count as a sum over adjacent layers, for the exact P(V) dynamic programme.

        Returns ``(first[K0], pair[L-1][K_l, K_{l+1}], last[K_{L-1}])`` float tables such that
        ``param_count(a) = first[a0] + sum_l pair[l][a_l, a_{l+1}] + last[a_{L-1}]``.
        """
        t = self.width_table.astype(np.float64)
        first = self.num_inputs * t[0] + t[0]
        pairs = [t[l][:, None] * t[l + 1][None, :] + t[l + 1][None, :] for l in range(self.num_layers - 1)]
        last = t[-1] * self.num_outputs + self.num_outputs
        return first, pairs, last

"""TabNAS MLP supernet: every hidden layer as wide as its widest choice; a child of widths
``w_1..w_L`` uses the first ``w_l`` units of layer ``l`` (TabNAS sec. 3.1, Fig. 4)."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxnas.spaces.mlp import MLPSpace


class MLPSupernet(nn.Module):
    """``apply(p, x, weights, mode)``; weights ``[L, K]``. Sparse: layer ``l`` keeps the first
    ``width[argmax]`` units, scaled by ``weights[l, argmax]``; dense: units masked by
    ``sum_k weights[l, k] 1[unit < width_k]``. Inactive units are exactly zero, so the next layer only
    sees the active ones: the child is the MLP made of the supernet's leading rows and columns."""
    space: MLPSpace

    @nn.compact
    def __call__(self, x, weights, mode: str = "sparse", train: bool = True):
        sp = self.space
        if tuple(weights.shape) != sp.shape:
            raise ValueError(f"weights have shape {tuple(weights.shape)}; this space needs {sp.shape}")
        table = jnp.asarray(sp.width_table)
        h = x
        for l, maxw in enumerate(sp.max_widths):
            units = jnp.arange(maxw)[None, :]
            if mode == "sparse":
                k = jnp.argmax(weights[l])
                mask = (units[0] < table[l, k]) * weights[l, k]
            elif mode == "dense":
                mask = jnp.sum(weights[l][:, None] * (units < table[l][:, None]), 0)
            else:
                raise ValueError(f"mode must be 'sparse' or 'dense', got {mode!r}")
            h = nn.relu(nn.Dense(maxw, name=f"hidden{l}")(h)) * mask.astype(h.dtype)
        return nn.Dense(sp.num_outputs, name="logits")(h)


class MLP(nn.Module):
    """A plain ReLU MLP of the given hidden widths (stand-alone training of one child)."""
    widths: Sequence[int]
    num_outputs: int

    @nn.compact
    def __call__(self, x, train: bool = True):
        for l, w in enumerate(self.widths):
            x = nn.relu(nn.Dense(w, name=f"hidden{l}")(x))
        return nn.Dense(self.num_outputs, name="logits")(x)


def child_params(space: MLPSpace, supernet_params, arch) -> dict:
    """The parameters of the child ``arch`` cut out of the supernet's (leading units)."""
    widths = [int(w) for w in space.arch_widths(jnp.asarray(arch))]
    out, fan_in = {}, space.num_inputs
    for l, w in enumerate(widths):
        p = supernet_params[f"hidden{l}"]
        out[f"hidden{l}"] = {"kernel": p["kernel"][:fan_in, :w], "bias": p["bias"][:w]}
        fan_in = w
    p = supernet_params["logits"]
    out["logits"] = {"kernel": p["kernel"][:fan_in], "bias": p["bias"]}
    return out

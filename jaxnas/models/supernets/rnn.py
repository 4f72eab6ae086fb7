"""The recurrent language model of AdvantageNAS App. E: embedding -> searched cell -> decoder.

``net.apply({'params': p}, tokens int[T, B], hidden float[B, H], weights float[D, K], mode=...,
train=..., dropout_key=...) -> (logits [T, B, V], new hidden [B, H])``; the cell runs under
``lax.scan`` over the T time steps and the last hidden state is returned so that a caller can carry
it to the next window (truncated BPTT: the caller stops its gradient).

- ``mode="sparse"``: on each edge only the activation ``argmax(weights[d])`` runs (``lax.switch``
  over elementwise activations of one shared matmul ``W^h x``: matmul work is that of one
  architecture) and its output is scaled by ``weights[d, argmax]``; so ``d loss / d weights[d, j]``
  at the chosen ``j`` is ``sum_t <dL/dO_d(t), O_d^j(t)>``, AdvantageNAS eq. 7 summed over the time
  steps that share the edge.
- ``mode="dense"``: ``O_d = sum_k weights[d, k] act_k(W^h x)`` (eq. 1; DARTS, SNAS, ...).
- ``arch=`` (a tuple of op indices): the discrete model of that cell; a 'none' edge keeps only its
  gate ``W^c`` (its edge output is ``(1 - c) x``).

Node aggregation follows the authors' code (madoibito80/advantage-nas ptb/cell.py): an
intermediate node is the mean of its incoming edges and the cell output the mean of the
intermediate nodes (App. E: "element-wise average"). No biases in the cell, no batch norm.
Dropout (App. E: 0.5) on the embeddings and on the cell outputs fed to the decoder; the carried
hidden state is the undropped cell output.
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.spaces.rnn import RNN_OPS, RNNCellSpace

MODES = ("sparse", "dense")
INIT_RANGE = 0.1   # every parameter ~ U(-0.1, 0.1), as the authors' RNNForLM


def _zeros(z):
    return jnp.zeros_like(z)


ACTIVATIONS = {"none": _zeros, "tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid,
               "identity": lambda z: z}
assert set(ACTIVATIONS) == set(RNN_OPS)


def _uniform(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -INIT_RANGE, INIT_RANGE)


def _dropout(key, x, rate):
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def cell_step(p: dict, space: RNNCellSpace, x_e, h, weights=None, mode: str = "sparse",
              arch: Optional[tuple[int, ...]] = None, probe=None):
    """One time step of the cell: ``(x_e [B, E], h [B, H]) -> (h' [B, H], aux)``.

    ``probe`` ([D, B, H], analysis only) is added to each edge's op output before its weight scales
    it, so ``d loss / d probe`` is ``d loss / d O_d`` (tests of eq. 7); then ``aux`` holds the op
    outputs ``O_d`` and the edge outputs ``y_d`` (``{"ops", "edges"}``, each ``[D, B, H]``), else None."""
    H = space.hidden_size
    ch = jnp.concatenate([x_e, h], -1) @ p["W0"]                       # W_in(x_e, h), [B, 2H]
    c0, h0 = jax.nn.sigmoid(ch[:, :H]), jnp.tanh(ch[:, H:])
    states = [h + c0 * (h0 - h)]                                         # App. E: x_0
    acc, ops_out, edges_out = None, [], []
    for e, (j, i) in enumerate(space.edges):
        x = states[i]
        c = jax.nn.sigmoid(x @ p[f"Wc_{j}_{i}"])                        # App. E: c_i
        if arch is not None:                                             # discrete cell
            name = space.ops[int(arch[e])]
            o = jnp.zeros_like(x) if name == "none" else ACTIVATIONS[name](x @ p[f"Wh_{j}_{i}"])
            if probe is not None:
                o = o + probe[e]
                ops_out.append(o)
        else:
            z = x @ p[f"Wh_{j}_{i}"]
            w = weights[e].astype(z.dtype)
            if mode == "dense":                                          # eq. 1
                o = sum(w[k] * ACTIVATIONS[n](z) for k, n in enumerate(space.ops) if n != "none")
                o = o if not isinstance(o, int) else jnp.zeros_like(z)
                if probe is not None:
                    o = o + probe[e]
                    ops_out.append(o)
            else:                                                        # one op, scaled (eq. 7)
                idx = jnp.argmax(w)
                o = jax.lax.switch(idx, [ACTIVATIONS[n] for n in space.ops], z)
                if probe is not None:
                    o = o + probe[e]
                    ops_out.append(o)
                o = o * w[idx]
        y = x + c * (o - x)                                              # App. E: y_i
        edges_out.append(y)
        acc = y if acc is None else acc + y
        if i == j - 1:                                                   # node j complete: mean
            states.append(acc / j)
            acc = None
    out = sum(states[1:]) / space.num_nodes                              # output node: mean
    aux = {"ops": jnp.stack(ops_out), "edges": jnp.stack(edges_out)} if probe is not None else None
    return out, aux


class RNNLanguageModel(nn.Module):
    """Embedding (V x E) -> recurrent cell over time (``lax.scan``) -> linear decoder (H x V + b)."""
    space: RNNCellSpace
    arch: Optional[tuple[int, ...]] = None
    dropout: float = 0.5

    def _params(self):
        sp = self.space
        V, E, H = sp.vocab_size, sp.emb_size, sp.hidden_size
        p = {"embedding": self.param("embedding", _uniform, (V, E)),
             "W0": self.param("W0", _uniform, (E + H, 2 * H))}
        for e, (j, i) in enumerate(sp.edges):
            p[f"Wc_{j}_{i}"] = self.param(f"Wc_{j}_{i}", _uniform, (H, H))
            if self.arch is None or sp.ops[int(self.arch[e])] != "none":
                p[f"Wh_{j}_{i}"] = self.param(f"Wh_{j}_{i}", _uniform, (H, H))
        p["decoder_kernel"] = self.param("decoder_kernel", _uniform, (H, V))
        p["decoder_bias"] = self.param("decoder_bias", _uniform, (V,))
        return p

    @nn.compact
    def __call__(self, tokens, hidden, weights=None, mode: str = "sparse", train: bool = False,
                 dropout_key=None, probe=None):
        sp = self.space
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if self.arch is not None:
            sp.check_arch(np.asarray(self.arch))
        elif weights is None:
            raise ValueError("the recurrent supernet needs architecture weights [D, K] (or build it "
                             "with arch=...)")
        elif tuple(weights.shape) != sp.shape:
            raise ValueError(f"weights have shape {tuple(weights.shape)}; this space needs {sp.shape}")
        if tokens.ndim != 2 or hidden.shape != (tokens.shape[1], sp.hidden_size):
            raise ValueError(f"tokens must be int[T, B] and hidden float[B, {sp.hidden_size}]; got "
                             f"{tokens.shape} and {hidden.shape}")
        drop = train and self.dropout > 0
        if drop and dropout_key is None:
            raise ValueError("training with dropout needs dropout_key (an explicit PRNG key)")
        p = self._params()
        x = p["embedding"][tokens]                                       # [T, B, E]
        if drop:
            k_emb, k_out = jax.random.split(dropout_key)
            x = _dropout(k_emb, x, self.dropout)                         # App. E: dropout on embeddings

        def step(h, xs):
            x_t, probe_t = xs
            h2, ops = cell_step(p, sp, x_t, h, weights, mode, self.arch, probe_t)
            return h2, (h2, ops)

        h_last, (outs, ops) = jax.lax.scan(step, hidden, (x, probe))
        if drop:
            outs = _dropout(k_out, outs, self.dropout)                   # ... and on cell outputs
        logits = outs @ p["decoder_kernel"] + p["decoder_bias"]
        if probe is not None:
            return logits, h_last, ops
        return logits, h_last


def init_rnn_params(net: RNNLanguageModel, key, batch: int = 2) -> dict:
    """The parameters of ``net``, U(-0.1, 0.1), drawn on the host (no RNG compile; shapes from
    ``jax.eval_shape``)."""
    sp = net.space
    tokens = jnp.zeros((1, batch), jnp.int32)
    hidden = jnp.zeros((batch, sp.hidden_size), jnp.float32)
    w = None if net.arch is not None else jnp.zeros(sp.shape, jnp.float32)
    shapes = jax.eval_shape(lambda k: net.init(k, tokens, hidden, w), key)["params"]
    seed = np.asarray(jax.random.key_data(key)).reshape(-1).astype(np.uint64)
    rng = np.random.default_rng([int(s) for s in seed])
    return jax.tree.map(lambda s: jnp.asarray(rng.uniform(-INIT_RANGE, INIT_RANGE, s.shape), s.dtype), shapes)


def count_params(params) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))

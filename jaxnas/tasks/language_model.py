"""Language modelling on a token stream (PTB) for the recurrent cell search (AdvantageNAS sec. 5.3).

``LanguageModelTask.loss(params, weights, batch, key, mode, train=)`` takes ``batch = (x int[T, B],
y int[T, B], hidden float[B, H])`` (inputs, next-token targets, the hidden state carried from the
previous window) and returns ``(mean cross-entropy, {"perplexity", "hidden"})``: ``hidden`` is the
state after the window, which the caller carries (truncated BPTT). The reward is ``-loss``.

Where the carried state lives: :class:`jaxnas.evaluators.lm_shared_weights.LMSharedWeightsEvaluator`,
the ``shared_weights`` evaluator's variant for such tasks (the task hands it over through
``shared_weights_evaluator``). :func:`stream_loss` scores a whole split the DARTS way (one hidden
state carried over every window, the ragged tail included).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.core import schema as S
from jaxnas.data.text import batchify
from jaxnas.models.supernets.rnn import RNNLanguageModel, init_rnn_params
from jaxnas.spaces.rnn import RNN_OPS, RNNCellSpace

REWARD_SPLITS = ("train", "valid")


def space_schema() -> dict:
    """The keys of ``space.name='rnn'``: the cell (App. E: 3 nodes, 300 units) and the language-model
    task's settings (the config has no task section)."""
    return {"num_nodes": S.Int(3, ge=1), "emb_size": S.Int(300, ge=1), "hidden_size": S.Int(300, ge=1),
            "ops": S.Optional(S.List(S.Choice(*RNN_OPS), min_len=1, unique=True)),
            "bptt": S.Int(35, ge=1),                       # App. E: BPTT length 35
            "dropout": S.Float(0.5, ge=0, lt=1),           # App. E: embeddings and cell outputs
            "reward_split": S.Choice(*REWARD_SPLITS, default="train"),
            "eval_streams": S.Int(10, ge=1)}               # streams when a whole split is scored


def token_nll(logits, targets):
    """Sum of the next-token negative log-likelihoods, and their count."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), -1)[..., 0]
    return jnp.sum(nll), nll.size


@dataclasses.dataclass(frozen=True)
class LanguageModelTask:
    """A recurrent language model whose cell is searched.

    ``bptt``: window length; ``reward_split``: where the strategy's reward windows come from —
    ``"train"`` (App. E: "we use the training data of PTB to optimize both the weights and theta";
    the authors' code alternates the two updates over the training windows) or ``"valid"`` (DARTS:
    the validation split, batchified at ``val_batch_size``); ``eval_streams``: streams used when a
    whole split is scored (DARTS: 10).
    """
    space: Any
    net: RNNLanguageModel
    bptt: int = 35
    reward_split: str = "train"
    eval_streams: int = 10

    def __post_init__(self):
        if self.reward_split not in REWARD_SPLITS:
            raise ValueError(f"reward_split must be one of {REWARD_SPLITS}, got {self.reward_split!r}")
        if self.bptt < 1:
            raise ValueError(f"bptt must be >= 1, got {self.bptt}")

    def init_params(self, key):
        return init_rnn_params(self.net, key)

    def loss(self, params, weights, batch, key=None, mode: str = "sparse", train: bool = True):
        x, y, h = batch
        logits, h2 = self.net.apply({"params": params}, x, h, weights, mode=mode, train=train,
                                    dropout_key=key if train else None)
        total, n = token_nll(logits, y)
        loss = total / n
        return loss, {"perplexity": jnp.exp(loss), "hidden": jax.lax.stop_gradient(h2)}

    def reward_of(self, loss, metrics):
        return -loss                                   # sec. 2: reward = -loss


@functools.lru_cache(maxsize=32)
def _stream_fns(net: RNNLanguageModel, mode: str):
    """Jitted window functions of ``net`` (cached: one compile per model, mode and shape)."""
    def apply(p, w, h, x, y):
        logits, h2 = net.apply({"params": p}, x, h, w, mode=mode, train=False)
        return h2, token_nll(logits, y)[0]

    @jax.jit
    def windows(p, w, h0, xs, ys):
        h, nll = jax.lax.scan(lambda h, xy: apply(p, w, h, *xy), h0, (xs, ys))
        return h, jnp.sum(nll)
    return windows, jax.jit(apply)


def stream_loss(net: RNNLanguageModel, params, ids, batch: int, bptt: int, weights=None,
                mode: str = "sparse") -> dict:
    """Mean next-token loss and perplexity of ``net`` over a whole token stream ``ids``, batchified
    into ``batch`` streams, windows of ``bptt`` with the hidden state carried across them (DARTS
    ``evaluate``; the ragged last window included), dropout off."""
    src = batchify(np.asarray(ids), batch)
    rows, H = src.shape[0], net.space.hidden_size
    W = (rows - 1) // bptt
    tail = rows - 1 - W * bptt
    windows, apply = _stream_fns(net, mode)
    total, h = 0.0, jnp.zeros((batch, H), jnp.float32)
    if W:
        xs = src[: W * bptt].reshape(W, bptt, batch)
        ys = src[1: W * bptt + 1].reshape(W, bptt, batch)
        h, s = windows(params, weights, h, jnp.asarray(xs), jnp.asarray(ys))
        total += float(s)
    if tail:
        _, s = apply(params, weights, h, jnp.asarray(src[W * bptt: rows - 1]), jnp.asarray(src[W * bptt + 1: rows]))
        total += float(s)
    n = (rows - 1) * batch
    loss = total / n
    return {"loss": loss, "perplexity": math.exp(min(loss, 80.0)), "tokens": int(n)}


def make_task(cfg: dict, space, data) -> LanguageModelTask:
    """The task of ``space.name='rnn'`` (its keys ``bptt``, ``dropout``, ``reward_split``,
    ``eval_streams`` ride on the space section: the config has no task section)."""
    s = cfg["space"]
    if cfg["search"]["reward"] != "neg_loss":
        raise ValueError(f"search.reward={cfg['search']['reward']!r}: a language model's reward is "
                         f"minus its loss (search.reward='neg_loss')")
    net = RNNLanguageModel(space, dropout=float(s["dropout"]))
    return LanguageModelTask(space, net, bptt=int(s["bptt"]), reward_split=s["reward_split"],
                             eval_streams=int(s["eval_streams"]))


def check_tokens(what: str, num_tokens: int, batch: int, bptt: int) -> None:
    """A clear error, before compiling, when a stream is too short for one window."""
    rows = int(num_tokens) // int(batch)
    if rows < bptt + 1:
        raise ValueError(f"{what}: {num_tokens} tokens at {batch} streams give {rows} rows, fewer than "
                         f"one BPTT window of {bptt} (+1 for the targets): lower the batch size or "
                         f"space.bptt, or raise data.max_train / data.max_val")


def space_from(s: dict, data):
    if data is None or not hasattr(data, "vocab_size"):
        raise ValueError("space.name='rnn' needs a language-modelling data set (data.name='ptb')")
    return RNNCellSpace.create(num_nodes=s["num_nodes"], vocab_size=data.vocab_size, emb_size=s["emb_size"],
                               hidden_size=s["hidden_size"], ops=tuple(s["ops"]) if s["ops"] else RNN_OPS)


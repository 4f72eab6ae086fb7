"""The ``shared_weights`` evaluator for language models: truncated BPTT with carried hidden states.

A language model's batches are not independent examples: window ``t+1`` of each stream continues
window ``t``, and its hidden state starts where ``t`` ended (DARTS ``train_search.py``:
``hidden[s_id] = repackage_hidden(hidden[s_id])``). The engine feeds i.i.d. batches drawn by step,
so this variant feeds itself instead (``needs_batches = False``):

- ``inputs()``: the batchified token streams (``int32 [rows, B]``: training at ``search.batch_size``
  and, with ``space.reward_split='valid'``, the reward stream at ``search.val_batch_size``), an
  argument of the compiled chunk like a benchmark table;
- the state (a pytree, checkpointed with the search): the supernet parameters and optimizer state as
  ``shared_weights``, plus per stream the next window's index and the hidden state it starts from.
  A window's position is a function of the step, so a resumed search reads the same windows; each
  epoch (a pass over the windows) starts from a zero hidden state, as DARTS's.
- ``weight_step``: one optimizer step on the next training window (hidden state carried in, its
  gradient stopped), then the window index moves on.
- ``reward_fn``: ``-loss`` (dropout off) of the *next* window of the reward stream from its carried
  state: with ``reward_split='train'`` the next training window (which the next weight step trains on
  from the same state, as the authors' code alternates w- and theta-updates over the training
  windows; no extra cost); with ``'valid'`` the validation stream, whose state the weight step
  advances over the window the previous reward scored (one forward pass of that window, no gradient).

So the reward stream moves with the weight steps: a search phase of kind ``'strategy'`` (weights
frozen) would score one window again and again and is refused. One device only (the streams would
have to be split over devices and their hidden states gathered): ``search.devices=1``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas.data.text import batchify, window_count
from jaxnas.evaluators.shared_weights import TASK_VARIANTS, SharedWeightsEvaluator
from jaxnas.strategies.base import SupernetContext
from jaxnas.tasks.language_model import LanguageModelTask, check_tokens, stream_loss


@flax.struct.dataclass
class LMState:
    params: Any
    opt_state: Any
    step: jax.Array            # int32: weight steps taken (the lr schedule)
    hidden: jax.Array          # float32 [B, H]: the state the next training window starts from
    pos: jax.Array             # int32: index of the next training window
    reward_hidden: jax.Array   # float32 [Br, H]: the state the next reward window starts from
    reward_pos: jax.Array      # int32: index of the next reward window ('valid' reward stream)


def _window(stream, w, bptt: int):
    """``x = stream[w*L : w*L+L]``, ``y`` shifted by one (next tokens)."""
    B = stream.shape[1]
    x = jax.lax.dynamic_slice(stream, (w * bptt, 0), (bptt, B))
    y = jax.lax.dynamic_slice(stream, (w * bptt + 1, 0), (bptt, B))
    return x, y


def _start(hidden, pos):
    """A window at index 0 starts an epoch: zero state."""
    return jnp.where(pos == 0, jnp.zeros_like(hidden), hidden)


@dataclasses.dataclass(frozen=True, eq=False)
class LMSharedWeightsEvaluator(SharedWeightsEvaluator):
    train_stream: Any = None        # np.int32 [rows, B]
    reward_stream: Any = None       # np.int32 [rows_r, Br], or None: rewards on the training stream
    val_ids: Any = None             # np.int32 [tokens]: the validation split, for ``result``
    needs_batches: bool = False

    @classmethod
    def create(cls, *, task, optimizer, lr_at, mode, axis_name, data, cfg, vmap_chunk: int = 32):
        s = cfg["search"]
        if axis_name is not None:
            raise ValueError("the language-model search runs on one device (search.devices=1, "
                             "search.samples=1): its token streams and hidden states are not split "
                             "over devices yet")
        phases = s.get("phases") or []
        if any(k == "strategy" for k, n in phases if n):
            raise ValueError("a language-model search advances its reward windows with the weight steps; "
                             "a 'strategy' phase (weights frozen) would score one window forever: use "
                             "'weights' and 'both' phases")
        B, bptt = int(s["batch_size"]), task.bptt
        check_tokens("training stream (data.max_train, search.batch_size)", len(data.x_train), B, bptt)
        reward = None
        if task.reward_split == "valid":
            Br = int(s["val_batch_size"] or B)
            check_tokens("reward stream (data.max_val, search.val_batch_size)", len(data.x_val), Br, bptt)
            reward = batchify(data.x_val, Br)
        check_tokens("validation split (data.max_val, space.eval_streams)", len(data.x_val),
                     task.eval_streams, 1)
        return cls(task=task, optimizer=optimizer, lr_at=lr_at, mode=mode, axis_name=None, data=data,
                   eval_batch_size=task.eval_streams, vmap_chunk=vmap_chunk,
                   train_stream=batchify(data.x_train, B), reward_stream=reward, val_ids=data.x_val)

    # ---- shapes ------------------------------------------------------------------------------
    @property
    def train_windows(self) -> int:
        return window_count(self.train_stream.shape[0], self.task.bptt)

    @property
    def reward_windows(self) -> int:
        return window_count(self.reward_stream.shape[0], self.task.bptt)

    def init(self, key):
        params = self.task.init_params(key)
        H = self.task.space.hidden_size
        Br = self.train_stream.shape[1] if self.reward_stream is None else self.reward_stream.shape[1]
        z = lambda n: jnp.zeros((n, H), jnp.float32)
        i0 = jnp.zeros((), jnp.int32)
        return LMState(params=params, opt_state=self.init_opt_state(params), step=i0,
                       hidden=z(self.train_stream.shape[1]), pos=i0, reward_hidden=z(Br), reward_pos=i0)

    def inputs(self):
        return {"train": jnp.asarray(self.train_stream, jnp.int32),
                "reward": None if self.reward_stream is None else jnp.asarray(self.reward_stream, jnp.int32)}

    # ---- batches from the state --------------------------------------------------------------
    def _train_batch(self, state, inputs):
        x, y = _window(inputs["train"], state.pos, self.task.bptt)
        return x, y, _start(state.hidden, state.pos)

    def _reward_batch(self, state, inputs):
        if inputs["reward"] is None:
            return self._train_batch(state, inputs)
        x, y = _window(inputs["reward"], state.reward_pos, self.task.bptt)
        return x, y, _start(state.reward_hidden, state.reward_pos)

    # ---- the protocol ------------------------------------------------------------------------
    def weight_step(self, state, inputs, weights, batch, key):
        del batch   # the windows come from the state (see the module docstring)
        tb = self._train_batch(state, inputs)

        def loss_fn(p):
            return self.task.loss(p, weights, tb, key, self.mode)

        (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state.replace(params=params, opt_state=opt_state, step=state.step + 1, hidden=m["hidden"],
                            pos=(state.pos + 1) % self.train_windows)
        if inputs["reward"] is not None:   # carry the reward stream over the window last scored
            rb = self._reward_batch(state, inputs)
            _, mr = self.task.loss(params, weights, rb, None, self.mode, train=False)
            new = new.replace(reward_hidden=mr["hidden"], reward_pos=(state.reward_pos + 1) % self.reward_windows)
        return new, {"train_loss": loss, "train_perplexity": m["perplexity"]}

    def _val_reward(self, params, weights, batch):
        loss, m = self.task.loss(params, weights, batch, None, self.mode, train=False)
        return self.task.reward_of(loss, m), {"loss": loss, "perplexity": m["perplexity"]}

    def reward_fn(self, state, inputs, batch, key):
        del batch, key
        rb = self._reward_batch(state, inputs)
        return lambda w: self._val_reward(state.params, w, rb)

    def batched_reward_fn(self, state, inputs, batch, key):
        raise ValueError("strategies that score batches of weight matrices (Shapley) are not supported on "
                         "the language-model search")

    def context(self, state, inputs, train_batch, val_batch, key):
        mode, task = self.mode, self.task
        tb, rb = self._train_batch(state, inputs), self._reward_batch(state, inputs)
        return SupernetContext(
            params=state.params,
            train_loss=lambda p, w: task.loss(p, w, tb, key, mode)[0],
            val_reward=lambda p, w: self._val_reward(p, w, rb),
            weight_lr=jnp.asarray(self.lr_at(state.step), jnp.float32))

    def evaluate_arch(self, params, arch, ids: Optional[np.ndarray] = None) -> dict:
        """Loss and perplexity of ``arch`` (one-hot weights, sparse mode) over a whole token stream
        (default: the validation split), ``eval_batch_size`` streams, hidden state carried."""
        weights = self.task.space.one_hot(jnp.asarray(arch))
        return stream_loss(self.task.net, params, self.val_ids if ids is None else ids,
                           self.eval_batch_size, self.task.bptt, weights, "sparse")

    def result(self, state, arch) -> dict:
        """The derived cell with the supernet's weights on the whole validation split."""
        val = self.evaluate_arch(jax.device_get(state.params), arch)
        return {"val_loss": val["loss"], "val_perplexity": val["perplexity"]}


TASK_VARIANTS[LanguageModelTask] = LMSharedWeightsEvaluator.create

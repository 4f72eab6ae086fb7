"""A task couples a supernet with its loss: what the search loop trains and rewards.

``loss(params, weights, batch, key, mode) -> (loss, metrics)`` runs the supernet under the given
architecture weights on one batch. The reward of an architecture is ``-loss`` on a validation batch
(higher is better), or its accuracy with ``reward="accuracy"``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from jaxnas.models.supernets import init_params

REWARDS = ("neg_loss", "accuracy")


def classification_loss(logits, labels):
    """Cross-entropy and accuracy; one logit means a binary task (sigmoid), as TabNAS counts it."""
    if logits.shape[-1] == 1:
        z = logits[..., 0]
        y = labels.astype(z.dtype)
        loss = jnp.mean(jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z))))
        acc = jnp.mean((z > 0) == (labels > 0))
    else:
        logp = jax.nn.log_softmax(logits)
        loss = -jnp.mean(jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), 1))
        acc = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, acc


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
    """A supernet classifier. ``augment(key, x) -> x`` runs on training batches only."""
    space: Any
    net: Any
    input_shape: tuple[int, ...]
    augment: Optional[Callable] = None  # (key, raw batch x) -> x, training batches only
    preprocess: Optional[Callable] = None  # raw x -> float32 network input (e.g. normalisation)
    reward: str = "neg_loss"
    # the net's convs take the CPU gradient made for loops (models/ops/layers.py): the loss is traced
    # in the engine's scanned chunk, where XLA's own conv gradient ran up to 50x slower on CPU (the
    # NB201 search step 2.5x slower as a whole); conv nets only (their __call__ takes the argument)
    control_flow: bool = False

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")

    def init_params(self, key):
        x = jnp.zeros((2,) + tuple(self.input_shape), jnp.float32)
        return init_params(self.net, key, x, self.space.one_hot(jnp.zeros(self.space.num_decisions, jnp.int32)))

    def loss(self, params, weights, batch, key=None, mode: str = "sparse", train: bool = True):
        x, y = batch
        if train and self.augment is not None and key is not None:
            x = self.augment(key, x)
        x = self.preprocess(x) if self.preprocess is not None else x.astype(jnp.float32)
        kw = {"control_flow": True} if self.control_flow else {}
        logits = self.net.apply({"params": params}, x, weights, mode=mode, **kw)
        loss, acc = classification_loss(logits, y)
        return loss, {"accuracy": acc}

    def reward_of(self, loss, metrics):
        return -loss if self.reward == "neg_loss" else metrics["accuracy"]

"""Deterministic, resumable mini-batch indices (numpy, on the host).

The batch of global step ``s`` is a pure function of ``(seed, s)``: epoch ``e = s // steps_per_epoch``
uses the permutation drawn from ``(seed, e)`` only, so a search loop resumed at any step (from a
checkpoint that stores nothing but the step) sees exactly the batches of an uninterrupted run.
The remainder of each epoch (``num_examples % batch_size``) is dropped, so every batch is full and
shapes stay static under ``jit`` / ``lax.scan``.

Over several processes (:mod:`jaxnas.engine.distributed`) every process draws the same global indices from
its own sampler and gathers only the columns (rows of the batch) its devices hold
(:func:`jaxnas.engine.distributed.feed`), so nothing here depends on the process.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class BatchSampler:
    """Indices of global training steps; ``chunk`` gathers many steps for one ``lax.scan`` call."""

    num_examples: int
    batch_size: int
    seed: int = 0
    name: str = "batch_size"     # the setting, in messages (e.g. search.val_batch_size)
    split: str = ""              # the examples' split, in messages (e.g. validation)

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"{self.name} must be >= 1, got {self.batch_size}")
        if self.num_examples < self.batch_size:
            where = f" {self.split}" if self.split else ""
            raise ValueError(f"{self.name} {self.batch_size} is larger than the {self.num_examples}{where} "
                             f"examples; lower {self.name}")

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.batch_size

    def permutation(self, epoch: int) -> np.ndarray:
        """The example order of ``epoch``, from ``(seed, epoch)`` alone."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def indices(self, step: int) -> np.ndarray:
        """int64 [batch_size]: the examples of global step ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, pos = divmod(int(step), self.steps_per_epoch)
        start = pos * self.batch_size
        return self.permutation(epoch)[start:start + self.batch_size]

    def chunk(self, start_step: int, num_steps: int) -> np.ndarray:
        """int64 [num_steps, batch_size]: the indices of steps ``start_step .. start_step+num_steps-1``."""
        if start_step < 0 or num_steps < 0:
            raise ValueError(f"start_step and num_steps must be >= 0, got {start_step}, {num_steps}")
        out = np.empty((num_steps, self.batch_size), np.int64)
        spe, bs = self.steps_per_epoch, self.batch_size
        step, row = int(start_step), 0
        while row < num_steps:  # one permutation per epoch touched
            epoch, pos = divmod(step, spe)
            take = min(spe - pos, num_steps - row)
            perm = self.permutation(epoch)
            out[row:row + take] = perm[pos * bs:(pos + take) * bs].reshape(take, bs)
            row += take
            step += take
        return out


def gather(arrays: Any, idx: np.ndarray) -> Any:
    """Index every array of a (nested dict/tuple/list) pytree along axis 0.

    With ``idx`` of shape ``[S, B]`` the leaves come back as ``[S, B, ...]``, ready for ``lax.scan``.
    Leaves may be numpy arrays or any object with ``read(flat_indices) -> array`` (a lazy source).
    """
    idx = np.asarray(idx)
    if isinstance(arrays, dict):
        return {k: gather(v, idx) for k, v in arrays.items()}
    if isinstance(arrays, (tuple, list)) and not hasattr(arrays, "shape"):
        out = [gather(v, idx) for v in arrays]
        return type(arrays)(*out) if hasattr(arrays, "_fields") else type(arrays)(out)
    if hasattr(arrays, "read") and not isinstance(arrays, np.ndarray):
        flat = arrays.read(idx.reshape(-1))  # may itself be a tuple (images, labels)
        return _reshape_leaves(flat, idx.shape)
    return np.asarray(arrays)[idx]


def _reshape_leaves(tree: Any, lead: tuple[int, ...]) -> Any:
    if isinstance(tree, dict):
        return {k: _reshape_leaves(v, lead) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_reshape_leaves(v, lead) for v in tree)
    return np.asarray(tree).reshape(lead + np.shape(tree)[1:])


def gather_batches(arrays: Any, sampler: BatchSampler, start_step: int, num_steps: int) -> Any:
    """``gather(arrays, sampler.chunk(start_step, num_steps))``."""
    return gather(arrays, sampler.chunk(start_step, num_steps))

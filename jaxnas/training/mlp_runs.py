"""Checkpointed from-scratch training of TabNAS MLP members (architecture x seed), for ``jaxnas
retrain``: the members of a group are vmapped lanes of one compiled step (``standalone.member_step``,
the step the in-search evaluator scans), trained by the one checkpointed loop
(``jaxnas.training.loop``): a killed retrain resumes from its newest checkpoint with the data order
of the uninterrupted run (a member's batches are ``standalone.epoch_indices`` of its seed)."""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.tasks.classification import classification_loss
from jaxnas.training.loop import Schedule, run_chunks
from jaxnas.training.standalone import (
    TrainConfig,
    balanced_error,
    epoch_indices,
    masked_apply,
    member_data_key,
    member_init,
    member_step,
)


def member_metrics(params, widths, max_widths, x, y, num_classes: int, prefix: str, eval_batch: int) -> dict:
    """Loss / accuracy / balanced error of every member (leading axes [M]) on ``(x, y)``: numpy [M]."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)

    @jax.jit
    def one(p, w):
        logits = jnp.concatenate([masked_apply(p, x[i:i + eval_batch], w, max_widths)
                                  for i in range(0, x.shape[0], eval_batch)])
        loss, acc = classification_loss(logits, y)
        return {f"{prefix}_loss": loss, f"{prefix}_accuracy": acc,
                f"{prefix}_balanced_error": balanced_error(logits, y, num_classes)}
    return jax.device_get(jax.lax.map(lambda a: one(*a), (params, widths)))


def train_members(run_dir, data, space, widths, seeds: Sequence[int], cfg: TrainConfig, *,
                  schedule: Optional[Schedule] = None, progress=None, label: str = "mlp",
                  stop_after: Optional[int] = None, stop=None) -> Optional[dict]:
    """Trains members ``m`` (hidden ``widths[m]`` of ``space``'s masked max MLP, seed ``seeds[m]``)
    on ``data.x_train`` for ``cfg.total_steps`` steps, checkpointing in ``run_dir``. Returns
    ``params`` (numpy leaves [M, ...]), ``train_loss`` [M] (mean over the last epoch's steps),
    ``seconds`` and ``total_steps``; None when ``stop_after`` stopped it first (a rerun resumes)."""
    widths = jnp.asarray(widths, jnp.int32)
    M = int(widths.shape[0])
    max_widths = tuple(int(w) for w in space.max_widths)
    x_train, y_train = jnp.asarray(data.x_train, jnp.float32), jnp.asarray(data.y_train, jnp.int32)
    n, num_inputs = x_train.shape
    spe, total = cfg.steps_per_epoch(n), cfg.total_steps(n)
    tx = cfg.make_optimizer(total)
    keys = jax.vmap(jax.random.key)(jnp.asarray(np.asarray(seeds, np.int64)))
    init = jax.jit(jax.vmap(functools.partial(member_init, num_inputs=num_inputs, max_widths=max_widths,
                                              num_outputs=space.num_outputs, tx=tx)))
    state = {"members": init(widths, keys), "loss_sum": jnp.zeros((M,), jnp.float32),
             "loss_count": jnp.zeros((), jnp.int32)}
    one = functools.partial(member_step, max_widths=max_widths, tx=tx)

    def step(state, batch, arrays):
        idx, t = batch                                            # idx [M, batch]
        x, y, w = arrays
        members, loss = jax.vmap(one, (0, 0, None, None, 0))(state["members"], idx, x, y, w)
        new_epoch = t % spe == 0                                  # train_loss: the last epoch's mean
        loss_sum = jnp.where(new_epoch, 0.0, state["loss_sum"]) + loss
        count = jnp.where(new_epoch, 0, state["loss_count"]) + 1
        return {"members": members, "loss_sum": loss_sum, "loss_count": count}, {"loss": jnp.mean(loss)}

    data_keys = jax.vmap(member_data_key)(keys)
    epoch_rows = jax.jit(jax.vmap(epoch_indices, (0, None, None, None)), static_argnums=(2, 3))

    def batches(first, count):   # every member's rows of steps first .. first + count - 1 (its seed's order)
        steps = np.arange(first, first + count)
        perms = {int(e): np.asarray(epoch_rows(data_keys, int(e), int(n), cfg.batch_size))
                 for e in np.unique(steps // spe)}                # [M, spe, batch] per epoch
        idx = np.stack([perms[int(t // spe)][:, t % spe] for t in steps])
        return idx, steps.astype(np.int32)

    sc = dataclasses.replace(schedule or Schedule(total), total=total)
    done = run_chunks(run_dir, state, step, batches, sc, progress=progress, label=label, stop_after=stop_after, stop=stop,
                      consts=(x_train, y_train, widths))
    if done is None:
        return None
    st = jax.device_get(done.state)
    return {"params": st["members"][0], "train_loss": st["loss_sum"] / max(int(st["loss_count"]), 1),
            "seconds": done.seconds, "total_steps": int(total)}

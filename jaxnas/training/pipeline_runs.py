"""Checkpointed from-scratch training of MA2ML image pipelines (pipeline x seed), for ``jaxnas retrain``:
the lanes (one pipeline and one seed each) are one compiled step (``standalone.pipeline_step``, the
step the in-search evaluator scans) trained by the one checkpointed loop (``jaxnas.training.loop``):
a killed or signalled retrain resumes from its newest checkpoint bit-exactly, since a lane's batches
and augmentation draws are functions of its seed and the step alone.

Lanes run as batched ops (``lanes="vmap"``: the fast form on accelerators) or as a loop inside the
step (``lanes="sequential"``: XLA:CPU turns batched convolutions into slow grouped ones); the values
agree to float rounding."""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.training.loop import Schedule, run_chunks
from jaxnas.training.standalone import (
    PipelineConfig,
    pipeline_data_key,
    pipeline_evaluate,
    pipeline_init,
    pipeline_step,
    pipeline_tail,
)

LANES = ("vmap", "sequential")


def _over_lanes(fn, lanes: str):
    """``fn`` mapped over the leading axis of every argument (batched ops or a loop)."""
    if lanes == "vmap":
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)


def train_pipelines(run_dir, data, space, archs, seeds: Sequence[int], cfg: PipelineConfig, *,
                    schedule: Optional[Schedule] = None, lanes: str = "vmap", progress=None,
                    label: str = "pipeline", stop_after: Optional[int] = None, stop=None) -> Optional[dict]:
    """Trains lanes ``m`` (pipeline ``archs[m]`` of ``space``, seed ``seeds[m]``) on ``data.x_train``
    for ``cfg.steps`` steps, checkpointing in ``run_dir``; evaluates them on ``data.x_val``. Returns
    ``params`` (numpy leaves [M, ...]), ``val_loss`` / ``val_accuracy`` / ``train_loss`` [M] (the
    train loss: the mean over the last quarter of the steps, as ``train_pipeline``), ``seconds`` and
    ``steps``; None when ``stop_after`` steps of this session stopped it first (a rerun resumes)."""
    if lanes not in LANES:
        raise ValueError(f"lanes must be one of {LANES}, got {lanes!r}")
    archs = jnp.asarray(np.asarray(archs, np.int32))
    M = int(archs.shape[0])
    if len(seeds) != M:
        raise ValueError(f"{M} pipelines but {len(seeds)} seeds")
    mean, std = tuple(data.mean), tuple(data.std)
    x_train, y_train = jnp.asarray(data.x_train, jnp.float32), jnp.asarray(data.y_train, jnp.int32)
    T, tail = int(cfg.steps), pipeline_tail(cfg)
    keys = jax.vmap(jax.random.key)(jnp.asarray(np.asarray(seeds, np.int64)))
    key_data = jax.random.key_data(jax.vmap(pipeline_data_key)(keys))   # plain uint32: a step argument
    impl = jax.random.key_impl(keys)
    init = jax.jit(_over_lanes(functools.partial(pipeline_init, image_shape=tuple(x_train.shape[1:]), space=space,
                                                 cfg=cfg), lanes))
    state = {"lanes": init(archs, keys), "loss_sum": jnp.zeros((M,), jnp.float32)}
    one = functools.partial(pipeline_step, space=space, cfg=cfg, mean=mean, std=std)

    def step(state, t, consts):
        x, y, archs, kd = consts

        def lane(carry, arch, k):
            return one(carry, t, arch, jax.random.wrap_key_data(k, impl=impl), x, y)
        carry, loss = _over_lanes(lane, lanes)(state["lanes"], archs, kd)
        loss_sum = state["loss_sum"] + jnp.where(t >= T - tail, loss, 0.0)   # train_loss: the last quarter
        return {"lanes": carry, "loss_sum": loss_sum}, {"loss": jnp.mean(loss)}

    def batches(first, count):   # the steps: a lane's batch is drawn from its seed and the step
        return np.arange(first, first + count, dtype=np.int32)

    sc = dataclasses.replace(schedule or Schedule(T), total=T)
    done = run_chunks(run_dir, state, step, batches, sc, progress=progress, label=label, stop_after=stop_after,
                      stop=stop, consts=(x_train, y_train, archs, key_data))
    if done is None:
        return None
    params = done.state["lanes"][0]
    ev = functools.partial(pipeline_evaluate, space=space, cfg=cfg, mean=mean, std=std)
    evaluate = jax.jit(lambda p, a, xv, yv: _over_lanes(lambda p, a: ev(p, a, xv, yv), lanes)(p, a))
    m = evaluate(params, archs, jnp.asarray(data.x_val, jnp.float32), jnp.asarray(data.y_val, jnp.int32))
    out = jax.device_get({**m, "train_loss": done.state["loss_sum"] / tail, "params": params})
    return {**out, "seconds": done.seconds, "steps": T}

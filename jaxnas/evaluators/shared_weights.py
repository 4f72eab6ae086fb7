"""The one-shot evaluator: one supernet whose weights are trained along the search.

- ``weight_step``: an optax step of the supernet parameters on this lane's training batch under the
  lane's architecture weights; the gradient is that of the lane-mean loss (``grad(pmean(loss))``:
  inside ``shard_map`` the gradient of a replicated parameter is already a sum over devices, so
  ``pmean(grad)`` would be wrong, docs/architecture.md invariant 6).
- ``reward_fn(weights)``: the task's reward (``-loss`` or accuracy) on this lane's validation batch;
  differentiable w.r.t. ``weights`` (AdvantageNAS eq. 7, DARTS, GDAS, ...). ``batched_reward_fn``
  scores a batch of weight matrices ``[N, D, K]`` in chunks of ``vmap_chunk`` (``lax.map`` over
  vmapped groups, bounded memory) — for dense supernets (Shapley masks); never use it with a sparse
  supernet (``lax.switch`` under ``vmap`` runs every branch).
- ``context``: what DARTS 2nd order needs, with ``weight_lr`` the weight optimizer's learning rate
  at the current step (its schedule, not the initial value).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxnas.core import optim
from jaxnas.core import schema as S
from jaxnas.evaluators.base import register
from jaxnas.strategies.base import SupernetContext

# the config keys of ``evaluator`` for this name: type, range and default (jaxnas.core.schema)
SCHEMA = {
    "vmap_chunk": S.Int(32, ge=1),   # weight matrices scored per vmapped group by batched_reward_fn
}
DEFAULTS = S.defaults(SCHEMA)


@flax.struct.dataclass
class SharedWeightsState:
    params: Any
    opt_state: Any
    step: jax.Array     # int32: weight steps taken (drives the lr schedule seen by ``context``)


@dataclasses.dataclass(frozen=True, eq=False)
class SharedWeightsEvaluator:
    task: Any                       # ClassificationTask: init_params, loss, reward_of
    optimizer: optax.GradientTransformation
    lr_at: Any                      # step -> weight learning rate
    mode: str                       # the strategy's supernet mode ("sparse" | "dense")
    axis_name: Optional[str] = None
    data: Any = None                # host data for ``result`` (x_val, y_val)
    eval_batch_size: int = 2048
    vmap_chunk: int = 32
    name: str = "shared_weights"
    has_weights: bool = True
    differentiable: bool = True
    needs_batches: bool = True
    max_lane_batch: int = 1         # a sparse supernet is never vmapped over lanes

    def init(self, key):
        params = self.task.init_params(key)
        return SharedWeightsState(params=params, opt_state=self.init_opt_state(params),
                                  step=jnp.zeros((), jnp.int32))

    def init_opt_state(self, params):
        # one compiled program: eagerly, each leaf's zeros compiled a broadcast of its own (DARTS-8's
        # 145 leaves: 1.3 s of a 10 s warm start)
        return jax.jit(self.optimizer.init)(params)

    def inputs(self):
        return ()

    def _mean(self, x):
        return x if self.axis_name is None else jax.lax.pmean(x, self.axis_name)

    def weight_step(self, state, inputs, weights, batch, key):
        def loss_fn(p):
            loss, m = self.task.loss(p, weights, batch, key, self.mode)
            return self._mean(loss), m

        (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = SharedWeightsState(params=params, opt_state=opt_state, step=state.step + 1)
        return new, {"train_loss": loss, "train_accuracy": self._mean(m["accuracy"])}

    def _val_reward(self, params, weights, batch):
        loss, m = self.task.loss(params, weights, batch, None, self.mode, train=False)
        return self.task.reward_of(loss, m), {"loss": loss, **m}

    def reward_fn(self, state, inputs, batch, key):
        del key
        return lambda w: self._val_reward(state.params, w, batch)

    def batched_reward_fn(self, state, inputs, batch, key):
        """``weights [N, D, K] -> (rewards [N], aux)``: vmapped in groups of ``vmap_chunk``."""
        one = self.reward_fn(state, inputs, batch, key)

        def f(ws):
            n = ws.shape[0]
            c = min(self.vmap_chunk, n)
            pad = (-n) % c
            wp = jnp.concatenate([ws, jnp.repeat(ws[:1], pad, 0)]) if pad else ws
            out = jax.lax.map(jax.vmap(one), wp.reshape((-1, c) + ws.shape[1:]))
            return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:n], out)
        return f

    def context(self, state, inputs, train_batch, val_batch, key):
        mode, task = self.mode, self.task
        return SupernetContext(
            params=state.params,
            train_loss=lambda p, w: task.loss(p, w, train_batch, key, mode)[0],
            val_reward=lambda p, w: self._val_reward(p, w, val_batch),
            weight_lr=jnp.asarray(self.lr_at(state.step), jnp.float32))

    def evaluate(self, params, arch, x, y, batch_size: Optional[int] = None) -> dict:
        """Loss and accuracy of ``arch`` (one-hot weights, sparse mode) over a whole data split."""
        batch_size = batch_size or self.eval_batch_size
        weights = self.task.space.one_hot(jnp.asarray(arch))

        @jax.jit
        def one(xb, yb):
            loss, m = self.task.loss(params, weights, (xb, yb), None, "sparse", train=False)
            return loss * xb.shape[0], m["accuracy"] * xb.shape[0]

        tot_loss = tot_acc = 0.0
        n = len(y)
        for i in range(0, n, batch_size):
            l, a = one(jnp.asarray(x[i:i + batch_size]), jnp.asarray(y[i:i + batch_size]))
            tot_loss += float(l)
            tot_acc += float(a)
        return {"loss": tot_loss / n, "accuracy": tot_acc / n}

    def result(self, state, arch) -> dict:
        """The derived architecture with the supernet's weights on the whole validation split."""
        params = jax.device_get(state.params)
        val = self.evaluate(params, arch, self.data.x_val, self.data.y_val)
        out = {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}
        rate = getattr(self.data, "val_majority_rate", None)   # a floor for val_accuracy
        if rate is not None:
            out["val_majority_rate"] = float(rate)
        return out


# task type -> the constructor of its variant of this evaluator (``create(task=..., optimizer=..., ...)``):
# a task whose batches carry state registers one (jaxnas/evaluators/lm_shared_weights.py)
TASK_VARIANTS: dict[type, Any] = {}


def weight_optimizer(cfg: dict, total_steps: int):
    """The supernet optimizer of ``cfg['optimizer']`` (AdamW-style decoupled decay for Adam)."""
    o = cfg["optimizer"]
    kw = dict(b1=o["b1"], b2=o["b2"], eps=o["eps"], momentum=o["momentum"], nesterov=o["nesterov"],
              weight_decay=o["weight_decay"], weight_decay_mode="decoupled", clip=o["clip"],
              schedule=o["schedule"], total_steps=max(int(total_steps), 1), what="optimizer")
    return (optim.make_optimizer(o["name"], o["lr"], **kw),
            optim.lr_at(o["lr"], o["schedule"], max(int(total_steps), 1)))


@register("shared_weights", SCHEMA, needs_data=True, has_weights=True)
def make(options: dict, *, cfg: dict, space, data, task, axis_name, mode: str = "sparse",
         weight_steps: int = 1) -> SharedWeightsEvaluator:
    if task is None:
        raise ValueError("the shared_weights evaluator needs a supernet task (data and a space)")
    opt, lr_at = weight_optimizer(cfg, weight_steps)
    variant = TASK_VARIANTS.get(type(task))
    if variant is not None:   # tasks with state carried across batches (language models)
        return variant(task=task, optimizer=opt, lr_at=lr_at, mode=mode, axis_name=axis_name,
                       data=data, cfg=cfg, vmap_chunk=int(options["vmap_chunk"]))
    return SharedWeightsEvaluator(task=task, optimizer=opt, lr_at=lr_at, mode=mode, axis_name=axis_name,
                                  data=data, eval_batch_size=int(cfg["search"]["eval_batch_size"]),
                                  vmap_chunk=int(options["vmap_chunk"]))

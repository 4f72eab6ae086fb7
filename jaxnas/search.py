"""The one-shot search loop: a weight step and a strategy step, compiled once, many steps per call.

Per step ``t`` (DESIGN.md):
1. the strategy samples an architecture (each device its own, from a key folded with its index);
2. weight step: optax update of the supernet parameters on a training batch, gradient of the loss
   averaged over devices (``grad(pmean(loss))``: inside ``shard_map`` the gradient of a replicated
   parameter is already a sum over devices, so ``pmean(grad)`` would be wrong, see STACK-NOTES.md);
3. strategy step on a validation batch with ``reward_fn(weights) = reward(params, weights, val)``;
   the new strategy state is averaged over devices (floating leaves; other leaves from device 0),
   so every device holds the same state after every step.

``lax.scan`` runs ``chunk`` steps per host call; the batches of a chunk are gathered on the host from
a step-indexed sampler, so a run resumes from any step with no iterator state. Warm-up steps (weights
only) are a second compiled function: putting the strategy step under ``lax.cond`` would place the
supernet's convolutions inside a conditional, whose gradient is slow on CPU (jax-ml/jax#12868).
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxnas.strategies.base import Strategy, SupernetContext

AXIS = "data"


@flax.struct.dataclass
class SearchState:
    step: jax.Array  # int32: global steps done (warm-up included)
    params: Any
    opt_state: Any
    strategy_state: Any
    key: jax.Array


class NonFiniteError(FloatingPointError, ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Search:
    """Compiled search of ``strategy`` on ``task`` with ``optimizer`` for the supernet weights.

    ``mesh``: a 1-D device mesh with axis ``"data"`` (``make_mesh(n)``) for data parallelism, or
    None for one device without ``shard_map``. The global batch is split across the mesh.
    """
    task: Any
    strategy: Strategy
    optimizer: optax.GradientTransformation
    mesh: Optional[jax.sharding.Mesh] = None
    weight_lr: float = 0.0  # for strategies that unroll the weight step (DARTS 2nd order)

    # ---- state -------------------------------------------------------------------------------
    def init(self, key) -> SearchState:
        k_params, k_strategy, k_loop = jax.random.split(key, 3)
        params = self.task.init_params(k_params)
        state = SearchState(step=jnp.zeros((), jnp.int32), params=params,
                            opt_state=self.optimizer.init(params),
                            strategy_state=self.strategy.init(k_strategy), key=k_loop)
        return self.replicate(state)

    def replicate(self, tree):
        if self.mesh is None:
            return tree
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def shard_batches(self, batches):
        """Host arrays ``[steps, global_batch, ...]`` -> device arrays split on the batch axis."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, batches)
        return jax.device_put(batches, NamedSharding(self.mesh, P(None, AXIS)))

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    # ---- one step (per device) ---------------------------------------------------------------
    def _device_keys(self, key):
        key, k_sample, k_aug, k_strategy = jax.random.split(key, 4)
        # device d draws from keys folded with d (0 without a mesh: a 1-device mesh equals no mesh)
        idx = 0 if self.mesh is None else jax.lax.axis_index(AXIS)
        k_sample, k_aug, k_strategy = (jax.random.fold_in(k, idx) for k in (k_sample, k_aug, k_strategy))
        return key, k_sample, k_aug, k_strategy

    def _mean(self, x):
        return x if self.mesh is None else jax.lax.pmean(x, AXIS)

    def _weight_step(self, state: SearchState, weights, batch, k_aug):
        mode = self.strategy.mode

        def loss_fn(p):
            loss, metrics = self.task.loss(p, weights, batch, k_aug, mode)
            return self._mean(loss), metrics

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return params, opt_state, loss, self._mean(metrics["accuracy"])

    def loss_grad(self, params, weights, batch):
        """Loss and gradient of the weight step for fixed architecture weights (global batch split
        over the mesh): equals the gradient of the mean loss over the global batch."""
        def f(params, weights, batch):
            def loss_fn(p):
                return self._mean(self.task.loss(p, weights, batch, None, self.strategy.mode)[0])
            return jax.value_and_grad(loss_fn)(params)
        if self.mesh is None:
            return jax.jit(f)(params, weights, batch)
        g = jax.jit(jax.shard_map(f, mesh=self.mesh, in_specs=(P(), P(), P(AXIS)), out_specs=P()))
        with jax.set_mesh(self.mesh):
            return g(self.replicate(params), self.replicate(weights),
                     jax.device_put(batch, NamedSharding(self.mesh, P(AXIS))))

    def _sync_strategy_state(self, s):
        if self.mesh is None:
            return s

        def sync(x):
            if jnp.issubdtype(x.dtype, jnp.floating):
                return jax.lax.pmean(x, AXIS)
            if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
                return x
            return _from_device0(x)
        return jax.tree.map(sync, s)

    def _step(self, state: SearchState, batches, search: bool):
        train_batch, val_batch = batches
        key, k_sample, k_aug, k_strategy = self._device_keys(state.key)
        arch, weights = self.strategy.sample(state.strategy_state, k_sample)
        params, opt_state, train_loss, train_acc = self._weight_step(state, weights, train_batch, k_aug)
        metrics = {"train_loss": train_loss, "train_accuracy": train_acc}
        s_state = state.strategy_state
        if search:
            task, mode = self.task, self.strategy.mode

            def val_reward(p, w):
                loss, m = task.loss(p, w, val_batch, None, mode, train=False)
                return task.reward_of(loss, m), {"loss": loss, **m}

            ctx = SupernetContext(params=params,
                                  train_loss=lambda p, w: task.loss(p, w, train_batch, k_aug, mode)[0],
                                  val_reward=val_reward, weight_lr=self.weight_lr)
            s_state, s_metrics = self.strategy.step(s_state, k_strategy, partial(val_reward, params), ctx=ctx)
            s_state = self._sync_strategy_state(s_state)
            for name in ("reward", "nonfinite"):
                if name in s_metrics:
                    metrics[name] = self._mean(jnp.asarray(s_metrics[name], jnp.float32))
        probs = self.strategy.probs(s_state)
        metrics["entropy"] = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0), -1)
        metrics["arch"] = arch if self.mesh is None else _from_device0(arch)  # device 0's sample
        new = SearchState(step=state.step + 1, params=params, opt_state=opt_state,
                          strategy_state=s_state, key=key)
        return new, metrics

    # ---- compiled chunks ---------------------------------------------------------------------
    @property
    def _chunk_fns(self):
        cache = self.__dict__.setdefault("_cache", {})
        if not cache:
            for search in (False, True):
                def chunk(state, batches, search=search):
                    return jax.lax.scan(lambda s, b: self._step(s, b, search), state, batches)
                if self.mesh is not None:
                    chunk = jax.shard_map(chunk, mesh=self.mesh, in_specs=(P(), P(None, AXIS)),
                                          out_specs=(P(), P()))
                cache[search] = jax.jit(chunk)
        return cache

    def run_chunk(self, state: SearchState, train_batches, val_batches, search: bool = True):
        """Runs ``len(batches)`` steps in one compiled call; returns (state, per-step metrics)."""
        batches = self.shard_batches((train_batches, val_batches))
        if self.mesh is not None:
            with jax.set_mesh(self.mesh):
                return self._chunk_fns[search](state, batches)
        return self._chunk_fns[search](state, batches)

    # ---- evaluation ----------------------------------------------------------------------------
    def evaluate(self, params, arch, x, y, batch_size: int = 1024) -> dict:
        """Loss and accuracy of ``arch`` (one-hot weights, sparse mode) over a whole data split."""
        space = self.task.space
        weights = space.one_hot(jnp.asarray(arch))

        @jax.jit
        def one(xb, yb):
            loss, m = self.task.loss(params, weights, (xb, yb), None, "sparse", train=False)
            return loss * xb.shape[0], m["accuracy"] * xb.shape[0]

        tot_loss = tot_acc = 0.0
        n = len(y)
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            l, a = one(jnp.asarray(xb), jnp.asarray(yb))
            tot_loss += float(l)
            tot_acc += float(a)
        return {"loss": tot_loss / n, "accuracy": tot_acc / n}


def _from_device0(x):
    """Device 0's value on every device (an invariant result, as shard_map's P() output needs)."""
    mine = jnp.where(jax.lax.axis_index(AXIS) == 0, x.astype(jnp.int32), 0)
    return jax.lax.psum(mine, AXIS).astype(x.dtype)


def make_mesh(num_devices: Optional[int] = None):
    """A 1-D ``("data",)`` mesh over the first ``num_devices`` devices (all by default)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices; {len(devices)} available ({devices[0].platform})")
    return jax.make_mesh((n,), (AXIS,), devices=devices[:n],
                         axis_types=(jax.sharding.AxisType.Explicit,))


def check_metrics(metrics: dict, step0: int):
    """Stops a search whose loss or reward went NaN/inf, naming the step and what to change."""
    for name in ("train_loss", "reward"):
        if name in metrics:
            v = np.asarray(metrics[name])
            bad = ~np.isfinite(v)
            if bad.any():
                at = step0 + int(np.argmax(bad))
                raise NonFiniteError(
                    f"{name} became {v[bad][0]} at step {at}: the search cannot continue. Lower the "
                    f"weight learning rate (optimizer.lr) or enable gradient clipping (optimizer.clip), "
                    f"check the data for NaN/inf values, and make sure the reward is finite.")
    if "nonfinite" in metrics and np.asarray(metrics["nonfinite"]).any():
        at = step0 + int(np.argmax(np.asarray(metrics["nonfinite"]) > 0))
        raise NonFiniteError(
            f"the strategy got a NaN/inf reward or gradient at step {at} (it skipped the update). "
            f"Lower the learning rates (optimizer.lr, strategy.lr), enable clipping, or check the reward.")

"""The search loop: one compiled program over any evaluator and any strategy, many steps per call.

A step has ``P`` *lanes* (``samples``): each lane samples its own architecture, evaluates it and
computes its own estimate; the strategy reduces its estimate over the lane axis ``AXIS`` itself and
every lane applies the identical update (docs/architecture.md, invariant 6). Lanes are

- devices of a 1-D mesh under ``jax.shard_map`` (one sample per device), or
- ``jax.vmap(axis_name=AXIS)`` lanes on one device, for evaluators that may be vmapped (a benchmark
  table, stand-alone training); never for a sparse supernet (``lax.switch`` under ``vmap`` runs every
  branch, docs/architecture.md invariant 2).

Either way the strategy sees the same collectives, so a run on 8 devices equals a 1-device run that
draws the same 8 samples per step. The outputs are declared replicated (``out_specs=P()`` /
``out_axes=None``): a strategy that forgot to reduce a leaf fails to compile instead of silently
keeping device 0's value.

Per step ``t`` and lane ``i`` (keys folded with ``i``):
1. ``arch, weights = strategy.sample(state, k)``;
2. phases ``weights`` / ``both``: ``evaluator.weight_step`` (shared weights; the gradient of the
   lane-mean loss);
3. phases ``strategy`` / ``both``: ``strategy.step(state, k, evaluator.reward_fn(...), ctx)``, with
   ``ctx`` (a :class:`SupernetContext`) only for strategies that unroll the weight step; strategies
   with ``needs="batch"`` get ``evaluator.batched_reward_fn`` and a :class:`BatchContext`.
   The strategy draws its own architectures for the reward (from ``k``): the metric ``sample/arch``
   is step 1's sample, the one the weight step trained (in a ``strategy`` phase, a draw nothing used).

A search is a schedule of phases (:class:`Phase`); each kind is its own compiled chunk function
(``lax.scan``), so a frozen-weight or weight-only phase never traces the other half, and the supernet's
convolutions never sit under ``lax.cond`` (slow gradients on CPU, jax-ml/jax#12868).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from typing import Any, NamedTuple, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxnas.core import trace_cache
from jaxnas.engine.lanes import AXIS, BATCH_SPEC, batch_sharding, replicate
from jaxnas.strategies import categorical as C
from jaxnas.strategies.base import BatchContext
from jaxnas.strategies.tabnas import q_not_positive_message

PHASE_KINDS = ("weights", "strategy", "both")


class Phase(NamedTuple):
    kind: str     # "weights": weights only (warm-up); "strategy": weights frozen; "both": alternate
    steps: int


def schedule_chunks(phases, start: int, end: int, chunk: int):
    """``(kind, first_step, n)`` chunks covering steps [start, end): a chunk ends on a multiple of
    ``chunk`` (so checkpoints keep their schedule) and at the end of its phase."""
    t0 = 0
    for p in phases:
        t1 = t0 + p.steps
        step = max(start, t0)
        while step < min(t1, end):
            n = min(chunk - step % chunk, min(t1, end) - step)
            yield p.kind, step, n
            step += n
        t0 = t1


@flax.struct.dataclass
class SearchState:
    step: jax.Array             # int32: steps done, all phases
    evaluator: Any              # the evaluator's state (supernet params + optimizer, or nothing)
    strategy: Any               # the strategy's state
    key: jax.Array
    evaluations: jax.Array      # int32: reward evaluations over all lanes (table queries)


def state_digest(state: SearchState) -> str:
    """sha256 over every array of the state (keys via their raw data): equal digests, equal states."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        h.update(np.asarray(leaf).tobytes())
    return h.hexdigest()


class NonFiniteError(FloatingPointError, ValueError):
    pass


class DivergenceError(FloatingPointError, ValueError):
    pass


def check_phases(phases, evaluator, strategy) -> tuple[Phase, ...]:
    """Validates a schedule against what the evaluator and strategy can do; says what to change."""
    out = []
    for p in phases:
        kind, steps = p
        if kind not in PHASE_KINDS:
            raise ValueError(f"phase kind {kind!r}: use one of {PHASE_KINDS}")
        if int(steps) < 0:
            raise ValueError(f"phase {kind!r} has {steps} steps; must be >= 0")
        if kind != "strategy" and not evaluator.has_weights:
            raise ValueError(f"phase {kind!r} trains shared weights, but the {evaluator.name!r} evaluator "
                             f"has none: use only 'strategy' phases (search.phases) or "
                             f"evaluator.name='shared_weights'")
        if int(steps):
            out.append(Phase(kind, int(steps)))
    if strategy_steps(out) == 0:
        raise ValueError(f"the schedule {[tuple(p) for p in out]} leaves the strategy no steps (a warm-up "
                         f"as long as the search?): lower search.warmup_steps or raise search.steps")
    return tuple(out)


def strategy_steps(phases) -> int:
    return sum(p.steps for p in phases if p.kind != "weights")


def weight_steps(phases) -> int:
    return sum(p.steps for p in phases if p.kind != "strategy")


@dataclasses.dataclass(frozen=True)
class Search:
    """Compiled search of ``strategy`` learning from ``evaluator``.

    ``mesh``: a 1-D device mesh (``make_mesh(n)``), one lane per device, or None for one device.
    ``samples``: lanes per step; with a mesh it must equal the mesh size, without one any number
    (vmapped lanes; only for evaluators with ``max_lane_batch > 1``).
    The strategy must have been built with ``axis_name=search.axis_name``.
    """
    evaluator: Any
    strategy: Any
    mesh: Optional[jax.sharding.Mesh] = None
    samples: int = 1
    # the identity of its programs (``build`` passes the resolved config): with it, a compilation
    # cache and one device, traced chunks are kept on disk and the next process skips tracing
    # (core/trace_cache.py); None: traced in every process
    trace_key: Optional[str] = None
    # XLA compile options of its chunks, ((name, value), ...) (``search.cpu_convolutions``:
    # core/cpu_compile.py); None: XLA's defaults
    compiler_options: Optional[tuple] = None

    def __post_init__(self):
        if self.mesh is not None and self.samples != self.mesh.size:
            raise ValueError(f"search.samples={self.samples} on {self.mesh.size} devices: each device "
                             f"evaluates one sample per step, so samples must equal the device count")
        if self.mesh is None and self.samples > 1:
            if self.evaluator.max_lane_batch < self.samples:
                raise ValueError(
                    f"search.samples={self.samples} on one device vmaps the evaluation, which the "
                    f"{self.evaluator.name!r} evaluator does not allow (a sparse supernet under vmap runs "
                    f"every op): use search.devices={self.samples} (one sample per device) or samples=1")
            if self.evaluator.needs_batches:
                raise ValueError(f"search.samples > 1 on one device needs an evaluator without data "
                                 f"batches; {self.evaluator.name!r} has them")
        if self.strategy.needs in ("gradient", "unroll") and not self.evaluator.differentiable:
            raise ValueError(f"strategy {self.strategy.name!r} differentiates the reward, which the "
                             f"{self.evaluator.name!r} evaluator cannot: use evaluator.name='shared_weights' "
                             f"or a reward-only strategy (random, reinforce, parsec, tabnas, ...)")
        if self.strategy.needs == "batch" and not hasattr(self.evaluator, "batched_reward_fn"):
            raise ValueError(f"strategy {self.strategy.name!r} scores batches of weight matrices, which "
                             f"the {self.evaluator.name!r} evaluator cannot: use "
                             f"evaluator.name='shared_weights'")
        if self.strategy.needs == "unroll" and not self.evaluator.has_weights:
            raise ValueError(f"strategy {self.strategy.name!r} unrolls a weight step: it needs the "
                             f"shared_weights evaluator")

    @property
    def axis_name(self) -> Optional[str]:
        """The lane axis the strategy reduces over (None: one lane, no collectives)."""
        return AXIS if (self.mesh is not None or self.samples > 1) else None

    # ---- state -------------------------------------------------------------------------------
    def init(self, key) -> SearchState:
        k_eval, k_strategy, k_loop = jax.random.split(key, 3)
        state = SearchState(step=jnp.zeros((), jnp.int32), evaluator=self.evaluator.init(k_eval),
                            strategy=self.strategy.init(k_strategy), key=k_loop,
                            evaluations=jnp.zeros((), jnp.int32))
        return self.replicate(state)

    def replicate(self, tree):
        """``tree`` on every device of the mesh (of every process: :func:`jaxnas.engine.lanes.replicate`);
        without a mesh, committed to the default device. Either way the placement of a fresh state and
        of one restored from a checkpoint (orbax returns committed arrays) is the same, and so is the
        compiled program (its compilation-cache key)."""
        if self.mesh is None:
            return jax.device_put(tree, jax.local_devices()[0])
        return replicate(tree, self.mesh)

    def shard_batches(self, batches):
        """Host arrays ``[steps, global_batch, ...]`` -> device arrays split on the batch axis. Arrays
        already split over the mesh (:func:`jaxnas.engine.distributed.feed`: each process fed its own rows)
        pass as they are."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, batches)
        sharding = batch_sharding(self.mesh)
        if all(isinstance(x, jax.Array) and x.sharding == sharding for x in jax.tree.leaves(batches)):
            return batches
        if any(d.process_index != jax.process_index() for d in self.mesh.devices.flat):
            raise ValueError("over several processes, give batches split over the mesh "
                             "(jaxnas.engine.distributed.feed: each process gathers its own rows)")
        return jax.device_put(batches, sharding)

    @property
    def inputs(self):
        cache = self.__dict__.setdefault("_inputs", [])
        if not cache:
            cache.append(self.replicate(self.evaluator.inputs()))
        return cache[0]

    # ---- one step of one lane ----------------------------------------------------------------
    def _lane(self):
        return 0 if self.axis_name is None else jax.lax.axis_index(AXIS)

    def _reduce_metric(self, x):
        x = jnp.asarray(x)
        x = x.astype(jnp.float32) if x.dtype == jnp.bool_ or jnp.issubdtype(x.dtype, jnp.integer) else x
        return C.lane_mean(x, self.axis_name)

    def _step(self, state: SearchState, inputs, batches, kind: str):
        train_batch, val_batch = batches if batches is not None else (None, None)
        key, *ks = jax.random.split(state.key, 5)
        lane = self._lane()
        k_sample, k_weights, k_reward, k_strategy = (jax.random.fold_in(k, lane) for k in ks)
        ev, st = state.evaluator, state.strategy
        arch, weights = self.strategy.sample(st, k_sample)
        metrics, evaluations = {}, state.evaluations
        if kind in ("weights", "both"):
            ev, wm = self.evaluator.weight_step(ev, inputs, weights, train_batch, k_weights)
            metrics.update({f"weights/{k}": self._reduce_metric(v) for k, v in wm.items()})
        if kind in ("strategy", "both"):
            reward_fn = self.evaluator.reward_fn(ev, inputs, val_batch, k_reward)
            ctx = None
            if self.strategy.needs == "batch":   # weights [N, D, K] -> rewards [N] (Shapley masks)
                reward_on = lambda b: self.evaluator.batched_reward_fn(ev, inputs, b, k_reward)
                reward_fn, ctx = reward_on(val_batch), BatchContext(val_batch, reward_on)
            if self.strategy.needs == "unroll":
                ctx = self.evaluator.context(ev, inputs, train_batch, val_batch, k_weights)
            st, sm = self.strategy.step(st, k_strategy, reward_fn, ctx=ctx)
            n = C.lane_sum(jnp.asarray(sm["evaluations"], jnp.float32), self.axis_name)
            evaluations = evaluations + jnp.round(n).astype(jnp.int32)
            metrics.update({f"strategy/{k}": self._reduce_metric(v) for k, v in sm.items()})
        metrics["policy/entropy"] = C.entropy(self.strategy.probs(st))
        metrics["sample/arch"] = C.lane_gather(arch, self.axis_name)  # every lane's sample, [P, D]
        new = SearchState(step=state.step + 1, evaluator=ev, strategy=st, key=key, evaluations=evaluations)
        return new, metrics

    # ---- compiled chunks ---------------------------------------------------------------------
    def _chunk_body(self, kind: str):
        def chunk(state, inputs, batches, length=None):
            body = lambda s, b: self._step(s, inputs, b, kind)
            return jax.lax.scan(body, state, batches, length=length)
        return chunk

    def _chunk_fn(self, kind: str):
        cache = self.__dict__.setdefault("_cache", {})
        if kind not in cache:
            chunk = self._chunk_body(kind)
            if self.mesh is not None:
                f = jax.shard_map(lambda s, i, b: chunk(s, i, b), mesh=self.mesh,
                                  in_specs=(P(), P(), BATCH_SPEC), out_specs=(P(), P()))
                nob = lambda s, i, n: jax.shard_map(lambda s, i: chunk(s, i, None, n), mesh=self.mesh,
                                                    in_specs=(P(), P()), out_specs=(P(), P()))(s, i)
            elif self.samples > 1:
                f = None
                nob = lambda s, i, n: jax.vmap(lambda s, i: chunk(s, i, None, n), in_axes=(None, None),
                                               out_axes=None, axis_name=AXIS, axis_size=self.samples)(s, i)
            else:
                f = chunk
                nob = lambda s, i, n: chunk(s, i, None, n)
            opts = dict(self.compiler_options) if self.compiler_options else None
            cache[kind] = (jax.jit(f, compiler_options=opts) if f is not None else None,
                           jax.jit(nob, static_argnums=2, compiler_options=opts))
        return cache[kind]

    def run_chunk(self, state: SearchState, train_batches=None, val_batches=None, kind: str = "both",
                  length: Optional[int] = None):
        """Runs one compiled chunk of ``kind`` steps; returns (state, per-step metrics).

        With batches (evaluators that need data) the chunk has ``len(train_batches)`` steps; without,
        ``length`` steps."""
        if kind not in PHASE_KINDS:
            raise ValueError(f"kind must be one of {PHASE_KINDS}, got {kind!r}")
        with_batches, no_batches = self._chunk_fn(kind)
        ctx = jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()
        with ctx:
            if self.evaluator.needs_batches:
                if train_batches is None:
                    raise ValueError(f"the {self.evaluator.name!r} evaluator needs train/val batches")
                args = (state, self.inputs, self.shard_batches((train_batches, val_batches)))
                return (self._stored_trace(kind, args) or with_batches)(*args)
            if length is None:
                raise ValueError("give length= (steps) for an evaluator without batches")
            return no_batches(state, self.inputs, int(length))

    def _stored_trace(self, kind: str, args):
        """The chunk of ``kind`` on ``args`` from the trace cache (None: jit it as usual)."""
        if self.trace_key is None or self.mesh is not None or self.samples > 1:
            return None
        memo = self.__dict__.setdefault("_traces", {})
        sig = (kind, tuple((x.shape, x.dtype) for x in jax.tree.leaves(args)))   # per call: no str()
        if sig not in memo:
            task = getattr(self.evaluator, "task", None)
            objects = (self.evaluator, self.strategy, getattr(self.evaluator, "space", None), task,
                       getattr(task, "net", None))
            memo[sig] = trace_cache.chunk_caller(
                self._chunk_body(kind), self.trace_key, objects, args, static=(kind,),
                compiler_options=dict(self.compiler_options) if self.compiler_options else None)
        return memo[sig]

    def export_chunk(self, platforms, state: SearchState, train_batches=None, val_batches=None, kind: str = "both",
                     length: Optional[int] = None):
        """The compiled chunk of :meth:`run_chunk` exported with ``jax.export`` for ``platforms`` (e.g.
        ``("cuda", "tpu")``) on any machine: lowering it proves the program (its accelerator branches
        included) builds for those devices without one at hand. Returns the ``jax.export.Exported``."""
        from jax import export
        with_batches, no_batches = self._chunk_fn(kind)
        ctx = jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()
        with ctx:
            if self.evaluator.needs_batches:
                return export.export(with_batches, platforms=tuple(platforms))(
                    state, self.inputs, self.shard_batches((train_batches, val_batches)))
            return export.export(no_batches, platforms=tuple(platforms))(state, self.inputs, int(length))


def _first_step(flags, step0: int) -> Optional[int]:
    """The step of the first true entry of a chunk's per-step ``flags`` (None: none)."""
    flags = np.asarray(flags)
    return step0 + int(np.argmax(flags)) if flags.any() else None


def check_divergence(metrics: dict, step0: int, reference: Optional[float], factor: Optional[float]):
    """Stops a search whose weight loss grew past ``factor`` times ``reference`` (its loss at the first
    weight step, before any update): a diverging optimizer (Adam at a huge lr) keeps finite but meaningless losses that
    the NaN check never sees. Raised before the chunk is checkpointed, so the last checkpoint is
    from before the divergence."""
    name = "weights/train_loss"
    if factor is None or reference is None or not reference > 0 or name not in metrics:
        return
    v = np.asarray(metrics[name], np.float64)
    over = v > factor * reference
    at = _first_step(over, step0)
    if at is not None:
        raise DivergenceError(
            f"{name} diverged: {v[over][0]:.4g} at step {at}, more than {factor:g} x its start ({reference:.4g}). "
            f"Lower the weight learning rate (optimizer.lr) or enable gradient clipping (optimizer.clip); the "
            f"last checkpoint is from before step {at}. search.divergence_factor=None turns this check off.")


def check_metrics(metrics: dict, step0: int):
    """Stops a search whose loss or reward went NaN/inf, or whose MnasNet quality Q <= 0, naming the
    step and what to change (host-side, after each chunk: the same on every device and process)."""
    for name in ("weights/train_loss", "strategy/reward"):
        if name in metrics:
            v = np.asarray(metrics[name])
            bad = ~np.isfinite(v)
            at = _first_step(bad, step0)
            if at is not None:
                raise NonFiniteError(
                    f"{name} became {v[bad][0]} at step {at}: the search cannot continue. Lower the "
                    f"weight learning rate (optimizer.lr) or enable gradient clipping (optimizer.clip), "
                    f"check the data for NaN/inf values, and make sure the reward is finite.")
    at = _first_step(np.asarray(metrics.get("strategy/q_nonpositive", [])) > 0, step0)
    if at is not None:
        raise ValueError(q_not_positive_message(f"at step {at}"))
    at = _first_step(np.asarray(metrics.get("strategy/nonfinite", [])) > 0, step0)
    if at is not None:
        raise NonFiniteError(
            f"the strategy got a NaN/inf reward or gradient at step {at} (it skipped the update). "
            f"Lower the learning rates (optimizer.lr, strategy.lr), enable clipping, or check the reward.")

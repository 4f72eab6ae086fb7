"""Runs a configured search in a work directory: checkpoints, metrics, result, resume.

Work dir layout: ``config.json``, ``metrics.jsonl`` (one JSON line per step), ``checkpoints/``
(orbax; the whole SearchState: params, optimizer and strategy states, step, key — the data position
is the step, since batches are drawn by step), ``result.json`` (derived architecture, its validation
loss/accuracy with the supernet's weights, a digest of the final state).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxnas.build import Experiment, build
from jaxnas.data import BatchSampler, gather
from jaxnas.search import SearchState, check_metrics


def state_digest(state: SearchState) -> str:
    """sha256 over every array of the state (keys via their raw data): equal digests, equal states."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        h.update(np.asarray(leaf).tobytes())
    return h.hexdigest()


def _checkpoint_manager(workdir: Path):
    import orbax.checkpoint as ocp
    return ocp.CheckpointManager((workdir / "checkpoints").resolve(),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2))


def _restore(manager, step, state):
    import orbax.checkpoint as ocp
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def _progress(done, total, t0, metrics, stream):
    if stream is None:
        return
    frac = done / total
    bar = "#" * int(30 * frac)
    rate = done / max(time.perf_counter() - t0, 1e-9)
    extra = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    stream.write(f"\r[{bar:<30}] {done}/{total} {rate:.1f} steps/s {extra}   ")
    if done == total:
        stream.write("\n")
    stream.flush()


def _chunks(phases, start: int, end: int, chunk: int):
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


def run_search(cfg: dict, workdir, progress=sys.stderr, stop_after: int | None = None) -> dict:
    """Runs (or resumes) the search of ``cfg`` in ``workdir``; returns the result dict.

    ``stop_after``: stop after this many steps (for tests of resume); the result is then partial.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    exp: Experiment = build(cfg)
    (workdir / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
    s = cfg["search"]
    total = sum(p.steps for p in exp.phases)
    data, search = exp.data, exp.search
    if search.evaluator.needs_batches:
        train_sampler = BatchSampler(len(data.y_train), s["batch_size"], cfg["seed"])
        val_sampler = BatchSampler(len(data.y_val), s["val_batch_size"] or s["batch_size"], cfg["seed"] + 1)
    state = search.init(jax.random.key(cfg["seed"]))
    manager = _checkpoint_manager(workdir)
    start = 0
    if manager.latest_step() is not None:
        start = int(manager.latest_step())
        state = search.replicate(_restore(manager, start, state))
        if progress:
            progress.write(f"resuming from step {start} ({workdir / 'checkpoints'})\n")
    metrics_path = workdir / "metrics.jsonl"
    if start == 0 and metrics_path.exists():
        metrics_path.unlink()
    elif metrics_path.exists():  # drop lines past the checkpoint (written before a kill)
        lines = [l for l in metrics_path.read_text().splitlines() if l and json.loads(l)["step"] < start]
        metrics_path.write_text("".join(l + "\n" for l in lines))
    t0 = time.perf_counter()
    step = start
    end = total if stop_after is None else min(total, stop_after)
    with metrics_path.open("a") as mf:
        for kind, step, n in _chunks(exp.phases, start, end, s["chunk"]):
            if search.evaluator.needs_batches:
                tb = gather((data.x_train, data.y_train), train_sampler.chunk(step, n))
                vb = gather((data.x_val, data.y_val), val_sampler.chunk(step, n))
                state, m = search.run_chunk(state, tb, vb, kind=kind)
            else:
                state, m = search.run_chunk(state, kind=kind, length=n)
            m = jax.device_get(m)
            check_metrics(m, step)
            for i in range(n):
                row = {"step": step + i, "phase": kind}
                for k, v in m.items():
                    v = np.asarray(v[i])
                    row[k] = v.tolist() if v.ndim else float(v)
                mf.write(json.dumps(row) + "\n")
            mf.flush()
            step += n
            _progress(step - start, end - start, t0,
                      {k.split("/")[-1]: float(np.mean(m[k])) for k in ("weights/train_loss", "strategy/reward")
                       if k in m}, progress)
            if step % s["checkpoint_every"] == 0 or step == total:
                import orbax.checkpoint as ocp
                manager.save(step, args=ocp.args.StandardSave(state))
                manager.wait_until_finished()
    manager.close()
    step = max(step, start)
    if step < total:
        return {"step": step, "finished": False}
    return finish(exp, state, workdir, time.perf_counter() - t0)


def finish(exp: Experiment, state, workdir, seconds: float) -> dict:
    """The result of a finished search: its derived architecture described by the space, rated by the
    evaluator (and the NAS-Bench-201 table when configured); written to ``result.json``."""
    cfg = exp.config
    arch = np.asarray(jax.device_get(exp.strategy.derive(state.strategy)))
    result = {"finished": True, "step": int(state.step), "strategy": cfg["strategy"]["name"],
              "evaluator": exp.evaluator.name, **exp.space.describe(arch),
              **exp.evaluator.result(jax.device_get(state.evaluator), arch),
              "evaluations": int(state.evaluations), "search_seconds": seconds,
              "state_digest": state_digest(state)}
    if cfg["benchmark"]["nb201_table"]:
        from jaxnas.benchmarks.nb201 import annotate
        result = annotate(result, cfg["benchmark"]["nb201_table"])
    (Path(workdir) / "result.json").write_text(json.dumps(result, indent=1))
    return result

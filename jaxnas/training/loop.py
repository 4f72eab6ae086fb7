"""The one training loop of every checkpointed from-scratch run (image networks, language models):
chunks of compiled steps, one resume mechanism.

A run is ``step(state, batch) -> (state, metrics)`` (pure; ``metrics`` scalars such as ``loss``),
``batches(first, n)``: the host arrays of steps ``first .. first + n - 1`` stacked on a leading axis
(a function of the step alone, so a resumed run sees the batches the uninterrupted run saw), and a
pytree ``state`` with an int32 ``step``. :func:`run_chunks` scans ``step`` over chunks of
``chunk`` batches in one compiled call each; a chunk also ends at every ``log_every`` and
``checkpoint_every`` step, so a resume from a checkpoint runs the very chunks of the uninterrupted
run. Checkpoints (orbax, two kept) and ``progress.json`` (seconds so far) live in the run's folder.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxnas.core.signals import StopRequested
from jaxnas.core.workdir import atomic_write_text, progress_line, save_checkpoint


@dataclasses.dataclass(frozen=True)
class Schedule:
    total: int                    # steps of the whole run
    chunk: int = 50               # steps per compiled call (1: one jitted step per batch)
    log_every: int = 50           # steps between progress lines (the logged metrics: their window's mean)
    checkpoint_every: int = 1000  # steps between checkpoints (and one at the end)


@dataclasses.dataclass
class Finished:
    state: Any
    seconds: float                # training time over every session of the run
    last: dict                    # the metrics' means over the last log window


def finished_run(run_dir, progress=None, label: str = "") -> Optional[dict]:
    """The metrics of a run that finished before (``run_dir/run.json``), else None (the folder made)."""
    run_dir = Path(run_dir)
    done = run_dir / "run.json"
    if done.exists():
        progress_line(progress, f"[{label}] finished before: {done}")
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def run_chunks(run_dir, state, step: Callable, batches: Callable, schedule: Schedule, *, progress=None,
               label: str = "", stop_after: Optional[int] = None, consts=None, stop=None,
               compiler_options: Optional[dict] = None) -> Optional[Finished]:
    """Trains from the newest checkpoint in ``run_dir`` (or ``state``) to ``schedule.total`` steps;
    None when ``stop_after`` steps of this session stopped it first (a rerun resumes). ``stop``: a
    :class:`jaxnas.core.signals.StopSignals`; a signal ends the run at the next chunk boundary with a
    checkpoint of that step (:class:`jaxnas.core.signals.StopRequested`). ``consts``:
    arrays every step reads (a whole training set), passed to the compiled call as an argument (a
    closed-over array would be baked into the program) and given to ``step(state, batch, consts)``.
    ``compiler_options``: the compiled call's (``jax.jit``'s; core/cpu_compile.py)."""
    run_dir = Path(run_dir)
    sc = schedule
    mgr = ocp.CheckpointManager((run_dir / "checkpoints").resolve(),
                                options=ocp.CheckpointManagerOptions(max_to_keep=2))
    start, seconds = 0, 0.0
    if mgr.latest_step() is not None:
        start = int(mgr.latest_step())
        state = mgr.restore(start, args=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                                              state)))
        meta = run_dir / "progress.json"
        seconds = float(json.loads(meta.read_text())["seconds"]) if meta.exists() else 0.0
        progress_line(progress, f"[{label}] resuming from step {start} ({run_dir / 'checkpoints'})")
    if consts is None:
        run = jax.jit(lambda state, batch: jax.lax.scan(step, state, batch), compiler_options=compiler_options)
    else:
        scanned = jax.jit(lambda state, batch, c: jax.lax.scan(lambda s, b: step(s, b, c), state, batch),
                          compiler_options=compiler_options)
        run = lambda state, batch: scanned(state, batch, consts)  # noqa: E731
    t0 = time.perf_counter()
    window: list = []
    last: dict = {}
    end = sc.total if stop_after is None else min(sc.total, start + int(stop_after))
    every = [max(int(sc.chunk), 1), int(sc.log_every), int(sc.checkpoint_every)]
    t = start
    while t < end:
        n = min([e - t % e for e in every] + [end - t])
        state, metrics = run(state, batches(t, n))
        window.append(metrics)
        t += n
        if t % sc.log_every == 0 or t == sc.total:
            got = jax.device_get(window)
            last = {k: float(np.mean(np.concatenate([np.atleast_1d(m[k]) for m in got]))) for k in got[0]}
            window = []
            if "loss" in last and not np.isfinite(last["loss"]):
                raise FloatingPointError(f"[{label}] the training loss is {last['loss']} at step {t}: lower the "
                                         f"learning rate (lr) or set grad_clip")
            progress_line(progress, f"[{label}] step {t}/{sc.total} " +
                          " ".join(f"{k} {v:.4f}" for k, v in last.items()) +
                          f" ({seconds + time.perf_counter() - t0:.1f} s)")
        signum = stop.requested() if stop is not None else None
        if t % sc.checkpoint_every == 0 or t == sc.total or signum:
            save_checkpoint(mgr, t, state)      # a full disk: one message (core.workdir.SaveError)
            atomic_write_text(run_dir / "progress.json",
                              json.dumps({"step": t, "seconds": seconds + time.perf_counter() - t0}))
        if signum and t < sc.total:
            mgr.close()
            raise StopRequested(signum, t, f"retrain [{label}]" if label else "retrain")
    mgr.close()
    if end < sc.total:
        return None
    return Finished(state, seconds + time.perf_counter() - t0, last)

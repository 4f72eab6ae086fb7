"""Runs a configured search in a work directory: checkpoints, metrics, result, resume.

Work dir layout: ``config.json`` (the resolved config, written once the run is known to be new or the
same as the one in the dir), ``fingerprint.json`` (config and data fingerprint of the run, checked on
every resume), ``metrics.jsonl`` (one JSON line per step), ``checkpoints/`` (orbax; the whole
SearchState: params, optimizer and strategy states, step, key — the data position is the step, since
batches are drawn by step), ``result.json`` (derived architecture, its validation loss/accuracy with
the supernet's weights, a digest of the final state), ``.lock`` while a process uses it. The safety
rules (lock, fingerprint, torn metrics line, checkpoint fallback) are in :mod:`jaxnas.core.workdir`.

Several processes (``search.distributed``, :mod:`jaxnas.engine.distributed`): every process runs this same
loop on one mesh over all their devices and feeds only its own rows of each batch; the lock, the
fingerprint, ``config.json``, ``metrics.jsonl``, ``result.json`` and the progress bar are process 0's
(its decisions reach the others through :func:`jaxnas.engine.distributed.agree`); orbax saves and restores
checkpoints collectively. The work dir must be one directory that every process sees (a shared file
system) at the same path.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxnas import strategies
from jaxnas.benchmarks.nb201 import annotate
from jaxnas.config.experiment import Experiment, build
from jaxnas.config.settings import DEFAULTS
from jaxnas.core import tensorboard as TB
from jaxnas.core import workdir as W
from jaxnas.core.progress import Progress
from jaxnas.core.signals import StopRequested, StopSignals
from jaxnas.data import BatchSampler
from jaxnas.engine import distributed as Dist
from jaxnas.engine.fork import FORK_FILE, fork_state, named_leaves
from jaxnas.engine.search import check_divergence, check_metrics, schedule_chunks, state_digest
from jaxnas.models.supernets.cells import layout_of, layout_of_paths, relayout


def _checkpoint_manager(workdir: Path):
    import orbax.checkpoint as ocp
    # the lock makes this the only writer: temporary dirs of a killed save can go
    # the handler registered: item_metadata reads a checkpoint's tree (its parameter layout) without its arrays
    return ocp.CheckpointManager((workdir / "checkpoints").resolve(),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2, cleanup_tmp_directories=True),
                                 item_handlers=ocp.StandardCheckpointHandler())


def _restore(manager, step, state, net=None):
    """The checkpoint of ``step`` as ``state``'s tree. A cell supernet saved in another parameter layout
    (``space.scan_edges`` / ``scan_cells``, e.g. a work dir from before scanned edges became the
    default) is restored in its own layout, then converted (:func:`relayout`)."""
    import orbax.checkpoint as ocp
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    mine = layout_of(net)
    meta = manager.item_metadata(step) if mine is not None else None
    if meta is not None:
        stored = layout_of_paths(named_leaves(meta.tree))
        if stored != mine:
            theirs = jax.eval_shape(lambda s: relayout(s, net, mine, stored), abstract)
            return relayout(manager.restore(step, args=ocp.args.StandardRestore(theirs)), net, stored, mine)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def run_search(cfg: dict, workdir, progress=sys.stderr, stop_after: int | None = None,
               force_restart: bool = False, compile_cache: bool = True) -> dict:
    """Runs (or resumes) the search of ``cfg`` in ``workdir``; returns the result dict.

    A work dir holds one run: resuming it with a config (or data) that changes the run raises
    :class:`jaxnas.core.workdir.RunMismatchError`; ``force_restart`` deletes the old run first. A second
    process on the same dir raises :class:`jaxnas.core.workdir.WorkdirLockedError`. Recoveries (stale lock,
    torn metrics line, broken newest checkpoint) are said on ``progress`` (stderr when None).
    ``stop_after``: stop after this many steps (for tests of resume); the result is then partial.
    ``compile_cache``: keep compiled programs on disk so a resume starts without compiling
    (:func:`jaxnas.engine.compile_cache.ensure`; ``JAXNAS_COMPILE_CACHE=off`` also turns it off).
    With ``search.distributed`` every process calls this with the same config and work dir (see the
    module docstring); each returns the same result.
    """
    if compile_cache:
        from jaxnas.engine.compile_cache import ensure
        ensure()
    Dist.initialize(cfg["search"]["distributed"], progress)      # before anything touches a device
    primary = Dist.is_primary()
    if not primary:
        progress = _Quiet()          # process 0 reports; the others only raise
    workdir = Path(workdir)
    lock = None

    def take():                       # process 0: the lock and the config check, for the whole run
        nonlocal lock
        W.check_ours(workdir)        # before the lock file is written into someone else's folder
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            lock = W.WorkdirLock(workdir, progress).acquire()
        except OSError as e:
            raise type(e)(f"cannot use {workdir} as a work dir ({e.strerror or e}): give a writable "
                          f"--workdir") from None
        if force_restart:
            W.clear_run(workdir, progress)
        return W.check_config(workdir, cfg, DEFAULTS)          # fails before any data is loaded or compiled
    try:
        stored = Dist.agree(take, primary_only=True, what=f"work dir {workdir}")
        exp: Experiment = Dist.agree(lambda: build(cfg), what="building the search")
        mesh = exp.search.mesh
        lanes = {"devices": 1 if mesh is None else int(mesh.size), "samples": int(exp.search.samples)}
        if jax.process_count() > 1:   # every process must search the same run as process 0
            fp = W.fingerprint(cfg, exp.data, lanes)
            Dist.check_same("config or data", f"{fp['config_sha256']} {fp['data_sha256']}",
                            "start every process with the same config file, overrides and data files")
        used = strategies.defaults_used(cfg["strategy"]["name"], cfg["strategy"])
        Dist.agree(lambda: W.check_run(workdir, cfg, exp.data, stored, progress, lanes, DEFAULTS, used),
                   primary_only=True, what=f"work dir {workdir}")
        with StopSignals(progress, enabled=cfg["search"]["handle_signals"]) as stop:
            result = _run(exp, workdir, progress, stop_after, primary, stop)
        Dist.barrier("jaxnas_run_done")    # the lock outlives every process's use of the dir
        return result
    finally:
        if lock is not None:
            lock.release()


class _Quiet:
    """The progress stream of processes other than 0: says nothing."""

    def write(self, *_):
        pass

    def flush(self):
        pass


def _run(exp: Experiment, workdir: Path, progress, stop_after, primary: bool = True, stop=None):
    cfg = exp.config
    s = cfg["search"]
    total = sum(p.steps for p in exp.phases)
    data, search = exp.data, exp.search
    if search.evaluator.needs_batches:
        train_sampler = BatchSampler(len(data.y_train), s["batch_size"], cfg["seed"], "search.batch_size", "training")
        val_sampler = BatchSampler(len(data.y_val), s["val_batch_size"] or s["batch_size"], cfg["seed"] + 1,
                                   "search.val_batch_size" if s["val_batch_size"] else "search.batch_size (the "
                                   "validation batch unless search.val_batch_size is given)", "validation")
    state = search.init(jax.random.key(cfg["seed"]))
    net = getattr(exp.task, "net", None)      # a cell supernet's layout is converted at restore
    ckdir = workdir / "checkpoints"
    start, restored, broken, manager = W.restore_newest(lambda: _checkpoint_manager(workdir),
                                                        lambda mgr, st: _restore(mgr, st, state, net), ckdir, progress)
    if broken:       # keep them aside: their steps will be saved again
        manager.close()
        if primary:
            W.set_aside(ckdir, broken, progress)
        Dist.barrier("jaxnas_set_aside")
        manager = _checkpoint_manager(workdir)
    start = start or 0
    if restored is not None:
        state = restored
        if progress:
            progress.write(f"resuming from step {start} ({ckdir})\n")
    elif s["init_from"]:             # a shared warm-up: start from another run's supernet (engine/fork.py)
        state, record = fork_state(s["init_from"], state, W.fingerprint(cfg, data)["data_sha256"], progress,
                                   net)
        start = record["step"]
        if start >= total:
            raise ValueError(f"search.init_from={s['init_from']!r} starts at step {start}, not before this run's "
                             f"last step ({total}): raise search.steps or fork from an earlier step")
        if primary:
            W.atomic_write_json(workdir / FORK_FILE, record)
    # fresh and restored states alike placed (committed) on the devices: the same compiled chunk, so
    # a resume loads the first run's program from the compilation cache instead of compiling again
    state = search.replicate(state)
    metrics_path = workdir / "metrics.jsonl"
    # a resume's earlier rows, read once: process 0 trims them, every process takes the divergence
    # reference from them (the shared metrics file, so all processes stop at the same step)
    prior, note = W.read_metrics(metrics_path) if start > 0 and metrics_path.exists() else ([], None)
    if not primary:
        pass              # process 0 keeps the metrics
    elif start == 0 and metrics_path.exists():
        metrics_path.unlink()
    elif metrics_path.exists():  # drop lines past the checkpoint (written before a kill) and a torn one
        if note:
            W.say(progress, note)
        kept = [r for r in prior if r["step"] < start]
        if [r["step"] for r in kept] != list(range(start)):
            W.say(progress, f"{metrics_path} has {len(kept)} rows for the {start} steps before the checkpoint "
                             f"(some were lost or duplicated); continuing")
        W.rewrite_metrics(metrics_path, kept)
    elif restored is not None:       # a resume whose metrics file was deleted: say what is lost
        W.say(progress, f"{metrics_path} is missing: the rows of steps 0-{start - 1} are lost; resuming from the "
                         f"checkpoint of step {start}, the file restarts there")
    # the divergence check's reference: the weight loss of the run's first weight step, before any update
    first = [r["weights/train_loss"] for r in prior if "weights/train_loss" in r][:1]
    reference = float(first[0]) if first else None
    t0 = time.perf_counter()
    step = start
    end = total if stop_after is None else min(total, stop_after)
    logging_tb = _tensorboard_on(s["tensorboard"])      # every process: the derive below is collective
    events = TB.EventLog(workdir / TB.DIR, purge_step=start) if logging_tb and primary else None
    bar = Progress(end - start, progress if primary else None)
    drawn = time.monotonic()      # when the architecture was last drawn into the event log
    try:
        with (W.MetricsWriter(metrics_path) if primary else _NoMetrics()) as mf:
            for kind, step, n in schedule_chunks(exp.phases, start, end, s["chunk"]):
                if search.evaluator.needs_batches:    # this process's rows of the global batches
                    tb = Dist.feed((data.x_train, data.y_train), train_sampler.chunk(step, n), search.mesh)
                    vb = Dist.feed((data.x_val, data.y_val), val_sampler.chunk(step, n), search.mesh)
                    state, m = search.run_chunk(state, tb, vb, kind=kind)
                else:
                    state, m = search.run_chunk(state, kind=kind, length=n)
                m = jax.device_get(m)
                check_metrics(m, step)
                if reference is None and "weights/train_loss" in m:
                    reference = float(np.asarray(m["weights/train_loss"]).reshape(n, -1)[0].mean())
                check_divergence(m, step, reference, s["divergence_factor"])
                rows = []
                for i in range(n):
                    row = {"step": step + i, "phase": kind}
                    for k, v in m.items():
                        v = np.asarray(v[i])
                        row[k] = v.tolist() if v.ndim else float(v)
                    rows.append(row)
                mf.write(rows)      # one write(2) per chunk: a kill tears at most the last line
                if events is not None:
                    events.rows(rows)
                step += n
                bar.update(n, kind, **{k.split("/")[-1]: float(np.mean(m[k]))
                                       for k in ("weights/train_loss", "strategy/reward") if k in m})
                signum = Dist.any_stop(stop.requested() if stop is not None else None)
                if step % s["checkpoint_every"] == 0 or step == total or signum:
                    W.save_checkpoint(manager, step, state)    # a full disk: one message, not orbax's log
                    if logging_tb:
                        drawn = _log_architecture(events, exp, state, step, drawn, final=step == end)
                if signum and step < total:   # SIGTERM / SIGINT: stopped at this chunk boundary, resumable
                    raise StopRequested(signum, step, "search")
    finally:
        bar.close()
        if events is not None:
            events.close()
        manager.close()
    if step < total:
        return {"step": step, "finished": False}
    return finish(exp, state, workdir, time.perf_counter() - t0, write=primary)


def _tensorboard_on(enabled) -> bool:
    """``search.tensorboard``: None = on when tensorboardX is installed."""
    if enabled is False or (enabled is None and not TB.available()):
        return False
    if not TB.available():
        raise ImportError("search.tensorboard=True needs tensorboardX: pip install tensorboardX "
                          "(or set search.tensorboard=False)")
    return True


def _log_architecture(events, exp: Experiment, state, step: int, drawn: float, final: bool) -> float:
    """The architecture the strategy would derive now, as text and (with matplotlib) a drawing: at
    most one drawing per ``DRAW_EVERY_S`` seconds (a drawing costs about a second; tiny runs checkpoint
    often) and at the last step. Every process derives (a computation over the run's global arrays, as
    in :func:`finish`); only process 0 (``events`` not None) writes. Returns when it last drew."""
    arch = np.asarray(jax.device_get(exp.strategy.derive(state.strategy)))
    if events is None:
        return drawn
    text = "  \n".join(f"{k}: {v}" for k, v in exp.space.describe(arch).items())   # markdown line breaks
    figure, now = None, time.monotonic()
    if final or now - drawn >= DRAW_EVERY_S:
        try:
            from jaxnas.drawing import draw
            figure, drawn = draw(arch, exp.space, title=f"step {step}"), now
        except (ImportError, ValueError):      # no matplotlib (the plots extra), or a space without a drawing
            pass
    events.architecture(step, text, figure)
    return drawn


DRAW_EVERY_S = 60.0


class _NoMetrics:
    def write(self, rows):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def finish(exp: Experiment, state, workdir, seconds: float, write: bool = True) -> dict:
    """The result of a finished search: its derived architecture described by the space, rated by the
    evaluator (and the NAS-Bench-201 table when configured); written to ``result.json`` (by process 0
    only: ``write``)."""
    cfg = exp.config
    arch = np.asarray(jax.device_get(exp.strategy.derive(state.strategy)))
    result = {"finished": True, "step": int(state.step), "strategy": cfg["strategy"]["name"],
              "evaluator": exp.evaluator.name, **exp.space.describe(arch),
              **exp.evaluator.result(jax.device_get(state.evaluator), arch),
              "evaluations": int(state.evaluations), "search_seconds": seconds,
              "state_digest": state_digest(state)}
    if exp.strategy.summary is not None:   # e.g. TabNAS: P(arch | V), Alg. 3 top-n, the mode
        result["policy"] = exp.strategy.summary(jax.device_get(state.strategy), arch)
    if cfg["benchmark"]["nb201_table"]:
        result = annotate(result, cfg["benchmark"]["nb201_table"])
    fork = Path(workdir) / FORK_FILE
    if fork.exists():
        result["init_from"] = json.loads(fork.read_text())
    if write:
        W.atomic_write_text(Path(workdir) / "result.json", json.dumps(result, indent=1))
    return result

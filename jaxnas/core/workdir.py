"""Work-dir safety: one process per work dir, a resume only of the same run, kill-proof metrics and
checkpoints.

- **Lock** (:class:`WorkdirLock`): ``<workdir>/.lock`` holds the owner's pid, host and start time
  and an exclusive ``flock`` on it. A second process is refused, naming the owner's pid. The kernel
  drops the ``flock`` when its owner dies (even by SIGKILL), so a lock left behind by a dead process
  is cleared (said on stderr) and the run proceeds. On file systems without ``flock`` the pid alone
  decides (``os.kill(pid, 0)``, same host only). Released (the file removed) on exit and exceptions.
- **Fingerprint** (:func:`fingerprint`, ``<workdir>/fingerprint.json``, written atomically when a
  run starts): the resolved config and, per array the search reads (``x_train``, ``y_train``,
  ``x_val``, ``y_val``), its shape, dtype and sha256 (plus the image mean/std and class count). A
  resume compares everything except :data:`RUN_NEUTRAL_KEYS`, which do not change the searched state:
  ``search.chunk`` (a chunked loop equals the step-wise one, bit for bit), ``search.checkpoint_every``
  (where checkpoints land), ``search.eval_batch_size`` and ``benchmark.nb201_table`` (how the finished
  state is rated; ``result.json`` is recomputed on every resume), ``data.test_path`` /
  ``data.test_split`` (the search never reads the test split; retraining does), ``search.distributed.*``
  (how the processes of a run find each other), ``space.scan_edges`` / ``space.scan_cells`` (the cell
  supernet's parameter layout: a checkpoint saved in the other one is converted as it restores, the
  same values; the step computes the same function, equal to float rounding), ``search.cpu_convolutions``
  (which library runs a convolution: equal to float rounding). The *lanes* are compared instead: the device count the
  search ran on and the samples per step (``search.devices='all'`` resumed on another number of
  devices would change the run); a fingerprint without them (older jaxnas) skips that comparison. The
  data's location
  (:data:`DATA_LOCATION_KEYS`) is not compared when the arrays are: their content is. Any other
  difference stops with :class:`RunMismatchError`, listing the keys ``old -> new`` and the two ways
  out: another ``--workdir``, or ``--force-restart`` (:func:`clear_run`). A key missing on one side
  (a work dir from a jaxnas with fewer keys) counts only if the other side's value is not its default.
  ``config.json`` is written only after that check.
- **Metrics** (:class:`MetricsWriter`): the rows of a chunk go out in one ``write(2)`` on an
  ``O_APPEND`` descriptor (no user-space buffer), so a kill leaves whole lines and at most one torn
  last line; :func:`read_metrics` skips a torn last line and says so (a bad line elsewhere is an error).
- **Saves** (:func:`saving`, :func:`save_checkpoint`, :func:`save_tree`): an orbax save that fails on the
  file system (disk full, read-only, ...) ends in one :class:`SaveError` naming the folder, the free
  space and what to do; orbax's log of the failure (hundreds of lines) goes to a file, not the terminal.
- **Checkpoints** (:func:`restore_newest`): when the newest checkpoint does not restore, the newest
  one that does is used (said on stderr) and the broken ones move to ``broken_checkpoints/``; when
  none restores, an error names the directory and ``--force-restart``.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LOCK = ".lock"
FINGERPRINT = "fingerprint.json"
DAMAGED = FINGERPRINT + ".damaged"     # where a damaged fingerprint is moved aside (kept, not read)
FORMAT = 1
RUN_NEUTRAL_KEYS = ("search.chunk", "search.checkpoint_every", "search.eval_batch_size", "search.handle_signals",
                    "search.trace_cache", "search.cpu_convolutions",   # compile options: equal to float rounding
                    "search.divergence_factor", "search.tensorboard",
                    "benchmark.nb201_table", "data.test_path", "data.test_split",
                    # the supernet's parameter layout: a checkpoint of the other layout is converted at restore
                    "space.scan_edges", "space.scan_cells",
                    # how the processes of a multi-process run find each other (the lanes are compared)
                    "search.distributed.enabled", "search.distributed.coordinator_address",
                    "search.distributed.num_processes", "search.distributed.process_id",
                    "search.distributed.local_device_ids", "search.distributed.initialization_timeout")
DATA_LOCATION_KEYS = ("data.path", "data.data_dir", "data.val_path")
DATA_ARRAYS = ("x_train", "y_train", "x_val", "y_val")
# what --force-restart deletes: everything the search wrote (report plots included)
# what a search wrote in its work dir (deleted by --force-restart) and what was derived from it (moved
# aside to stale/<time>/ by --force-restart: a retrain may have cost hours)
RUN_FILES = ("checkpoints", "broken_checkpoints", "metrics.jsonl", "result.json", FINGERPRINT, DAMAGED, "config.json",
             "metrics.png", "entropy.png", "choices.png", "fork.json", "tensorboard")
DERIVED_FILES = ("retrain", "retrain.json", "export")
WAYS_OUT = ("give another --workdir to keep both runs, or pass --force-restart to delete this work dir's "
            "checkpoints, metrics and result and start over")


class WorkdirError(ValueError):
    """A work dir that cannot be used as asked (the CLI prints it as ``jaxnas: error: ...``)."""


class WorkdirLockedError(WorkdirError):
    pass


class RunMismatchError(WorkdirError):
    pass


class NoRestorableCheckpointError(WorkdirError):
    pass


class SaveError(WorkdirError):
    """An orbax save failed on the file system (disk full, read-only, ...)."""


def say(stream, msg: str):
    stream = stream if stream is not None else sys.stderr
    stream.write(f"jaxnas: {msg}\n")
    stream.flush()


def progress_line(stream, msg: str):
    """:func:`say` on a progress stream; nothing without one (``progress=None``: a quiet caller)."""
    if stream is not None:
        say(stream, msg)


def atomic_write_text(path, text: str):
    """Writes ``text`` to ``path`` through a temporary file and ``os.replace``: a reader (or a kill)
    sees the old file or the new one, never a part."""
    _atomic_write(path, text, "w")


def atomic_write_bytes(path, data: bytes):
    """:func:`atomic_write_text` of bytes."""
    _atomic_write(path, data, "wb")


def _atomic_write(path, data, mode: str):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj) -> None:
    """:func:`atomic_write_text` of ``obj`` as JSON (numpy scalars as floats)."""
    atomic_write_text(path, json.dumps(obj, indent=1, default=float))


def save_tree(path, tree) -> None:
    """Saves the pytree ``tree`` at ``path`` with orbax (a tree already there is replaced); a failure on
    the file system is a :class:`SaveError` (:func:`saving`)."""
    import orbax.checkpoint as ocp
    path = Path(path).resolve()
    if path.exists():
        shutil.rmtree(path)
    with saving(path, f"the arrays {path.name}"), ocp.StandardCheckpointer() as ck:
        ck.save(path, tree)
        ck.wait_until_finished()


def save_checkpoint(manager, step: int, state) -> None:
    """``manager.save(step, state)`` (an orbax ``CheckpointManager``) and its wait; a failure on the file
    system is a :class:`SaveError` and the half-written checkpoint is removed (it holds the space)."""
    import orbax.checkpoint as ocp
    directory = Path(manager.directory)
    try:
        with saving(directory, f"the checkpoint of step {step}"):
            manager.save(step, args=ocp.args.StandardSave(state))
            manager.wait_until_finished()
    except SaveError:
        held = _HeldLog()             # the failed manager is closed quietly (its threads would log more)
        logging.getLogger("absl").addFilter(held)
        try:
            manager.close()
        except Exception:  # noqa: BLE001
            pass
        finally:
            logging.getLogger("absl").removeFilter(held)
        for tmp in directory.glob(f"{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- failed saves --------------------------------------------------------------------------------
_SPACE_WORDS = ("RESOURCE_EXHAUSTED", "No space left", "Disk quota exceeded")
_FS_WORDS = _SPACE_WORDS + ("PERMISSION_DENIED", "Read-only file system", "Permission denied")


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def file_system_failure(e: BaseException) -> bool:
    """Whether ``e`` (an orbax / TensorStore save error) is the file system's: an OSError in its chain,
    or TensorStore's status text for one (it raises ValueError: ``RESOURCE_EXHAUSTED: ...``)."""
    return any(isinstance(x, OSError) or any(w in str(x) for w in _FS_WORDS) for x in _chain(e))


def _disk_full(e: BaseException) -> bool:
    return any((isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT))
               or any(w in str(x) for w in _SPACE_WORDS) for x in _chain(e))


def free_space(path) -> str:
    """``"1.2 GB free"`` on the file system of ``path`` (its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return "free space unknown"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if free < 1000 or unit == "TB":
            return f"{free:.0f} {unit} free" if unit == "B" else f"{free:.1f} {unit} free"
        free /= 1000


class _HeldLog(logging.Filter):
    """Holds back the records of a logger (orbax logs through absl's) while attached."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record):
        self.records.append(record)
        return False


def _write_log(records) -> str | None:
    """The held records in a file of the temporary folder (the work dir's disk may be full); its path."""
    if not records:
        return None
    fmt = logging.Formatter("%(levelname)s:%(name)s:%(message)s")
    try:
        fd, name = tempfile.mkstemp(prefix="jaxnas-save-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(fmt.format(r) for r in records) + "\n")
        return name
    except OSError:
        return None


def _fs_cause(e: BaseException) -> str:
    """The operating system's words for a failed write (TensorStore buries them in a long line)."""
    for x in _chain(e):
        if isinstance(x, OSError) and x.strerror:
            return x.strerror
        for words in ("No space left on device", "Disk quota exceeded", "Read-only file system", "Permission denied"):
            if words in str(x):
                return words
    return _why(e)


def save_failed_message(path, what: str, e: BaseException, log: str | None) -> str:
    path = Path(path)
    full = _disk_full(e)
    cause = "the disk is full" if full else "the file system refused the write"
    todo = ("free space there (or give a --workdir on a larger disk)" if full else
            f"make {path.parent} writable (or give a --workdir where you can write)")
    return (f"could not save {what} in {path}: {cause} ({_fs_cause(e)}); {free_space(path)} on that file system. "
            f"{todo[0].upper()}{todo[1:]}, then run the same command again: it resumes from the last checkpoint "
            f"saved" + (f". orbax's log of the failure: {log}" if log else ""))


@contextlib.contextmanager
def saving(path, what: str):
    """Around an orbax save to ``path``: orbax's log lines are held back; a failure on the file system
    becomes one :class:`SaveError` (:func:`save_failed_message`; the log goes to a temporary file), any
    other failure and a success pass the held lines on."""
    logger = logging.getLogger("absl")
    held = _HeldLog()
    logger.addFilter(held)
    try:
        yield
    except Exception as e:  # noqa: BLE001  (orbax / TensorStore raise ValueError for I/O errors)
        logger.removeFilter(held)
        if not file_system_failure(e):
            _replay(logger, held.records)
            raise
        raise SaveError(save_failed_message(path, what, e, _write_log(held.records))) from None
    finally:
        logger.removeFilter(held)
    _replay(logger, held.records)


def _replay(logger, records):
    for r in records:
        logger.handle(r)


def restore_tree(path):
    """The pytree :func:`save_tree` saved at ``path``."""
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as ck:
        return ck.restore(Path(path).resolve())


def writable(directory) -> bool:
    """Whether this process can create files in ``directory`` (permissions, read-only mounts)."""
    return os.access(directory, os.W_OK | os.X_OK)


def read_only_message(workdir, needs: str, way_out: str) -> str:
    """A read-only work dir: what needed writing there and what to do instead."""
    return f"{Path(workdir)} is read-only for this process, and {needs}: make it writable, or {way_out}"


# ---- lock ----------------------------------------------------------------------------------------
def _start_time(pid: int):
    """The start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True       # exists, owned by someone else
    except OSError:
        return False
    return True


def _describe(owner: dict) -> str:
    return (f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('started', '?')}"
            + (f": {' '.join(owner['argv'])}" if owner.get("argv") else ""))


class WorkdirLock:
    """``with WorkdirLock(workdir):`` — exclusive use of a work dir (see the module docstring)."""

    def __init__(self, workdir, stream=None):
        self.path = Path(workdir) / LOCK
        self.stream = stream
        self.fd = None

    def _read(self, fd) -> dict:
        try:
            raw = os.pread(fd, 65536, 0).decode("utf-8", "replace")
            owner = json.loads(raw) if raw.strip() else {}
            return owner if isinstance(owner, dict) else {"raw": raw}
        except (OSError, ValueError):
            return {"raw": "unreadable"}

    def _refuse(self, owner: dict):
        raise WorkdirLockedError(
            f"work dir {self.path.parent} is in use by another jaxnas process ({_describe(owner)}); wait "
            f"for it to finish or stop it, or give another --workdir (lock file: {self.path})")

    def acquire(self):
        try:
            import fcntl
        except ImportError:       # not POSIX: the pid in the file decides
            fcntl = None
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            flock = fcntl is not None
            try:
                if flock:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = self._read(fd)
                os.close(fd)
                self._refuse(owner)
            except OSError:       # no flock on this file system: the pid in the file decides
                flock = False
            try:                  # the previous owner may have removed the file between open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            owner = self._read(fd)
            if owner:
                pid, host = owner.get("pid"), owner.get("host")
                here = host == socket.gethostname()
                running = here and isinstance(pid, int) and _pid_alive(pid) and (
                    owner.get("start_ticks") is None or owner.get("start_ticks") == _start_time(pid))
                if not flock and pid != os.getpid() and (running or not here):
                    os.close(fd)
                    if not here:
                        raise WorkdirLockedError(
                            f"work dir {self.path.parent} is locked by {_describe(owner)}, which cannot be "
                            f"checked from here (no flock on this file system); if that run is over, delete "
                            f"{self.path}, else give another --workdir")
                    self._refuse(owner)
                why = ("no longer running" if not running and here else "no longer holding it")
                say(self.stream, f"cleared a stale lock {self.path} of {_describe(owner)} ({why})")
            me = {"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": _start_time(os.getpid()),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            os.fsync(fd)
            self.fd = fd
            return self
        raise WorkdirLockedError(f"could not take the lock {self.path} (it keeps being replaced)")

    def release(self):
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)      # before the unlock: a waiter then sees a new inode and retries
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ---- fingerprint ---------------------------------------------------------------------------------
def _plain(cfg) -> dict:
    if hasattr(cfg, "to_dict"):           # ml_collections.ConfigDict and the like
        cfg = cfg.to_dict()
    return json.loads(json.dumps(cfg, default=str, sort_keys=True))


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def data_fingerprint(data) -> dict | None:
    """Shape, dtype and sha256 of each array the search reads (None without data, e.g. a table)."""
    if data is None:
        return None
    out = {}
    for name in DATA_ARRAYS:
        a = getattr(data, name, None)
        if a is None:
            continue
        a = np.ascontiguousarray(np.asarray(a))
        out[name] = {"shape": list(a.shape), "dtype": str(a.dtype),
                     "sha256": hashlib.sha256(a.view(np.uint8).reshape(-1).data).hexdigest()}
    for name in ("mean", "std", "num_classes"):
        v = getattr(data, name, None)
        if v is not None:
            out[name] = np.asarray(v).tolist()
    return out


def run_config(config: dict, with_data: bool) -> dict:
    """The config keys that change the run, flattened: ``{"search.steps": 40, ...}``."""
    flat = flatten(config)
    drop = set(RUN_NEUTRAL_KEYS) | (set(DATA_LOCATION_KEYS) if with_data else set())
    return {k: v for k, v in flat.items() if k not in drop}


def fingerprint(cfg, data, lanes: dict | None = None, strategy_defaults: dict | None = None) -> dict:
    """``lanes``: ``{"devices": D, "samples": P}`` of the built search; ``strategy_defaults``: the
    strategy options the config leaves at this jaxnas's defaults (both compared on resume)."""
    config = _plain(cfg)
    dfp = data_fingerprint(data)
    fp = {"format": FORMAT, "config_sha256": _sha(run_config(config, dfp is not None)),
          "data_sha256": _sha(dfp) if dfp is not None else None,
          "config": config, "data": dfp, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    if lanes is not None:
        fp["lanes"] = dict(lanes)
    if strategy_defaults is not None:
        fp["strategy_defaults"] = _plain(strategy_defaults)
    return fp


def flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_ABSENT = "<absent>"


def _fmt(v) -> str:
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12] + "…"      # a sha256
    s = json.dumps(v) if v is not _ABSENT else v
    return s if len(s) <= 60 else s[:57] + "..."


def differences(old: dict, new: dict, defaults: dict | None = None) -> list[tuple[str, object, object]]:
    """``(dotted key, old, new)`` for every key that changes the run (config, then data arrays); a key
    only one side has counts unless the other side holds its default (``defaults``: the config
    defaults, ``jaxnas.config.DEFAULTS``; they only soften the comparison of keys one side lacks)."""
    with_data = old.get("data") is not None and new.get("data") is not None
    a, b = run_config(old["config"], with_data), run_config(new["config"], with_data)
    defaults = flatten(_plain(defaults)) if defaults else {}

    def left_at_default(side, k, value):   # a strategy option the run left at the default it recorded
        sd = side.get("strategy_defaults") or {}
        return k.startswith("strategy.") and k[9:] in sd and sd[k[9:]] == value

    def differ(k):
        x, y = a.get(k, _ABSENT), b.get(k, _ABSENT)
        if x is _ABSENT or y is _ABSENT:
            there = y if x is _ABSENT else x
            if left_at_default(old if x is _ABSENT else new, k, there):
                return False
            return k not in defaults or defaults[k] != there
        return x != y
    diffs = [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b)) if differ(k)]
    la, lb = old.get("lanes"), new.get("lanes")
    if la is not None and lb is not None:     # older fingerprints have none
        diffs += [(f"lanes:{k}", la.get(k, _ABSENT), lb.get(k, _ABSENT)) for k in sorted(set(la) | set(lb))
                  if la.get(k, _ABSENT) != lb.get(k, _ABSENT)]
    sa, sb = old.get("strategy_defaults"), new.get("strategy_defaults")
    if sa is not None and sb is not None:     # a default this jaxnas changed (an option only one side has: new)
        diffs += [(f"{DEFAULT_TAG}strategy.{k}", sa[k], sb[k]) for k in sorted(set(sa) & set(sb)) if sa[k] != sb[k]]
    if with_data:
        da, db = flatten(old["data"], "data:"), flatten(new["data"], "data:")
        diffs += [(k, da.get(k, _ABSENT), db.get(k, _ABSENT)) for k in sorted(set(da) | set(db))
                  if da.get(k, _ABSENT) != db.get(k, _ABSENT)]
    return diffs


DEFAULT_TAG = "default of "


def mismatch_message(workdir, diffs, what: str = "the run recorded in") -> str:
    lines = "\n".join(f"  {k}: {_fmt(o)} -> {_fmt(n)}" for k, o, n in diffs)
    changed = [(k[len(DEFAULT_TAG):], o) for k, o, _ in diffs if k.startswith(DEFAULT_TAG)]
    keep = ("" if not changed else "\nthis jaxnas changed those defaults since the run started: to resume it as it "
            "started, pass " + " ".join(f"{k}={json.dumps(o)}" for k, o in changed) + "; otherwise")
    return (f"this config differs from {what} {Path(workdir) / FINGERPRINT} in {len(diffs)} key(s) that change "
            f"the run (old -> new):\n{lines}{keep}\nresuming would mix two runs: {WAYS_OUT}")


def read_fingerprint(workdir) -> dict | None:
    p = Path(workdir) / FINGERPRINT
    if not p.exists():
        return None
    try:
        fp = json.loads(p.read_text())
        assert isinstance(fp, dict) and "config" in fp
        return fp
    except (ValueError, AssertionError) as e:
        raise WorkdirError(damaged_fingerprint_message(workdir, e)) from None


def damaged_fingerprint_message(workdir, e) -> str:
    """The ways out of a damaged fingerprint: the one that keeps the checkpoints first."""
    w = Path(workdir)
    keep = (f"to keep the checkpoints, move it aside (mv {w / FINGERPRINT} {w / DAMAGED}) and run the same "
            f"command again: the resume is then checked against {w / 'config.json'} (not the data) and a new "
            f"fingerprint is recorded" if (w / "config.json").is_file() else
            f"{w / 'config.json'} is missing too, so the checkpoints cannot be matched to a config")
    return (f"{w / FINGERPRINT} is damaged ({str(e) or 'not a fingerprint'}); the run in {w} cannot be verified. "
            f"{keep[0].upper()}{keep[1:]}; or {WAYS_OUT}")


def has_run(workdir) -> bool:
    """Whether ``workdir`` holds results of a run (a checkpoint or result.json)."""
    w = Path(workdir)
    ck = w / "checkpoints"
    return (w / "result.json").exists() or (ck.is_dir() and any(p.name.isdigit() for p in ck.iterdir()))


def check_config(workdir, cfg, defaults: dict | None = None) -> dict | None:
    """Before building anything: the stored fingerprint, and a :class:`RunMismatchError` if ``cfg``
    changes the run on a config key (the data is compared by :func:`check_run`)."""
    stored = read_fingerprint(workdir)
    if stored is not None:
        new = {"config": _plain(cfg), "data": stored.get("data")}   # the data is compared later
        diffs = differences(stored, new, defaults)
        if diffs:
            raise RunMismatchError(mismatch_message(workdir, diffs))
    return stored


def check_run(workdir, cfg, data, stored: dict | None, stream=None, lanes: dict | None = None,
              defaults: dict | None = None, strategy_defaults: dict | None = None) -> dict:
    """Compares (config and data) with the stored fingerprint, or records a new one; a work dir from
    before fingerprints (checkpoints but no fingerprint.json) is checked against its ``config.json``.
    Returns the fingerprint of this run. Writes ``config.json`` (atomically) once the run is known."""
    workdir = Path(workdir)
    fp = fingerprint(cfg, data, lanes, strategy_defaults)
    if stored is not None:
        diffs = differences(stored, fp, defaults)
        if diffs:
            raise RunMismatchError(mismatch_message(workdir, diffs))
        older = {k: fp[k] for k in ("lanes", "strategy_defaults") if k in fp and k not in stored}
        if older:                                          # from an older jaxnas: record them now
            stored = {**stored, **older}
            atomic_write_text(workdir / FINGERPRINT, json.dumps(stored, indent=1))
        fp = stored
    elif has_run(workdir):
        old_cfg = workdir / "config.json"
        if not old_cfg.exists():
            raise RunMismatchError(f"{workdir} holds a run but neither {FINGERPRINT} nor config.json, so a "
                                   f"resume cannot be checked: {WAYS_OUT}")
        try:
            old = {"config": json.loads(old_cfg.read_text()), "data": None}
        except ValueError as e:
            raise RunMismatchError(f"{old_cfg} is damaged ({e}) and {workdir} has no {FINGERPRINT}: "
                                   f"{WAYS_OUT}") from None
        diffs = differences(old, {"config": fp["config"], "data": None}, defaults)
        if diffs:
            raise RunMismatchError(mismatch_message(workdir, diffs, "the run in")
                                   .replace(str(workdir / FINGERPRINT), str(old_cfg)))
        say(stream, f"{workdir} has no {FINGERPRINT} (written by an older jaxnas): its config.json matches, "
                     f"recording this run's fingerprint (the data could not be compared)")
        atomic_write_text(workdir / FINGERPRINT, json.dumps(fp, indent=1))
    else:
        atomic_write_text(workdir / FINGERPRINT, json.dumps(fp, indent=1))
    atomic_write_text(workdir / "config.json", json.dumps(_plain(cfg), indent=1))
    return fp


def check_ours(workdir) -> None:
    """Refuses a folder that is neither empty nor a jaxnas work dir (a search would overwrite its
    ``config.json`` / ``metrics.jsonl``; ``--force-restart`` would delete its ``checkpoints/``)."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        return
    names = {p.name for p in workdir.iterdir()}
    if not names or (workdir / FINGERPRINT).is_file():
        return
    known = set(RUN_FILES) | set(DERIVED_FILES) | {LOCK, "stale"}
    cfg_ok = True
    if (workdir / "config.json").exists():
        try:
            cfg_ok = "search" in json.loads((workdir / "config.json").read_text())
        except (json.JSONDecodeError, TypeError):
            cfg_ok = False
    if names <= known and cfg_ok:
        return                 # a run killed before its fingerprint was written
    raise WorkdirError(f"{workdir} is not empty and holds no jaxnas run (no {FINGERPRINT}; it has "
                       f"{', '.join(sorted(names)[:8])}{' ...' if len(names) > 8 else ''}); give an empty or new "
                       f"--workdir: a search would overwrite files there")


def clear_run(workdir, stream=None) -> list[str]:
    """``--force-restart``: deletes what a search wrote in ``workdir`` (:data:`RUN_FILES`)."""
    workdir = Path(workdir)
    gone = []
    for name in RUN_FILES:
        p = workdir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        gone.append(name)
    derived = [n for n in DERIVED_FILES if (workdir / n).exists()]
    if derived:
        aside = workdir / "stale" / time.strftime("%Y%m%d-%H%M%S")
        aside.mkdir(parents=True, exist_ok=True)
        for n in derived:
            (workdir / n).rename(aside / n)
        say(stream, f"--force-restart: moved {', '.join(derived)} of the old search to {aside}")
    if gone:
        say(stream, f"--force-restart: deleted {', '.join(gone)} in {workdir}; starting over")
    return gone


# ---- metrics -------------------------------------------------------------------------------------
class MetricsWriter:
    """Appends rows to ``metrics.jsonl``: all rows of one call in a single ``write(2)`` (unbuffered,
    ``O_APPEND``), so a kill leaves complete lines and at most one torn last line."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, rows):
        buf = memoryview("".join(json.dumps(r) + "\n" for r in rows).encode())
        while buf:
            buf = buf[os.write(self.fd, buf):]

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_metrics(path) -> tuple[list[dict], str | None]:
    """The rows of a ``metrics.jsonl`` and a note when a torn last line (an interrupted write) was
    skipped; a line that does not parse anywhere else raises ValueError naming it."""
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    numbered = [(i + 1, l) for i, l in enumerate(lines) if l.strip()]
    rows, note = [], None
    for j, (no, raw) in enumerate(numbered):
        try:
            row = json.loads(raw.decode("utf-8", "replace"))
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError("not a metrics row")
        except ValueError as e:
            if j == len(numbered) - 1:
                note = (f"skipped a torn last line of {path} (line {no}, {len(raw)} bytes: a write "
                        f"interrupted by a kill)")
                break
            raise ValueError(f"{path} line {no} is not a metrics row ({e}); only the last line can be torn by "
                             f"a kill, so the file was damaged or edited: repair or delete that line") from None
        rows.append(row)
    return rows, note


def rewrite_metrics(path, rows):
    """Atomically replaces ``path`` with ``rows`` (a kill leaves the old file or the new one)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


# ---- checkpoints ---------------------------------------------------------------------------------
def _why(e: BaseException) -> str:
    """One short line for an exception (its innermost cause's type and first line)."""
    while e.__cause__ is not None and e.__cause__ is not e:
        e = e.__cause__
    first = (str(e).strip().splitlines() or [""])[0].split(" See full TensorStore details")[0]
    return f"{type(e).__name__}: {first[:200]}"


def restore_newest(open_manager, restore, directory, stream=None):
    """``(step, state, broken, manager)``: the newest checkpoint that restores (``restore(manager,
    step)``), the steps of the newer ones that do not (each said on ``stream``) and the manager to go
    on with (a fresh one after a failure: orbax keeps state from a failed restore);
    ``(None, None, [], manager)`` when there is no checkpoint. When none restores:
    :class:`NoRestorableCheckpointError` naming ``directory`` and ``--force-restart``."""
    directory = Path(directory)
    manager = open_manager()
    steps = sorted((int(s) for s in manager.all_steps()), reverse=True)
    failed = []
    for step in steps:
        try:
            state = restore(manager, step)
        except Exception as e:        # orbax/TensorStore raise many types for damaged files
            failed.append((step, _why(e)))
            say(stream, f"checkpoint {directory / str(step)} does not restore ({failed[-1][1]})")
            manager.close()
            manager = open_manager()
            continue
        if failed:
            say(stream, f"falling back to checkpoint step {step}, the newest that restores")
        return step, state, [s for s, _ in failed], manager
    if not failed:
        return None, None, [], manager
    manager.close()
    tried = "; ".join(f"step {s}: {why}" for s, why in failed)
    raise NoRestorableCheckpointError(
        f"no checkpoint in {directory} restores (tried {tried}); pass --force-restart to delete them and "
        f"start over, or give another --workdir")


def set_aside(directory, steps, stream=None):
    """Moves the step dirs ``steps`` of ``directory`` to ``<workdir>/broken_checkpoints/`` (kept, not
    deleted; ``--force-restart`` deletes them), so that new checkpoints of those steps can be saved."""
    directory = Path(directory)
    dest = directory.parent / "broken_checkpoints"
    for step in steps:
        src = directory / str(step)
        if not src.exists():
            continue
        dest.mkdir(exist_ok=True)
        target = dest / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while target.exists():
            target = dest / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
            n += 1
        os.replace(src, target)
        say(stream, f"moved the broken checkpoint {src} to {target}")

"""The step after a search: train the found architecture(s) from scratch with the retrain protocol of
the space (``jaxnas.protocols``), and report validation (and, where the data has one, test) metrics.

``retrain(workdir)`` / ``jaxnas retrain WORKDIR`` reads ``config.json`` and ``result.json`` of a
finished search work dir (and, for TabNAS, its final checkpoint) and writes ``retrain.json``:
per candidate architecture and seed the validation (``val_*``) and test (``test_*``) metrics, the
parameter count and the time, and ``best``, the answer chosen on validation. Everything it trains
lives in ``<workdir>/retrain/`` (settings, checkpoints, per-run results, final parameters), so a
rerun resumes; with the same settings a finished retrain is returned as it is. ``jaxnas export``
turns the best run into a plain Flax module and its parameters (``jaxnas.export``).

Every value of a protocol is a setting: ``key=value`` overrides, or ``--config FILE`` whose
``get_config()`` returns some of them. Data: the search's own split (``config.json``), so validation
is the split the search scored on; ``data.KEY=value`` overrides change it (e.g. a tfds
``data.val_split``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from jaxnas import protocols
from jaxnas.config.settings import parse_override, raw_config
from jaxnas.core import schema as S
from jaxnas.core.signals import StopSignals
from jaxnas.core.workdir import (
    WorkdirError,
    WorkdirLock,
    atomic_write_json,
    flatten,
    progress_line,
    read_only_message,
    writable,
)
from jaxnas.protocols import RETRAIN_DIR, SETTINGS, RunContext, read_search
from jaxnas.protocols.base import read_json


def space_kind(cfg: dict) -> str:
    kind = cfg["space"]["name"]
    if kind not in protocols.kinds():
        raise ValueError(f"retrain knows the spaces {tuple(protocols.kinds())}; this work dir searched "
                         f"space {kind!r}")
    return kind


# settings a resume may change (the identity's flattened keys): compile options, equal to float rounding;
# a retrain folder written before one existed lacks it
RUN_NEUTRAL_SETTINGS = ("settings.cpu_convolutions",)


def default_settings(cfg: dict) -> dict:
    """The retrain settings of a search config's space, before overrides."""
    return protocols.get(space_kind(cfg)).default_settings(cfg)


def parse_settings(items) -> dict:
    """``["epochs=5", "lr=0.1", "data.max_train=500"]`` -> flat dict (values as Python literals)."""
    return dict(parse_override(item, "key=value (e.g. epochs=5)") for item in items or ())


def load_settings_file(path) -> dict:
    """``get_config()`` of a retrain config file (e.g. ``configs/retrain_darts.py``)."""
    got = raw_config(path)
    if not isinstance(got, dict):
        raise ValueError(f"{path}: get_config() must return a dict of retrain settings")
    return dict(got)


def resolve_settings(cfg: dict, overrides: Optional[dict] = None) -> tuple[dict, dict]:
    """``(settings, data_overrides)``: the defaults of ``cfg``'s space with ``overrides`` applied and
    checked against ``protocols.SETTINGS`` (every bad key or value is listed in one message).
    ``data.KEY`` overrides go to the data section of the search config."""
    base = default_settings(cfg)
    settings, data_over, bad = dict(base), {}, []
    for k, v in (overrides or {}).items():
        if k.startswith("data."):
            if k[5:] not in cfg["data"]:
                bad.append(f"unknown data key {k!r}; the search's data keys: {', '.join(sorted(cfg['data']))}")
            data_over[k[5:]] = v
            continue
        if k not in base:
            bad.append(f"unknown retrain setting {k!r} for space {cfg['space']['name']!r}; "
                       f"valid: {', '.join(sorted(base))}, data.KEY")
            continue
        settings[k] = v
    settings, problems = S.check({k: SETTINGS[k] for k in base}, settings)
    bad += problems
    if cfg["space"]["name"] != "mlp" and settings.get("top", 1) != 1:
        bad.append(f"top={settings['top']}: a {cfg['space']['name']} search derives one architecture "
                   f"(top=1); several candidates are the TabNAS (mlp) protocol")
    S.raise_if(bad, "retrain settings")
    return settings, data_over


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _identity(cfg: dict, result: dict, settings: dict, data_over: dict) -> dict:
    """What a retrain depends on: compared on resume."""
    return {"settings": settings, "data_overrides": data_over,
            "search": {"arch": result.get("arch"), "state_digest": result.get("state_digest"),
                       "config": _fingerprint(cfg)}}


def _prepare_dir(workdir: Path, ident: dict, force: bool, progress) -> Path:
    rdir = workdir / RETRAIN_DIR
    sfile = rdir / "settings.json"
    if rdir.exists() and force:
        shutil.rmtree(rdir)
        (workdir / "retrain.json").unlink(missing_ok=True)
    if sfile.exists():
        old = json.loads(sfile.read_text())
        old, new = flatten(old), flatten(json.loads(json.dumps(ident, default=str)))
        diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k) and k not in RUN_NEUTRAL_SETTINGS]
        if diff:
            what = ("of an earlier search result (the search in this work dir was rerun since)"
                    if any(d.startswith("search.") for d in diff) else "with other settings")
            raise ValueError(f"{rdir} holds a retrain {what}:\n  " + "\n  ".join(diff) +
                             "\nrerun with the same settings to resume it, or pass --force-restart "
                             "(retrain(..., force=True)) to delete it and start over")
    elif rdir.exists() and any(rdir.iterdir()):
        raise ValueError(f"{rdir} exists without settings.json; delete it or pass --force-restart")
    rdir.mkdir(parents=True, exist_ok=True)
    if not sfile.exists():
        tmp = sfile.with_suffix(".tmp")
        tmp.write_text(json.dumps(ident, indent=1, default=str))
        tmp.replace(sfile)
    return rdir


def _drop_if_untrained(rdir: Path, progress) -> None:
    """After a failed start: ``rdir`` goes (its ``settings.json`` with it) when no run wrote a file there,
    so a retrain with other settings is not refused for a retrain that never trained."""
    if any(p.is_file() and p.name != "settings.json" for p in rdir.rglob("*")):
        return                        # something trained: kept, the same settings resume it
    shutil.rmtree(rdir, ignore_errors=True)
    progress_line(progress, f"the retrain stopped before it saved anything: removed {rdir} (its settings are not kept)")


# ---- the entry point -----------------------------------------------------------------------------
def retrain(workdir, overrides: Optional[dict] = None, *, top: Optional[int] = None,
            seeds=None, config=None, force: bool = False, progress=sys.stderr,
            stop_after: Optional[int] = None, handle_signals: bool = True) -> dict:
    """Retrain the architecture(s) a finished search in ``workdir`` found; returns (and writes)
    ``retrain.json``. ``overrides``: retrain settings (``{"epochs": 5, "data.max_train": 500}``);
    ``config``: a retrain config file whose ``get_config()`` gives settings (overrides win);
    ``top`` / ``seeds``: the number of candidates / seeds (or a list of seeds); ``force``: delete
    a previous retrain with other settings instead of refusing. ``stop_after`` (tests of resume):
    image runs stop after this many steps of their own; the result is then ``{"finished": False}``.
    ``handle_signals``: SIGTERM / SIGINT stop a run at its next chunk boundary with a checkpoint
    (:class:`jaxnas.core.signals.StopRequested`; rerun to resume)."""
    workdir = Path(workdir)
    cfg, result = read_search(workdir)
    over: dict = {}
    if config is not None:
        over.update(load_settings_file(config))
    over.update(overrides or {})
    if top is not None:
        over["top"] = top
    if seeds is not None:
        over["seeds"] = seeds
    settings, data_over = resolve_settings(cfg, over)
    if not writable(workdir):      # nothing to write when it is done; else a message, before any work
        return _read_only(workdir, _identity(cfg, result, settings, data_over), force, progress)
    with WorkdirLock(workdir, progress), StopSignals(progress, handle_signals) as stop:  # no search meanwhile
        return _retrain_locked(workdir, cfg, result, settings, data_over, force, progress, stop_after, stop)


def _up_to_date(workdir: Path, ident: dict, force: bool, progress) -> Optional[dict]:
    """``retrain.json`` when it is the retrain of these settings and this search (else None)."""
    out_path = workdir / "retrain.json"
    if out_path.exists() and not force:
        done = read_json(out_path)
        if done.get("identity") == json.loads(json.dumps(ident, default=str)):
            progress_line(progress, f"{out_path} is up to date (same settings); nothing to train")
            return done
    return None


def _read_only(workdir: Path, ident: dict, force: bool, progress) -> dict:
    """A read-only work dir: its finished retrain of these settings, else a message (a retrain writes
    its runs, checkpoints and ``retrain.json`` there, and they belong to the search they retrain)."""
    done = _up_to_date(workdir, ident, force, progress)
    if done is None:
        raise WorkdirError(read_only_message(
            workdir, f"retraining writes its runs and checkpoints to {workdir / RETRAIN_DIR} and the result "
                     f"to {workdir / 'retrain.json'}",
            f"retrain a writable copy of it (cp -r {workdir} COPY && jaxnas retrain COPY ...)"))
    return done


def _retrain_locked(workdir: Path, cfg, result, settings, data_over, force, progress, stop_after=None,
                    stop=None) -> dict:
    ident = _identity(cfg, result, settings, data_over)
    done = _up_to_date(workdir, ident, force, progress)
    if done is not None:
        return done
    out_path = workdir / "retrain.json"
    fresh = force or not (workdir / RETRAIN_DIR / "settings.json").exists()
    rdir = _prepare_dir(workdir, ident, force, progress)
    data_cfg = copy.deepcopy(cfg)
    data_cfg["data"] = {**cfg["data"], **data_over}
    kind = space_kind(cfg)
    t0 = time.perf_counter()
    try:
        out = protocols.get(kind).run(RunContext(workdir, rdir, data_cfg, result, settings, progress, stop_after,
                                                 stop))
    except BaseException:
        if fresh:
            _drop_if_untrained(rdir, progress)
        raise
    if out is None:
        return {"finished": False}
    out = {"workdir": str(workdir), "space": kind, "search_arch": result["arch"], **out,
           "seconds": time.perf_counter() - t0, "settings": settings, "identity": ident}
    out = json.loads(json.dumps(out, default=_json_default))
    atomic_write_json(out_path, out)
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)

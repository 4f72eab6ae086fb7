"""The step after a search: train the found architecture(s) from scratch with the evaluation protocol
of the space, and report validation (and, where the data has one, test) metrics.

``retrain(workdir)`` / ``jaxnas retrain WORKDIR`` reads ``config.json`` and ``result.json`` of a
finished search work dir (and, for TabNAS, its final checkpoint) and writes ``retrain.json``:
per candidate architecture and seed the validation (``val_*``) and test (``test_*``) metrics, the
parameter count and the time, and ``best``, the answer chosen on validation. Everything it trains
lives in ``<workdir>/retrain/`` (settings, checkpoints, per-run results, final parameters), so a
rerun resumes; with the same settings a finished retrain is returned as it is. ``jaxnas export``
turns the best run into a plain Flax module and its parameters (``jaxnas.export``).

Protocols (every value is a setting: ``key=value`` overrides, or ``--config FILE`` whose
``get_config()`` returns some of them):

- ``mlp`` (TabNAS): the Alg. 3 candidates (``select_final_n``: the ``top`` <= 3 feasible, unique
  architectures of largest cost among ``num_final_samples`` policy samples; strategies without a
  budget: the most probable architectures) x ``seeds``, all trained in ONE compiled program
  (``jaxnas.standalone.train_archs``: a ``vmap`` over members); the weight-training settings of the
  search (its optimizer and batch size, 60 epochs, Adam eps 1e-3) unless overridden; members are
  masked MLPs as wide as the widest candidate per layer (``NarrowedSpace``). The answer is
  the candidate with the lowest validation loss averaged over seeds (and its best seed's
  parameters). Balanced error is reported (the metric TabNAS reports).
- ``nb201``: the NAS-Bench-201 network (C = 16, 5 cells per stage) of the derived cell trained with
  the benchmark's recipe: SGD Nesterov 0.9, lr 0.1 cosine, weight decay 5e-4, batch 256, 200 epochs,
  random crop + flip; plus the table row when ``table`` (or the search's ``benchmark.nb201_table``)
  names one.
- ``rnn``: the language model of the derived recurrent cell trained from scratch with the search's
  optimisation (AdvantageNAS App. E: SGD lr 20 cosine, clip 0.25, batch 256, BPTT 35, dropout 0.5,
  100 epochs); validation and test perplexity (``jaxnas/lm_retrain.py``).
- ``darts``: the DARTS evaluation network of the genotype (``jaxnas.networks.DartsEvalNet``: 20
  cells, C = 36, auxiliary head weight 0.4, cutout 16, drop-path 0.2 rising linearly over the
  epochs, 600 epochs, batch 96, SGD momentum 0.9 lr 0.025 cosine, weight decay 3e-4, gradient
  clipping 5). ``drop_path=0.3`` for ImageNet-size data.

Image runs train one (candidate, seed) at a time, one jitted step per batch, and save an orbax
checkpoint every ``checkpoint_every`` steps (and at the end) in ``retrain/c<i>_s<seed>/``; a killed
run resumes from its newest checkpoint with the same data order (batches are a function of the
seed and the step). Data: the search's own split (``config.json``), so validation is the split the
search scored on; ``data.KEY=value`` overrides change it (e.g. a tfds ``data.val_split``).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas.config import parse_override

KINDS = ("mlp", "nb201", "darts", "rnn")
RETRAIN_DIR = "retrain"

_IMAGE_COMMON = {
    "seeds": 1,               # number of seeds (0 .. S-1) or a list of seeds
    "top": 1,                 # candidates (cell spaces derive one architecture)
    "epochs": 1,
    "batch_size": 96,
    "lr": 0.025,
    "optimizer": "sgd",       # sgd | adam
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 3e-4,     # L2 on the gradient (PyTorch SGD weight_decay)
    "grad_clip": None,        # global-norm clipping
    "schedule": "cosine",     # cosine (to 0 over all steps) | constant
    "max_steps": None,        # stop after this many steps (tests, smoke runs)
    "augment": True,          # random crop (pad 4) + horizontal flip
    "cutout": 0,              # cutout square side in pixels (0: off)
    "drop_path": 0.0,         # final drop-path rate (linear from 0 over the epochs)
    "auxiliary_weight": 0.0,  # weight of the auxiliary head's loss (0: no auxiliary head)
    "eval_batch": 500,
    "max_eval": None,         # evaluate on at most this many validation / test examples
    "checkpoint_every": 1000,  # steps between orbax checkpoints (and one at the end)
    "log_every": 50,          # steps between progress lines
}

DEFAULTS: dict[str, dict] = {
    # NAS-Bench-201 (Dong & Yang 2020, sec. 3 / Table 1): the benchmark's training of every cell
    "nb201": {**_IMAGE_COMMON, "C": 16, "cells_per_stage": 5, "epochs": 200, "batch_size": 256,
              "lr": 0.1, "nesterov": True, "weight_decay": 5e-4, "table": None},
    # DARTS (Liu et al. 2019, sec. 3.3 / A.2), the protocol of MANAS and Shapley-NAS as well
    "darts": {**_IMAGE_COMMON, "C": 36, "num_cells": 20, "epochs": 600, "batch_size": 96,
              "lr": 0.025, "weight_decay": 3e-4, "grad_clip": 5.0, "cutout": 16, "drop_path": 0.2,
              "auxiliary_weight": 0.4},
}
# keys that may be None, and the type their value has otherwise
_OPTIONAL = {"grad_clip": float, "max_steps": int, "max_eval": int, "table": str}


def space_kind(cfg: dict) -> str:
    kind = cfg["space"]["name"]
    if kind not in KINDS:
        raise ValueError(f"retrain knows the spaces {KINDS}; this work dir searched space {kind!r}")
    return kind


def default_settings(cfg: dict) -> dict:
    """The retrain settings of a search config's space, before overrides."""
    kind = space_kind(cfg)
    if kind == "rnn":   # recurrent cell on PTB (AdvantageNAS App. E): jaxnas/lm_retrain.py
        from jaxnas.lm_retrain import default_settings as rnn_settings
        return rnn_settings(cfg)
    if kind != "mlp":
        out = copy.deepcopy(DEFAULTS[kind])
        sp = cfg["space"]
        if kind == "nb201":
            out["table"] = (cfg.get("benchmark") or {}).get("nb201_table")
            if sp.get("unique_cells"):   # one cell per position: the network keeps the search's depth
                out["cells_per_stage"] = int(sp["cells_per_stage"])
        if kind == "darts" and sp.get("unique_cells"):
            out["num_cells"] = int(sp["num_cells"])
        return out
    # TabNAS retrains with the weight-training settings of the search (Table 2)
    from jaxnas.standalone import TrainConfig, train_config_from
    tc = train_config_from(cfg)
    return {"seeds": 3, "top": 3, "epochs": tc.epochs, "batch_size": tc.batch_size, "lr": tc.lr,
            "schedule": tc.schedule, "optimizer": tc.optimizer, "b1": float(tc.b1), "b2": float(tc.b2),
            "eps": TrainConfig.eps, "momentum": float(tc.momentum), "max_steps": None,
            "num_final_samples": 500, "member_batch": 64, "eval_batch": 4096}


def parse_overrides(items) -> dict:
    """``["epochs=5", "lr=0.1", "data.max_train=500"]`` -> flat dict (values as Python literals)."""
    return dict(parse_override(item, "key=value (e.g. epochs=5)") for item in items or ())


def load_settings_file(path) -> dict:
    """``get_config()`` of a retrain config file (e.g. ``configs/retrain_darts.py``)."""
    from jaxnas.config import raw_config
    got = raw_config(path)
    if not isinstance(got, dict):
        raise ValueError(f"{path}: get_config() must return a dict of retrain settings")
    return dict(got)


def resolve_settings(cfg: dict, overrides: Optional[dict] = None) -> tuple[dict, dict]:
    """``(settings, data_overrides)``: the defaults of ``cfg``'s space with ``overrides`` applied and
    checked (every bad key or value is listed in one message). ``data.KEY`` overrides go to the
    data section of the search config."""
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
    typed_bad: set = set()
    for k, v in settings.items():
        n_bad = len(bad)
        _check_type(k, v, base, settings, bad)
        if len(bad) > n_bad:
            typed_bad.add(k)
    s = {k: v for k, v in settings.items() if k not in typed_bad}
    positive = [k for k in ("epochs", "batch_size", "top", "eval_batch", "checkpoint_every", "log_every",
                            "member_batch", "num_final_samples", "C", "num_cells", "cells_per_stage",
                            "max_steps", "max_eval") if s.get(k) is not None and s[k] < 1]
    bad += [f"{k}={s[k]!r}: must be >= 1" for k in positive]
    if "lr" in s and not s["lr"] > 0:
        bad.append(f"lr={s['lr']!r}: must be > 0")
    if "optimizer" in s and s["optimizer"] not in ("sgd", "adam"):
        bad.append(f"optimizer={s['optimizer']!r}: sgd or adam")
    if "schedule" in s and s["schedule"] not in ("cosine", "constant"):
        bad.append(f"schedule={s['schedule']!r}: cosine or constant")
    for k in ("weight_decay", "momentum", "cutout", "auxiliary_weight"):
        if k in s and s[k] < 0:
            bad.append(f"{k}={s[k]!r}: must be >= 0")
    if "drop_path" in s and not 0 <= s["drop_path"] < 1:
        bad.append(f"drop_path={s['drop_path']!r}: must be in [0, 1)")
    if s.get("grad_clip") is not None and not s["grad_clip"] > 0:
        bad.append(f"grad_clip={s['grad_clip']!r}: must be > 0 or None")
    if cfg["space"]["name"] != "mlp" and s.get("top", 1) != 1:
        bad.append(f"top={s['top']}: a {cfg['space']['name']} search derives one architecture "
                   f"(top=1); several candidates are the TabNAS (mlp) protocol")
    if bad:
        raise ValueError("bad retrain settings:\n  " + "\n  ".join(bad))
    if isinstance(settings["seeds"], tuple):
        settings["seeds"] = list(settings["seeds"])
    return settings, data_over


def _check_type(k, v, base, settings, bad) -> None:
    """Appends to ``bad`` what is wrong with the type of setting ``k`` (numbers become floats)."""
    want = _OPTIONAL.get(k) or type(base[k])
    if v is None:
        if k not in _OPTIONAL:
            bad.append(f"{k}=None: needs a value")
        return
    if k == "seeds":
        if isinstance(v, bool) or not (isinstance(v, int) and v >= 1 or
                                       isinstance(v, (list, tuple)) and v and
                                       all(isinstance(s, int) and not isinstance(s, bool) for s in v)):
            bad.append(f"seeds={v!r}: a count >= 1 or a non-empty list of integer seeds")
        elif isinstance(v, (list, tuple)) and len(set(v)) != len(v):
            bad.append(f"seeds={v!r}: repeated seeds")
        return
    if want is bool:
        if not isinstance(v, bool):
            bad.append(f"{k}={v!r}: must be True or False")
    elif want is int:
        if isinstance(v, bool) or not isinstance(v, int):
            bad.append(f"{k}={v!r}: must be an integer")
    elif want is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            bad.append(f"{k}={v!r}: must be a number")
        else:
            settings[k] = float(v)
    elif want is str and not isinstance(v, str):
        bad.append(f"{k}={v!r}: must be a string")


def seed_list(settings: dict) -> list[int]:
    s = settings["seeds"]
    return list(range(s)) if isinstance(s, int) else [int(x) for x in s]


# ---- work dir ------------------------------------------------------------------------------------
def read_search(workdir) -> tuple[dict, dict]:
    """``(config, result)`` of a finished search work dir; says what to do when it is not one."""
    wd = Path(workdir)
    if not wd.is_dir():
        raise FileNotFoundError(f"work dir {str(wd)!r} does not exist; run `jaxnas search CONFIG "
                                f"--workdir {wd}` first")
    cfg_path, res_path = wd / "config.json", wd / "result.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{str(wd)!r} has no config.json: not a search work dir")
    if not res_path.exists():
        raise FileNotFoundError(f"{str(wd)!r} has no result.json: the search has not finished; run "
                                f"`jaxnas search CONFIG --workdir {wd}` to resume it to the end")
    cfg, result = json.loads(cfg_path.read_text()), json.loads(res_path.read_text())
    if not result.get("finished", True) or "arch_indices" not in result:
        raise ValueError(f"{res_path} describes an unfinished search; resume it to the end first")
    return cfg, result


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _identity(cfg: dict, result: dict, settings: dict, data_over: dict) -> dict:
    """What a retrain depends on: compared on resume."""
    return {"settings": settings, "data_overrides": data_over,
            "search": {"arch": result.get("arch"), "state_digest": result.get("state_digest"),
                       "config": _fingerprint(cfg)}}


def _diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def _prepare_dir(workdir: Path, ident: dict, force: bool, progress) -> Path:
    rdir = workdir / RETRAIN_DIR
    sfile = rdir / "settings.json"
    if rdir.exists() and force:
        shutil.rmtree(rdir)
        (workdir / "retrain.json").unlink(missing_ok=True)
    if sfile.exists():
        old = json.loads(sfile.read_text())
        diff = _diff_keys(old, ident)
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


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    tmp.replace(path)


def _say(progress, text: str) -> None:
    if progress is not None:
        progress.write(text + "\n")
        progress.flush()


# ---- the entry point -----------------------------------------------------------------------------
def retrain(workdir, overrides: Optional[dict] = None, *, top: Optional[int] = None,
            seeds=None, config=None, force: bool = False, progress=sys.stderr,
            stop_after: Optional[int] = None) -> dict:
    """Retrain the architecture(s) a finished search in ``workdir`` found; returns (and writes)
    ``retrain.json``. ``overrides``: retrain settings (``{"epochs": 5, "data.max_train": 500}``);
    ``config``: a retrain config file whose ``get_config()`` gives settings (overrides win);
    ``top`` / ``seeds``: the number of candidates / seeds (or a list of seeds); ``force``: delete
    a previous retrain with other settings instead of refusing. ``stop_after`` (tests of resume):
    image runs stop after this many steps of their own; the result is then ``{"finished": False}``."""
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
    from jaxnas.workdir import WorkdirLock
    with WorkdirLock(workdir, progress):   # no search or other retrain on this dir meanwhile
        return _retrain_locked(workdir, cfg, result, settings, data_over, force, progress, stop_after)


def _retrain_locked(workdir: Path, cfg, result, settings, data_over, force, progress, stop_after=None) -> dict:
    ident = _identity(cfg, result, settings, data_over)
    out_path = workdir / "retrain.json"
    if out_path.exists() and not force:
        done = json.loads(out_path.read_text())
        if done.get("identity") == json.loads(json.dumps(ident, default=str)):
            _say(progress, f"{out_path} is up to date (same settings); nothing to train")
            return done
    rdir = _prepare_dir(workdir, ident, force, progress)
    data_cfg = copy.deepcopy(cfg)
    data_cfg["data"] = {**cfg["data"], **data_over}
    kind = space_kind(cfg)
    t0 = time.perf_counter()
    if kind == "mlp":
        out = _retrain_mlp(workdir, rdir, data_cfg, result, settings, progress)
    elif kind == "rnn":
        from jaxnas.lm_retrain import retrain_rnn
        out = retrain_rnn(rdir, data_cfg, result, settings, progress, stop_after)
        if out is None:
            return {"finished": False}
    else:
        out = _retrain_image(kind, rdir, data_cfg, result, settings, progress, stop_after)
        if out is None:
            return {"finished": False}
    out = {"workdir": str(workdir), "space": kind, "search_arch": result["arch"], **out,
           "seconds": time.perf_counter() - t0, "settings": settings, "identity": ident}
    out = json.loads(json.dumps(out, default=_json_default))
    _write_json(out_path, out)
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _test_split(data):
    x, y = getattr(data, "x_test", None), getattr(data, "y_test", None)
    return (x, y) if x is not None and y is not None else None


def _choose_best(candidates: list[dict]) -> dict:
    """The candidate with the lowest validation loss averaged over its seeds, and its best seed."""
    means = [float(np.mean([r["val_loss"] for r in c["runs"]])) for c in candidates]
    ci = int(np.argmin(means))
    runs = candidates[ci]["runs"]
    si = int(np.argmin([r["val_loss"] for r in runs]))
    best = {"candidate": ci, "arch": candidates[ci]["arch"], "arch_indices": candidates[ci]["arch_indices"],
            "mean_val_loss": means[ci], "run": si, "seed": runs[si]["seed"],
            **{k: v for k, v in runs[si].items() if k.startswith(("val_", "test_"))},
            "param_count": candidates[ci]["param_count"]}
    return best


def _mean_metrics(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if k.startswith(("val_", "test_")) and runs[0][k] is not None]
    return {k: float(np.mean([r[k] for r in runs])) for k in keys}


# ---- MLP (TabNAS) --------------------------------------------------------------------------------
def restore_search_state(exp, workdir: Path, result: Optional[dict] = None):
    """The final SearchState of the search in ``workdir``: the checkpoint of the result's step (the
    newest when no result is given), checked against the result's state digest."""
    import orbax.checkpoint as ocp
    from jaxnas.runner import state_digest
    root = (workdir / "checkpoints").resolve()
    if not root.exists():
        raise FileNotFoundError(f"{workdir} has no checkpoints/: the candidates of Alg. 3 come from the "
                                f"final policy, which the search checkpoints")
    init = exp.search.init(jax.random.key(int(exp.config["seed"])))   # host-side init (numpy rng)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, init)
    with ocp.CheckpointManager(root) as mgr:
        steps = [int(x) for x in mgr.all_steps()]
        step = int(result["step"]) if result is not None and "step" in result else (max(steps) if steps else None)
        if step is None or step not in steps:
            raise FileNotFoundError(f"{root} has no checkpoint of the final step {step} (has {sorted(steps)}); "
                                    f"rerun `jaxnas search` on this work dir to finish it")
        state = mgr.restore(step, args=ocp.args.StandardRestore(abstract))
    want = (result or {}).get("state_digest")
    if want is not None and state_digest(state) != want:
        raise ValueError(f"the checkpoint of step {step} in {root} is not the state result.json describes "
                         f"(state digests differ); rerun `jaxnas search` on this work dir")
    return state


def mlp_candidates(exp, strategy_state, n: int, num_samples: int = 500) -> np.ndarray:
    """TabNAS Alg. 3: the ``n`` unique feasible architectures of largest cost among ``num_samples``
    samples of the final policy (fixed key). Strategies without a budget: the ``n`` most probable
    distinct architectures among the samples (the per-decision argmax first)."""
    from jaxnas.spaces.base import NEG_INF
    space = exp.space
    mask = jnp.asarray(space.mask)
    logits = getattr(strategy_state, "logits", None)
    if logits is None:
        probs = jnp.asarray(exp.strategy.probs(strategy_state), jnp.float32)
        logits = jnp.where(mask, jnp.log(jnp.maximum(probs, 1e-30)), NEG_INF)
    logits = jnp.asarray(logits, jnp.float32)
    s = exp.config["strategy"]
    if s.get("budget") is not None:
        from jaxnas import constraints as C
        from jaxnas.strategies.tabnas import select_final_n
        budget = C.make_budget(space, s["budget"], cost_fn=s.get("cost_fn"), cost_terms=s.get("cost_terms"))
        archs = select_final_n(budget, logits, jax.random.key(0), n=n, num_samples=num_samples)
        if len(archs) == 0:
            raise ValueError(f"none of {num_samples} samples of the final policy meets the budget "
                             f"{s['budget']}; raise num_final_samples")
        return np.asarray(archs, np.int32)
    logp = np.asarray(jax.nn.log_softmax(jnp.where(mask, logits, NEG_INF), -1))
    first = np.asarray(space.derive(logits))
    samples = np.asarray(space.sample(jax.random.key(0), logits, (num_samples,)))
    uniq = np.unique(np.concatenate([first[None], samples]), axis=0)
    lp = np.take_along_axis(logp[None], uniq[..., None], -1)[..., 0].sum(-1)
    order = np.argsort(-lp, kind="stable")
    archs = [first] + [a for a in uniq[order] if not np.array_equal(a, first)]
    return np.asarray(archs[:n], np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class NarrowedSpace:
    """An MLP space seen through the widest candidate of each layer: ``train_archs`` trains every
    member as the masked MLP of ``max_widths``; a member is the same child MLP for any max widths >=
    its own (masked units are exact zeros), so cutting them to the candidates' maxima trains the
    same networks (from other random draws) at a fraction of the cost of the space's widest choice
    (e.g. 256-32 and 176-64 under a 512-512 space: about 10x fewer FLOPs)."""
    space: Any
    max_widths: tuple

    def __getattr__(self, name):
        return getattr(self.space, name)


def narrowed_space(space, archs) -> NarrowedSpace:
    widths = np.asarray(space.arch_widths(np.asarray(archs, np.int32))).reshape(-1, space.num_layers)
    return NarrowedSpace(space, tuple(int(w) for w in widths.max(0)))


def _mlp_member_metrics(params, widths, max_widths, x, y, num_classes, prefix, eval_batch):
    """Loss / accuracy / balanced error of every member (leading axes [M]) on (x, y)."""
    from jaxnas.standalone import balanced_error, masked_apply
    from jaxnas.tasks import classification_loss
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


def _retrain_mlp(workdir: Path, rdir: Path, cfg: dict, result: dict, s: dict, progress) -> dict:
    import orbax.checkpoint as ocp
    from jaxnas.build import build
    from jaxnas.export import input_info, mlp_spec
    from jaxnas.standalone import TrainConfig, train_archs
    exp = build(cfg)
    state = restore_search_state(exp, workdir, result)
    archs = mlp_candidates(exp, state.strategy, s["top"], s["num_final_samples"])
    seeds = seed_list(s)
    space, data = exp.space, exp.data
    tc = TrainConfig(epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"], schedule=s["schedule"],
                     optimizer=s["optimizer"], b1=s["b1"], b2=s["b2"], eps=s["eps"], momentum=s["momentum"],
                     max_steps=s["max_steps"])
    A, S = len(archs), len(seeds)
    _say(progress, f"retraining {A} candidate(s) x {S} seed(s) = {A * S} MLPs in one program, "
                   f"{tc.total_steps(len(data.y_train))} steps each: " +
         ", ".join(space.encode(a) for a in archs))
    narrow = narrowed_space(space, archs)
    r = train_archs(data, narrow, archs, seeds, tc, member_batch=s["member_batch"], eval_batch=s["eval_batch"],
                    return_params=True)
    params = r.pop("params")
    # test metrics from the returned parameters
    widths = np.repeat(np.asarray(space.arch_widths(archs)), S, 0)
    flat = jax.tree.map(lambda a: a.reshape((A * S,) + a.shape[2:]), params)
    test = _test_split(data)
    tm = (_mlp_member_metrics(flat, jnp.asarray(widths), tuple(narrow.max_widths), test[0], test[1],
                              int(data.num_classes), "test", s["eval_batch"]) if test else {})
    with ocp.StandardCheckpointer() as ck:
        path = (rdir / "params").resolve()
        if path.exists():
            shutil.rmtree(path)
        ck.save(path, params)
        ck.wait_until_finished()
    candidates = []
    for a in range(A):
        runs = []
        for si, seed in enumerate(seeds):
            m = a * S + si
            run = {"seed": int(seed)}
            for k in ("val_loss", "val_accuracy", "val_balanced_error", "train_loss"):
                run[k] = float(r[k][a, si])
            for k, v in tm.items():
                run[k] = float(np.asarray(v)[m])
            run["seconds"] = None  # trained together: see program_seconds
            runs.append(run)
        candidates.append({"arch": space.encode(archs[a]), "arch_indices": archs[a].tolist(),
                           "param_count": int(space.param_count(archs[a])), "runs": runs,
                           "mean": _mean_metrics(runs), "model": mlp_spec(space, archs[a])})
    best = _choose_best(candidates)
    _say(progress, f"best on validation: {best['arch']} (mean val loss {best['mean_val_loss']:.4f}, "
                   f"seed {best['seed']})")
    return {"protocol": "tabnas_alg3", "seeds": seeds, "candidates": candidates, "best": best,
            "program_seconds": float(r["seconds"]), "steps_per_run": int(r["total_steps"]),
            "members": A * S, "programs": -(-(A * S) // s["member_batch"]),
            "member_max_widths": list(narrow.max_widths), "params_path": str(Path(RETRAIN_DIR) / "params"), "input": input_info(data)}


# ---- image cells (NAS-Bench-201, DARTS) ----------------------------------------------------------
def cutout(key, images, length: int):
    """DeVries & Taylor cutout as DARTS applies it: per example a ``length`` x ``length`` square
    (clipped at the border) around a uniform centre is set to 0 (after normalisation)."""
    n, h, w, _ = images.shape
    ky, kx = jax.random.split(key)
    cy = jax.random.randint(ky, (n, 1), 0, h)
    cx = jax.random.randint(kx, (n, 1), 0, w)
    half = length // 2
    ys, xs = jnp.arange(h)[None], jnp.arange(w)[None]
    my = (ys >= cy - half) & (ys < cy + half)
    mx = (xs >= cx - half) & (xs < cx + half)
    m = my[:, :, None] & mx[:, None, :]
    return jnp.where(m[..., None], jnp.zeros((), images.dtype), images)


def image_network_spec(kind: str, cfg: dict, space, arch, num_classes: int, s: dict) -> dict:
    """The export spec (``jaxnas.export.build_model``) of the evaluation network of ``arch``."""
    from jaxnas.export import darts_spec, nb201_spec
    if kind == "nb201":
        return nb201_spec(space, arch, C=s["C"], cells_per_stage=s["cells_per_stage"], num_classes=num_classes)
    return darts_spec(space, arch, C=s["C"], num_cells=s["num_cells"], num_classes=num_classes,
                      auxiliary=s["auxiliary_weight"] > 0)


def _retrain_image(kind: str, rdir: Path, cfg: dict, result: dict, s: dict, progress, stop_after=None):
    from jaxnas.build import _num_classes, build_space, load_data
    from jaxnas.export import build_model, input_info
    data = load_data(cfg)
    space = build_space(cfg, data)
    arch = space.check_arch(np.asarray(result["arch_indices"], np.int32))
    ncls = _num_classes(data)
    table = None
    if kind == "nb201" and s.get("table"):
        from jaxnas.benchmarks.nb201 import annotate
        table = annotate({"arch": space.encode(arch)}, s["table"])["nb201"]   # fails before training
    spec = image_network_spec(kind, cfg, space, arch, ncls, s)
    net = build_model(spec)
    runs = []
    for seed in seed_list(s):
        label = f"c0_s{seed}"
        run = train_image_run(net, data, s, seed, rdir / label, progress, label, stop_after)
        if run is None:
            return None
        runs.append(run)
    cand = {"arch": space.encode(arch), "arch_indices": arch.tolist(), "param_count": runs[0]["param_count"],
            "runs": runs, "mean": _mean_metrics(runs), "model": spec}
    if "genotype" in result:
        cand["genotype"] = result["genotype"]
    if table is not None:
        cand["nb201"] = table
    best = _choose_best([cand])
    _say(progress, f"retrained {cand['arch']}: val accuracy {best['val_accuracy']:.4f} "
                   f"(loss {best['val_loss']:.4f}), {cand['param_count']:,} parameters")
    return {"protocol": kind, "seeds": seed_list(s), "candidates": [cand], "best": best,
            "input": input_info(data)}


def _call(net, variables, x, train, drop, rng, mutable=False):
    from jaxnas.networks import DartsEvalNet
    kw = {"drop_path": drop} if isinstance(net, DartsEvalNet) else {}
    return net.apply(variables, x, train=train, rngs={"dropout": rng} if rng is not None else None,
                     mutable=mutable, **kw)


def _eval_split(eval_fn, variables, x, y, num_classes: int, eval_batch: int, prefix: str) -> dict:
    from jaxnas.standalone import balanced_error
    from jaxnas.tasks import classification_loss
    n = len(y)
    outs = []
    for i in range(0, n, eval_batch):
        xb = np.asarray(x[i:i + eval_batch])
        pad = eval_batch - len(xb)
        if pad:  # one compiled shape
            xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
        outs.append(np.asarray(eval_fn(variables, xb))[:eval_batch - pad])
    logits = jnp.asarray(np.concatenate(outs))
    yj = jnp.asarray(y, jnp.int32)
    loss, acc = classification_loss(logits, yj)
    return {f"{prefix}_loss": float(loss), f"{prefix}_accuracy": float(acc),
            f"{prefix}_balanced_error": float(balanced_error(logits, yj, num_classes))}


def train_image_run(net, data, s: dict, seed: int, run_dir: Path, progress=None, label: str = "",
                    stop_after: Optional[int] = None) -> Optional[dict]:
    """Train ``net`` (a discrete cell network with tracked BN) from scratch on ``data`` (ImageData)
    with settings ``s`` and ``seed``; checkpoints / resumes in ``run_dir``; returns the run's
    metrics (also ``run_dir/run.json``; final variables in ``run_dir/final``). ``stop_after``: stop
    after that many steps of this session (None returned; a rerun resumes)."""
    import orbax.checkpoint as ocp
    from jaxnas import optim
    from jaxnas.data import normalize, random_crop_flip
    from jaxnas.networks.darts_eval import param_count
    from jaxnas.supernets.init import init_variables
    from jaxnas.tasks import classification_loss
    run_dir = Path(run_dir)
    done = run_dir / "run.json"
    if done.exists():
        _say(progress, f"[{label}] finished before: {done}")
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    n, bs = len(data.y_train), int(s["batch_size"])
    if n < bs:
        raise ValueError(f"batch_size {bs} exceeds the {n} training examples; lower batch_size")
    spe = n // bs
    total = s["epochs"] * spe if s["max_steps"] is None else min(int(s["max_steps"]), s["epochs"] * spe)
    tx = optim.make_optimizer(s["optimizer"], s["lr"], momentum=s["momentum"], nesterov=s["nesterov"],
                              weight_decay=s["weight_decay"], clip=s["grad_clip"], schedule=s["schedule"],
                              total_steps=total, what="retrain")
    mean, std = tuple(data.mean), tuple(data.std)
    ncls = int(data.num_classes)
    aux_w, cut, augment = float(s["auxiliary_weight"]), int(s["cutout"]), bool(s["augment"])
    k_init, k_train = jax.random.split(jax.random.key(int(seed)))
    x0 = jnp.zeros((2,) + tuple(data.x_train.shape[1:]), jnp.float32)

    def init():   # values drawn on the host (jaxnas.supernets.init): no XLA compile of the RNG calls
        v = init_variables(net, k_init, x0, train=False)
        params, stats = v["params"], v.get("batch_stats", {})
        return {"params": params, "batch_stats": stats, "opt_state": tx.init(params),
                "step": jnp.zeros((), jnp.int32)}

    @jax.jit
    def train_step(state, x, y, drop):
        key = jax.random.fold_in(k_train, state["step"])
        k_aug, k_cut, k_drop = jax.random.split(key, 3)
        if augment:
            x = random_crop_flip(k_aug, x)
        x = normalize(x, mean, std)
        if cut:
            x = cutout(k_cut, x, cut)

        def loss_fn(params):
            out, upd = _call(net, {"params": params, "batch_stats": state["batch_stats"]}, x, True, drop,
                             k_drop, mutable=["batch_stats"])
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss, acc = classification_loss(logits, y)
            obj = loss if aux is None else loss + aux_w * classification_loss(aux, y)[0]
            return obj, (loss, acc, upd.get("batch_stats", {}))
        (_, (loss, acc, stats)), g = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        upd, opt = tx.update(g, state["opt_state"], state["params"])
        new = {"params": optax.apply_updates(state["params"], upd), "batch_stats": stats,
               "opt_state": opt, "step": state["step"] + 1}
        return new, loss, acc

    @jax.jit
    def eval_fn(variables, x):
        return _call(net, variables, normalize(x, mean, std), False, 0.0, None)

    ckpt_root = (run_dir / "checkpoints").resolve()
    mgr = ocp.CheckpointManager(ckpt_root, options=ocp.CheckpointManagerOptions(max_to_keep=2))
    state = init()
    seconds, start = 0.0, 0
    if mgr.latest_step() is not None:
        start = int(mgr.latest_step())
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = mgr.restore(start, args=ocp.args.StandardRestore(abstract))
        meta = run_dir / "progress.json"
        if meta.exists():
            seconds = float(json.loads(meta.read_text()).get("seconds", 0.0))
        _say(progress, f"[{label}] resuming from step {start} ({ckpt_root})")
    _say(progress, f"[{label}] training {total} steps ({spe} per epoch, batch {bs}), "
                   f"{param_count(state['params']):,} parameters")
    t0 = time.perf_counter()
    perm_epoch, perm = -1, None
    losses, accs = [], []
    last = {"train_loss": None, "train_accuracy": None}
    end = total if stop_after is None else min(total, start + int(stop_after))
    for step in range(start, end):
        epoch = step // spe
        if epoch != perm_epoch:
            perm = np.random.default_rng([int(seed), epoch]).permutation(n)
            perm_epoch = epoch
        idx = np.sort(perm[(step % spe) * bs:(step % spe + 1) * bs])
        drop = float(s["drop_path"]) * epoch / max(int(s["epochs"]), 1)
        state, loss, acc = train_step(state, data.x_train[idx], data.y_train[idx].astype(np.int32),
                                      jnp.float32(drop))
        losses.append(loss)
        accs.append(acc)
        done_steps = step + 1
        if done_steps % s["log_every"] == 0 or done_steps == total:
            lv, av = float(np.mean(jax.device_get(losses))), float(np.mean(jax.device_get(accs)))
            losses, accs = [], []
            if not np.isfinite(lv):
                raise FloatingPointError(f"[{label}] training loss is {lv} at step {done_steps}; lower "
                                         f"lr ({s['lr']}) or set grad_clip")
            last = {"train_loss": lv, "train_accuracy": av}
            el = seconds + time.perf_counter() - t0
            _say(progress, f"[{label}] step {done_steps}/{total} epoch {epoch + 1} loss {lv:.4f} "
                           f"acc {av:.4f} ({el:.1f} s)")
        if done_steps % s["checkpoint_every"] == 0 or done_steps == total:
            mgr.save(done_steps, args=ocp.args.StandardSave(state))
            mgr.wait_until_finished()
            _write_json(run_dir / "progress.json",
                        {"step": done_steps, "seconds": seconds + time.perf_counter() - t0})
    mgr.close()
    if end < total:
        return None
    seconds += time.perf_counter() - t0
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    final = (run_dir / "final").resolve()
    if final.exists():
        shutil.rmtree(final)
    with ocp.StandardCheckpointer() as ck:
        ck.save(final, jax.device_get(variables))
        ck.wait_until_finished()
    cap = s["max_eval"]
    out = {"seed": int(seed), "steps": int(total), **last}
    out.update(_eval_split(eval_fn, variables, data.x_val[:cap], data.y_val[:cap], ncls, s["eval_batch"], "val"))
    test = _test_split(data)
    if test is not None:
        out.update(_eval_split(eval_fn, variables, test[0][:cap], test[1][:cap], ncls, s["eval_batch"], "test"))
    out["param_count"] = param_count(state["params"])
    out["seconds"] = seconds
    out["final"] = str(Path(RETRAIN_DIR) / run_dir.name / "final")
    _write_json(done, out)
    return out

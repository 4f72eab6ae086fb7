"""Export a found network for use without the search machinery.

``export(workdir, out=None)`` / ``jaxnas export WORKDIR [--out DIR]`` writes to ``out`` (default
``<workdir>/export``):

- ``architecture.json``: the architecture (string, indices, the DARTS genotype or NAS-Bench-201 row
  when there is one), the space section of the search config, and the retrain metrics of the best
  run when ``jaxnas retrain`` has run;
- ``model.json``: which discrete network it is and its constructor arguments (JSON), plus the input
  preprocessing the network expects (``input``);
- ``variables/``: the retrained variables (orbax; ``params`` and, for cell networks, the BatchNorm
  ``batch_stats``) of the best retrained run; absent when nothing was retrained.

``model, variables = jaxnas.export.load(out)`` gives a plain Flax module and its variables:
``model.apply(variables, x, train=False)`` returns logits (``variables`` is None without a
retrain: ``model.init`` them). ``input_transform(out)`` maps raw inputs (tabular features as in the
data file; uint8 images) to what the network takes. Networks: every spec of ``jaxnas.models.specs``
(``mlp``, ``nb201``, ``darts_eval``, ``rnn``).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import protocols
from jaxnas.benchmarks.nb201 import network_input
from jaxnas.config.experiment import build_space, load_data
from jaxnas.core.workdir import WorkdirError, WorkdirLock, read_only_message, restore_tree, save_tree, writable
from jaxnas.data.images import normalize
from jaxnas.data.inputs import input_info
from jaxnas.models.specs import build_model
from jaxnas.protocols.base import is_table_search, read_json, read_search
from jaxnas.retrain import default_settings, space_kind

FORMAT = 1
NETWORKS = ("mlp", "nb201", "darts_eval")


def _cut_mlp(masked: dict, widths, num_inputs: int) -> dict:
    """The child MLP's parameters out of masked max-width ones (leading units)."""
    out, fan_in = {}, int(num_inputs)
    for l, w in enumerate(widths):
        p = masked[f"hidden{l}"]
        out[f"hidden{l}"] = {"kernel": np.asarray(p["kernel"])[:fan_in, :w], "bias": np.asarray(p["bias"])[:w]}
        fan_in = w
    p = masked["logits"]
    out["logits"] = {"kernel": np.asarray(p["kernel"])[:fan_in], "bias": np.asarray(p["bias"])}
    return out


def retrained_variables(workdir, retrain_result: dict) -> tuple[dict, dict]:
    """``(spec, variables)`` of the best run of ``retrain.json``."""
    workdir = Path(workdir)
    best = retrain_result["best"]
    cand = retrain_result["candidates"][best["candidate"]]
    spec = cand["model"]
    if spec["network"] == "mlp":
        members = restore_tree(workdir / retrain_result["params_path"])
        member = jax.tree.map(lambda a: np.asarray(a)[best["candidate"], best["run"]], members)
        num_inputs = np.asarray(member["hidden0"]["kernel"] if spec["kwargs"]["widths"]
                                else member["logits"]["kernel"]).shape[0]
        return spec, {"params": _cut_mlp(member, spec["kwargs"]["widths"], num_inputs)}
    run = cand["runs"][best["run"]]
    return spec, jax.tree.map(np.asarray, restore_tree(workdir / run["final"]))


def export(workdir, out=None, progress=None) -> Path:
    """Writes the export of ``workdir`` to ``out`` (default ``<workdir>/export``); returns ``out``.
    Takes the work dir's lock (no search or retrain meanwhile) and writes a temporary folder renamed
    into place, so ``out`` always holds a whole export (the previous one until the new one is done)."""
    workdir = Path(workdir)
    cfg, result = read_search(workdir)
    out = Path(out) if out is not None else workdir / "export"
    with _hold(workdir, out, progress):
        return _export(workdir, cfg, result, out, progress)


def _hold(workdir: Path, out: Path, progress):
    """The work dir's lock; a read-only work dir (nothing can change it, and no lock can be written
    there) needs none when ``out`` is elsewhere, and is refused when ``out`` is inside it."""
    if writable(workdir):
        return WorkdirLock(workdir, progress)
    if out.resolve().is_relative_to(workdir.resolve()):
        raise WorkdirError(read_only_message(workdir, f"the export goes to {out}",
                                             "give --out DIR outside it (export(workdir, out=DIR))"))
    return contextlib.nullcontext()


def _export(workdir: Path, cfg: dict, result: dict, out: Path, progress) -> Path:
    out = out.resolve()
    if out.is_dir() and not (out / "model.json").exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not a jaxnas export (no model.json); give another --out")
    kind = space_kind(cfg)
    rpath = workdir / "retrain.json"
    retrained = read_json(rpath) if rpath.exists() else None
    if retrained is not None:
        made_from = retrained.get("identity", {}).get("search", {}).get("state_digest")
        if made_from is not None and made_from != result.get("state_digest"):
            raise ValueError(f"{rpath} is the retrain of an earlier search in {workdir} (the search was rerun "
                             f"since: state digests differ); retrain this search first (`jaxnas retrain "
                             f"{workdir} --force-restart`), or delete {rpath} to export its architecture "
                             f"without variables")
    arch_info: dict[str, Any] = {"format": FORMAT, "source": str(workdir), "space": cfg["space"],
                                 "search_state_digest": result.get("state_digest")}
    if retrained is not None:
        spec, variables = retrained_variables(workdir, retrained)
        best = retrained["best"]
        cand = retrained["candidates"][best["candidate"]]
        arch_info.update({"arch": cand["arch"], "arch_indices": cand["arch_indices"],
                          "retrained": True, "retrain": best, "search_arch": result["arch"]})
        for k in ("genotype", "nb201", "pipeline"):
            if k in cand:
                arch_info[k] = cand[k]
        inp = retrained.get("input")
        if inp is None:
            data_cfg = dict(cfg)
            data_cfg["data"] = {**cfg["data"], **retrained.get("identity", {}).get("data_overrides", {})}
            inp = input_info(load_data(data_cfg))
    else:   # a table search: the benchmark's network, described without loading its data
        data = network_input() if is_table_search(cfg) else load_data(cfg)
        space = build_space(cfg, data)
        arch = np.asarray(result["arch_indices"], np.int32)
        spec = protocols.get(kind).spec(cfg, space, arch, data, default_settings(cfg))
        variables = None
        arch_info.update({"arch": result["arch"], "arch_indices": result["arch_indices"], "retrained": False})
        for k in ("genotype", "nb201", "pipeline"):
            if k in result:
                arch_info[k] = result[k]
        inp = input_info(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.writing-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    (tmp / "architecture.json").write_text(json.dumps(arch_info, indent=1))
    (tmp / "model.json").write_text(json.dumps({"format": FORMAT, **spec, "input": inp}, indent=1))
    if variables is not None:
        save_tree(tmp / "variables", variables)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)           # the previous export stays whole until the new one is in place
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)
    if progress is not None:
        progress.write(f"exported {arch_info['arch']} ({spec['network']}"
                       f"{', retrained variables' if variables is not None else ', no retrained variables'})"
                       f" to {out}\n")
    return out


def load(path) -> tuple[Any, Optional[dict]]:
    """``(model, variables)`` of an export: a Flax module and its variables (None when the export
    has no retrained variables). ``model.apply(variables, x, train=False)`` gives logits."""
    p = Path(path)
    if not (p / "model.json").exists():
        raise FileNotFoundError(f"{str(p)!r} has no model.json; make one with `jaxnas export WORKDIR --out {p}`")
    spec = json.loads((p / "model.json").read_text())
    model = build_model(spec)
    vdir = p / "variables"
    variables = restore_tree(vdir) if vdir.exists() else None
    return model, variables


def input_transform(path) -> Callable:
    """``x -> network input`` of an export (see ``model.json``'s ``input``)."""
    info = json.loads((Path(path) / "model.json").read_text())["input"]
    if info["kind"] == "tokens":
        return lambda x: jnp.asarray(x, jnp.int32)
    if info["kind"] == "tabular":
        m, s = jnp.asarray(info["feature_mean"], jnp.float32), jnp.asarray(info["feature_std"], jnp.float32)
        return lambda x: (jnp.asarray(x, jnp.float32) - m) / s
    return lambda x: normalize(x, info["mean"], info["std"])

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
data file; uint8 images) to what the network takes. Networks: ``mlp`` (``jaxnas.supernets.mlp.MLP``),
``nb201`` (``jaxnas.supernets.cells.NasBench201Net`` built with ``arch=``, tracked BN) and
``darts_eval`` (``jaxnas.networks.DartsEvalNet``).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np

FORMAT = 1
NETWORKS = ("mlp", "nb201", "darts_eval")


# ---- specs: JSON constructor arguments of the discrete networks -----------------------------------
def mlp_spec(space, arch) -> dict:
    widths = [int(w) for w in np.asarray(space.arch_widths(np.asarray(arch)))]
    return {"network": "mlp", "kwargs": {"widths": widths, "num_outputs": int(space.num_outputs)}}


def nb201_spec(space, arch, *, C: int, cells_per_stage: int, num_classes: int) -> dict:
    unique = space.num_blocks > 1
    if unique and cells_per_stage != space.cells_per_stage:
        raise ValueError(f"the search found {space.num_blocks} unique cells ({space.cells_per_stage} per "
                         f"stage); set cells_per_stage={space.cells_per_stage}")
    return {"network": "nb201",
            "space": {"C": int(C), "cells_per_stage": int(cells_per_stage), "num_classes": int(num_classes),
                      "unique_cells": bool(unique), "ops": list(space.ops)},
            "arch": [int(a) for a in np.asarray(arch)]}


def darts_spec(space, arch, *, C: int, num_cells: int, num_classes: int, auxiliary: bool) -> dict:
    from jaxnas.networks.darts_eval import cells_from_arch, cells_to_json
    if space.unique_cells and num_cells != space.num_blocks:
        raise ValueError(f"the search found {space.num_blocks} unique cells; set num_cells={space.num_blocks}")
    return {"network": "darts_eval",
            "kwargs": {"cells": cells_to_json(cells_from_arch(space, arch)),
                       "block_names": list(space.block_names), "C": int(C), "num_cells": int(num_cells),
                       "num_classes": int(num_classes), "auxiliary": bool(auxiliary)}}


def build_model(spec: dict):
    """The Flax module a spec describes."""
    net = spec.get("network")
    if net == "mlp":
        from jaxnas.supernets.mlp import MLP
        k = spec["kwargs"]
        return MLP(widths=tuple(int(w) for w in k["widths"]), num_outputs=int(k["num_outputs"]))
    if net == "nb201":
        from jaxnas.spaces.cells import NasBench201Space
        from jaxnas.supernets.cells import NasBench201Net
        sp = spec["space"]
        space = NasBench201Space.create(C=int(sp["C"]), cells_per_stage=int(sp["cells_per_stage"]),
                                        num_classes=int(sp["num_classes"]), unique_cells=bool(sp["unique_cells"]),
                                        ops=tuple(sp["ops"]))
        return NasBench201Net(space, arch=tuple(int(a) for a in spec["arch"]), track=True)
    if net == "darts_eval":
        from jaxnas.networks.darts_eval import DartsEvalNet, cells_from_json
        k = dict(spec["kwargs"])
        return DartsEvalNet(cells=cells_from_json(k.pop("cells")), block_names=tuple(k.pop("block_names")),
                            **{n: (bool(v) if n == "auxiliary" else int(v)) for n, v in k.items()})
    raise ValueError(f"unknown network {net!r} in the model spec; known: {NETWORKS}")


def input_info(data) -> dict:
    """What a raw input goes through before the network (tabular standardisation, image scaling)."""
    if hasattr(data, "feature_mean"):
        return {"kind": "tabular", "feature_mean": np.asarray(data.feature_mean, float).tolist(),
                "feature_std": np.asarray(data.feature_std, float).tolist(),
                "feature_names": list(data.feature_names), "class_names": list(data.class_names),
                "transform": "(x - feature_mean) / feature_std"}
    return {"kind": "image", "shape": list(data.x_train.shape[1:]), "mean": list(data.mean),
            "std": list(data.std), "class_names": list(getattr(data, "class_names", ()) or ()),
            "transform": "(uint8 / 255 - mean) / std, NHWC"}


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


def _restore_tree(path: Path):
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as ck:
        return ck.restore(Path(path).resolve())


def retrained_variables(workdir, retrain_result: dict) -> tuple[dict, dict]:
    """``(spec, variables)`` of the best run of ``retrain.json``."""
    workdir = Path(workdir)
    best = retrain_result["best"]
    cand = retrain_result["candidates"][best["candidate"]]
    spec = cand["model"]
    if spec["network"] == "mlp":
        members = _restore_tree(workdir / retrain_result["params_path"])
        member = jax.tree.map(lambda a: np.asarray(a)[best["candidate"], best["run"]], members)
        num_inputs = np.asarray(member["hidden0"]["kernel"] if spec["kwargs"]["widths"]
                                else member["logits"]["kernel"]).shape[0]
        return spec, {"params": _cut_mlp(member, spec["kwargs"]["widths"], num_inputs)}
    run = cand["runs"][best["run"]]
    return spec, jax.tree.map(np.asarray, _restore_tree(workdir / run["final"]))


def export(workdir, out=None, progress=None) -> Path:
    """Writes the export of ``workdir`` to ``out`` (default ``<workdir>/export``); returns ``out``."""
    from jaxnas.build import build_space, load_data
    from jaxnas.retrain import default_settings, image_network_spec, read_search, space_kind
    workdir = Path(workdir)
    cfg, result = read_search(workdir)
    kind = space_kind(cfg)
    out = Path(out) if out is not None else workdir / "export"
    rpath = workdir / "retrain.json"
    retrained = json.loads(rpath.read_text()) if rpath.exists() else None
    arch_info: dict[str, Any] = {"format": FORMAT, "source": str(workdir), "space": cfg["space"]}
    if retrained is not None:
        spec, variables = retrained_variables(workdir, retrained)
        best = retrained["best"]
        cand = retrained["candidates"][best["candidate"]]
        arch_info.update({"arch": cand["arch"], "arch_indices": cand["arch_indices"],
                          "retrained": True, "retrain": best, "search_arch": result["arch"]})
        for k in ("genotype", "nb201"):
            if k in cand:
                arch_info[k] = cand[k]
        inp = retrained.get("input")
        if inp is None:
            data_cfg = dict(cfg)
            data_cfg["data"] = {**cfg["data"], **retrained.get("identity", {}).get("data_overrides", {})}
            inp = input_info(load_data(data_cfg))
    else:
        data = load_data(cfg)
        space = build_space(cfg, data)
        arch = np.asarray(result["arch_indices"], np.int32)
        if kind == "mlp":
            spec = mlp_spec(space, arch)
        else:
            from jaxnas.build import _num_classes
            spec = image_network_spec(kind, cfg, space, arch, _num_classes(data), default_settings(cfg))
        variables = None
        arch_info.update({"arch": result["arch"], "arch_indices": result["arch_indices"], "retrained": False})
        for k in ("genotype", "nb201"):
            if k in result:
                arch_info[k] = result[k]
        inp = input_info(data)
    out.mkdir(parents=True, exist_ok=True)
    vdir = (out / "variables").resolve()
    if vdir.exists():
        shutil.rmtree(vdir)
    (out / "architecture.json").write_text(json.dumps(arch_info, indent=1))
    (out / "model.json").write_text(json.dumps({"format": FORMAT, **spec, "input": inp}, indent=1))
    if variables is not None:
        import orbax.checkpoint as ocp
        with ocp.StandardCheckpointer() as ck:
            ck.save(vdir, variables)
            ck.wait_until_finished()
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
    variables = _restore_tree(vdir) if vdir.exists() else None
    return model, variables


def input_transform(path) -> Callable:
    """``x -> network input`` of an export (see ``model.json``'s ``input``)."""
    import jax.numpy as jnp
    info = json.loads((Path(path) / "model.json").read_text())["input"]
    if info["kind"] == "tabular":
        m, s = jnp.asarray(info["feature_mean"], jnp.float32), jnp.asarray(info["feature_std"], jnp.float32)
        return lambda x: (jnp.asarray(x, jnp.float32) - m) / s
    from jaxnas.data import normalize
    return lambda x: normalize(x, info["mean"], info["std"])

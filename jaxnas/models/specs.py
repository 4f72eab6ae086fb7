"""Discrete networks from a search's answer, for every space: a *spec* (the network's name and its
constructor arguments, JSON) made from a space and an architecture, and :func:`build_model`, the Flax
module a spec describes. Retrain, export and ``jaxnas.export.load`` all go through here, so what is
trained is what is exported and loaded."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxnas.models.networks.darts_eval import DartsEvalNet, cells_from_arch, cells_from_json, cells_to_json
from jaxnas.models.supernets.cells import NasBench201Net
from jaxnas.models.supernets.mlp import MLP
from jaxnas.models.supernets.rnn import RNNLanguageModel
from jaxnas.spaces.cells import NasBench201Space
from jaxnas.spaces.rnn import RNNCellSpace

NETWORKS = ("mlp", "nb201", "darts_eval", "rnn", "nb201_one_hot")


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
    if space.unique_cells and num_cells != space.num_blocks:
        raise ValueError(f"the search found {space.num_blocks} unique cells; set num_cells={space.num_blocks}")
    return {"network": "darts_eval",
            "kwargs": {"cells": cells_to_json(cells_from_arch(space, arch)),
                       "block_names": list(space.block_names), "C": int(C), "num_cells": int(num_cells),
                       "num_classes": int(num_classes), "auxiliary": bool(auxiliary)}}


def rnn_spec(space, arch, *, dropout: float) -> dict:
    """The recurrent language model of the derived cell (AdvantageNAS sec. 5.3), its space rebuilt
    from the spec alone."""
    return {"network": "rnn",
            "space": {"vocab_size": int(space.vocab_size), "emb_size": int(space.emb_size),
                      "hidden_size": int(space.hidden_size), "num_nodes": int(space.num_nodes),
                      "ops": list(space.ops)},
            "kwargs": {"dropout": float(dropout)},
            "arch": [int(a) for a in np.asarray(arch)]}


class OneHotCellNet(nn.Module):
    """The NAS-Bench-201 network at fixed one-hot cell weights, every op's parameters kept (the dense
    supernet with the chosen op weighted 1, the rest 0; BN on batch statistics): the network an
    MA2ML image pipeline trains (``jaxnas.training.standalone.train_pipeline``), so its parameters
    load as they are. ``apply(variables, x, train=False)`` gives logits."""
    space: NasBench201Space
    arch: tuple[int, ...]

    def setup(self):
        self.net = NasBench201Net(self.space)

    def __call__(self, x, train: bool = False):
        del train   # batch statistics in training and evaluation, as the pipeline was trained
        return self.net(x, self.space.one_hot(jnp.asarray(self.arch, jnp.int32)), mode="dense", train=True)


def nb201_one_hot_spec(space, arch) -> dict:
    """``space``: the NAS agent's NasBench201Space; ``arch``: its cell."""
    return {"network": "nb201_one_hot",
            "space": {"C": int(space.C), "cells_per_stage": int(space.cells_per_stage),
                      "num_classes": int(space.num_classes), "ops": list(space.ops)},
            "arch": [int(a) for a in np.asarray(arch)]}


def build_model(spec: dict):
    """The Flax module a spec describes."""
    net = spec.get("network")
    if net == "mlp":
        k = spec["kwargs"]
        return MLP(widths=tuple(int(w) for w in k["widths"]), num_outputs=int(k["num_outputs"]))
    if net == "nb201":
        sp = spec["space"]
        space = NasBench201Space.create(C=int(sp["C"]), cells_per_stage=int(sp["cells_per_stage"]),
                                        num_classes=int(sp["num_classes"]), unique_cells=bool(sp["unique_cells"]),
                                        ops=tuple(sp["ops"]))
        return NasBench201Net(space, arch=tuple(int(a) for a in spec["arch"]), track=True)
    if net == "darts_eval":
        k = dict(spec["kwargs"])
        return DartsEvalNet(cells=cells_from_json(k.pop("cells")), block_names=tuple(k.pop("block_names")),
                            **{n: (bool(v) if n == "auxiliary" else int(v)) for n, v in k.items()})
    if net == "nb201_one_hot":
        sp = spec["space"]
        space = NasBench201Space.create(C=int(sp["C"]), cells_per_stage=int(sp["cells_per_stage"]),
                                        num_classes=int(sp["num_classes"]), ops=tuple(sp["ops"]))
        return OneHotCellNet(space, tuple(int(a) for a in spec["arch"]))
    if net == "rnn":
        sp = spec["space"]
        space = RNNCellSpace.create(**{k: (tuple(v) if k == "ops" else int(v)) for k, v in sp.items()})
        return RNNLanguageModel(space, arch=tuple(int(a) for a in spec["arch"]),
                                dropout=float(spec["kwargs"]["dropout"]))
    raise ValueError(f"unknown network {net!r} in the model spec; known: {NETWORKS}")

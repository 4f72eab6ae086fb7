"""From a resolved config to data, space, task, strategy and optimizer."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import optax

from jaxnas import data as D
from jaxnas.search import AXIS, Search, make_mesh
from jaxnas.spaces import MLPSpace, TABNAS_WIDTHS
from jaxnas.spaces.cells import DartsSpace, NasBench201Space
from jaxnas.strategies import make as make_strategy
from jaxnas.supernets import DartsNet, MLPSupernet, NasBench201Net
from jaxnas.tasks import ClassificationTask

IMAGE_SETS = ("cifar10", "cifar100")


@dataclasses.dataclass
class Experiment:
    config: dict
    data: Any            # TabularData or ImageData: x_train, y_train, x_val, y_val
    space: Any
    task: ClassificationTask
    search: Search


def load_data(cfg: dict):
    d = cfg["data"]
    name = d["name"]
    if name == "connect4":
        return D.load_tabular("connect4", val_fraction=d["val_fraction"], seed=cfg["seed"],
                              max_train=d["max_train"], standardize=d["standardize"])
    if name == "tabular":
        if not d["path"]:
            raise ValueError("data.name='tabular' needs data.path (an .npz with X, y or a .csv/.tsv file)")
        return D.load_tabular(d["path"], label=d["label"], val_fraction=d["val_fraction"], seed=cfg["seed"],
                              max_train=d["max_train"], standardize=d["standardize"])
    if name == "image_npz":
        if not d["path"]:
            raise ValueError("data.name='image_npz' needs data.path (an .npz with X uint8 NHWC and y)")
        return D.load_image_npz(d["path"], val_fraction=d["val_fraction"], seed=cfg["seed"],
                                max_train=d["max_train"])
    if not d["data_dir"]:
        raise ValueError(f"data.name={name!r} reads a tfds data set from a local directory: set data.data_dir "
                         f"to a directory prepared with `tfds build {name} --file_format=array_record "
                         f"--data_dir DIR` (no download happens here)")
    return D.load_tfds_images(name, d["data_dir"], train_split=d["train_split"], val_split=d["val_split"],
                              max_train=d["max_train"], max_val=d["max_val"])


def _num_classes(data) -> int:
    return int(getattr(data, "num_classes", None) or (int(np.max(data.y_train)) + 1))


def build_space(cfg: dict, data):
    s = cfg["space"]
    ncls = _num_classes(data)
    if s["name"] == "mlp":
        if getattr(data, "x_train", None) is None or np.ndim(data.x_train) != 2:
            raise ValueError("space.name='mlp' needs tabular data (2-D features)")
        widths = tuple(s["widths"]) if s["widths"] else TABNAS_WIDTHS
        return MLPSpace.create(s["num_layers"], data.x_train.shape[1], 1 if ncls == 2 else ncls, widths)
    kw = {} if s["ops"] is None else {"ops": tuple(s["ops"])}
    if s["name"] == "nb201":
        return NasBench201Space.create(C=s["C"], cells_per_stage=s["cells_per_stage"], num_classes=ncls,
                                       unique_cells=s["unique_cells"], **kw)
    if s["name"] == "darts":
        return DartsSpace.create(C=s["C"], num_cells=s["num_cells"], unique_cells=s["unique_cells"], **kw)
    raise ValueError(f"unknown space {s['name']!r}; valid: mlp, nb201, darts")


def build_task(cfg: dict, space, data) -> ClassificationTask:
    reward = cfg["search"]["reward"]
    if isinstance(space, MLPSpace):
        return ClassificationTask(space, MLPSupernet(space), (space.num_inputs,), reward=reward)
    net = NasBench201Net(space) if isinstance(space, NasBench201Space) else DartsNet(space, _num_classes(data))
    mean, std = data.mean, data.std
    augment = D.random_crop_flip if cfg["data"]["augment"] else None
    return ClassificationTask(space, net, tuple(data.x_train.shape[1:]), augment=augment,
                              preprocess=lambda x: D.normalize(x, mean, std), reward=reward)


def build_optimizer(cfg: dict):
    o = cfg["optimizer"]
    steps = cfg["search"]["steps"]
    if o["schedule"] == "cosine":
        lr = optax.cosine_decay_schedule(o["lr"], steps)
    elif o["schedule"] == "constant":
        lr = o["lr"]
    else:
        raise ValueError(f"optimizer.schedule must be 'constant' or 'cosine', got {o['schedule']!r}")
    parts = []
    if o["clip"]:
        parts.append(optax.clip_by_global_norm(o["clip"]))
    if o["name"] == "adam":
        parts.append(optax.adamw(lr, o["b1"], o["b2"], o["eps"], weight_decay=o["weight_decay"])
                     if o["weight_decay"] else optax.adam(lr, o["b1"], o["b2"], o["eps"]))
    elif o["name"] == "sgd":
        if o["weight_decay"]:
            parts.append(optax.add_decayed_weights(o["weight_decay"]))
        parts.append(optax.sgd(lr, o["momentum"], o["nesterov"]))
    else:
        raise ValueError(f"optimizer.name must be 'adam' or 'sgd', got {o['name']!r}")
    return optax.chain(*parts)


def _options(name: str) -> set:
    import inspect
    from jaxnas.strategies.base import _REGISTRY  # filled by importing jaxnas.strategies (above)
    return set(inspect.signature(_REGISTRY[name]).parameters) if name in _REGISTRY else set()


def build(cfg: dict) -> Experiment:
    data = load_data(cfg)
    space = build_space(cfg, data)
    task = build_task(cfg, space, data)
    sopts = {k: v for k, v in cfg["strategy"].items() if k != "name"}
    devices = cfg["search"]["devices"]
    mesh = None
    if devices == "all" or (isinstance(devices, int) and devices > 1):
        mesh = make_mesh(None if devices == "all" else devices)
        if cfg["search"]["batch_size"] % mesh.size:
            raise ValueError(f"search.batch_size {cfg['search']['batch_size']} must divide evenly over "
                             f"{mesh.size} devices")
        if "axis_name" in _options(cfg["strategy"]["name"]):
            # strategies with their own device rule (TabNAS App. B.2.2: average over feasible devices)
            sopts.setdefault("axis_name", AXIS)
    strategy = make_strategy(cfg["strategy"]["name"], space, **sopts)
    search = Search(task, strategy, build_optimizer(cfg), mesh, weight_lr=float(cfg["optimizer"]["lr"]))
    return Experiment(cfg, data, space, task, search)

"""Image classification data: tfds array_record sources (no TensorFlow), npz subsets, augmentation.

``tfds.data_source`` reads data sets prepared in the **array_record** format without TensorFlow;
preparing them (``tfds build``) does need TensorFlow, so it is done once, offline, on another
machine, and the prepared folder copied to ``data_dir``. Images stay uint8 on the host; the
normalisation and the CIFAR search augmentation (random crop with 4-pixel zero padding + horizontal
flip, as DARTS / NAS-Bench-201 train) are pure jnp functions that run inside a jitted step.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.data.tabular import (
    DataNotFoundError,
    SplitSizes,
    check_classes,
    check_label_values,
    check_unseen,
    stratified_split,
)

# Per-channel mean / std of the training images, in [0, 1] units (NAS-Bench-201's constants).
CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
CIFAR100_MEAN = (129.3 / 255, 124.1 / 255, 112.4 / 255)
CIFAR100_STD = (68.2 / 255, 65.4 / 255, 70.4 / 255)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
KNOWN_STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData(SplitSizes):
    """Train/validation(/test) images in memory: uint8 [N, H, W, C] and int32 [N] labels.

    ``mean`` / ``std`` (per channel, [0, 1] units) are what :meth:`normalize` applies.
    ``x_test`` / ``y_test``: a test split when the data set has one (tfds ``test_split``, an npz
    ``test_path``), else None; the search never sees it, it is reported after retraining only.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    def normalize(self, images) -> jax.Array:
        return normalize(images, self.mean, self.std)

    def __repr__(self) -> str:
        test = f", test={self.num_test}" if self.x_test is not None else ""
        return (f"ImageData(train={self.num_train}, val={self.num_val}{test}, shape={self.image_shape}, "
                f"classes={self.num_classes})")


# ---- jnp transforms (jit-able) ---------------------------------------------------------------
def normalize(images, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """uint8 (or [0, 255] float) images -> float32 ``(x / 255 - mean) / std`` per channel."""
    x = jnp.asarray(images, jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def random_crop_flip(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """Standard CIFAR augmentation: zero-pad by ``padding``, random H x W crop, random h-flip.

    Per example, independently; same shape and dtype in and out; deterministic for a key.
    Apply it to the uint8 images before :func:`normalize` (the padding is then black, as with
    torchvision's ``RandomCrop(32, padding=4)`` in DARTS / NAS-Bench-201).
    """
    if images.ndim != 4:
        raise ValueError(f"expected images [N, H, W, C], got shape {images.shape}")
    n, h, w, c = images.shape
    k_y, k_x, k_f = jax.random.split(key, 3)
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy = jax.random.randint(k_y, (n,), 0, 2 * padding + 1)
    dx = jax.random.randint(k_x, (n,), 0, 2 * padding + 1)
    crops = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (h, w, c)))(padded, dy, dx)
    flip = jax.random.bernoulli(k_f, 0.5, (n,))
    return jnp.where(flip[:, None, None, None], crops[:, :, ::-1, :], crops)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, H, W, C], in [0, 1] units (float64 sums)."""
    x = np.asarray(images).reshape(-1, images.shape[-1])
    mean = x.mean(0, dtype=np.float64) / 255.0
    std = np.sqrt(np.maximum((x.astype(np.float64) ** 2).mean(0) / 255.0**2 - mean**2, 0.0))
    std = np.where(std > 0, std, 1.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _resolve_stats(stats, name: str | None, x_train: np.ndarray):
    if stats is None:
        base = (name or "").split("/")[0].split(":")[0]
        stats = base if base in KNOWN_STATS else "compute"
    if isinstance(stats, str):
        if stats == "compute":
            return channel_stats(x_train)
        if stats not in KNOWN_STATS:
            raise ValueError(f"unknown stats {stats!r}; use one of {sorted(KNOWN_STATS)}, 'compute' "
                             "or a (mean, std) pair of per-channel tuples in [0, 1] units")
        return KNOWN_STATS[stats]
    mean, std = stats
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# ---- tfds (array_record, no TensorFlow) ------------------------------------------------------
def _prepare_message(name: str, data_dir) -> str:
    where = data_dir if data_dir is not None else "the default tfds data_dir (~/tensorflow_datasets)"
    d = data_dir if data_dir is not None else "~/tensorflow_datasets"
    return (f"tfds data set {name!r} is not prepared in the array_record format under {where} "
            f"(it is missing, or was prepared as tfrecord, which only TensorFlow can read). Prepare "
            f"it once, on a machine with TensorFlow and network access:\n"
            f"    pip install tensorflow tensorflow-datasets\n"
            f"    tfds build {name} --file_format=array_record --data_dir {d}\n"
            f"then copy that data_dir here and pass it as data_dir.")


class TfdsImageSource:
    """A lazy, random-access view of one split of a tfds image classification set.

    ``read(indices)`` returns ``(uint8 [B, H, W, C], int32 [B])``; nothing else is loaded.
    """

    def __init__(self, source, name: str, image_key: str = "image", label_key: str = "label"):
        self.source = source
        self.name = name
        self.image_key = image_key
        self.label_key = label_key
        features = source.dataset_info.features
        for key in (image_key, label_key):
            if key not in features:
                raise ValueError(f"{name!r} has features {list(features.keys())}; no {key!r} (set "
                                 "image_key= / label_key=)")
        self.class_names = tuple(features[label_key].names)
        self.num_classes = int(features[label_key].num_classes)
        self.image_shape = tuple(features[image_key].shape)

    def __len__(self) -> int:
        return len(self.source)

    def read(self, indices) -> tuple[np.ndarray, np.ndarray]:
        keys = [int(i) for i in np.asarray(indices).reshape(-1)]  # tfds wants a list of ints
        try:
            records = self.source.__getitems__(keys)
        except TypeError:  # tfds.testing.mock_data's source has a broken __getitems__
            records = [self.source[k] for k in keys]
        if not records:
            return (np.zeros((0,) + self.image_shape, np.uint8), np.zeros((0,), np.int32))
        images = np.stack([np.asarray(r[self.image_key], np.uint8) for r in records])
        labels = np.asarray([r[self.label_key] for r in records], np.int32)
        return images, labels

    def load(self, max_examples: int | None = None, chunk: int = 1024):
        """Read the first ``max_examples`` (default all) examples into memory."""
        n = len(self) if max_examples is None else min(len(self), int(max_examples))
        parts = [self.read(range(s, min(s + chunk, n))) for s in range(0, n, chunk)] or [self.read([])]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def open_tfds(name: str, split: str = "train", data_dir=None, *, image_key: str = "image",
              label_key: str = "label") -> TfdsImageSource:
    """Open a prepared tfds image set without TensorFlow (``tfds.data_source``, no download).

    Raises DataNotFoundError (a FileNotFoundError and ValueError) with the ``tfds build`` command
    when the set is missing or only in tfrecord format.
    """
    import tensorflow_datasets as tfds  # lazy: ~0.5 s import, only image users pay it

    if data_dir is not None:
        data_dir = os.path.expanduser(str(data_dir))
    try:
        src = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"tfds has no data set named {name!r} (e.g. 'cifar10', 'cifar100')") from e
    except (NotImplementedError, FileNotFoundError, AssertionError, KeyError) as e:
        # KeyError: a data_dir holding the set's metadata but not this split
        # tfds reports a missing set as NotImplementedError ... FileFormat.TFRECORD: misleading.
        raise DataNotFoundError(_prepare_message(name, data_dir)) from e
    return TfdsImageSource(src, name, image_key=image_key, label_key=label_key)


def load_tfds_images(name: str = "cifar10", data_dir=None, *, train_split: str = "train",
                     val_split: str = "test", test_split: str | None = None,
                     max_train: int | None = None, max_val: int | None = None, stats=None,
                     image_key: str = "image", label_key: str = "label") -> ImageData:
    """Load a tfds image classification set into memory as uint8 arrays.

    For a DARTS-style search split the training set in halves:
    ``train_split="train[:50%]", val_split="train[50%:]"``; ``test_split`` (e.g. ``"test"``) is
    loaded as ``x_test`` / ``y_test`` (None: no test split). ``stats``: None (CIFAR constants for
    cifar10/100, else computed from the training images), a known name, ``"compute"``, or
    ``(mean, std)``.
    """
    tr = open_tfds(name, train_split, data_dir, image_key=image_key, label_key=label_key)
    va = open_tfds(name, val_split, data_dir, image_key=image_key, label_key=label_key)
    x_train, y_train = tr.load(max_train)
    x_val, y_val = va.load(max_val)
    check_classes(y_train, tr.class_names or [str(i) for i in range(tr.num_classes)],
                  f"tfds {name!r} labels ({train_split})")
    x_test = y_test = None
    if test_split is not None:
        te = open_tfds(name, test_split, data_dir, image_key=image_key, label_key=label_key)
        x_test, y_test = te.load()
    every = np.concatenate([y for y in (y_train, y_val, y_test) if y is not None])   # a prepared set's classes
    check_unseen(y_train, every, [("validation", y_val, f"tfds {name!r} {val_split!r}"),   # are its own: a
                                  ("test", y_test, f"tfds {name!r} {test_split!r}")],     # warning, no error
                 tr.class_names or None, max_train=f"max_train (data.max_train) or the train split {train_split!r}")
    mean, std = _resolve_stats(stats, name, x_train)
    return ImageData(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                     num_classes=tr.num_classes, class_names=tr.class_names, mean=mean, std=std,
                     x_test=x_test, y_test=y_test)


# ---- npz subsets -----------------------------------------------------------------------------
def _image_npz(path, what: str = "image file"):
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise DataNotFoundError(f"no {what} at {str(p)!r}; expected an .npz with arrays X (uint8 "
                                "[N, H, W, C]) and y (labels [N])")
    with np.load(p, allow_pickle=False) as d:
        if "X" not in d.files or "y" not in d.files:
            raise ValueError(f"{str(p)!r} has arrays {d.files} but needs 'X' (uint8 [N, H, W, C]) and 'y'")
        x, y = d["X"], d["y"]
        names = tuple(str(c) for c in d["class_names"]) if "class_names" in d.files else None
    if x.ndim != 4 or x.dtype != np.uint8:
        raise ValueError(f"{str(p)!r}: X must be uint8 [N, H, W, C], got {x.dtype} {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{str(p)!r}: y must have shape ({x.shape[0]},), got {y.shape}")
    check_label_values(y, repr(str(p)))
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise ValueError(f"{str(p)!r}: y holds NaN/inf labels ({y.dtype}); drop the unlabelled images first")
    return p, x, y.astype(np.int64), names


def _ranges(ids) -> str:
    """``[2, 3, 4, 9]`` -> ``"2..4, 9"``."""
    out, ids = [], sorted(ids)
    start = prev = ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(str(start) if start == prev else f"{start}..{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(out)


def check_label_ids(files) -> None:
    """Without ``class_names`` the class count is the largest label + 1, so every id below it must have
    an example; a stray label far above the others (57 among 0 and 1: a 58-class head) is an error
    naming it and its rows. ``files``: ``(name, labels)`` pairs."""
    present = sorted(set().union(*(np.unique(y).tolist() for _, y in files)))
    missing = sorted(set(range(present[-1] + 1)) - set(present))
    if not missing:
        return
    stray = [c for c in present if c > missing[0]]
    rows = "; ".join(f"label {c} at " + ", ".join(f"y[{i}] of {f}" for f, y in files
                                                  for i in np.flatnonzero(y == c)[:3]) for c in stray[:5])
    raise ValueError(f"the labels are {_ranges(present)} and there are no class_names, so the network would get "
                     f"{present[-1] + 1} classes of which {len(missing)} (ids {_ranges(missing)}) have no example: "
                     f"{rows}. Fix those labels, or store class_names ({present[-1] + 1} names) with the images to "
                     f"keep classes without examples")


def load_image_npz(path, *, val_fraction: float = 0.5, seed: int = 0, stats=None,
                   max_train: int | None = None, val_path=None, test_path=None) -> ImageData:
    """Load images from an npz with ``X`` uint8 [N, H, W, C] and ``y`` [N] (optional ``class_names``).

    The examples are split (seeded, stratified) into train / validation; with ``val_path`` (an npz
    of the same form) all of ``path`` trains and ``val_fraction`` is not used. ``test_path``: an npz
    of the same form loaded as ``x_test`` / ``y_test``. ``stats`` as in :func:`load_tfds_images`;
    None picks the CIFAR-10 constants when the class names are CIFAR-10's.
    """
    p, x, y, names = _image_npz(path)
    parts = {}
    for key, f in (("val_path", val_path), ("test_path", test_path)):
        if f is None:
            continue
        q, xq, yq, nq = _image_npz(f, f"{key} file")
        if xq.shape[1:] != x.shape[1:]:
            raise ValueError(f"{key} {str(q)!r} has images {xq.shape[1:]}, {str(p)!r} has {x.shape[1:]}")
        if nq is not None and names is not None and nq != names:
            raise ValueError(f"{key} {str(q)!r} has class_names {nq}, {str(p)!r} has {names}")
        names = names or nq
        parts[key] = (xq, yq)
    ys = [y] + [v[1] for v in parts.values()]
    lo, hi = min(int(v.min()) for v in ys if len(v)), max(int(v.max()) for v in ys if len(v))
    num_classes = len(names) if names is not None else hi + 1
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"labels span {lo}..{hi} but there are {num_classes} classes")
    sources = {"path": repr(str(p)), **{k: repr(str(f)) for k, f in (("val_path", val_path), ("test_path", test_path))
                                        if f is not None}}
    if names is None:
        check_label_ids(list(zip(sources.values(), ys)))
    names = names or tuple(str(i) for i in range(num_classes))
    if "val_path" in parts:
        train_idx = all_train = np.arange(len(y))
        if max_train is not None:
            train_idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:max_train])
        x_val, y_val = parts["val_path"]
    else:
        train_idx, val_idx = all_train, _ = stratified_split(y, val_fraction, seed)
        if max_train is not None:
            train_idx = train_idx[:max_train]  # already a seeded random order
        x_val, y_val = x[val_idx], y[val_idx]
    x_train, y_train = x[train_idx], y[train_idx]
    check_classes(y_train, names, f"the labels of {str(p)!r}")
    check_unseen(y_train, y[all_train], [("validation", y_val, sources.get("val_path", f"split off {sources['path']}")),
                                         ("test", parts.get("test_path", (None, None))[1], sources.get("test_path"))],
                 names)
    if stats is None and names == CIFAR10_CLASSES:
        stats = "cifar10"
    mean, std = _resolve_stats(stats, None, x_train)
    x_test, y_test = parts.get("test_path", (None, None))
    return ImageData(x_train=x_train, y_train=y_train.astype(np.int32), x_val=x_val,
                     y_val=y_val.astype(np.int32), num_classes=num_classes, class_names=names,
                     mean=mean, std=std, x_test=x_test,
                     y_test=None if y_test is None else y_test.astype(np.int32))

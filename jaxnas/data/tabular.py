"""Tabular classification data: npz / CSV loaders, a seeded stratified split, standardisation.

TabNAS (App. B.2) splits each data set at random into 80% training / 20% validation; weights are
trained on the training split and the controller is rewarded on the validation split. The paper
feeds "original values" (Connect-4: a learned 2-d embedding per categorical feature); here numeric
features are standardised with training statistics by default (``standardize=False`` keeps them as
given), which an MLP supernet without embeddings trains on more easily.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import importlib.resources
import io
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

EMBEDDED = ("connect4",)
TABULAR_FORMATS = ".npz (arrays X [N, F] and y [N]), .csv, .csv.gz, .tsv or .tsv.gz (one header row)"
_MISSING = {"", "na", "nan", "null", "none", "?"}


class DataNotFoundError(FileNotFoundError, ValueError):
    """A data file or prepared data set is missing; the message says how to provide it."""


class SplitSizes:
    """Sizes of the train/validation splits and the validation majority-class rate, for data
    classes with ``x_train``, ``x_val``, ``y_val`` and ``num_classes``."""

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.x_val.shape[0])

    @property
    def num_test(self) -> int:
        """Rows of the test split (0 without one)."""
        x = getattr(self, "x_test", None)
        return 0 if x is None else int(x.shape[0])

    @property
    def val_majority_rate(self) -> float:
        """Accuracy of always predicting the most frequent validation class (a floor to beat)."""
        counts = np.bincount(self.y_val, minlength=self.num_classes)
        return float(counts.max() / max(len(self.y_val), 1))


@dataclasses.dataclass(frozen=True, eq=False)
class TabularData(SplitSizes):
    """A train/validation(/test) split of a classification table, as numpy arrays on the host.

    Attributes:
      x_train, x_val: float32 [N, F] features (standardised with training statistics if asked).
      y_train, y_val: int32 [N] labels in ``0 .. num_classes - 1``.
      x_test, y_test: the same for a test split when one was given (``test_path``), else None. The
        search never sees it; it is reported only after retraining.
      num_classes: number of classes (``len(class_names)``).
      feature_names, class_names: tuples of strings.
      feature_mean, feature_std: the float32 [F] statistics applied (0 and 1 when not standardised);
        apply ``(x - feature_mean) / feature_std`` to new data.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def num_inputs(self) -> int:
        return int(self.x_train.shape[1])

    def __repr__(self) -> str:
        test = f", test={self.num_test}" if self.x_test is not None else ""
        return (f"TabularData(train={self.num_train}, val={self.num_val}{test}, inputs={self.num_inputs}, "
                f"classes={self.class_names})")


# ---- split and preprocessing -----------------------------------------------------------------
def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation index split keeping each class's share (round(frac * n_c) per class).

    Returns sorted-free (shuffled) disjoint index arrays that together cover ``range(len(y))``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(val_fraction * len(idx)))
        if len(idx) >= 2:  # keep at least one example of the class on each side
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    train_idx = rng.permutation(np.concatenate(train))
    val_idx = rng.permutation(np.concatenate(val))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"val_fraction={val_fraction} leaves an empty split for {len(y)} examples")
    return train_idx, val_idx


def check_classes(y_train: np.ndarray, class_names: Sequence[str], where: str = "the labels") -> None:
    """A classifier needs >= 2 classes, and the training split must hold >= 2 of them."""
    present = np.unique(np.asarray(y_train))
    if len(class_names) < 2 or len(present) < 2:
        only = class_names[int(present[0])] if len(present) and len(class_names) else "?"
        raise ValueError(f"{where} hold a single class ({only!r}) in the training split: a classifier "
                         f"needs at least 2 classes; check the label column (data.label) or the file")


def check_label_values(y: np.ndarray, where: str, row=lambda i: f"y[{i}]") -> None:
    """Float labels are class ids only when they are whole numbers (``0.0`` / ``1.0`` are accepted);
    other values (a regression target, fractions) would each become a class of one row. ``where``
    names the file (and column), ``row(i)`` the row of index ``i``; NaN is left to the caller."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.floating):
        return
    with np.errstate(invalid="ignore"):
        bad = np.isfinite(y) & (y != np.round(y))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"the labels of {where} are {y.dtype} with {int(bad.sum())} of {len(y)} values that are not "
                         f"whole numbers (first: {float(y[i])!r} at {row(i)}): a classifier needs class labels. "
                         f"Store the class ids as integers (or the class names as strings); a continuous target "
                         f"(regression) cannot be searched")


def _counts(y: np.ndarray, ids, names=None) -> str:
    """``"2 (3 rows), 7 (1 row)"``: classes (by name when given) and their rows in ``y``."""
    c = {int(k): int((y == k).sum()) for k in ids}
    return ", ".join(f"{names[k] if names is not None else k} ({n} row{'s' if n != 1 else ''})" for k, n in c.items())


def check_unseen(y_train: np.ndarray, y_all_train: np.ndarray, others, class_names=None,
                 max_train: str = "max_train (data.max_train)") -> None:
    """A class in validation or test that training never shows can never be predicted: a warning naming
    the classes, their counts and the file, and what to change (``max_train`` when a subsample of the
    training rows ``y_all_train`` left it out). Not an error: the labels of every file are encoded
    together on purpose, and the search still ranks architectures on the same validation rows.
    ``others``: ``(split, labels, source)`` triples."""
    seen, full = set(np.unique(y_train).tolist()), set(np.unique(y_all_train).tolist())
    for split, y, source in others:
        if y is None:
            continue
        unseen = sorted(set(np.unique(y).tolist()) - seen)
        if not unseen:
            continue
        fix = (f"the training rows kept by {max_train} hold none of them; keep more training rows"
               if set(unseen) <= full else f"add training rows of these classes, or drop their rows from the {split} data")
        warnings.warn(f"the {split} split ({source}) has class(es) {_counts(np.asarray(y), unseen, class_names)} that "
                      f"never occur in training, so the network can never predict them: {fix}", stacklevel=3)


def make_tabular(x: np.ndarray, y: np.ndarray, *, feature_names: Sequence[str] | None = None,
                 class_names: Sequence[str] | None = None, val_fraction: float = 0.2, seed: int = 0,
                 standardize: bool = True, max_train: int | None = None,
                 x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                 x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
                 sources: Sequence[str] | None = None) -> TabularData:
    """Split (x, y) and standardise with statistics of the (possibly subsampled) training split.

    ``y`` may hold any labels; they are mapped to ``0 .. C-1`` in sorted order unless they already
    are integers in that range and ``class_names`` has C entries. Given ``x_val, y_val`` (a
    separate validation set), ``(x, y)`` is all training data and ``val_fraction`` is not used;
    ``x_test, y_test`` become the test split (standardised with the training statistics). Labels
    of all parts are encoded together. Fewer than 2 classes raise ValueError, and so do float labels
    that are not whole numbers; a validation or test class that training never shows is warned of.
    ``sources``: what the (train, validation, test) rows came from, for messages (e.g. file names).
    """
    if (x_val is None) != (y_val is None) or (x_test is None) != (y_test is None):
        raise ValueError("give x_val with y_val and x_test with y_test")
    parts = [("", x, y)] + [(n, a, b) for n, a, b in (("validation ", x_val, y_val), ("test ", x_test, y_test))
                            if a is not None]
    xs, ys = [], []
    for what, xp, yp in parts:
        xp, yp = np.asarray(xp), np.asarray(yp)
        if xp.ndim != 2:
            raise ValueError(f"{what}features must be a 2-d array [N, F], got shape {xp.shape}")
        if xs and xp.shape[1] != xs[0].shape[1]:
            raise ValueError(f"{what}features have {xp.shape[1]} columns, the training features {xs[0].shape[1]}")
        if yp.shape != (xp.shape[0],):
            raise ValueError(f"{what}labels must have shape ({xp.shape[0]},) to match the features, got {yp.shape}")
        xp = xp.astype(np.float32)
        bad = ~np.isfinite(xp)
        if bad.any():
            cols = np.flatnonzero(bad.any(0))
            names = [feature_names[c] if feature_names is not None else str(c) for c in cols[:5]]
            raise ValueError(f"{int(bad.sum())} NaN/inf {what}feature values in {len(cols)} column(s) (first: "
                             f"{names}); impute or drop them before loading")
        xs.append(xp)
        ys.append(yp)
    sizes = np.cumsum([len(v) for v in ys])[:-1]
    codes, class_names = _encode_labels(np.concatenate(ys) if len(ys) > 1 else ys[0], class_names)
    ys = np.split(codes, sizes)
    x, y = xs[0], ys[0]
    feature_names = tuple(feature_names) if feature_names is not None else tuple(
        f"f{i}" for i in range(x.shape[1]))
    if len(feature_names) != x.shape[1]:
        raise ValueError(f"{len(feature_names)} feature names for {x.shape[1]} features")

    if x_val is None:
        train_idx, val_idx = stratified_split(y, val_fraction, seed)
        xv, yv = x[val_idx], y[val_idx]
    else:
        train_idx = np.arange(len(y))
        xv, yv = xs[1], ys[1]
        if len(yv) == 0 or len(y) == 0:
            raise ValueError(f"empty split: {len(y)} training and {len(yv)} validation rows")
    all_train = train_idx
    if max_train is not None:
        if max_train < 1:
            raise ValueError(f"max_train must be >= 1, got {max_train}")
        # Subsample with a stream independent of the split, so the validation split does not move.
        sub = np.random.default_rng([seed, 1]).permutation(len(train_idx))[:max_train]
        train_idx = train_idx[np.sort(sub)]
    x_train, y_train = x[train_idx], y[train_idx]
    check_classes(y_train, class_names)
    xt, yt = (xs[-1], ys[-1]) if x_test is not None else (None, None)
    src = list(sources or ("the training data", "the validation data", "the test data"))
    val_src = src[1] if x_val is not None else f"split off {src[0]}"
    check_unseen(y_train, y[all_train], [("validation", yv, val_src), ("test", yt, src[-1])], class_names)
    if standardize:  # training statistics only: the validation and test splits stay unseen
        mean = x_train.mean(0, dtype=np.float64).astype(np.float32)
        std = x_train.std(0, dtype=np.float64).astype(np.float32)
        std = np.where(std > 0, std, np.float32(1.0))  # constant columns: centre only
        x_train = (x_train - mean) / std
        xv = (xv - mean) / std
        xt = None if xt is None else (xt - mean) / std
    else:
        mean = np.zeros(x.shape[1], np.float32)
        std = np.ones(x.shape[1], np.float32)
    return TabularData(x_train=x_train.astype(np.float32), y_train=y_train.astype(np.int32),
                       x_val=xv.astype(np.float32), y_val=yv.astype(np.int32),
                       num_classes=len(class_names), feature_names=feature_names,
                       class_names=class_names, feature_mean=mean, feature_std=std,
                       x_test=None if xt is None else xt.astype(np.float32),
                       y_test=None if yt is None else yt.astype(np.int32))


def _encode_labels(y: np.ndarray, class_names):
    check_label_values(y, "the given arrays")
    if np.issubdtype(y.dtype, np.integer) and class_names is not None:
        if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
            raise ValueError(f"labels span {y.min()}..{y.max()} but {len(class_names)} class names given")
        return y.astype(np.int32), tuple(str(c) for c in class_names)
    values, codes = np.unique(y, return_inverse=True)
    if np.issubdtype(values.dtype, np.floating) and np.isnan(values).any():
        raise ValueError("NaN labels: drop the unlabelled rows before loading")
    if class_names is not None and len(class_names) != len(values):
        raise ValueError(f"{len(values)} distinct labels but {len(class_names)} class names given")
    names = tuple(str(c) for c in class_names) if class_names is not None else tuple(
        _fmt(v) for v in values)
    return codes.astype(np.int32), names


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


# ---- loaders ---------------------------------------------------------------------------------
def _check_file(path) -> Path:
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise DataNotFoundError(
            f"no data file at {str(p)!r}; give the path of a file in one of the formats "
            f"{TABULAR_FORMATS}, or an embedded data set name {EMBEDDED}")
    return p


def _npz_table(f, where: str):
    with np.load(f, allow_pickle=False) as d:
        missing = [k for k in ("X", "y") if k not in d.files]
        if missing:
            raise ValueError(f"{where} has arrays {d.files} but needs 'X' (features [N, F]) and 'y' "
                             f"(labels [N]); missing {missing}")
        feats = [str(s) for s in d["feature_names"]] if "feature_names" in d.files else None
        classes = [str(s) for s in d["class_names"]] if "class_names" in d.files else None
        return d["X"], d["y"], feats, classes


def _own_files(val_path, test_path) -> list:
    return [(k, f) for k, f in (("val_path", val_path), ("test_path", test_path)) if f is not None]


def load_npz(path, *, val_path=None, test_path=None, **split_kwargs) -> TabularData:
    """Load an npz with arrays ``X`` [N, F] and ``y`` [N] (optional ``feature_names``, ``class_names``).

    ``val_path`` / ``test_path``: npz files of the same form holding the validation / test rows
    (then all of ``path`` trains). ``split_kwargs`` go to :func:`make_tabular` (val_fraction, seed,
    standardize, max_train).
    """
    p = _check_file(path)
    x, y, feats, classes = _npz_table(p, repr(str(p)))
    check_label_values(y, repr(str(p)))
    extra, sources = {}, [repr(str(p))]
    for key, f in _own_files(val_path, test_path):
        q = _check_file(f)
        xq, yq, fq, cq = _npz_table(q, repr(str(q)))
        check_label_values(yq, repr(str(q)))
        sources.append(repr(str(q)))
        if fq is not None and feats is not None and list(fq) != list(feats):
            raise ValueError(f"{key} {str(q)!r} has feature_names {fq}, {str(p)!r} has {feats}")
        if cq is not None and classes is not None and list(cq) != list(classes):
            raise ValueError(f"{key} {str(q)!r} has class_names {cq}, {str(p)!r} has {classes}")
        part = "x_val" if key == "val_path" else "x_test"
        extra[part], extra["y" + part[1:]] = xq, yq
    return make_tabular(x, y, feature_names=feats, class_names=classes, **extra, **split_kwargs,
                        sources=_sources(sources, val_path, test_path))


def _sources(names: list, val_path, test_path) -> list:
    """``[train, validation, test]`` names for :func:`make_tabular`'s messages."""
    it = iter(names)
    train = next(it)
    val = next(it) if val_path is not None else None
    test = next(it) if test_path is not None else None
    return [train, val or "", test or ""]


def _read_csv(p: Path, delimiter: str | None):
    name = p.name.lower()
    if delimiter is None:
        delimiter = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
    opener = gzip.open if name.endswith(".gz") else open
    with opener(p, "rt", newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise ValueError(f"{str(p)!r} has no data rows (expected a header row, then one row per example)")
    header, body = rows[0], rows[1:]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ValueError(f"{str(p)!r}: the header repeats the column name(s) {dupes}; give every column its own "
                         f"name (a label or categorical column is chosen by name)")
    widths = {len(r) for r in body}
    if widths != {len(header)}:
        raise ValueError(f"{str(p)!r}: header has {len(header)} columns but rows have {sorted(widths)}")
    return header, body


def load_csv(path, label: str | int | None = None, *, delimiter: str | None = None, categorical: Sequence[str] = (),
             val_path=None, test_path=None, **split_kwargs) -> TabularData:
    """Load a CSV/TSV (optionally gzip'd) with one header row.

    Args:
      label: the label column, by header name or index; default the last column.
      delimiter: default ``\\t`` for ``.tsv`` files, ``,`` otherwise.
      val_path, test_path: files with the same columns holding the validation / test rows (then
        all of ``path`` trains); categorical columns and labels are encoded over all files.
      categorical: feature columns of strings, ordinal-encoded (sorted distinct values). A column of
        which every cell is a string is categorical too; a column of numbers with a stray string
        (``"10"``, ``"x"``, ``"100"``) is an error naming the column, the row and the value, since
        encoding it would order ``100`` before ``9``.
    Empty, ``NA``, ``?`` and ``nan`` cells count as missing and raise a ValueError.
    """
    p = _check_file(path)
    header, body = _read_csv(p, delimiter)
    bodies = [body]
    own = _own_files(val_path, test_path)
    for key, f in own:
        q = _check_file(f)
        hq, bq = _read_csv(q, delimiter)
        if hq != header:
            raise ValueError(f"{key} {str(q)!r} has columns {hq}; {str(p)!r} has {header} (the same "
                             f"columns, in the same order, are needed)")
        bodies.append(bq)
    if label is None:
        li = len(header) - 1
    elif isinstance(label, int):
        if not -len(header) <= label < len(header):
            raise ValueError(f"label column index {label} out of range for {len(header)} columns")
        li = label % len(header)
    else:
        if label not in header:
            raise ValueError(f"label column {label!r} not in {str(p)!r}; columns are {header}")
        li = header.index(label)
    unknown = sorted(set(categorical) - set(header))
    if unknown:
        raise ValueError(f"categorical columns {unknown} are not in {str(p)!r}; its columns are {header}")
    rows = [r for b in bodies for r in b]
    where = [(f, i + 2) for f, b in zip([p] + [f for _, f in own], bodies) for i in range(len(b))]
    cols = list(zip(*rows))
    feats = [(h, c) for i, (h, c) in enumerate(zip(header, cols)) if i != li]
    x = (np.stack([_column(h, c, h in categorical, where) for h, c in feats], axis=1) if feats
         else np.zeros((len(rows), 0)))
    y_raw = cols[li]
    if any(v.strip().lower() in _MISSING for v in y_raw):
        raise ValueError(f"label column {header[li]!r} has missing values; drop those rows first")
    y = _maybe_numeric(y_raw)
    cuts = np.cumsum([len(b) for b in bodies])[:-1]
    xs, ys = np.split(x, cuts), np.split(y, cuts)
    files = [repr(str(f)) for f in [p] + [f for _, f in own]]
    for f, yf in zip(files, ys):
        check_label_values(yf, f"column {header[li]!r} of {f}", lambda i: f"row {i + 2}")
    extra = {}
    for i, (key, _) in enumerate(own, start=1):
        part = "x_val" if key == "val_path" else "x_test"
        extra[part], extra["y" + part[1:]] = xs[i], ys[i]
    return make_tabular(xs[0], ys[0], feature_names=[h for h, _ in feats], **extra, **split_kwargs,
                        sources=_sources(files, val_path, test_path))


def _maybe_numeric(values: Sequence[str]) -> np.ndarray:
    try:
        return np.array([float(v) for v in values], np.float64)
    except ValueError:
        return np.array([v.strip() for v in values])


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _column(name: str, values: Sequence[str], categorical: bool = False, where=None) -> np.ndarray:
    missing = np.array([v.strip().lower() in _MISSING for v in values])
    present = [v for v, m in zip(values, missing) if not m]
    numeric = [_is_number(v) for v in present]
    out = np.full(len(values), np.nan, np.float64)
    if all(numeric) and not categorical:
        out[~missing] = [float(v) for v in present]
        return out
    if not categorical and sum(numeric) > len(present) // 2:   # strings among numbers: a typo, not a category
        i = next(j for j, v in enumerate(values) if not missing[j] and not _is_number(v))
        f, row = where[i] if where is not None else ("the file", i + 2)
        raise ValueError(f"column {name!r} is numeric but row {row} of {str(f)!r} holds {values[i]!r}: "
                         f"fix that cell, or declare the column categorical (data.categorical=[{name!r}])")
    # categorical strings -> ordinal codes of the sorted distinct values
    out[~missing] = np.unique(np.asarray([v.strip() for v in present]), return_inverse=True)[1]
    return out


def load_embedded(name: str = "connect4", **split_kwargs) -> TabularData:
    """A data set shipped inside the package (works offline, from an installed wheel)."""
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded data set {name!r}; embedded: {EMBEDDED}")
    res = importlib.resources.files("jaxnas.data") / "embedded" / f"{name}.npz"
    with res.open("rb") as f:
        x, y, feats, classes = _npz_table(io.BytesIO(f.read()), f"embedded {name}.npz")
    return make_tabular(x, y, feature_names=feats, class_names=classes, **split_kwargs)


def load_tabular(path_or_name, *, label: str | int | None = None, categorical: Sequence[str] = (),
                 **split_kwargs) -> TabularData:
    """Load a table by embedded name (``"connect4"``) or path (.npz, .csv[.gz], .tsv[.gz]).

    ``split_kwargs``: ``val_fraction`` (0.2, as TabNAS), ``seed`` (0, the split seed),
    ``standardize`` (True), ``max_train`` (None), ``val_path`` / ``test_path`` (None: own
    validation / test files in the format of ``path``; with ``val_path`` all of ``path`` trains
    and ``val_fraction`` is not used; the test split becomes ``x_test`` / ``y_test``).
    """
    own = _own_files(split_kwargs.get("val_path"), split_kwargs.get("test_path"))
    if str(path_or_name) in EMBEDDED and not Path(str(path_or_name)).exists():
        if label is not None or categorical:
            raise ValueError(f"label= and categorical= apply to CSV files; embedded {path_or_name!r} has "
                             f"its own columns")
        if own:
            raise ValueError(f"{', '.join(k for k, _ in own)} need a data file (data.name='tabular', "
                             f"data.path); embedded {path_or_name!r} is split with val_fraction")
        split_kwargs = {k: v for k, v in split_kwargs.items() if k not in ("val_path", "test_path")}
        return load_embedded(str(path_or_name), **split_kwargs)
    p = _check_file(path_or_name)
    kind = _format(p)
    for key, f in own:
        if _format(Path(str(f))) != kind:
            raise ValueError(f"{key} {str(f)!r} must have the format of {str(p)!r} ({kind})")
    if kind == "npz":
        if label is not None or categorical:
            raise ValueError("label= and categorical= apply to CSV files; an npz keeps numeric arrays X, y")
        return load_npz(p, **split_kwargs)
    return load_csv(p, label=label, categorical=categorical, **split_kwargs)


def _format(p: Path) -> str:
    name = p.name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        return "csv"
    raise ValueError(f"cannot tell the format of {str(p)!r}; accepted: {TABULAR_FORMATS}")

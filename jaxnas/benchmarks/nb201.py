"""NAS-Bench-201 lookup: the benchmark accuracy of a searched cell from a table the user supplies.

NAS-Bench-201 (Dong & Yang, ICLR 2020) trained every one of the 5^6 = 15,625 cells of its space; the
AdvantageNAS paper (sec. 5.2) evaluates a search by looking its derived cell up there instead of
retraining it. jaxnas ships no table: :meth:`NasBench201Table.load` reads a CSV (optionally gzip'd)
with one row per architecture and the columns

    index, arch, <metric>, <metric>, ...

``arch`` is the benchmark's cell string (``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|``),
``index`` the benchmark index, every other column a float (e.g. ``cifar10_test`` in %, 200 epochs).
Such a table can be written with the NATS-Bench API (github.com/D-X-Y/NATS-Bench, topology search
space ``tss``): for i in range(15625), ``api.arch(i)`` and ``api.get_more_info(i, 'cifar10', hp='200',
is_random=False)['test-accuracy']``.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
import os
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

NB201_TABLE_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_EDGES = 6
DEFAULT_COLUMN = "cifar10_test"
_ENTRY = re.compile(r"([A-Za-z0-9_]+)~(\d+)")

HOW_TO_GET = ("A table is a CSV (or .csv.gz) with columns index, arch, <metric>, ... and one row per "
              "architecture (15,625 for the full space); write one with the NATS-Bench API "
              "(https://github.com/D-X-Y/NATS-Bench, search space 'tss': api.arch(i) and "
              "api.get_more_info(i, 'cifar10', hp='200', is_random=False)['test-accuracy'] for "
              "i in range(15625)).")


class TableNotFoundError(FileNotFoundError, ValueError):
    """The benchmark table file is missing; the message says how to make one."""


class ArchNotInTableError(LookupError, ValueError):
    """A valid cell that the table has no row for (a partial table)."""


def _cell_key(arch: str) -> tuple[str, ...]:
    """Cell string -> the 6 op names in edge order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).

    Checks the structure (3 nodes with 1, 2, 3 inputs ``op~i``), so formatting differences such as
    spaces do not matter and a malformed string gives a clear error."""
    if not isinstance(arch, str):
        raise TypeError(f"expected a cell string, got {type(arch).__name__}")
    if ";" in arch:
        raise ValueError(f"{arch!r} has several cell blocks (a unique-cell or DARTS architecture); the "
                         "NAS-Bench-201 table covers one cell repeated in all 15 positions")
    nodes = arch.strip().split("+")
    ops = []
    if len(nodes) == 3:
        for j, node in enumerate(nodes, start=1):
            items = [s.strip() for s in node.strip().strip("|").split("|") if s.strip()]
            if len(items) != j:
                break
            for i, item in enumerate(items):
                m = _ENTRY.fullmatch(item)
                if not m or int(m.group(2)) != i:
                    break
                ops.append(m.group(1))
    if len(ops) != NUM_EDGES:
        raise ValueError(f"{arch!r} is not a NAS-Bench-201 cell string (format "
                         "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|')")
    return tuple(ops)


@dataclasses.dataclass(frozen=True, eq=False)
class NasBench201Table:
    """All rows of a NAS-Bench-201 table in memory: ``archs[r]`` (cell strings), ``index[r]``
    (benchmark indices) and ``columns[name][r]`` (float metrics), ``r`` the row."""
    archs: tuple[str, ...]
    index: np.ndarray
    columns: dict[str, np.ndarray]
    path: Optional[str] = None
    _rows: dict = dataclasses.field(default_factory=dict, repr=False)

    # ---- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path) -> "NasBench201Table":
        """Reads a CSV or gzip'd CSV (``.gz``) with columns ``index, arch, <metric>...``."""
        p = Path(os.path.expanduser(str(path)))
        if not p.is_file():
            raise TableNotFoundError(f"no NAS-Bench-201 table at {str(p)!r}. {HOW_TO_GET}")
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file name says
            raw = gzip.decompress(raw)
        reader = csv.reader(io.StringIO(raw.decode("utf-8")))
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{str(p)!r} is empty. {HOW_TO_GET}") from None
        if "arch" not in header or "index" not in header:
            raise ValueError(f"{str(p)!r} has columns {header}; a table needs 'index' and 'arch'. "
                             f"{HOW_TO_GET}")
        rows = [r for r in reader if r]
        return cls.from_rows(header, rows, path=str(p))

    @classmethod
    def from_rows(cls, header, rows, path: Optional[str] = None) -> "NasBench201Table":
        """Builds a table from a header and string rows (what :meth:`load` parses)."""
        header = list(header)
        a, i = header.index("arch"), header.index("index")
        metric = [c for c in header if c not in ("arch", "index")]
        where = f" in {path!r}" if path else ""
        for n, r in enumerate(rows):
            if len(r) != len(header):
                raise ValueError(f"row {n + 1}{where} has {len(r)} fields, the header {len(header)}")
        archs = tuple(r[a].strip() for r in rows)
        index = np.array([int(r[i]) for r in rows], np.int64)
        columns = {}
        for c in metric:
            k = header.index(c)
            try:
                columns[c] = np.array([float(r[k]) if r[k].strip() else math.nan for r in rows], np.float64)
            except ValueError as e:
                raise ValueError(f"column {c!r}{where} must hold numbers: {e}") from None
        lookup = {}
        for r, s in enumerate(archs):
            key = _cell_key(s)
            if key in lookup:
                raise ValueError(f"{s!r} appears twice{where} (rows {lookup[key] + 1} and {r + 1})")
            lookup[key] = r
        return cls(archs=archs, index=index, columns=columns, path=path, _rows=lookup)

    # ---- queries -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.archs)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def row_of(self, arch, space=None) -> int:
        """Row of ``arch``: a cell string, or ``int[6]`` op indices of ``space`` (a
        :class:`~jaxnas.spaces.cells.NasBench201Space`; its op order, with or without 'none')."""
        if not isinstance(arch, str):
            arch = self._encode(arch, space)
        key = _cell_key(arch)
        bad = [op for op in key if op not in NB201_TABLE_OPS]
        if bad:
            raise ValueError(f"{arch!r} uses ops {bad} that NAS-Bench-201 does not have; its ops are "
                             f"{', '.join(NB201_TABLE_OPS)}")
        if key not in self._rows:
            raise ArchNotInTableError(f"{arch!r} is not in the table{f' {self.path!r}' if self.path else ''} "
                           f"({len(self)} rows); the full NAS-Bench-201 space has 15,625")
        return self._rows[key]

    @staticmethod
    def _encode(arch, space) -> str:
        if space is None:
            raise ValueError("looking an architecture up by op indices needs space= (the "
                             "NasBench201Space whose op order the indices use); or pass the cell string")
        if getattr(space, "op_set", None) != "nb201" or getattr(space, "num_blocks", 1) != 1:
            raise ValueError(f"space {type(space).__name__} is not a NAS-Bench-201 cell space with one "
                             "shared cell (NasBench201Space.create(unique_cells=False))")
        return space.encode(np.asarray(arch))

    def lookup(self, arch, space=None) -> dict[str, Any]:
        """The row of ``arch`` (string, or op indices with ``space``): ``{'index': int, 'arch':
        str, <column>: float, ...}``."""
        r = self.row_of(arch, space)
        out: dict[str, Any] = {"index": int(self.index[r]), "arch": self.archs[r]}
        out.update({c: float(v[r]) for c, v in self.columns.items()})
        return out

    def _column(self, column: str) -> np.ndarray:
        if column not in self.columns:
            raise ValueError(f"no column {column!r}; the table has {', '.join(self.columns)}")
        return self.columns[column]

    def values_for(self, space, column: str) -> np.ndarray:
        """The ``column`` of every architecture of ``space`` in id order (``space.all_archs()``)."""
        rows = np.array([self.row_of(space.encode(a)) for a in space.all_archs()])
        return self._column(column)[rows].astype(np.float32)

    def best(self, column: str = DEFAULT_COLUMN) -> dict[str, Any]:
        """The row with the highest ``column`` (first such row on ties; NaN never wins)."""
        v = self._column(column)
        if np.all(np.isnan(v)):
            raise ValueError(f"column {column!r} holds no numbers")
        return self.lookup(self.archs[int(np.nanargmax(v))])

    def rank(self, arch, column: str = DEFAULT_COLUMN, space=None) -> int:
        """1 + the number of architectures with a strictly higher ``column`` (1 = the best)."""
        v = self._column(column)
        x = v[self.row_of(arch, space)]
        return int(np.sum(v > x)) + 1

    def percentile(self, arch, column: str = DEFAULT_COLUMN, space=None) -> float:
        """Percentage of the table's architectures whose ``column`` is at most this one's
        (100 = the best; NaN rows count as below)."""
        v = self._column(column)
        x = v[self.row_of(arch, space)]
        return float(100.0 * np.sum(v <= x) / len(v))


# The network a table search's cell belongs to: the benchmark's CIFAR-10 network (its default column).
BENCHMARK_DATA = "cifar10"


def network_input():
    """The input and classes of the benchmark's CIFAR-10 network, without loading the data: what an
    export of a table search (which has no data of its own) describes."""
    from types import SimpleNamespace

    from jaxnas.data.images import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
    return SimpleNamespace(x_train=np.zeros((0, 32, 32, 3), np.uint8), y_train=np.zeros((0,), np.int32),
                           num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD, class_names=CIFAR10_CLASSES)


def annotate(result: dict, table_path, columns=None, rank_column: str = DEFAULT_COLUMN) -> dict:
    """A copy of a search ``result`` (``jaxnas.runner.run_search``) with ``result['nb201']``: the
    benchmark row of ``result['arch']`` (``index`` and ``columns``, default all) and the rank /
    percentile of its ``rank_column`` among all architectures of the table."""
    if "arch" not in result:
        raise ValueError("the result has no 'arch' (an unfinished search?); run the search to the end "
                         "before looking its architecture up")
    table = table_path if isinstance(table_path, NasBench201Table) else NasBench201Table.load(table_path)
    row = table.lookup(result["arch"])
    keep = table.column_names if columns is None else tuple(columns)
    info = {"index": row["index"], "table": table.path}
    for c in keep:
        table._column(c)
        info[c] = row[c]
    if rank_column in table.columns:
        info[f"{rank_column}_rank"] = table.rank(result["arch"], rank_column)
        info[f"{rank_column}_percentile"] = table.percentile(result["arch"], rank_column)
        info[f"{rank_column}_best"] = float(np.nanmax(table.columns[rank_column]))
    out = dict(result)
    out["nb201"] = info
    return out

"""NAS-Bench-201 table lookup (jaxnas/benchmarks/nb201.py) on the real table in ../shared/data.

Independent checks: the best rows and their values are those SOURCE.md records; every row's string
decodes to indices of NasBench201Space and back (round trip over all 15,625 cells); the table's
parameter counts (computed by a separate formula in SOURCE.md) equal the space's own cost model;
rank / percentile equal a direct sort.
"""
import gzip
from pathlib import Path

import chex
import numpy as np
import pytest

from jaxnas.benchmarks import ArchNotInTableError, NasBench201Table, TableNotFoundError, annotate
from jaxnas.spaces.cells import NasBench201Space

TABLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"
BEST_C10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
# row 1 of the table (SOURCE.md: 0.802426 M parameters)
ROW1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"

needs_table = pytest.mark.skipif(not TABLE.is_file(), reason=f"NAS-Bench-201 table not found at {TABLE} "
                                                             "(the shared data folder is absent)")


@pytest.fixture(scope="module")
def table():
    return NasBench201Table.load(TABLE)


@pytest.fixture(scope="module")
def space():
    return NasBench201Space.create()


@needs_table
def test_table_contents(table):
    assert len(table) == 15_625 and len(set(table.archs)) == 15_625
    chex.assert_trees_all_equal(table.index, np.arange(15_625))
    best = table.best("cifar10_test")
    assert best["arch"] == BEST_C10 and best["cifar10_test"] == pytest.approx(94.3733, abs=1e-9)
    assert table.best("cifar100_test")["cifar100_test"] == pytest.approx(73.5133, abs=1e-9)
    assert table.best("imagenet16_test")["imagenet16_test"] == pytest.approx(47.3111, abs=1e-9)
    assert table.lookup(ROW1)["index"] == 1
    assert table.lookup(ROW1)["params_cifar10_M"] == pytest.approx(0.802426, abs=1e-9)
    # min/max parameter counts quoted in SOURCE.md
    assert table.columns["params_cifar10_M"].min() == pytest.approx(0.073306, abs=1e-9)
    assert table.columns["params_cifar10_M"].max() == pytest.approx(1.531546, abs=1e-9)


@needs_table
def test_round_trip_with_space_over_all_rows(table, space):
    """Every row: string -> space indices -> string, and lookup by indices == lookup by string."""
    idx = np.stack([space.decode(a) for a in table.archs])
    assert [space.encode(i) for i in idx] == list(table.archs)
    # every architecture of the space is in the table exactly once
    ids = np.asarray([space.arch_to_id(i) for i in idx])
    chex.assert_trees_all_equal(np.sort(ids), np.arange(space.num_archs))
    rng = np.random.default_rng(0)
    for r in rng.choice(len(table), 50, replace=False):
        by_idx, by_str = table.lookup(idx[r], space=space), table.lookup(table.archs[r])
        assert by_idx == by_str and by_idx["index"] == table.index[r]
    # the benchmark's parameter counts (formula of SOURCE.md) equal the space's cost model
    for ncls, col in ((10, "params_cifar10_M"), (100, "params_cifar100_M"), (120, "params_imagenet16_M")):
        pc = np.asarray(NasBench201Space.create(num_classes=ncls).param_count(idx), np.float64)
        np.testing.assert_allclose(pc, table.columns[col] * 1e6, atol=0.5)


@needs_table
def test_lookup_in_space_without_zero_op(table):
    """The paper's search space has no 'none' op: other indices, same strings, same rows."""
    ops = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    sp = NasBench201Space.create(ops=ops)
    assert sp.shape == (6, 4) and sp.num_archs == 4 ** 6
    arch = np.array([ops.index(o) for o in ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3",
                                            "skip_connect", "nor_conv_3x3", "nor_conv_1x1")], np.int32)
    assert table.lookup(arch, space=sp)["arch"] == BEST_C10
    assert table.rank(arch, "cifar10_test", space=sp) == 1
    # the best cell of the zero-free space equals the best row among zero-free strings
    free = np.array(["none" not in a for a in table.archs])
    assert free.sum() == 4 ** 6
    v = table.columns["cifar10_test"]
    assert table.archs[int(np.argmax(np.where(free, v, -np.inf)))] == BEST_C10


@needs_table
def test_rank_and_percentile_match_sort(table):
    v = table.columns["cifar10_test"]
    order = np.argsort(-v, kind="stable")
    rng = np.random.default_rng(1)
    for r in rng.choice(len(table), 20, replace=False):
        a = table.archs[r]
        # rank = 1 + position of the first row with this value in the descending order
        first = int(np.flatnonzero(v[order] == v[r])[0])
        assert table.rank(a, "cifar10_test") == first + 1
        worse_or_equal = sum(1 for x in v if x <= v[r])
        assert table.percentile(a, "cifar10_test") == pytest.approx(100.0 * worse_or_equal / len(v))
    assert table.rank(BEST_C10) == 1 and table.percentile(BEST_C10) == 100.0


@needs_table
def test_annotate(table, space):
    arch = space.decode(ROW1)
    result = {"finished": True, "arch": space.encode(arch), "arch_indices": arch.tolist()}
    out = annotate(result, TABLE, columns=["cifar10_test", "cifar100_test"])
    assert "nb201" not in result  # the input is not modified
    info = out["nb201"]
    assert info["index"] == 1 and info["cifar10_test"] == table.lookup(ROW1)["cifar10_test"]
    assert set(info) >= {"cifar100_test", "cifar10_test_rank", "cifar10_test_percentile"}
    assert "imagenet16_test" not in info
    assert info["cifar10_test_rank"] == table.rank(ROW1) and info["cifar10_test_best"] == 94.3733
    # a loaded table is accepted too, and all columns are the default
    assert set(annotate(result, table)["nb201"]) >= set(table.column_names)
    with pytest.raises(ValueError, match="unfinished"):
        annotate({"finished": False, "step": 3}, table)


def test_errors(tmp_path):
    with pytest.raises(TableNotFoundError, match="NATS-Bench"):
        NasBench201Table.load(tmp_path / "missing.csv.gz")
    # a partial, uncompressed table of two rows
    rows = "index,arch,cifar10_test\n0,%s,93.5\n1,%s,90.0\n" % (BEST_C10, ROW1)
    (tmp_path / "t.csv").write_text(rows)
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        f.write(rows)
    for name in ("t.csv", "t.csv.gz"):
        t = NasBench201Table.load(tmp_path / name)
        assert len(t) == 2 and t.best()["arch"] == BEST_C10 and t.lookup(ROW1)["cifar10_test"] == 90.0
        assert t.rank(ROW1) == 2 and t.percentile(ROW1) == 50.0
    absent = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(ArchNotInTableError, match="not in the table"):
        t.lookup(absent)
    with pytest.raises(ValueError, match="not a NAS-Bench-201 cell string"):
        t.lookup("|nor_conv_3x3~0|+|nor_conv_3x3~1|")
    with pytest.raises(ValueError, match="does not have"):
        t.lookup(BEST_C10.replace("nor_conv_1x1", "sep_conv_3x3"))
    with pytest.raises(ValueError, match="space="):
        t.lookup(np.zeros(6, np.int32))
    with pytest.raises(ValueError, match="no column"):
        t.best("cifar10_valid")
    (tmp_path / "bad.csv").write_text("arch,acc\nx,1\n")
    with pytest.raises(ValueError, match="'index' and 'arch'"):
        NasBench201Table.load(tmp_path / "bad.csv")
    # spaces whose strings the table cannot hold
    with pytest.raises(ValueError, match="one shared cell"):
        t.lookup(np.zeros(6 * 15, np.int32), space=NasBench201Space.create(unique_cells=True))
    # the string and its spaced-out variant are the same cell
    assert t.lookup(BEST_C10.replace("|", " | "))["arch"] == BEST_C10

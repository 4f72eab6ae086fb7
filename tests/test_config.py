"""Typed, validated configs (jaxnas.core.schema, jaxnas.config.settings.resolve), strategy option checks, config
files that do not run, single-class labels, and own splits (data.val_path / test_path / test_split /
split_seed). Fast: nothing here compiles a search."""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import numpy as np
import pytest

from jaxnas import data as D
from jaxnas.config.experiment import SPACES, load_data
from jaxnas.config.settings import DEFAULTS, SCHEMA, load_config, raw_config, resolve
from jaxnas.core import schema as S
from tests.helpers.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


def _problems(overrides, config=None) -> str:
    with pytest.raises(ValueError) as e:
        resolve(config or tiny_config(), overrides)
    return str(e.value)


# ---- every bad value stops resolve() with the field, what it must be and the value ----------------
BAD = [
    ("seed='abc'", "seed must be an int >= 0, got 'abc'"),
    ("seed=1.5", "seed must be an int >= 0, got 1.5"),
    ("search.steps='abc'", "search.steps must be an int in [1, 2147483647], got 'abc'"),
    ("search.steps=100.5", "search.steps must be an int in [1, 2147483647], got 100.5"),
    ("search.steps=0", "search.steps must be an int in [1, 2147483647], got 0"),
    ("search.chunk=2.5", "search.chunk must be an int >= 1"),
    ("search.checkpoint_every='often'", "search.checkpoint_every must be an int >= 1"),
    ("search.batch_size=0", "search.batch_size must be an int >= 1"),
    ("search.val_batch_size=-3", "search.val_batch_size must be None or an int >= 1"),
    ("search.eval_batch_size=True", "search.eval_batch_size must be an int >= 1, got True"),
    ("search.warmup_steps=-1", "search.warmup_steps must be an int >= 0"),
    ("search.devices='many'", "search.devices must be an int >= 1 or one of 'all', got 'many'"),
    ("search.devices=0", "search.devices must be an int >= 1 or one of 'all', got 0"),
    ("search.samples=0", "search.samples must be None or an int >= 1"),
    ("search.reward='loss'", "search.reward must be one of 'neg_loss', 'accuracy'"),
    ("search.phases=[['weights', 5], ['bogus', 5]]", "search.phases must be None or a non-empty list"),
    ("optimizer.name='adamw'", "optimizer.name must be one of 'adam', 'sgd'"),
    ("optimizer.lr=0", "optimizer.lr must be a float > 0, got 0"),
    ("optimizer.lr='fast'", "optimizer.lr must be a float > 0"),
    ("optimizer.b1=1.0", "optimizer.b1 must be a float in [0, 1), got 1.0"),
    ("optimizer.b2=-0.1", "optimizer.b2 must be a float in [0, 1)"),
    ("optimizer.eps=0.0", "optimizer.eps must be a float > 0"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay must be a float >= 0"),
    ("optimizer.clip=0", "optimizer.clip must be None or a float > 0"),
    ("optimizer.schedule='step'", "optimizer.schedule must be one of 'constant', 'cosine'"),
    ("optimizer.nesterov=1", "optimizer.nesterov must be True or False"),
    ("data.val_fraction=1.0", "data.val_fraction must be a float in (0, 1), got 1.0"),
    ("data.val_fraction=0", "data.val_fraction must be a float in (0, 1)"),
    ("data.max_train=0", "data.max_train must be None or an int >= 1"),
    ("data.max_train=10.5", "data.max_train must be None or an int >= 1"),
    ("data.split_seed=-1", "data.split_seed must be None or an int >= 0"),
    ("data.standardize='yes'", "data.standardize must be True or False"),
    ("space.widths=[]", "space.widths must be None or a non-empty, strictly increasing list of ints >= 1"),
    ("space.widths=[16,8]", "space.widths must be None or a non-empty, strictly increasing"),
    ("space.widths=[4,0]", "space.widths must be None"),
    ("space.num_layers=0", "space.num_layers must be an int >= 1"),
    ("strategy.lr=-1", "strategy.lr must be a float > 0, got -1"),
    ("strategy.decay=1.0", "strategy.decay must be a float in [0, 1)"),
    ("strategy.clip=-1", "strategy.clip must be None or a float > 0"),
    ("strategy.lr_schedule='linear'", "strategy.lr_schedule must be one of 'constant', 'cosine'"),
    ("strategy.baseline='no'", "strategy.baseline must be True or False"),
]


@pytest.mark.parametrize("override,needle", BAD, ids=[b[0] for b in BAD])
def test_each_bad_value_names_its_field(override, needle):
    msg = _problems([override])
    assert needle in msg, msg
    assert msg.startswith("1 problem in the config:"), msg


@pytest.mark.parametrize("section,overrides,needle", [
    ("nb201", ["space.C=0"], "space.C must be an int >= 1, got 0"),
    ("nb201", ["space.cells_per_stage=1.5"], "space.cells_per_stage must be an int >= 1"),
    ("nb201", ["space.ops=['none', 'conv_7x7']"], "space.ops must be None or a non-empty list of names among "
                                                  "'none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3'"),
    ("nb201", ["space.ops=[]"], "space.ops must be None or a non-empty list"),
    ("nb201", ["space.unique_cells='yes'"], "space.unique_cells must be True or False"),
    ("darts", ["space.num_cells=2"], "space.num_cells must be an int >= 3, got 2"),
    ("darts", ["space.ops=['sep_conv_3x3', 'sep_conv_3x3']"], "no repeats"),
    ("darts", ["space.ops=['nor_conv_3x3']"], "names among 'none', 'max_pool_3x3'"),
])
def test_space_keys_are_checked_per_space(section, overrides, needle):
    msg = _problems([f"space.name='{section}'", *overrides])
    assert needle in msg, msg


@pytest.mark.parametrize("overrides,needle", [
    (["evaluator.vmap_chunk=0"], "evaluator.vmap_chunk must be an int >= 1"),
    (["evaluator.name='standalone'", "evaluator.epochs=0"], "evaluator.epochs must be an int >= 1"),
    (["evaluator.name='standalone'", "evaluator.lr=-1e-3"], "evaluator.lr must be a float > 0"),
    (["evaluator.name='standalone'", "evaluator.max_steps=2.5"], "evaluator.max_steps must be None or an int >= 1"),
    (["evaluator.name='standalone'", "evaluator.lane_mode='pmap'"], "evaluator.lane_mode must be one of"),
    (["evaluator.name='table'", "evaluator.scale='big'"], "evaluator.scale must be a float > 0"),
    (["evaluator.name='table'", "evaluator.report='cifar10_test'"], "evaluator.report must be a list of"),
])
def test_evaluator_keys_are_checked_per_evaluator(overrides, needle):
    msg = _problems(overrides)
    assert needle in msg, msg


@pytest.mark.parametrize("strategy,overrides,needle", [
    ("tabnas", ["strategy.num_mc_samples=100.7"], "strategy.num_mc_samples must be an int >= 1, got 100.7"),
    ("tabnas", ["strategy.budget=-5"], "strategy.budget must be None or a float > 0"),
    ("tabnas", ["strategy.warmup_frac=1.0"], "strategy.warmup_frac must be a float in [0, 1)"),
    ("tabnas", ["strategy.pv='approx'"], "strategy.pv must be one of 'mc', 'exact'"),
    ("advantage", ["strategy.estimator='fd'"], "strategy.estimator must be one of 'taylor', 'exact'"),
    ("parsec", ["strategy.num_samples=0"], "strategy.num_samples must be an int >= 1"),
    ("parsec", ["strategy.temperature=0"], "strategy.temperature must be a float > 0"),
    ("random", ["strategy.buffer_size=2.5"], "strategy.buffer_size must be an int >= 1"),
    ("gdas", ["strategy.tau_min=0"], "strategy.tau_min must be a float > 0"),
    ("nasp", ["strategy.init_value=2"], "strategy.init_value must be a float in [0, 1]"),
    ("darts2", ["strategy.unroll='approx'"], "strategy.unroll must be one of 'exact', 'finite_difference'"),
    ("reinforce", ["strategy.lrr=0.1"], "strategy.lrr: not option(s) of strategy 'reinforce'; its options are"),
])
def test_strategy_options_are_checked_at_resolve(strategy, overrides, needle):
    cfg = tiny_config()
    cfg["strategy"] = {"name": strategy}
    msg = _problems(overrides, cfg)
    assert needle in msg, msg


def test_several_bad_fields_give_one_message_listing_all():
    bad = ["seed='abc'", "search.steps=100.5", "search.devices='many'", "space.widths=[]",
           "strategy.lr=-1", "optimizer.b1=2", "data.val_fraction=0", "search.stepz=3"]
    msg = _problems(bad)
    assert msg.startswith("8 problems in the config (fix all of them):"), msg
    for key in ("seed must", "search.steps must", "search.devices must", "space.widths must",
                "strategy.lr must", "optimizer.b1 must", "data.val_fraction must", "unknown config key 'search.stepz'"):
        assert key in msg, (key, msg)
    assert len(msg.splitlines()) == 9


def test_cross_field_checks_join_the_same_message():
    msg = _problems(["search.checkpoint_every=15", "search.phases=[['weights', 5], ['both', 5]]",
                     "search.warmup_steps=3", "seed=-1"])
    assert msg.startswith("3 problems") and "multiple of search.chunk" in msg and "seed must" in msg
    assert "give one, not both" in msg


def test_values_are_converted_to_their_types():
    cfg = resolve(tiny_config(), ["search.steps=1e3", "optimizer.lr=1", "space.widths=(4, 8)",
                                  "search.devices='all'", "data.path=None"])
    assert cfg["search"]["steps"] == 1000 and isinstance(cfg["search"]["steps"], int)
    assert cfg["optimizer"]["lr"] == 1.0 and isinstance(cfg["optimizer"]["lr"], float)
    assert cfg["space"]["widths"] == [4, 8] and cfg["search"]["devices"] == "all"
    np_cfg = tiny_config()
    np_cfg["search"]["batch_size"] = np.int64(16)
    np_cfg["data"]["path"] = Path("x.csv")
    out = resolve(np_cfg)
    assert type(out["search"]["batch_size"]) is int and out["data"]["path"] == "x.csv"
    assert resolve(out) == out           # resolving a resolved config changes nothing


def test_every_field_is_typed_and_every_default_passes():
    """No key without a (type, range): config sections, each registered space and evaluator, and
    every option of every strategy (by name in OPTION_FIELDS); the defaults pass their own checks."""
    from jaxnas.evaluators.base import EVALUATORS
    from jaxnas.evaluators.base import available as evaluators
    from jaxnas.strategies import base as SB

    def walk(schema, prefix=""):
        for k, f in schema.items():
            if isinstance(f, dict):
                yield from walk(f, f"{prefix}{k}.")
            else:
                yield prefix + k, f
    for key, f in walk(SCHEMA):
        assert not isinstance(f, S.Anything), key
    assert S.check(SCHEMA, DEFAULTS)[1] == []
    for reg, names in ((SPACES, SPACES.names()), (EVALUATORS, evaluators())):
        for n in names:
            fn = reg.get(n)
            assert set(fn.schema) == set(fn.defaults), n
            assert not any(isinstance(f, S.Anything) for f in fn.schema.values()), n
            assert S.check(fn.schema, fn.defaults)[1] == [], n
    for n in SB.available():
        params = inspect.signature(SB._REGISTRY[n]).parameters
        for opt in SB.options(n):
            assert opt in SB.OPTION_FIELDS, (n, opt)
            default = params[opt].default
            if default is not inspect.Parameter.empty and not isinstance(SB.OPTION_FIELDS[opt], S.Object):
                assert SB.check_options(n, {opt: default}) == [], (n, opt, default)


def test_literal_names_in_config_agree_with_the_engine():
    from jaxnas.config import settings as config
    from jaxnas.core import optim
    from jaxnas.engine import search
    from jaxnas.tasks import classification as tasks
    assert config.PHASE_KINDS == search.PHASE_KINDS
    assert config.OPTIMIZERS == optim.NAMES and config.SCHEDULES == optim.SCHEDULES
    assert config.TASK_REWARDS == tasks.REWARDS


def test_shipped_search_configs_resolve():
    n = 0
    for p in sorted((REPO / "configs").glob("[!_]*.py")):
        raw = raw_config(p)
        if "strategy" not in raw:          # not a search config (tabnas_toy's table, retrain settings)
            continue
        load_config(p)
        n += 1
    assert n >= 8


# ---- strategies check their options when built (also through the Python API) ---------------------
def test_strategies_check_types_ranges_and_op_names():
    from jaxnas.spaces.cells import NasBench201Space
    from jaxnas.strategies import make
    space = NasBench201Space.create(C=4, cells_per_stage=1)
    with pytest.raises(ValueError, match=r"lr must be a float > 0, got -1"):
        make("reinforce", space, lr=-1)
    with pytest.raises(ValueError, match=r"num_mc_samples must be an int >= 1, got 100.7"):
        make("tabnas", space, budget=1e9, num_mc_samples=100.7)
    with pytest.raises(ValueError) as e:
        make("advantage", space, zero_op="nonexistent")
    assert "zero_op='nonexistent'" in str(e.value) and "'nor_conv_3x3'" in str(e.value)
    assert "None (App. B off)" in str(e.value)
    with pytest.raises(ValueError) as e:          # all bad options in one message
        make("advantage", space, lr=0, decay=2, estimator="x")
    assert str(e.value).startswith("3 problems in the options of strategy 'advantage'")
    make("advantage", space, zero_op="none")      # the zero op exists: fine
    make("advantage", space, zero_op=None)
    make("tabnas", space, budget=1e9, num_mc_samples=100.0, warmup_frac=0)   # an int-valued float is an int


# ---- config files that do not run ------------------------------------------------------------------
def test_config_file_syntax_error_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "broken.py"
    bad.write_text("def get_config():\n    return {\n        'seed': 0,\n        'search': {'steps': 5\n    }\n")
    with pytest.raises(ValueError) as e:
        raw_config(bad)
    assert f"{bad}:" in str(e.value) and "SyntaxError" in str(e.value)
    from jaxnas.cli import main
    assert main(["search", str(bad), "--workdir", str(tmp_path / "wd")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "Traceback" not in err and not (tmp_path / "wd").exists()
    raising = tmp_path / "raising.py"
    raising.write_text("X = 1\n\ndef get_config():\n    return {'seed': undefined_name}\n")
    with pytest.raises(ValueError, match=rf"{raising}:4: NameError"):
        raw_config(raising)
    none = tmp_path / "none.py"
    none.write_text("def get_config():\n    return None\n")
    with pytest.raises(ValueError, match="must return a dict"):
        raw_config(none)


def test_cli_reports_all_bad_overrides_and_exits_2(capsys):
    from jaxnas.cli import main
    rc = main(["search", str(REPO / "tests/helpers/tiny_cli_config.py"), "search.steps=abc", "seed=abc",
               "--workdir", "/nonexistent/never-created"])
    err = capsys.readouterr().err
    assert rc == 2 and "2 problems in the config" in err
    assert "search.steps must be an int in [1, 2147483647], got 'abc'" in err and "seed must be an int >= 0" in err


# ---- single-class labels ---------------------------------------------------------------------------
def test_single_class_labels_are_refused(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 3))
    with pytest.raises(ValueError, match=r"single class.*at least 2 classes"):
        D.make_tabular(x, np.full(40, 7))
    p = tmp_path / "one.csv"
    p.write_text("a,b,label\n" + "".join(f"{i},{i % 3},yes\n" for i in range(20)))
    with pytest.raises(ValueError, match=r"single class \('yes'\)"):
        D.load_tabular(p)
    q = tmp_path / "one.npz"
    np.savez(q, X=x, y=np.zeros(40, np.int64), class_names=np.array(["a", "b"]))   # 2 names, 1 present
    with pytest.raises(ValueError, match="single class"):
        D.load_tabular(q)
    img = tmp_path / "img.npz"
    np.savez(img, X=np.zeros((10, 4, 4, 3), np.uint8), y=np.zeros(10, np.int64))
    with pytest.raises(ValueError, match="single class"):
        D.load_image_npz(img)
    cfg = resolve(tiny_config(), ["data.name='tabular'", f"data.path='{p}'"])
    with pytest.raises(ValueError, match="single class"):
        load_data(cfg)


# ---- own splits ------------------------------------------------------------------------------------
def _csv(path, rows):
    path.write_text("num,colour,label\n" + "".join(f"{a},{c},{y}\n" for a, c, y in rows))
    return path


def test_val_path_and_test_path_tabular_csv(tmp_path):
    rng = np.random.default_rng(0)
    colours = ["red", "green", "blue"]

    def rows(n, labels):
        return [(round(float(rng.normal()), 3), colours[i % 3], labels[i % len(labels)]) for i in range(n)]
    tr = _csv(tmp_path / "train.csv", rows(30, ["cat", "dog"]))
    va = _csv(tmp_path / "val.csv", rows(9, ["dog", "cat", "bird"]))   # a class the train file lacks
    te = _csv(tmp_path / "test.csv", rows(6, ["bird", "dog"]))
    cfg = resolve(tiny_config(), ["data.name='tabular'", f"data.path='{tr}'", f"data.val_path='{va}'",
                                  f"data.test_path='{te}'", "data.max_train=None", "data.val_fraction=0.5"])
    d = load_data(cfg)
    assert (d.num_train, d.num_val, d.num_test) == (30, 9, 6)   # all of path trains: val_fraction unused
    assert d.class_names == ("bird", "cat", "dog")              # labels encoded over every file
    raw = lambda x: x * d.feature_std + d.feature_mean          # noqa: E731
    val_rows = [line.split(",") for line in va.read_text().splitlines()[1:]]
    np.testing.assert_allclose(raw(d.x_val)[:, 0], [float(r[0]) for r in val_rows], atol=1e-5)
    np.testing.assert_array_equal(raw(d.x_val)[:, 1].round(), [{"blue": 0, "green": 1, "red": 2}[r[1]]
                                                               for r in val_rows])
    np.testing.assert_array_equal(d.y_val, [("bird", "cat", "dog").index(r[2]) for r in val_rows])
    test_rows = [line.split(",") for line in te.read_text().splitlines()[1:]]
    np.testing.assert_array_equal(d.y_test, [("bird", "cat", "dog").index(r[2]) for r in test_rows])
    assert d.x_test.dtype == np.float32 and d.x_test.shape == (6, 2)
    np.testing.assert_allclose(d.x_train.mean(0), 0, atol=1e-5)   # training statistics only
    # without a test split there is none
    d2 = load_data(resolve(tiny_config(), ["data.name='tabular'", f"data.path='{tr}'", f"data.val_path='{va}'"]))
    assert d2.x_test is None and d2.y_test is None and d2.num_test == 0
    np.testing.assert_array_equal(d2.x_val, d.x_val)
    # different columns are refused, naming both files
    other = tmp_path / "other.csv"
    other.write_text("num,label\n1,cat\n2,dog\n")
    with pytest.raises(ValueError, match=r"val_path .*other\.csv.*columns"):
        load_data(resolve(tiny_config(), ["data.name='tabular'", f"data.path='{tr}'", f"data.val_path='{other}'"]))


def test_val_path_npz_tabular_and_images(tmp_path):
    rng = np.random.default_rng(1)
    for name, X in (("tab", lambda n: rng.normal(size=(n, 4))),
                    ("img", lambda n: rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8))):
        files = {}
        for part, n in (("train", 20), ("val", 8), ("test", 6)):
            files[part] = tmp_path / f"{name}_{part}.npz"
            np.savez(files[part], X=X(n), y=np.arange(n) % 2)
        data_name = "tabular" if name == "tab" else "image_npz"
        cfg = resolve(tiny_config(), [f"data.name='{data_name}'", f"data.path='{files['train']}'",
                                      f"data.val_path='{files['val']}'", f"data.test_path='{files['test']}'",
                                      "data.max_train=None"])
        d = load_data(cfg)
        assert (d.num_train, d.num_val, d.num_test) == (20, 8, 6), name
        with np.load(files["val"]) as v:
            np.testing.assert_array_equal(d.y_val, v["y"])
            if name == "img":
                np.testing.assert_array_equal(d.x_val, v["X"])
                np.testing.assert_array_equal(d.x_test, np.load(files["test"])["X"])


def test_own_file_mistakes_are_config_errors(tmp_path):
    msg = _problems(["data.name='tabular'", "data.path='a.csv'", "data.val_path='a.csv'",
                     "data.test_split='test'"])
    assert "data.val_path and data.path are the same file" in msg
    assert "data.test_split and data.val_split are both 'test'" in msg
    cfg = resolve(tiny_config(), [f"data.val_path='{tmp_path / 'v.csv'}'"])   # connect4: no own files
    with pytest.raises(ValueError, match="data.val_path apply to data.name='tabular' or 'image_npz'"):
        load_data(cfg)
    npz = tmp_path / "t.npz"
    np.savez(npz, X=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    cfg = resolve(tiny_config(), ["data.name='tabular'", f"data.path='{npz}'", "data.val_path='v.csv'"])
    with pytest.raises(ValueError, match=r"must have the format of .*\(npz\)"):
        load_data(cfg)


def _split_digest(d) -> str:
    """The split, by row content (raw Connect-4 board values) and label: platform-independent."""
    h = hashlib.sha256()
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val)):
        h.update(np.rint(x * d.feature_std + d.feature_mean).astype(np.int8).tobytes())
        h.update(y.astype(np.int32).tobytes())
    return h.hexdigest()


def test_split_seed_defaults_to_seed_and_keeps_todays_split():
    # digests of the split the loader made before data.split_seed existed (seed 0)
    cfg = resolve(tiny_config())          # connect4, val_fraction 0.1, max_train 2000, seed 0
    assert cfg["data"]["split_seed"] is None
    assert _split_digest(load_data(cfg)) == "22f72f65657e7bf4148d59a355aa16afd27ea74526e8355e51a4a79c0d2c1120"
    full = resolve(tiny_config(), ["data.max_train=None", "data.val_fraction=0.2"])
    assert _split_digest(load_data(full)) == "39bc6680b206736f6c816ef702f0525d4359b079d4e4c17abf97f5b2438143b6"


def test_split_seed_moves_the_split_not_the_search_seed():
    base = load_data(resolve(tiny_config()))
    cfg = resolve(tiny_config(), ["data.split_seed=3"])
    assert cfg["seed"] == 0                                   # the search seed is untouched
    moved = load_data(cfg)
    assert _split_digest(moved) != _split_digest(base)
    same = load_data(resolve(tiny_config(), ["seed=3"]))      # the split seed 3 gives seed 3's split
    assert _split_digest(moved) == _split_digest(same)
    again = load_data(resolve(tiny_config(), ["seed=5", "data.split_seed=0"]))   # new search seed, old split
    assert _split_digest(again) == _split_digest(base)


def test_tfds_test_split_is_loaded_apart(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        d = D.load_tfds_images("cifar10", train_split="train", val_split="train[50%:]", test_split="test")
        assert d.num_test == 6 and d.x_test.dtype == np.uint8 and d.y_test.dtype == np.int32
        assert D.load_tfds_images("cifar10").x_test is None

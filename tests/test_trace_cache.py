"""Traced chunks on disk (jaxnas/core/trace_cache.py): a second search of the same config loads the
traced program instead of tracing, and steps bit for bit as a search that traces; another config, or
a program holding data, is not served from the store."""
import dataclasses

import chex
import jax
import pytest

import jaxnas.core.trace_cache as trace_cache
from jaxnas.config.experiment import build
from jaxnas.config.settings import resolve
from jaxnas.data import BatchSampler, gather
from jaxnas.engine import compile_cache
from tests.helpers.tiny import tiny_config


@pytest.fixture
def trace_dir(tmp_path):
    """A compilation cache (so a trace cache) of this test's own."""
    before = jax.config.jax_compilation_cache_dir
    compile_cache.enable(tmp_path / "xla")
    yield tmp_path / "xla" / "traces"
    jax.config.update("jax_compilation_cache_dir", before)


def _chunk(exp, steps=3):
    d = exp.data
    tr, va = BatchSampler(len(d.y_train), 32, 0), BatchSampler(len(d.y_val), 32, 1)
    state = exp.search.init(jax.random.key(0))
    tb, vb = gather((d.x_train, d.y_train), tr.chunk(0, steps)), gather((d.x_val, d.y_val), va.chunk(0, steps))
    return exp.search.run_chunk(state, tb, vb, kind="both")


def test_a_second_search_loads_the_trace_and_steps_identically(trace_dir, monkeypatch):
    cfg = resolve(tiny_config("reinforce"))
    first = _chunk(build(cfg))
    assert len(list(trace_dir.glob("*.jaxexport"))) == 1
    # a fresh experiment of the same config: served from disk, nothing is traced or exported again
    second_exp = build(cfg)
    monkeypatch.setattr(jax.export, "export", lambda *a, **k: pytest.fail("traced again despite a stored trace"))
    monkeypatch.setattr(type(second_exp.search), "_step", lambda *a: pytest.fail("traced a search step"))
    second = _chunk(second_exp)
    monkeypatch.undo()
    chex.assert_trees_all_equal(jax.tree.map(_plain, second), jax.tree.map(_plain, first))
    # and both equal a search that traces (no trace key)
    untraced = build(cfg)
    untraced = dataclasses.replace(untraced, search=dataclasses.replace(untraced.search, trace_key=None))
    chex.assert_trees_all_equal(jax.tree.map(_plain, _chunk(untraced)), jax.tree.map(_plain, first))
    assert len(list(trace_dir.glob("*.jaxexport"))) == 1


def test_another_config_or_phase_kind_is_another_trace(trace_dir):
    exp = build(resolve(tiny_config("reinforce")))
    _, both = _chunk(exp)
    d = exp.data
    tb = gather((d.x_train, d.y_train), BatchSampler(len(d.y_train), 32, 0).chunk(0, 3))
    vb = gather((d.x_val, d.y_val), BatchSampler(len(d.y_val), 32, 1).chunk(0, 3))
    _, weights = exp.search.run_chunk(exp.search.init(jax.random.key(0)), tb, vb, kind="weights")
    assert "strategy/reward" in both and "strategy/reward" not in weights   # each kind its own program
    assert len(list(trace_dir.glob("*.jaxexport"))) == 2
    other = tiny_config("reinforce")
    other["strategy"]["lr"] = 0.01
    _chunk(build(resolve(other)))
    assert len(list(trace_dir.glob("*.jaxexport"))) == 3


def test_a_program_holding_data_is_not_stored(trace_dir):
    table = jax.numpy.arange(4096.0)     # an array the program closes over: data, not code

    def fn(state, x):
        return state + table[:3].sum() * x, {"m": x}
    args = (jax.numpy.zeros(3), jax.numpy.ones(3))
    assert trace_cache.chunk_caller(fn, "identity", (), args) is None
    assert not list(trace_dir.glob("*.jaxexport"))
    small = lambda state, x: (state + x, {"m": x})
    run = trace_cache.chunk_caller(small, "identity", (), args)
    chex.assert_trees_all_equal(run(*args), small(*args))
    assert len(list(trace_dir.glob("*.jaxexport"))) == 1


def _plain(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def test_a_supernets_shapes_are_read_back_not_traced(trace_dir, monkeypatch):
    from jaxnas.models.supernets import init_variables
    from jaxnas.models.supernets.cells import NasBench201Net
    from jaxnas.spaces.cells import NasBench201Space
    space = NasBench201Space.create(C=4, cells_per_stage=1)
    net, x = NasBench201Net(space), jax.numpy.zeros((2, 8, 8, 3))
    w = space.one_hot(jax.numpy.zeros(space.num_decisions, jax.numpy.int32))
    first = init_variables(net, jax.random.key(1), x, w)
    assert len(list(trace_dir.glob("shapes-*.json"))) == 1
    monkeypatch.setattr(jax, "eval_shape", lambda *a, **k: pytest.fail("traced the supernet again"))
    again = init_variables(NasBench201Net(space), jax.random.key(1), x, w)
    monkeypatch.undo()
    chex.assert_trees_all_equal(again, first)
    # another module (another width) is another entry
    init_variables(NasBench201Net(NasBench201Space.create(C=8, cells_per_stage=1)), jax.random.key(1), x, w)
    assert len(list(trace_dir.glob("shapes-*.json"))) == 2

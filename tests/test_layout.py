"""Parameter layouts of the cell supernets (per edge / ``scan_edges``, per cell / ``scan_cells``): a search
state converts between them exactly, a work dir saved in one layout resumes in the other (one from
before the scanned defaults: DARTS per edge, NAS-Bench-201 per cell), a warm-up forks across layouts, the
default layouts: scanned edges for a sparse DARTS search, scanned cells for a sparse NAS-Bench-201 one."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from jaxnas.config import resolve
from jaxnas.config.experiment import build
from jaxnas.engine.fork import fork_state, named_leaves
from jaxnas.models.supernets import init_params
from jaxnas.models.supernets.cells import (
    DartsNet,
    NasBench201Net,
    layout_of,
    layout_of_paths,
    relayout,
    scan_cell_params,
    scan_edge_params,
)
from jaxnas.runner import _checkpoint_manager, _restore, run_search
from jaxnas.spaces.cells import DartsSpace, NasBench201Space, reduction_cells

DIGITS = {"name": "digits", "val_fraction": 0.3, "max_train": 200}
OPS = ["none", "skip_connect", "max_pool_3x3", "sep_conv_3x3"]


@pytest.mark.parametrize("kind", ["darts", "nb201"])
def test_relayout_converts_parameters_and_optimizer_state_exactly(kind):
    if kind == "darts":
        sp = DartsSpace.create(C=2, num_cells=11, ops=tuple(OPS))   # runs 5..6 and 9..10 scan
        per, reds = DartsNet(sp), reduction_cells(11)
        scanned = DartsNet(sp, scan_edges=True, scan_cells=True)
    else:
        sp = NasBench201Space.create(C=2, cells_per_stage=2)
        per, reds = NasBench201Net(sp), ()
        scanned = NasBench201Net(sp, scan_edges=True, scan_cells=True)
    x = jnp.zeros((1, 8, 8, 3))
    w = sp.one_hot(jnp.zeros(sp.num_decisions, jnp.int32))
    params = init_params(per, jax.random.key(0), x, w)
    params = jax.tree.map(lambda a: a + jax.random.normal(jax.random.key(1), a.shape), params)
    opt = optax.sgd(0.1, momentum=0.9)
    state = {"params": params, "opt": opt.update(params, opt.init(params), params)[1], "step": jnp.int32(3)}
    src, dst = layout_of(per), layout_of(scanned)
    assert (src, dst) == ((False, False), (True, True))
    moved = relayout(state, per, src, dst)
    want = scan_cell_params(scan_edge_params(params, sp, reds), scanned)
    chex.assert_trees_all_equal(moved["params"], want)
    # the optimizer's momentum mirrors the parameters: converted the same way
    chex.assert_trees_all_equal(jax.tree.structure(moved["opt"][0].trace), jax.tree.structure(want))
    # the tree of the scanned net itself, and the layout read back from the key names
    chex.assert_trees_all_equal_shapes(moved["params"], init_params(scanned, jax.random.key(0), x, w))
    assert layout_of_paths(named_leaves(moved)) == dst and layout_of_paths(named_leaves(state)) == src
    chex.assert_trees_all_equal(relayout(moved, scanned, dst, src), state)
    # edges only, and shapes alone (how a restore builds the stored layout's abstract tree)
    half = jax.eval_shape(lambda s: relayout(s, per, src, (True, False)), state)
    chex.assert_trees_all_equal_shapes(half["params"], scan_edge_params(params, sp, reds))


def _cfg(kind, **space):
    base = ({"name": "darts", "C": 2, "num_cells": 3, "ops": OPS} if kind == "darts" else
            {"name": "nb201", "C": 2, "cells_per_stage": 2})
    return resolve({"data": DIGITS, "space": {**base, **space}, "strategy": {"name": "reinforce", "lr": 0.05},
                    "search": {"steps": 4, "warmup_steps": 2, "batch_size": 8, "val_batch_size": 8, "chunk": 2,
                               "checkpoint_every": 2}})


def test_the_default_layouts():
    def layout(space, strategy):
        cfg = resolve({"data": DIGITS, "space": space, "strategy": {"name": strategy},
                       "search": {"steps": 2, "warmup_steps": 0, "batch_size": 8}})
        return layout_of(build(cfg).task.net)
    darts = {"name": "darts", "C": 2, "num_cells": 3, "ops": OPS}
    assert layout(darts, "reinforce") == (True, False)
    assert layout(darts, "darts") == (False, False)                   # dense: per edge
    assert layout({**darts, "scan_edges": False}, "reinforce") == (False, False)
    nb201 = {"name": "nb201", "C": 2, "cells_per_stage": 2}
    assert layout(nb201, "reinforce") == (False, False)                # the edge VJP: per cell
    assert layout({**nb201, "sparse_edge_vjp": False}, "reinforce") == (False, True)   # a stage scanned
    assert layout(nb201, "darts") == (False, False)
    assert layout({**nb201, "scan_cells": True}, "reinforce") == (False, True)


@pytest.mark.parametrize("kind, before, old_layout, after", [
    ("darts", {"scan_edges": False}, (False, False), (True, False)),
    ("nb201", {"scan_cells": True}, (False, True), (False, False))])
def test_a_work_dir_of_the_old_layout_resumes_in_the_default_one_and_forks_across(kind, before, old_layout, after,
                                                                                  tmp_path):
    """A work dir from before a default layout changed (DARTS: per edge, before scanned edges; NB201:
    scanned cells, before the edge VJP made per-cell faster) resumes under it."""
    old = tmp_path / "old"
    assert run_search(_cfg(kind, **before), old, progress=None, stop_after=2) == {"step": 2, "finished": False}
    # what the resume restores: the stored state, converted
    exp_old, exp_new = build(_cfg(kind, **before)), build(_cfg(kind))
    net_old, net_new = exp_old.task.net, exp_new.task.net
    assert (layout_of(net_old), layout_of(net_new)) == (old_layout, after)
    fresh_old, fresh_new = exp_old.search.init(jax.random.key(0)), exp_new.search.init(jax.random.key(0))
    with _checkpoint_manager(old) as mgr:
        stored = _restore(mgr, 2, fresh_old, net_old)
    with _checkpoint_manager(old) as mgr:
        restored = _restore(mgr, 2, fresh_new, net_new)
    chex.assert_trees_all_equal(restored, relayout(stored, net_old, old_layout, after))
    assert jax.tree.structure(restored) == jax.tree.structure(fresh_new)
    # the resume itself: the default config goes on from step 2 to the end
    log = tmp_path / "progress.txt"
    with open(log, "w") as f:
        result = run_search(_cfg(kind), old, progress=f)
    assert result["finished"] and result["step"] == 4
    assert "resuming from step 2" in log.read_text()
    # a fork of the old-layout warm-up into a default-layout run takes the converted supernet
    forked, record = fork_state(f"{old}:2", fresh_new, None, None, net_new)
    chex.assert_trees_all_equal(forked.evaluator, restored.evaluator)
    assert record["step"] == 2

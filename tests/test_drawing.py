"""Pictures of found architectures: every space's drawing is a non-empty PNG and an SVG with the
expected nodes, and `jaxnas report` draws a work dir's result."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxnas.config.settings import resolve
from jaxnas.report import draw, report
from jaxnas.runner import run_search
from jaxnas.spaces.cells import DartsSpace, NasBench201Space
from jaxnas.spaces.mlp import MLPSpace
from jaxnas.spaces.rnn import RNNCellSpace
from tests.helpers.tiny import tiny_config

NB201_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _check(path, nodes: int):
    import matplotlib.image as mpimg
    img = mpimg.imread(path.with_suffix(".png"))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and np.ptp(img) > 0
    svg = path.with_suffix(".svg").read_text()
    assert svg.count('id="node-') == nodes, svg.count('id="node-')
    return svg


def test_cells_mlp_and_recurrent_drawings(tmp_path):
    nb = NasBench201Space.create()
    svg = _check((draw(nb.decode(NB201_CELL), nb, tmp_path / "nb201"), tmp_path / "nb201")[1], 4)
    for op in ("nor_conv_3x3", "avg_pool_3x3", "skip_connect"):
        assert op in svg
    none_cell = NB201_CELL.replace("avg_pool_3x3~1", "none~1")
    assert "avg_pool_3x3" not in _check((draw(nb.decode(none_cell), nb, tmp_path / "nb_none"),
                                         tmp_path / "nb_none")[1], 4)          # 'none' edges are not drawn
    ds = DartsSpace.create()
    arch = ds.derive(jax.random.normal(jax.random.key(0), ds.shape))
    svg = _check((draw(arch, ds, tmp_path / "darts"), tmp_path / "darts")[1], 2 * (2 + 4 + 1))   # normal, reduce
    assert "c_{k-2}" in svg and "reduce" in svg
    r = RNNCellSpace.create(num_nodes=4)
    _check((draw(np.zeros(len(r.choices), np.int32), r, tmp_path / "rnn"), tmp_path / "rnn")[1], 1 + 4 + 1)
    m = MLPSpace.create(2, 42, 3)
    _check((draw(np.array([11, 5]), m, tmp_path / "mlp"), tmp_path / "mlp")[1], 4)


def test_pipeline_drawing_shows_the_three_agents(tmp_path):
    from jaxnas.config.experiment import build_space, load_data
    cfg = resolve({"data": {"name": "digits", "val_fraction": 0.3},
                   "space": {"name": "pipeline", "C": 4, "cells_per_stage": 1},
                   "evaluator": {"name": "standalone", "max_steps": 2}, "strategy": {"name": "random"},
                   "search": {"steps": 1, "samples": 1}})
    space = build_space(cfg, load_data(cfg))
    arch = np.asarray(space.sample(jax.random.key(0), np.zeros(space.shape, np.float32)))
    svg = _check((draw(arch, space, tmp_path / "pipe"), tmp_path / "pipe")[1], 4)   # the NB201 cell's nodes
    for agent in space.agents:
        assert agent in svg


def test_report_draws_the_result(tmp_path):
    run_search(resolve(tiny_config(steps=10)), tmp_path, progress=None)
    text = report(tmp_path, plots=True)
    assert "picture:" in text and (tmp_path / "arch.png").exists() and (tmp_path / "arch.svg").exists()


@pytest.mark.parametrize("bad", [np.zeros(3, np.int32)])
def test_a_space_without_a_drawing_says_so(bad):
    from jaxnas.spaces.base import Space
    with pytest.raises(ValueError, match="no drawing"):
        draw(bad, Space(decision_names=("a", "b", "c"), choices=(("x",),) * 3))

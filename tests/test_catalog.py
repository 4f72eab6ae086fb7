"""`jaxnas list` reads the registries and schemas: everything registered appears, with its options."""
from __future__ import annotations

import inspect

import pytest

from jaxnas import evaluators, strategies
from jaxnas.catalog import details, overview
from jaxnas.cli import main
from jaxnas.config.experiment import DATASETS, SPACES
from jaxnas.strategies import base as strategy_base


def test_overview_lists_every_registered_entry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in SPACES.names() + evaluators.available() + [n for n in DATASETS.names() if n != "tfds"]:
        assert name in out, name
    lines = {l.split()[0]: l for l in out.splitlines() if l.startswith("  ")}
    assert set(lines) == set(strategies.available())
    assert "needs gradient" in lines["advantage"] and "on shared_weights" in lines["advantage"]
    assert lines["reinforce"].endswith("on shared_weights, standalone, table")
    assert "needs batch" in lines["shapley"] and "table" not in lines["shapley"]


def test_strategy_options_with_types_and_defaults():
    text = details("strategy", "tabnas")
    params = inspect.signature(strategies.factory("tabnas")).parameters
    for opt in strategies.options("tabnas"):
        line = next(l for l in text.splitlines() if l.strip().startswith(opt + " "))
        if params[opt].default is not None:
            assert f"default {params[opt].default!r}" in line, line
    assert "num_mc_samples         an int >= 1" in text and "pv                     one of 'mc', 'exact'" in text
    assert "space nb201" in details("space", "nb201") and "cells_per_stage" in details("space", "nb201")
    assert "vmap_chunk" in details("evaluator", "shared_weights")
    assert "val_fraction" in details("data", "tabular")
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        details("strategy", "nope")


def test_a_newly_registered_strategy_appears_without_other_edits():
    @strategy_base.register("listed_probe")
    def make_probe(space, *, axis_name=None, total_steps=None, lr: float = 0.5):
        """A probe strategy. Only for this test."""
        return strategies.make("random", space, axis_name=axis_name, total_steps=total_steps)
    try:
        assert "listed_probe" in overview()
        text = details("strategy", "listed_probe")
        assert "A probe strategy." in text and "lr" in text and "default 0.5" in text
    finally:
        strategy_base._REGISTRY.pop("listed_probe")

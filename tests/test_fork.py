"""search.init_from: a fork of another run's supernet continues exactly as one uninterrupted run, records
what it took, and is refused (before compiling) when the supernet does not fit."""
from __future__ import annotations

import json
from pathlib import Path

import chex
import pytest

from jaxnas.config.settings import load_config
from jaxnas.runner import run_search

REPO = Path(__file__).resolve().parents[1]
TINY = ["search.steps=60", "search.warmup_steps=30", "search.chunk=10", "search.checkpoint_every=10",
        "strategy.num_mc_samples=256", "data.max_train=3000", "space.widths=[4,8,16,32]", "strategy.budget=1000"]


def _cfg(*extra):
    return load_config(REPO / "configs" / "quickstart.py", TINY + list(extra))


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """The shared warm-up: the run stopped after its 30 weight-only steps (checkpoint at 30)."""
    wd = tmp_path_factory.mktemp("warm")
    assert run_search(_cfg(), wd, progress=None, stop_after=30) == {"step": 30, "finished": False}
    return wd


def test_fork_equals_the_uninterrupted_run(warm, tmp_path):
    whole = run_search(_cfg(), tmp_path / "whole", progress=None)
    fork = run_search(_cfg(f"search.init_from='{warm}:30'"), tmp_path / "fork", progress=None)
    assert fork["state_digest"] == whole["state_digest"] and fork["arch"] == whole["arch"]
    assert fork["init_from"]["step"] == 30 and fork["init_from"]["source"] == str(warm.resolve())
    rows = [json.loads(line) for line in (tmp_path / "fork" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(30, 60))      # the fork ran only the steps after 30
    full = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    chex.assert_trees_all_equal([r.get("weights/train_loss") for r in rows],
                                [r.get("weights/train_loss") for r in full[30:]])


def test_a_fork_with_another_strategy_starts_from_the_same_supernet(warm, tmp_path):
    a = run_search(_cfg(f"search.init_from='{warm}'"), tmp_path / "a", progress=None)
    b = run_search(_cfg(f"search.init_from='{warm}'", "strategy={'name': 'random'}"), tmp_path / "b",
                   progress=None)
    assert a["init_from"]["evaluator_digest"] == b["init_from"]["evaluator_digest"]
    assert a["init_from"]["step"] == b["init_from"]["step"] == 30


@pytest.mark.parametrize("extra, message", [
    (["space.widths=[4,8,16]"], "does not fit this run's"),
    (["optimizer.name='sgd'", "optimizer.momentum=0.9"], "does not fit this run's"),
    (["data.max_train=2000"], "other data"),
])
def test_a_fork_that_does_not_fit_is_refused(warm, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message) as e:
        run_search(_cfg(f"search.init_from='{warm}'", *extra), tmp_path / "x", progress=None)
    assert "search.init_from=" in str(e.value)
    assert not (tmp_path / "x" / "checkpoints").exists() or not any((tmp_path / "x" / "checkpoints").iterdir())


def test_a_missing_source_or_step_is_refused(warm, tmp_path):
    with pytest.raises(ValueError, match="not a search work dir"):
        run_search(_cfg(f"search.init_from='{tmp_path / 'nothing'}'"), tmp_path / "y", progress=None)
    with pytest.raises(ValueError, match=r"checkpoints of steps \[.*30\], not 25"):
        run_search(_cfg(f"search.init_from='{warm}:25'"), tmp_path / "z", progress=None)

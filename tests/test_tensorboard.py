"""TensorBoard event files and the progress display of a search (jaxnas/core/tensorboard.py,
jaxnas/core/progress.py): every logged metric is in the event files at its step, read back from disk;
a resume purges the killed run's tail so each step has one value; the architecture's text and drawing
are there at the end; the bar shows phase, rate and ETA on a terminal and nothing elsewhere."""
import io
import json

import chex
import numpy as np
import pytest

from jaxnas.config.settings import resolve
from jaxnas.core import tensorboard as TB
from jaxnas.core.progress import Progress
from jaxnas.runner import run_search
from tests.helpers.tiny import tiny_config

pytestmark = pytest.mark.skipif(not TB.available(), reason="tensorboardX is a dependency of jaxnas")


def _rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_event_files_hold_every_metric_of_every_step_across_a_resume(tmp_path):
    cfg = resolve(tiny_config(steps=40))
    w = tmp_path / "run"
    run_search(cfg, w, progress=None, stop_after=20)
    # the killed run's tail: events past the checkpoint (step 20) that a resume must hide; written
    # and resumed at once, within the second the first writer opened (its file must survive)
    with TB.EventLog(w / TB.DIR) as log:
        log.rows([{"step": s, "phase": "both", "weights/train_loss": 1e6} for s in range(20, 25)])
    with TB.EventLog(w / TB.DIR) as log:        # another writer in the same second: nothing lost
        pass
    run_search(cfg, w, progress=None)
    assert len(list((w / TB.DIR).glob("events.out.tfevents.*"))) == 4
    rows = _rows(w)
    scalars = TB.read_scalars(w / TB.DIR)
    tags = sorted(k for k in rows[0] if k not in ("step", "phase"))
    assert set(tags) <= set(scalars), set(tags) - set(scalars)
    for tag in tags:
        steps = sorted(scalars[tag])
        assert steps == list(range(40)), (tag, steps)
        got = np.array([scalars[tag][r["step"]] for r in rows])
        want = np.array([np.mean(r[tag]) for r in rows], np.float64)
        chex.assert_trees_all_close(got, want.astype(np.float32), rtol=1e-6)
    assert max(scalars["weights/train_loss"].values()) < 1e3      # the fake tail was purged by the resume
    kinds = TB.read_tags(w / TB.DIR)
    assert "architecture/text_summary" in kinds["text"]
    texts = [v.tensor.string_val[0].decode() for e in TB.read_events(w / TB.DIR) for v in e.summary.value
             if v.tag == "architecture/text_summary"]
    result = json.loads((w / "result.json").read_text())
    assert f"arch: {result['arch']}" in texts[-1]
    pytest.importorskip("matplotlib")
    assert "architecture" in kinds["image"]                       # the drawing at the last step


def test_tensorboard_off_writes_no_events(tmp_path):
    run_search(resolve(tiny_config(steps=20, tensorboard=False)), tmp_path / "w", progress=None)
    assert not (tmp_path / "w" / TB.DIR).exists()
    assert (tmp_path / "w" / "result.json").exists()


def test_tensorboard_is_run_neutral_and_force_restart_clears_it(tmp_path):
    w = tmp_path / "w"
    run_search(resolve(tiny_config(steps=20)), w, progress=None, stop_after=10)
    out = run_search(resolve(tiny_config(steps=20, tensorboard=False)), w, progress=None)   # a resume, not a mismatch
    assert out["finished"] and out["step"] == 20
    run_search(resolve(tiny_config(steps=20, tensorboard=False)), w, progress=None, force_restart=True)
    assert not (w / TB.DIR).exists()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_shows_phase_rate_and_eta_on_a_terminal_only():
    term, log = _Terminal(), io.StringIO()
    for stream in (term, log):
        with Progress(100, stream) as bar:
            bar.update(50, "weights", train_loss=0.5)
            bar.update(50, "both", train_loss=0.25, reward=-0.3)
    shown = term.getvalue()
    assert "both" in shown and "100/100" in shown and "step/s" in shown and "<" in shown   # rate and ETA
    assert "train_loss=0.25" in shown and "reward=-0.3" in shown
    assert log.getvalue() == ""
    Progress(10, None).update(10, "weights")       # --quiet: nothing, no error

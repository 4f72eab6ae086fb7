"""Preemption-safe runs: SIGTERM / SIGINT stop a real CLI search or retrain at the next chunk boundary
with a checkpoint of that step, exit 143 / 130 with a message, release the lock, and the rerun ends
bit for bit where an uninterrupted run ends."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from jaxnas.config.settings import load_config
from jaxnas.retrain import retrain
from jaxnas.runner import run_search
from tests.test_workdir import CLI_CONFIG, ENV, REPO, _saved

LONG = ["search.steps=3000", "search.chunk=10", "search.checkpoint_every=1000"]


def _steps_done(workdir: Path) -> int:
    try:
        return sum(1 for _ in open(workdir / "metrics.jsonl"))
    except FileNotFoundError:
        return 0


def _signal_when(proc, cond, signum, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if cond():
            proc.send_signal(signum)
            return proc.wait(timeout=120)
        time.sleep(0.01)
    raise AssertionError(f"the run ended (rc {proc.poll()}) or timed out before the signal could be sent: "
                         f"{proc.stderr.read() if proc.stderr else ''}")


def _search(workdir):
    return subprocess.Popen([sys.executable, "-m", "jaxnas", "search", CLI_CONFIG, "--quiet", "--workdir",
                             str(workdir), *LONG], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_sigterm_and_sigint_stop_a_search_with_a_checkpoint_then_resume_exactly(tmp_path):
    ref = run_search(load_config(CLI_CONFIG, LONG), tmp_path / "ref", progress=None)
    work = tmp_path / "stopped"
    stops = []
    for signum, rc in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        before = _steps_done(work)
        proc = _search(work)
        assert _signal_when(proc, lambda: _steps_done(work) >= before + 50, signum) == rc
        err = proc.stderr.read()
        step = max(_saved(work / "checkpoints"))
        assert f"stopped at step {step} by {signal.Signals(signum).name}, checkpoint saved" in err, err
        assert "Traceback" not in err, err
        assert step % 1000 != 0 and step % 10 == 0 and step > before    # a chunk boundary, not a scheduled save
        assert _steps_done(work) == step                                 # metrics flushed up to the stop
        assert not (work / ".lock").exists()
        stops.append(step)
    proc = _search(work)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    done = json.loads((work / "result.json").read_text())
    assert done["state_digest"] == ref["state_digest"] and stops[1] > stops[0]


def test_sigterm_stops_a_retrain_with_a_checkpoint_then_resumes_exactly(tmp_path):
    search = tmp_path / "search"
    run_search(load_config(CLI_CONFIG), search, progress=None)
    settings = {"epochs": 100, "max_steps": 4000, "chunk": 10, "checkpoint_every": 100000, "log_every": 10}
    copy = tmp_path / "uninterrupted"
    shutil.copytree(search, copy)
    whole = retrain(copy, settings, top=2, seeds=2, progress=None)
    cmd = [sys.executable, "-m", "jaxnas", "retrain", str(search), "--top", "2", "--seeds", "2",
           *(f"{k}={v}" for k, v in settings.items())]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=f, text=True)
        # progress lines every 10 steps: stop once training has run a while
        assert _signal_when(proc, lambda: "step 100/" in log.read_text(), signal.SIGTERM) == 143
    err = log.read_text()
    assert "stopped at step" in err and "by SIGTERM, checkpoint saved" in err and "Traceback" not in err, err
    saved = _saved(search / "retrain" / "members0" / "checkpoints")
    assert saved and 100 <= max(saved) < 4000 and max(saved) % 10 == 0, saved
    assert not (search / ".lock").exists() and not (search / "retrain.json").exists()
    rerun = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from step {max(saved)}" in rerun.stderr
    out = json.loads((search / "retrain.json").read_text())
    strip = lambda c: [{k: v for k, v in r.items() if k != "seconds"} for r in c["runs"]]   # noqa: E731
    assert [strip(c) for c in out["candidates"]] == [strip(c) for c in whole["candidates"]]

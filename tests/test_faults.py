"""Nothing lost, nothing silently wrong (issue 28): each test is a reproduction that went wrong before
(a stale export, a table export shaped for Connect-4, a half-written export, an overwritten folder, an
unnoticed divergence, a scrambled CSV column, a crashing report, an overflow after compiling, a
damaged JSON) and the message or result expected now. Signals: tests/test_signals.py; MLP retrain
checkpoints: tests/test_retrain.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxnas.config.settings import load_config, resolve
from jaxnas.core import workdir as W
from jaxnas.data.tabular import load_csv
from jaxnas.engine.search import DivergenceError
from jaxnas.export import export, load
from jaxnas.report import report
from jaxnas.retrain import retrain
from jaxnas.runner import run_search
from tests.helpers.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO.parent / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"
RETRAIN = {"epochs": 1, "max_steps": 20, "batch_size": 32}


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """A tiny search, retrained (2 candidates x 1 seed) and exported."""
    wd = tmp_path_factory.mktemp("retrained")
    run_search(resolve(tiny_config()), wd, progress=None)
    retrain(wd, RETRAIN, top=2, seeds=1, progress=None)
    export(wd)
    return wd


def test_force_restart_moves_the_old_retrain_aside_and_export_refuses_a_stale_one(retrained, tmp_path):
    wd = tmp_path / "w"
    shutil.copytree(retrained, wd)
    old_digest = json.loads((wd / "result.json").read_text())["state_digest"]
    run_search(resolve(tiny_config(steps=30)), wd, progress=None, force_restart=True)   # another search
    assert not (wd / "retrain.json").exists() and not (wd / "retrain").exists()
    stale = list((wd / "stale").iterdir())
    assert len(stale) == 1 and {p.name for p in stale[0].iterdir()} == {"retrain", "retrain.json", "export"}
    out = export(wd)                                  # the new search, not the old retrained network
    info = json.loads((out / "architecture.json").read_text())
    assert info["retrained"] is False and info["search_state_digest"] != old_digest
    shutil.copy(stale[0] / "retrain.json", wd / "retrain.json")   # an old retrain put back by hand
    with pytest.raises(ValueError, match="retrain of an earlier search"):
        export(wd)


def test_export_is_atomic_and_locked(retrained, tmp_path, monkeypatch):
    wd = tmp_path / "w"
    shutil.copytree(retrained, wd)
    before = {p.name: p.read_bytes() for p in (wd / "export").iterdir() if p.is_file()}
    _, variables = load(wd / "export")
    assert variables is not None

    def killed(self, *a, **k):
        raise KeyboardInterrupt("killed while writing the variables")
    monkeypatch.setattr(ocp.StandardCheckpointer, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        export(wd)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (wd / "export").iterdir() if p.is_file()} == before
    _, again = load(wd / "export")                   # the previous export, whole
    np.testing.assert_array_equal(np.asarray(again["params"]["logits"]["kernel"]),
                                  np.asarray(variables["params"]["logits"]["kernel"]))
    with W.WorkdirLock(wd, None):                     # a search or retrain holds the work dir
        with pytest.raises(W.WorkdirLockedError):
            export(wd)


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    p = tmp_path / "mine"
    p.mkdir()
    (p / "config.json").write_text("{}")
    (p / "checkpoints").mkdir()
    (p / "checkpoints" / "notes.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(W.WorkdirError, match="holds no jaxnas run"):
            run_search(resolve(tiny_config()), p, progress=None, force_restart=force)
    assert (p / "config.json").read_text() == "{}" and (p / "checkpoints" / "notes.txt").exists()
    assert not (p / ".lock").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_search(resolve(tiny_config(steps=10)), empty, progress=None)["finished"]


def test_adam_divergence_stops_the_search(tmp_path):
    cfg = resolve(load_config(REPO / "configs" / "quickstart.py",
                              ["optimizer.lr=1e6", "search.steps=400", "search.chunk=20", "search.checkpoint_every=20",
                               "strategy.num_mc_samples=256", "data.max_train=4000"]))
    with pytest.raises(DivergenceError, match=r"diverged: .* at step \d+, more than 100 x its start") as e:
        run_search(cfg, tmp_path / "w", progress=None)
    at = int(str(e.value).split(" at step ")[1].split(",")[0])
    saved = [int(p.name) for p in (tmp_path / "w" / "checkpoints").iterdir() if p.name.isdigit()]
    assert all(s <= at for s in saved)                 # nothing checkpointed past the divergence
    assert "optimizer.lr" in str(e.value)
    off = resolve(load_config(REPO / "configs" / "quickstart.py",
                              ["optimizer.lr=1e6", "search.steps=40", "search.chunk=20", "search.checkpoint_every=20",
                               "strategy.num_mc_samples=256", "data.max_train=4000", "search.divergence_factor=None"]))
    assert run_search(off, tmp_path / "off", progress=None)["finished"]    # the check can be turned off


def test_a_stray_string_in_a_numeric_csv_column_is_an_error(tmp_path):
    f = tmp_path / "t.csv"
    rows = ["a,b,y"] + [f"{v},{c},{i % 2}" for i, (v, c) in enumerate(zip(
        ["9", "10", "100", "-20", "-1", "x", "3", "4"], ["u", "v", "u", "w", "v", "u", "w", "v"]))]
    f.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"column 'a' is numeric but row 7 of .*t.csv' holds 'x'.*"
                                         r"data.categorical=\['a'\]"):
        load_csv(f, val_fraction=0.25)
    d = load_csv(f, val_fraction=0.25, categorical=["a"], standardize=False)   # declared: ordinal codes
    assert d.num_inputs == 2
    g = tmp_path / "ok.csv"
    g.write_text("\n".join("7" + r[1:] if r.startswith("x,") else r for r in rows) + "\n")
    x = load_csv(g, val_fraction=0.25, standardize=False)
    vals = np.sort(np.concatenate([x.x_train[:, 0], x.x_val[:, 0]]))
    np.testing.assert_array_equal(vals, np.sort([9, 10, 100, -20, -1, 7, 3, 4]))   # numbers stay numbers
    with pytest.raises(ValueError, match="categorical columns \\['nope'\\] are not in"):
        load_csv(g, categorical=["nope"])
    h = tmp_path / "dupes.csv"
    h.write_text("a,a,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    with pytest.raises(ValueError, match=r"repeats the column name\(s\) \['a'\]"):
        load_csv(h, val_fraction=0.5)


def test_report_on_a_run_shorter_than_its_smoothing_window(tmp_path):
    run_search(resolve(tiny_config(steps=20)), tmp_path, progress=None)
    text = report(tmp_path, plots=True)
    assert "20" in text and (tmp_path / "choices.png").exists()


def test_steps_past_the_step_counter_are_a_config_error():
    with pytest.raises(ValueError, match=r"search.steps must be an int in \[1, 2147483647\], got 1000000000000"):
        resolve(load_config(REPO / "configs" / "quickstart.py", ["search.steps=1000000000000"]))


def test_a_damaged_result_is_named(retrained, tmp_path):
    wd = tmp_path / "w"
    shutil.copytree(retrained, wd)
    (wd / "result.json").write_text('{"finished": tr')
    with pytest.raises(ValueError, match=r"result.json is damaged"):
        retrain(wd, RETRAIN, progress=None)


@pytest.mark.skipif(not TABLE.exists(), reason="the NAS-Bench-201 table is in ../shared (development machines)")
def test_a_table_search_exports_the_benchmark_network(tmp_path):
    cfg = load_config(REPO / "configs" / "nb201_table.py", [f"evaluator.path='{TABLE}'", "search.steps=20",
                                                            "search.chunk=10", "search.checkpoint_every=10"])
    run_search(cfg, tmp_path, progress=None)
    out = export(tmp_path)
    model = json.loads((out / "model.json").read_text())
    assert model["network"] == "nb201" and model["space"]["num_classes"] == 10
    assert model["input"]["kind"] == "image" and model["input"]["shape"] == [32, 32, 3]
    with pytest.raises(Exception, match="data_dir|tensorflow_datasets|tfds") as e:
        retrain(tmp_path, {"epochs": 1, "max_steps": 2}, progress=None)
    assert "AttributeError" not in type(e.value).__name__


def test_a_deleted_metrics_file_is_reported_on_resume(tmp_path):
    import io
    cfg = resolve(tiny_config(steps=20))
    run_search(cfg, tmp_path, progress=None, stop_after=10)
    (tmp_path / "metrics.jsonl").unlink()
    said = io.StringIO()
    assert run_search(cfg, tmp_path, progress=said)["finished"]
    assert "metrics.jsonl is missing: the rows of steps 0-9 are lost" in said.getvalue(), said.getvalue()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(10, 20))


def test_a_too_large_validation_batch_is_named_as_such(tmp_path):
    cfg = resolve(tiny_config(steps=4, val_batch_size=100000))
    with pytest.raises(ValueError, match=r"search.val_batch_size 100000 is larger than the \d+ validation examples; "
                                         r"lower search.val_batch_size"):
        run_search(cfg, tmp_path, progress=None)


# ---- messages (issue 28, low) --------------------------------------------------------------------
def _searched(retrained, tmp_path) -> Path:
    """A copy of the finished search without its retrain and export."""
    wd = tmp_path / "w"
    shutil.copytree(retrained, wd, ignore=shutil.ignore_patterns("retrain", "retrain.json", "export"))
    return wd


def test_a_full_disk_ends_in_one_message(retrained, tmp_path, monkeypatch, caplog):
    import errno
    import logging

    def full(self, *a, **k):
        for _ in range(300):                          # what orbax's threads log on a full disk
            logging.getLogger("absl").error("_SignalingThread.run() raised an exception: RESOURCE_EXHAUSTED")
        raise ValueError("RESOURCE_EXHAUSTED: Error writing local file \"x/_sharding\": Failed to write 3705 bytes "
                         "to file 15: No space left on device [tensorstore_spec='...']")
    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    wd = _searched(retrained, tmp_path)
    with pytest.raises(W.SaveError, match=r"could not save the checkpoint of step 20 in .*retrain/members0/checkpoints: "
                                          r"the disk is full \(No space left on device\); .* free on that file "
                                          r"system. Free space there .* run the same command again") as e:
        retrain(wd, RETRAIN, top=1, seeds=1, progress=None)
    log = str(e.value).split("orbax's log of the failure: ")[1]
    assert Path(log).read_text().count("RESOURCE_EXHAUSTED") >= 300       # kept, in a file
    Path(log).unlink()
    assert "RESOURCE_EXHAUSTED" not in caplog.text                          # not on the terminal
    assert not (wd / "retrain").exists()           # nothing was saved: no settings left to refuse a rerun
    # a search's checkpoint: the same one message, and the half-written step removed
    with pytest.raises(W.SaveError, match=r"could not save the checkpoint of step 10 in .*search/checkpoints: "
                                          r"the disk is full"):
        run_search(resolve(tiny_config(steps=20)), tmp_path / "search", progress=None)
    assert not list((tmp_path / "search" / "checkpoints").glob("10*"))

    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(ocp.StandardCheckpointer, "save", no_space)
    with pytest.raises(W.SaveError, match=r"could not save the arrays params in .*: the disk is full"):
        W.save_tree(tmp_path / "params", {"a": np.zeros(3)})
    monkeypatch.undo()
    logging.getLogger("absl").error("said after a save")    # the filter is gone again
    assert "said after a save" in caplog.text


def _read_only(monkeypatch, wd: Path):
    """``wd`` as on a read-only mount: not writable, and a lock file cannot be created there (root
    can write through permissions, so this emulates the mount)."""
    import errno
    import os
    real_access, real_acquire = os.access, W.WorkdirLock.acquire

    def access(path, mode, *a, **k):
        if Path(path).resolve() == wd.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, *a, **k)

    def acquire(self):
        if self.path.parent.resolve() == wd.resolve():
            raise OSError(errno.EROFS, f"Read-only file system: '{self.path}'")
        return real_acquire(self)
    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(W.WorkdirLock, "acquire", acquire)


def test_a_read_only_finished_work_dir_reports_and_says_what_a_retrain_needs(retrained, tmp_path, monkeypatch):
    wd = tmp_path / "w"
    shutil.copytree(retrained, wd, ignore=shutil.ignore_patterns("*.png", "*.svg"))
    _read_only(monkeypatch, wd)
    text = report(wd, plots=True)                  # "[Errno 30] Read-only file system: .../entropy.png" before
    assert "derived architecture" in text and "plots: none drawn" in text and "read-only" in text
    assert not list(wd.glob("*.png"))
    done = retrain(wd, RETRAIN, top=2, seeds=1, progress=None)      # finished: nothing to write, no lock
    assert done == json.loads((wd / "retrain.json").read_text())
    with pytest.raises(W.WorkdirError, match=rf"{wd} is read-only for this process, and retraining writes its runs "
                                             rf".* make it writable, or retrain a writable copy of it \(cp -r {wd} COPY"):
        retrain(wd, {**RETRAIN, "epochs": 2}, top=2, seeds=1, progress=None)
    assert not (wd / "retrain" / "settings.json").read_text().count('"epochs": 2')
    with pytest.raises(W.WorkdirError, match=r"read-only .* the export goes to .*export: .* give --out DIR outside it"):
        export(wd)
    out = export(wd, tmp_path / "elsewhere")        # nothing written in the work dir: no lock needed
    assert json.loads((out / "architecture.json").read_text())["retrained"] is True


def test_a_damaged_fingerprint_can_be_moved_aside_keeping_the_checkpoints(tmp_path):
    import io
    cfg = resolve(tiny_config(steps=20))
    run_search(cfg, tmp_path, progress=None, stop_after=10)
    (tmp_path / W.FINGERPRINT).write_text('{"format": 1, "conf')
    with pytest.raises(W.WorkdirError, match=rf"fingerprint.json is damaged .* To keep the checkpoints, move it aside "
                                             rf"\(mv {tmp_path}/fingerprint.json {tmp_path}/fingerprint.json.damaged\) "
                                             rf"and run the same command again.*or give another --workdir"):
        run_search(cfg, tmp_path, progress=None)
    (tmp_path / W.FINGERPRINT).rename(tmp_path / W.DAMAGED)        # the way out it names
    said = io.StringIO()
    assert run_search(cfg, tmp_path, progress=said)["finished"]
    assert "its config.json matches, recording this run's fingerprint" in said.getvalue()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(20))            # resumed at step 10, nothing redone
    assert W.read_fingerprint(tmp_path) is not None and (tmp_path / W.DAMAGED).exists()


def test_a_failed_retrain_start_leaves_no_settings_behind(retrained, tmp_path):
    wd = _searched(retrained, tmp_path)
    with pytest.raises(ValueError, match="batch_size 100000 exceeds"):
        retrain(wd, {**RETRAIN, "batch_size": 100000}, top=1, seeds=1, progress=None)
    assert not (wd / "retrain").exists()           # settings.json stayed and refused the next retrain before
    out = retrain(wd, RETRAIN, top=1, seeds=1, progress=None)       # other settings: trains
    assert out["settings"]["batch_size"] == 32 and (wd / "retrain" / "settings.json").exists()

"""Work-dir safety (jaxnas.core.workdir): a resume only of the same run, one process per dir, a torn metrics
line, a damaged newest checkpoint, and SIGKILL of a real CLI process during a checkpoint write and
during a metrics write — each refuses with what to do, or recovers, says so and loses nothing."""
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxnas.cli import main
from jaxnas.config.settings import DEFAULTS, load_config, resolve
from jaxnas.core.workdir import (
    NoRestorableCheckpointError,
    RunMismatchError,
    WorkdirLock,
    WorkdirLockedError,
    differences,
    read_metrics,
)
from jaxnas.runner import run_search
from tests.helpers.tiny import tiny_config

# orbax leaves the coroutines of a failed restore to the garbage collector, which may run in any test
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
REPO = Path(__file__).resolve().parents[1]
CLI_CONFIG = str(REPO / "tests/helpers/tiny_cli_config.py")   # tiny_config("reinforce"): 40 steps, chunk 10
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    """The work dir of the uninterrupted tiny run (40 steps; the tests that use it only read it)."""
    path = tmp_path_factory.mktemp("ref")
    run_search(resolve(tiny_config()), path, progress=None)
    return path


@pytest.fixture(scope="module")
def reference(reference_dir):
    """The result of the uninterrupted tiny run."""
    return json.loads((reference_dir / "result.json").read_text())


@pytest.fixture(scope="module")
def partial_dirs(tmp_path_factory):
    """``copy(n, dest)``: a copy of a work dir stopped after n steps of the tiny run (each made once)."""
    made = {}

    def copy(n, dest):
        if n not in made:
            made[n] = tmp_path_factory.mktemp(f"at{n}")
            run_search(resolve(tiny_config()), made[n], progress=None, stop_after=n)
        shutil.copytree(made[n], dest)
        return dest
    return copy


def _cli(workdir, *args):
    return [sys.executable, "-m", "jaxnas", "search", CLI_CONFIG, "--quiet", "--workdir", str(workdir), *args]


def _steps(workdir):
    return _steps_of((Path(workdir) / "metrics.jsonl").read_bytes())


def _steps_of(data: bytes):
    return [json.loads(l)["step"] for l in data.decode().splitlines()]


# ---- a resume of another run is refused ----------------------------------------------------------
@pytest.mark.parametrize("overrides,keys", [
    (["seed=1"], ["seed: 0 -> 1"]),
    (["strategy.lr=0.1"], ["strategy.lr: 0.05 -> 0.1"]),
    (["search.steps=60"], ["search.steps: 40 -> 60"]),
    (["data.max_train=1000"], ["data.max_train: 2000 -> 1000"]),
    (["seed=3", "optimizer.lr=0.1"], ["seed: 0 -> 3", "optimizer.lr: 0.01 -> 0.1"]),
    # these gave a raw orbax error before (another state structure): now the fingerprint stops them first
    (["strategy.name='random'"], ["strategy.lr: 0.05 -> <absent>", "strategy.name: \"reinforce\" -> \"random\""]),
    (["space.widths=[4, 8]"], ["space.widths: [4, 8, 16] -> [4, 8]"]),
    (["space.num_layers=3"], ["space.num_layers: 2 -> 3"]),
])
def test_changed_config_is_refused(reference_dir, overrides, keys):
    tmp_path = reference_dir      # a finished run: re-running it with another config used to rate the old state
    config_before = (tmp_path / "config.json").read_text()
    result_before = json.loads((tmp_path / "result.json").read_text())["state_digest"]
    with pytest.raises(RunMismatchError) as e:
        run_search(resolve(tiny_config(), overrides), tmp_path, progress=None)
    msg = str(e.value)
    for k in keys:
        assert k in msg, msg
    assert f"in {len(keys)} key(s)" in msg and "--force-restart" in msg and "--workdir" in msg
    assert (tmp_path / "config.json").read_text() == config_before   # still the original run
    assert json.loads(config_before)["seed"] == 0 and not (tmp_path / ".lock").exists()
    assert json.loads((tmp_path / "result.json").read_text())["state_digest"] == result_before


def test_differences_ignore_neutral_keys_and_absent_defaults():
    cfg = resolve(tiny_config())
    old = {"config": json.loads(json.dumps(cfg)), "data": None}
    del old["config"]["data"]["split_seed"]             # a work dir from before data.split_seed
    new = {"config": resolve(tiny_config(), ["search.chunk=5", "data.test_path='t.npz'"]), "data": None}
    assert differences(old, new, DEFAULTS) == []
    new = {"config": resolve(tiny_config(), ["data.split_seed=3"]), "data": None}
    assert differences(old, new, DEFAULTS) == [("data.split_seed", "<absent>", 3)]


def test_same_run_resumes_and_neutral_keys_do_not_matter(tmp_path, reference, partial_dirs):
    tmp_path = partial_dirs(20, tmp_path / "w")
    # chunk, checkpoint schedule and evaluation batch do not change the searched state
    cfg = resolve(tiny_config(), ["search.chunk=5", "search.checkpoint_every=5", "search.eval_batch_size=100"])
    out = io.StringIO()
    result = run_search(cfg, tmp_path, progress=out)
    assert "resuming from step 20" in out.getvalue()
    assert result["state_digest"] == reference["state_digest"]
    assert _steps(tmp_path) == list(range(40))
    assert json.loads((tmp_path / "config.json").read_text())["search"]["chunk"] == 5


def test_work_dir_without_fingerprint_is_checked_against_its_config_json(tmp_path, partial_dirs):
    w = partial_dirs(20, tmp_path / "w")
    (w / "fingerprint.json").unlink()                   # as an older jaxnas left it
    with pytest.raises(RunMismatchError, match=r"(?s)config\.json.*seed: 0 -> 1"):
        run_search(resolve(tiny_config(), ["seed=1"]), w, progress=None)
    out = io.StringIO()
    assert run_search(resolve(tiny_config()), w, progress=out, stop_after=20) == {"step": 20, "finished": False}
    assert "no fingerprint.json (written by an older jaxnas): its config.json matches" in out.getvalue()
    assert json.loads((w / "fingerprint.json").read_text())["config"]["seed"] == 0


def test_force_restart_starts_over(tmp_path, reference, capsys):
    run_search(resolve(tiny_config(), ["seed=1"]), tmp_path, progress=None, stop_after=20)
    assert main(["search", CLI_CONFIG, "--quiet", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxnas: error:") and "seed: 1 -> 0" in err and "--force-restart" in err
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 1
    assert main(["search", CLI_CONFIG, "--quiet", "--workdir", str(tmp_path), "--force-restart"]) == 0
    out, err = capsys.readouterr()
    assert "--force-restart: deleted checkpoints, metrics.jsonl, fingerprint.json, config.json" in err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["state_digest"] == reference["state_digest"]     # the same as a fresh run
    assert _steps(tmp_path) == list(range(40))
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 0


def test_changed_data_file_is_refused_moved_one_is_not(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 6)).astype(np.float32), rng.integers(0, 2, 400)
    np.savez(tmp_path / "a.npz", X=x, y=y)
    cfg = tiny_config(steps=20)
    cfg["data"] = {"name": "tabular", "path": str(tmp_path / "a.npz"), "val_fraction": 0.2}
    work = tmp_path / "work"
    run_search(resolve(cfg), work, progress=None, stop_after=10)
    np.savez(tmp_path / "a.npz", X=x + np.float32(1.0), y=y)   # same config, other data
    with pytest.raises(RunMismatchError, match=r"data:x_\w+\.sha256"):
        run_search(resolve(cfg), work, progress=None)
    np.savez(tmp_path / "b.npz", X=x, y=y)                 # the original data, moved
    cfg["data"]["path"] = str(tmp_path / "b.npz")
    assert run_search(resolve(cfg), work, progress=None)["finished"]


def test_unwritable_workdir_is_a_cli_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["search", CLI_CONFIG, "--quiet", "--workdir", str(tmp_path / "file" / "work")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxnas: error: cannot use") and "writable --workdir" in err
    if os.geteuid() != 0:            # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert main(["search", CLI_CONFIG, "--quiet", "--workdir", str(ro / "work")]) == 2
        assert "jaxnas: error:" in capsys.readouterr().err


# ---- one process per work dir --------------------------------------------------------------------
def test_second_process_is_refused_and_a_dead_owners_lock_is_cleared(tmp_path):
    long = ["search.steps=100000", "search.checkpoint_every=100000"]
    first = subprocess.Popen(_cli(tmp_path, *long), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == first.pid
        second = subprocess.run(_cli(tmp_path, *long), cwd=REPO, env=ENV, capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2
        assert f"in use by another jaxnas process (pid {first.pid} on host" in second.stderr, second.stderr
        assert first.poll() is None                        # the first one runs on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed owner's lock is left behind, naming a dead pid: cleared, said, and the run goes on
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == first.pid
    out = io.StringIO()
    res = run_search(resolve(tiny_config(), long), tmp_path, progress=out, stop_after=20)
    assert res == {"step": 20, "finished": False}
    assert f"cleared a stale lock {tmp_path / '.lock'} of pid {first.pid}" in out.getvalue()
    assert "no longer running" in out.getvalue()
    assert not (tmp_path / ".lock").exists()               # released at exit


def test_lock_is_held_in_process_and_released_on_exceptions(tmp_path):
    with WorkdirLock(tmp_path):
        with pytest.raises(WorkdirLockedError, match=f"pid {os.getpid()}"):
            run_search(resolve(tiny_config()), tmp_path, progress=None)
    with pytest.raises(ValueError):                         # fails inside the lock ...
        run_search(resolve(tiny_config(), ["optimizer.name='nope'"]), tmp_path, progress=None)
    assert not (tmp_path / ".lock").exists()               # ... and releases it
    # a lock file naming a pid that no longer exists (and holding no flock)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    with WorkdirLock(tmp_path, io.StringIO()) as lock:
        assert f"pid {dead.pid}" in lock.stream.getvalue() and "no longer running" in lock.stream.getvalue()
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


# ---- torn metrics line ---------------------------------------------------------------------------
def test_torn_last_metrics_line_is_skipped_by_resume_and_report(tmp_path, reference, capsys, partial_dirs):
    tmp_path = partial_dirs(20, tmp_path / "w")
    with open(tmp_path / "metrics.jsonl", "a") as f:      # a kill inside the write of step 20's row
        f.write('{"step": 20, "phase": "both", "weights/train_lo')
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "note: skipped a torn last line" in out and "steps logged: 20" in out
    progress = io.StringIO()
    result = run_search(resolve(tiny_config()), tmp_path, progress=progress)
    assert "skipped a torn last line" in progress.getvalue() and "line 21" in progress.getvalue()
    assert result["state_digest"] == reference["state_digest"]
    assert _steps(tmp_path) == list(range(40))
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    assert "note:" not in capsys.readouterr().out


def test_metrics_reader(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 0}\n{"step": 1}')                # complete JSON, no newline yet: kept
    assert read_metrics(p) == ([{"step": 0}, {"step": 1}], None)
    p.write_text('{"step": 0}\n{"step": 1}\n\x00\x00\x00')   # NULs of a lost page: a torn line
    rows, note = read_metrics(p)
    assert rows == [{"step": 0}, {"step": 1}] and "line 3" in note
    p.write_text('{"step": 0}\n{"ste\n{"step": 2}\n')         # not the last line: an error, naming it
    with pytest.raises(ValueError, match="line 2 is not a metrics row"):
        read_metrics(p)


# ---- damaged newest checkpoint -------------------------------------------------------------------
def _damage(step_dir: Path, how: str):
    if how == "truncate":          # every data file of the OCDBT store cut in half
        for f in (step_dir / "default" / "ocdbt.process_0" / "d").iterdir():
            os.truncate(f, f.stat().st_size // 2)
    elif how == "delete":
        (step_dir / "default" / "_METADATA").unlink()


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_damaged_newest_checkpoint_falls_back(tmp_path, reference, how, partial_dirs):
    tmp_path = partial_dirs(30, tmp_path / "w")      # checkpoints 20 and 30
    _damage(tmp_path / "checkpoints" / "30", how)
    out = io.StringIO()
    result = run_search(resolve(tiny_config()), tmp_path, progress=out)
    log = out.getvalue()
    assert f"checkpoint {tmp_path / 'checkpoints' / '30'} does not restore" in log, log
    assert "falling back to checkpoint step 20" in log and "resuming from step 20" in log
    assert result["state_digest"] == reference["state_digest"]
    assert _steps(tmp_path) == list(range(40))
    assert [p.name.split("-")[0] for p in (tmp_path / "broken_checkpoints").iterdir()] == ["30"]  # kept aside


def test_no_checkpoint_restores(tmp_path, partial_dirs):
    tmp_path = partial_dirs(30, tmp_path / "w")
    for step in ("20", "30"):
        _damage(tmp_path / "checkpoints" / step, "truncate")
    with pytest.raises(NoRestorableCheckpointError) as e:
        run_search(resolve(tiny_config()), tmp_path, progress=io.StringIO())
    assert str(tmp_path / "checkpoints") in str(e.value) and "--force-restart" in str(e.value)
    assert "step 30:" in str(e.value) and "step 20:" in str(e.value)


# ---- SIGKILL of a real CLI process ---------------------------------------------------------------
def _wait(proc, cond, what, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.0005)
    raise AssertionError(f"timed out waiting for {what}")


def _saved(ck: Path):
    return [int(n) for n in os.listdir(ck) if n.isdigit()] if ck.exists() else []


def test_sigkill_during_checkpoint_and_metrics_writes_then_resume(tmp_path):
    """Kill -9 (1) while orbax writes a checkpoint (its ``<step>.orbax-checkpoint-tmp`` dir exists; tried
    until a kill leaves it behind, i.e. landed mid-write), (2) right as ``metrics.jsonl`` grows (after a
    chunk's rows, before its checkpoint), whose last line is then cut mid-row as a kill inside that
    ``write(2)`` leaves it; then resume: the final state equals an uninterrupted run's."""
    args = ["search.steps=400", "search.chunk=10", "search.checkpoint_every=10"]
    ref = run_search(load_config(REPO / CLI_CONFIG, args), tmp_path / "ref", progress=None)
    work = tmp_path / "killed"
    ck = work / "checkpoints"

    def start():
        return subprocess.Popen(_cli(work, *args), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    # (1) during a checkpoint write
    mid_write = False
    for attempt in range(4):
        proc = start()
        floor = max(_saved(ck), default=0) + 30

        def writing():
            try:
                return any(n.endswith(".orbax-checkpoint-tmp") and int(n.split(".")[0]) >= floor
                           for n in os.listdir(ck))
            except (FileNotFoundError, ValueError):
                return False
        hit = _wait(proc, writing, "a checkpoint write")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert hit, f"the run ended before a checkpoint write could be caught: {proc.stderr.read()}"
        if any(n.endswith(".orbax-checkpoint-tmp") for n in os.listdir(ck)):
            mid_write = True
            print(f"kill {attempt + 1} landed inside a checkpoint write")
            break
    assert mid_write, "no kill landed inside a checkpoint write in 4 tries"
    assert not (work / "result.json").exists()
    at_kill = max(_saved(ck))

    # (2) during a metrics write: resume, kill as soon as metrics.jsonl grows past the next checkpoint
    proc = start()
    assert _wait(proc, lambda: max(_saved(ck), default=0) >= at_kill + 30, "progress after the resume")
    size = (work / "metrics.jsonl").stat().st_size
    assert _wait(proc, lambda: (work / "metrics.jsonl").stat().st_size != size, "a metrics write")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = (work / "metrics.jsonl").read_bytes()
    print(f"killed with metrics up to step {_steps_of(data)[-1]}, checkpoints {sorted(_saved(ck))}")
    if data.endswith(b"\n"):      # the kill came after the write(2) (nearly always): tear it as one inside would
        last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
        (work / "metrics.jsonl").write_bytes(data[:len(data) - 1 - len(last) // 2])
    assert not (work / "result.json").exists()

    proc = start()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "skipped a torn last line" in err
    result = json.loads((work / "result.json").read_text())
    assert result["state_digest"] == ref["state_digest"]
    assert result["arch"] == ref["arch"] and result["val_loss"] == ref["val_loss"]
    assert _steps(work) == list(range(400))
    assert not (work / ".lock").exists()


def test_a_resume_compiles_the_first_runs_program(tmp_path, partial_dirs):
    """The runner places fresh and restored states alike (orbax returns committed arrays), so the
    resumed chunk lowers to the same program as the first run's: the compilation cache's key is the
    same and a resume loads it instead of compiling."""
    import jax

    from jaxnas import runner
    from jaxnas.config.experiment import build
    w = partial_dirs(20, tmp_path / "w")
    cfg = resolve(tiny_config())
    exp = build(cfg)
    search, data = exp.search, exp.data
    fresh = search.replicate(search.init(jax.random.key(0)))
    restored = search.replicate(runner._restore(runner._checkpoint_manager(w), 20, fresh))
    idx = np.arange(10 * 32).reshape(10, 32)
    batches = search.shard_batches(((data.x_train[idx], data.y_train[idx]), (data.x_val[idx], data.y_val[idx])))
    f = search._chunk_fn("both")[0]
    assert f.lower(fresh, search.inputs, batches).as_text() == f.lower(restored, search.inputs, batches).as_text()
    assert all(x.committed for x in jax.tree.leaves(fresh))


def test_a_changed_strategy_default_is_refused_with_the_option_that_resumes(tmp_path):
    """The strategy options a config leaves at their defaults are recorded with the run: after a jaxnas
    that changed one of those defaults (simulated by editing the record), a resume is refused naming
    the option, and passing the old value resumes the run as it started."""
    w = tmp_path / "w"
    run_search(resolve(tiny_config("reinforce", steps=20)), w, progress=None, stop_after=10)
    fp = json.loads((w / "fingerprint.json").read_text())
    assert fp["strategy_defaults"]["decay"] == 0.95 and "lr" not in fp["strategy_defaults"]  # lr is given
    fp["strategy_defaults"]["decay"] = 0.9           # the default when the run started
    (w / "fingerprint.json").write_text(json.dumps(fp))
    with pytest.raises(RunMismatchError, match=r"(?s)default of strategy.decay: 0.9 -> 0.95.*"
                                               r"to resume it as it started, pass strategy.decay=0.9"):
        run_search(resolve(tiny_config("reinforce", steps=20)), w, progress=None)
    cfg = tiny_config("reinforce", steps=20)
    cfg["strategy"]["decay"] = 0.9
    out = run_search(resolve(cfg), w, progress=None)
    assert out["finished"] and out["step"] == 20
    # an older fingerprint without the record: the run resumes and the record is added
    w2 = tmp_path / "older"
    run_search(resolve(tiny_config("reinforce", steps=20)), w2, progress=None, stop_after=10)
    fp = json.loads((w2 / "fingerprint.json").read_text())
    del fp["strategy_defaults"]
    (w2 / "fingerprint.json").write_text(json.dumps(fp))
    assert run_search(resolve(tiny_config("reinforce", steps=20)), w2, progress=None)["finished"]
    assert json.loads((w2 / "fingerprint.json").read_text())["strategy_defaults"]["decay"] == 0.95

"""One search over two processes (jax.distributed on this machine: a local coordinator, 4 simulated CPU
devices per process, gloo collectives) through ``jaxnas.runner.run_search``, as on two hosts:

- a reward-only strategy (REINFORCE on a NAS-Bench-201 table, no data) and a gradient strategy
  (AdvantageNAS on the tiny MLP supernet: each process feeds its own rows of every batch) end with the
  same state on every process (bitwise), and equal the same search in ONE process with 8 simulated
  devices on the same global batches;
- process 1 SIGKILLed mid-run (after a checkpoint, before the next), both restarted: the resumed run
  equals the uninterrupted two-process run bit for bit (state, result, metrics.jsonl);
- only process 0 writes the work dir; the fingerprint records the 8 lanes.

Processes: launch A (2 processes: both searches, then the killed one) and the 8-device reference (1
process) run side by side, then launch B (2 processes: three configs every process must refuse, then
the resume). A persistent compilation cache shares compiled programs between launches (launch B
compiles nothing). Cost, measured on the shared 2-core dev machine: 57-59 s of CPU (user 47-49 s + sys
10-11 s) for the whole file; wall 165-210 s there at a load average of 15-25 (the test got 28-34 % of
a core). Measured differences two processes vs one: at most 6e-8 (one float32 ulp near 1), integer
leaves (step, keys, counters) and every logged sample equal.
"""
import gzip
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import chex
import numpy as np
import pytest

from tests.helpers.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]
CHILD = REPO / "tests" / "helpers" / "distributed_child.py"
LAUNCH_TIMEOUT = 900        # seconds per launch: generous for a loaded 2-core machine
SURVIVOR_GRACE = 5          # seconds the survivor of a kill gets before it is killed too (jax.distributed
                            # aborts it itself after its heartbeat timeout: ~60 s here)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _table(path: Path) -> Path:
    """A synthetic NAS-Bench-201 table over all 15,625 cells (the columns the table evaluator reads)."""
    from jaxnas.spaces.cells import NasBench201Space
    space = NasBench201Space.create()
    vals = np.random.default_rng(0).uniform(10, 90, (15625, 4)).round(4)
    with gzip.open(path, "wt") as f:
        f.write("index,arch,cifar10_valid_12ep,cifar10_test,cifar100_test,imagenet16_test\n")
        for i, (a, v) in enumerate(zip(space.all_archs(), vals)):
            f.write(f"{i},{space.encode(a)}," + ",".join(map(str, v)) + "\n")
    return path


class Launch:
    """``n`` child processes of one plan, each with ``devices`` simulated CPU devices."""

    def __init__(self, tmp: Path, name: str, runs: list, n: int, devices: int):
        self.name, self.dir = name, tmp / name
        self.dir.mkdir()
        plan = {"port": _free_port() if n > 1 else None, "num_processes": n, "runs": runs}
        (self.dir / "plan.json").write_text(json.dumps(plan))
        env = {**os.environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
               "JAX_COMPILATION_CACHE_DIR": str(tmp / "jax_cache"),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
        env.pop("JAXNAS_DISTRIBUTED", None)
        self.procs = []
        for i in range(n):
            out, err = open(self.dir / f"out{i}", "w"), open(self.dir / f"err{i}", "w")
            self.procs.append(subprocess.Popen([sys.executable, str(CHILD), str(self.dir / "plan.json"), str(i)],
                                               env=env, stdout=out, stderr=err, cwd=str(REPO)))
            out.close()
            err.close()

    def logs(self) -> str:
        return "".join(f"\n--- {self.name} process {i} (rc {p.returncode}) stderr, last 3000 chars:\n"
                       + (self.dir / f"err{i}").read_text()[-3000:] for i, p in enumerate(self.procs))

    def wait(self, timeout=LAUNCH_TIMEOUT):
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for q in self.procs:
                    q.kill()
                    q.wait()
                pytest.fail(f"{self.name} did not finish within {timeout} s" + self.logs())
        return [p.returncode for p in self.procs]

    def results(self) -> dict:
        """``{(run name, process): result}`` from every process's stdout."""
        out = {}
        for i in range(len(self.procs)):
            for line in (self.dir / f"out{i}").read_text().splitlines():
                if line.startswith("{"):
                    r = json.loads(line)
                    out[r["name"], r["process"]] = r["result"] if "result" in r else r["error"]
        return out


def _state(prefix) -> dict:
    with np.load(f"{prefix}.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    table = _table(tmp / "nb201.csv.gz")
    # SGD on the policy: at the first step REINFORCE's baseline is the step's mean reward, so the
    # advantages sum to ~0 and a logit's gradient is rounding noise; Adam would scale that noise to
    # +-lr (its first step is lr * sign(g)), turning ulp differences between reduction orders into
    # different policies. SGD keeps them at ulps.
    reinforce = {"space": {"name": "nb201"}, "evaluator": {"name": "table", "path": str(table)},
                 "strategy": {"name": "reinforce", "optimizer": "sgd", "lr": 0.5},
                 "search": {"steps": 12, "chunk": 4, "checkpoint_every": 12, "devices": "all"}}
    advantage = tiny_config("advantage", steps=24, chunk=6, checkpoint_every=12, devices="all")

    def run(name, cfg, where, **kw):
        return {"name": name, "config": cfg, "workdir": str(tmp / where / name), "dump": str(tmp / where / name),
                **kw}
    t0 = time.perf_counter()
    # SIGTERM to process 1 only (a preemption notice), then the same command: resumes to the uninterrupted run
    termed_dir = str(tmp / "two" / "termed")
    a = Launch(tmp, "two", [run("reinforce", reinforce, "two"), run("advantage", advantage, "two"),
                            {**run("termed_stop", advantage, "two", term_at=6, term_process=1), "workdir": termed_dir},
                            {**run("termed", advantage, "two"), "workdir": termed_dir},
                            run("killed", advantage, "two", kill_at=12, kill_process=1)], n=2, devices=4)
    ref = Launch(tmp, "one", [run("reinforce", reinforce, "one"), run("advantage", advantage, "one")],
                 n=1, devices=8)
    rc_ref = ref.wait()
    assert rc_ref == [0], "the 8-device reference failed" + ref.logs()
    # launch A: process 1 kills itself in the last run; process 0 then stops on its own or is killed
    killed = a.procs[1]
    try:
        killed.wait(LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        a.wait(1)
    t_kill = time.perf_counter()
    survivor_stopped_itself = True
    try:
        a.procs[0].wait(SURVIVOR_GRACE)
    except subprocess.TimeoutExpired:
        survivor_stopped_itself = False
        a.procs[0].kill()
        a.procs[0].wait()
    sys.stderr.write(f"\ntest_distributed: process 0 {'stopped' if survivor_stopped_itself else 'was killed'} "
                     f"{time.perf_counter() - t_kill:.1f} s after process 1 died (rc {a.procs[0].returncode})\n")
    assert killed.returncode == -9, "process 1 should have SIGKILLed itself mid-run" + a.logs()
    done_a = a.results()
    assert {("reinforce", 0), ("reinforce", 1), ("advantage", 0), ("advantage", 1)} <= set(done_a), a.logs()
    killed_dir = tmp / "two" / "killed"
    steps_at_kill = sorted(int(p.name) for p in (killed_dir / "checkpoints").iterdir() if p.name.isdigit())
    lock_left = (killed_dir / ".lock").exists()   # process 0 died holding it, or released it on its error
    # launch B: two configs every process must refuse (before compiling anything), then the resume
    bad_batch = tiny_config("advantage", steps=24, chunk=6, checkpoint_every=12, devices="all", batch_size=36)
    some_devices = tiny_config("advantage", steps=24, chunk=6, checkpoint_every=12, devices=4)
    b = Launch(tmp, "resumed", [run("bad_batch", bad_batch, "bad", expect_error=True),
                                run("some_devices", some_devices, "bad", expect_error=True),
                                run("other_seed", advantage, "bad", expect_error=True,
                                    process_overrides={"1": ["seed=1"]}),
                                run("killed", advantage, "two")], n=2, devices=4)
    assert b.wait() == [0, 0], "the restarted processes failed" + b.logs()
    wall = time.perf_counter() - t0
    sys.stderr.write(f"\ntest_distributed: launches took {wall:.1f} s\n")
    return {"tmp": tmp, "two": done_a, "one": ref.results(), "resumed": b.results(),
            "resumed_log": (b.dir / "err0").read_text(), "steps_at_kill": steps_at_kill, "lock_left": lock_left,
            "launch_a_log0": (a.dir / "err0").read_text()[-3000:],
            "survivor_stopped_itself": survivor_stopped_itself, "logs": a.logs() + b.logs(), "wall": wall}


@pytest.mark.parametrize("name", ["reinforce", "advantage"])
def test_every_process_ends_with_the_same_state(runs, name):
    tmp = runs["tmp"]
    s0, s1 = _state(tmp / "two" / f"{name}.0"), _state(tmp / "two" / f"{name}.1")
    chex.assert_trees_all_equal(s0, s1)
    r0, r1 = runs["two"][name, 0], runs["two"][name, 1]
    assert r0 == r1 and r0["finished"], (r0, r1)
    assert r0["state_digest"] == r1["state_digest"]


@pytest.mark.parametrize("name", ["reinforce", "advantage"])
def test_two_processes_equal_one_process_with_eight_devices(runs, name):
    tmp = runs["tmp"]
    two, one = _state(tmp / "two" / f"{name}.0"), _state(tmp / "one" / f"{name}.0")
    assert sorted(two) == sorted(one)
    ints = {k: v for k, v in two.items() if not np.issubdtype(v.dtype, np.floating)}
    chex.assert_trees_all_equal(ints, {k: one[k] for k in ints})          # step, key, evaluations, counters
    chex.assert_trees_all_close(two, one, rtol=1e-5, atol=1e-6)           # gloo vs in-process reductions
    r2, r1 = runs["two"][name, 0], runs["one"][name, 0]
    assert r2["arch"] == r1["arch"] and r2["evaluations"] == r1["evaluations"], (r2, r1)
    if name == "reinforce":
        assert r2["evaluations"] == 8 * 12, r2          # one table query per sample (8 devices) and step
    m2 = [json.loads(l) for l in (tmp / "two" / name / "metrics.jsonl").read_text().splitlines()]
    m1 = [json.loads(l) for l in (tmp / "one" / name / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in m2] == list(range(r2["step"])) and len(m1) == len(m2)
    assert [r["sample/arch"] for r in m2] == [r["sample/arch"] for r in m1]   # the same 8 samples per step
    for key in m2[0]:
        if key not in ("step", "phase", "sample/arch"):
            np.testing.assert_allclose([r[key] for r in m2], [r[key] for r in m1], rtol=1e-5, atol=1e-6,
                                       err_msg=key)


def test_feed_puts_the_global_batch_on_the_mesh(runs):
    assert runs["one"]["feed", 0] is True      # one process, 8 devices: per-device gathers == the batch


def test_resume_after_a_killed_process_equals_uninterrupted(runs):
    tmp = runs["tmp"]
    assert runs["steps_at_kill"] and max(runs["steps_at_kill"]) < 24, runs["steps_at_kill"]
    assert f"resuming from step {max(runs['steps_at_kill'])}" in runs["resumed_log"], runs["resumed_log"][-2000:]
    # process 0 of launch A either died holding the lock (the resume clears it as stale) or released it:
    # the per-chunk all-gather of stop signals (jaxnas.engine.distributed.any_stop) raises when process
    # 1 is gone, and the lock goes in run_search's finally
    if runs["lock_left"]:
        assert "cleared a stale lock" in runs["resumed_log"], runs["resumed_log"][-2000:]
    else:
        assert "Traceback" in runs["launch_a_log0"] or "error" in runs["launch_a_log0"].lower(), \
            runs["launch_a_log0"]
    for p in (0, 1):
        chex.assert_trees_all_equal(_state(tmp / "two" / f"killed.{p}"), _state(tmp / "two" / "advantage.0"))
        r, ref = runs["resumed"]["killed", p], runs["two"]["advantage", 0]
        assert r == ref, (r, ref)
    assert (tmp / "two" / "killed" / "metrics.jsonl").read_text() == \
        (tmp / "two" / "advantage" / "metrics.jsonl").read_text()


def test_sigterm_to_one_process_stops_both_at_the_same_step_and_resumes_exactly(runs):
    """A preemption notice (SIGTERM) to process 1 alone: both processes stop at the same chunk boundary
    with a checkpoint of it, and the resumed run equals the uninterrupted one."""
    stops = [runs["two"]["termed_stop", p] for p in (0, 1)]
    assert stops[0] == stops[1] and 6 <= stops[0]["stopped_at"] < 24, stops
    for p in (0, 1):
        assert runs["two"]["termed", p] == runs["two"]["advantage", p], p


def test_process_zero_writes_the_work_dir(runs):
    wd = runs["tmp"] / "two" / "advantage"
    assert not (wd / ".lock").exists()                       # released after every process was done
    assert json.loads((wd / "result.json").read_text())["state_digest"] == runs["two"]["advantage", 1]["state_digest"]
    fp = json.loads((wd / "fingerprint.json").read_text())
    assert fp["lanes"] == {"devices": 8, "samples": 8}, fp.get("lanes")
    assert json.loads((runs["tmp"] / "one" / "advantage" / "fingerprint.json").read_text())["lanes"] == fp["lanes"]
    assert not list(wd.glob(".*.tmp-*"))


@pytest.mark.parametrize("name,says", [
    ("bad_batch", "search.batch_size 36 must divide evenly over the 8 devices of 2 processes"),
    ("some_devices", "search.devices=4 uses 4 of the 8 devices of the 2 processes"),
    ("other_seed", "process(es) [1] have another config or data than process 0: start every process with the "
                   "same config file"),
])
def test_every_process_refuses_a_config_that_cannot_run(runs, name, says):
    for p in (0, 1):
        err = runs["resumed"][name, p]
        assert err is not None and says in err, (p, err)
    assert not (runs["tmp"] / "bad" / name / "checkpoints").exists()


def test_unreachable_coordinator_says_what_to_change(tmp_path):
    """Process 1 of 2 with no process 0 listening: a jaxnas error within the timeout (jax.distributed
    itself would abort the process with a bare DEADLINE_EXCEEDED)."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnas", "search", str(REPO / "tests/helpers/tiny_cli_config.py"), "--quiet",
         "--workdir", str(tmp_path / "wd"), "search.distributed.enabled=True",
         f"search.distributed.coordinator_address='127.0.0.1:{port}'", "search.distributed.num_processes=2",
         "search.distributed.process_id=1", "search.distributed.initialization_timeout=2"],
        env=env, capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"process 1 could not reach the coordinator at 127.0.0.1:{port} within 2 s" in proc.stderr, proc.stderr
    assert "start process 0" in proc.stderr and "initialization_timeout" in proc.stderr
    assert not (tmp_path / "wd").exists()          # nothing written before the processes met

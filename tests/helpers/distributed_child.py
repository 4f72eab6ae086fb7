"""One process of tests/test_distributed.py: runs searches through ``jaxnas.runner.run_search``.

``python distributed_child.py PLAN.json PROCESS_ID`` (XLA_FLAGS set by the parent). PLAN: ``{"port": int
or null (one process, no jax.distributed), "num_processes": int, "runs": [{"name", "config" (raw),
"overrides", "workdir", "dump" (npz path prefix), "kill_at" (this process SIGKILLs itself once a chunk
starting at or after that step has run, before its checkpoint; only on ``kill_process``),
"process_overrides" ({process: [overrides]}),
"expect_error" (print the ValueError the run stops with instead of a result)}]}``.

Per finished run it writes ``<dump>.<process>.npz`` (this process's copy of the final state, keys as
raw data) and prints one JSON line ``{"name", "process", "result"}``.
"""
import json
import os
import signal
import sys
import time
from pathlib import Path

T0 = time.perf_counter()

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxnas import runner  # noqa: E402
from jaxnas.config.settings import resolve  # noqa: E402
from jaxnas.core.signals import StopRequested  # noqa: E402

plan = json.loads(Path(sys.argv[1]).read_text())
pid = int(sys.argv[2])
dist = []
if plan["port"] is not None:
    dist = ["search.distributed.enabled=True", f"search.distributed.coordinator_address='127.0.0.1:{plan['port']}'",
            f"search.distributed.num_processes={plan['num_processes']}", f"search.distributed.process_id={pid}",
            "search.distributed.initialization_timeout=120"]

captured = []
_finish, _check = runner.finish, runner.check_metrics


def finish(exp, state, workdir, seconds, write=True):
    captured.append(state)
    return _finish(exp, state, workdir, seconds, write)


runner.finish = finish


def dump(state, path):
    flat = {}
    for i, (kp, leaf) in enumerate(jax.tree_util.tree_leaves_with_path(state)):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        shards = [np.asarray(s.data) for s in leaf.addressable_shards] if isinstance(leaf, jax.Array) else [leaf]
        for s in shards[1:]:          # every device of this process holds the same bits
            assert np.array_equal(s, shards[0]), ("not replicated", jax.tree_util.keystr(kp))
        flat[f"{i:03d}{jax.tree_util.keystr(kp)}"] = shards[0]
    np.savez(path, **flat)


if plan["port"] is None:      # one process: feed() puts exactly the gathered global batch on the mesh
    from jaxnas.data import gather
    from jaxnas.engine.distributed import feed
    from jaxnas.engine.lanes import make_mesh
    arrays = (np.arange(40 * 3, dtype=np.float32).reshape(40, 3), np.arange(40) % 7)
    idx = np.random.default_rng(0).permutation(40)[:32].reshape(2, 16)
    fed = feed(arrays, idx, make_mesh())
    ok = all(np.array_equal(np.asarray(f), g) and f.sharding.spec[1] == "data"
             for f, g in zip(fed, gather(arrays, idx)))
    print(json.dumps({"name": "feed", "process": 0, "result": ok}), flush=True)

for run in plan["runs"]:
    kill_at = run.get("kill_at") if pid == run.get("kill_process", 1) else None
    term_at = run.get("term_at") if pid == run.get("term_process", 1) else None
    termed: list = []

    def check(metrics, step0, kill_at=kill_at, term_at=term_at, termed=termed):
        if kill_at is not None and step0 >= kill_at:
            sys.stderr.write(f"process {pid}: SIGKILL at the chunk from step {step0}\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if term_at is not None and step0 >= term_at and not termed:   # a preemption notice to this process only
            termed.append(step0)
            os.kill(os.getpid(), signal.SIGTERM)
        return _check(metrics, step0)
    runner.check_metrics = check
    cfg = resolve(run["config"], run.get("overrides", []) + run.get("process_overrides", {}).get(str(pid), []) + dist)
    captured.clear()
    t = time.perf_counter()
    if run.get("expect_error"):      # a run that must stop every process with a message
        try:
            runner.run_search(cfg, run["workdir"], progress=sys.stderr if pid == 0 else None)
            error = None
        except ValueError as e:
            error = f"{type(e).__name__}: {e}"
        print(json.dumps({"name": run["name"], "process": jax.process_index(), "error": error}), flush=True)
        continue
    try:
        result = runner.run_search(cfg, run["workdir"], progress=sys.stderr if pid == 0 else None)
    except StopRequested as e:       # SIGTERM: every process stops at the same step with a checkpoint
        print(json.dumps({"name": run["name"], "process": jax.process_index(), "result": {"stopped_at": e.step}}),
              flush=True)
        continue
    result.pop("search_seconds", None)
    if captured:
        dump(captured[-1], f"{run['dump']}.{jax.process_index()}.npz")
    print(json.dumps({"name": run["name"], "process": jax.process_index(), "result": result,
                      "seconds": time.perf_counter() - t, "since_start": time.perf_counter() - T0}), flush=True)

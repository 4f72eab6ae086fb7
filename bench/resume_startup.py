"""Start-up time of a resumed search: run ``jaxnas search``, SIGKILL it after its first checkpoint,
run the same command again, and time how long the resumed process takes to finish its first step
(process start, imports, data, restore, compile or cache load, one step: ``search.chunk=1``, a
run-neutral key, so the first chunk is the first step).

    python bench/resume_startup.py [--configs quickstart advantagenas_nb201_tiny]

Per config: ``cold`` is the first run's time to its first step (empty compilation cache);
``resume_cached`` the resumed run with the persistent compilation cache (jaxnas/engine/compile_cache.py,
the CLI's default); ``resume_uncached`` the same resume with ``--no-compile-cache``. Each run has its
own fresh cache directory, so nothing from earlier runs helps. ``restored_s``: when the resumed
process printed "resuming from step N" (imports, data and restore done, before compiling).
Writes bench/results/resume_startup.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "resume_startup.json"
# overrides: a checkpoint after the first chunk, so the kill lands early
CONFIGS = {
    "quickstart": ["search.checkpoint_every=20", "search.chunk=1"],
    "advantagenas_nb201_tiny": ["search.checkpoint_every=5", "search.chunk=1"],
}


def metric_rows(workdir: Path) -> int:
    p = workdir / "metrics.jsonl"
    return p.read_text().count("\n") if p.exists() else 0


def checkpoints(workdir: Path):
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def reset(workdir: Path, ck: int):
    """The work dir as a kill right after checkpoint ``ck`` leaves it (the metrics of its steps only)."""
    for p in (workdir / "checkpoints").iterdir():
        if p.name != str(ck):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    m = workdir / "metrics.jsonl"
    m.write_text("".join(m.read_text().splitlines(keepends=True)[:ck]))


def run_until(cmd, env, workdir: Path, until, timeout: float = 900):
    """Starts ``cmd``; returns (seconds until ``until()`` held, seconds until 'resuming' was printed).
    The process is SIGKILLed at that point."""
    log = tempfile.TemporaryFile("w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    restored = None
    try:
        while time.perf_counter() - t0 < timeout:
            if restored is None:
                log.seek(0)
                if "resuming from step" in log.read():
                    restored = time.perf_counter() - t0
            if until():
                return time.perf_counter() - t0, restored
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{log.read()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{' '.join(cmd)}: no progress in {timeout} s")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def measure(name: str, overrides: list[str]):
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = [sys.executable, "-m", "jaxnas", "search", str(REPO / "configs" / f"{name}.py"), *overrides,
                "--workdir", str(tmp / "work")]
        env = dict(os.environ, JAXNAS_COMPILE_CACHE=str(tmp / "cache"))
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        work = tmp / "work"
        first = {}

        def cold_done():
            if "t" not in first and metric_rows(work) > 0:
                first["t"] = time.perf_counter()
            return bool(checkpoints(work))
        t0 = time.perf_counter()
        run_until(base, env, work, cold_done)
        out["cold_s"] = first["t"] - t0
        ck = checkpoints(work)[-1]
        # the kill above came right after the first checkpoint: the resume starts there
        for label, extra in (("resume_cached", []), ("resume_uncached", ["--no-compile-cache"])):
            reset(work, ck)
            s, restored = run_until(base + extra, env, work, lambda: metric_rows(work) > ck)
            out[f"{label}_s"], out[f"{label}_restored_s"] = round(s, 2), restored and round(restored, 2)
        out["cold_s"] = round(out["cold_s"], 2)
        out["first_checkpoint_step"] = ck
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    res["meta"] = {"cpu_count": os.cpu_count(), "note": "seconds from process start; one chunk of steps "
                   "included; run on a machine with other jobs => compare columns of one row only"}
    for name in args.configs:
        res[name] = {"overrides": CONFIGS[name], **measure(name, CONFIGS[name])}
        print(name, json.dumps(res[name]), flush=True)
        OUT.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

"""Data-parallel search over 8 simulated CPU devices (a separate process: XLA_FLAGS must be set
before jax is imported)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_eight_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "helpers" / "multidevice_check.py")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("reinforce", "advantage"):
        r = out[name]
        # a 1-device mesh is the plain loop (same keys and batches; XLA may fuse differently: ulps)
        assert r["one_device_max_diff"] < 1e-5, (name, r)
        assert r["eight_shards"] == 8 and r["eight_devices_replicated"], (name, r)
        assert r["eight_metrics_finite"] and r["eight_differs_from_plain"], (name, r)
    assert all(out["tabnas"].values()), out["tabnas"]
    g = out["grad"]
    assert g["loss_diff"] < 1e-6 and g["grad_max_abs_diff"] < 1e-5 * max(1.0, g["grad_scale"]), g

"""Multi-lane search on 8 simulated CPU devices (a separate process: XLA_FLAGS must be set before jax
is imported): D devices = D samples per step, every device the same state, 8 devices == 8 vmapped
lanes on one device."""
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
        assert r["eight_samples_logged"] == [10, 8, 2] and r["eight_evaluations"] == 80, (name, r)
    assert all(out["tabnas"].values()), out["tabnas"]
    g = out["grad"]
    assert g["loss_diff"] < 1e-6 and g["update_max_abs_diff"] < 1e-5 * max(1.0, g["update_scale"]), g
    table = out["table"]
    assert {"random", "reinforce", "parsec", "tabnas"} <= set(table), sorted(table)
    for name, r in table.items():
        assert r["replicated"] and r["ints_equal"] and r["samples_equal"] and r["derive_equal"], (name, r)
        # the lanes' sums in another order: float32 ulps of the state's scale (MANAS's cumulative scores)
        assert r["float_max_diff"] < 1e-6 * max(1.0, r["float_scale"]), (name, r)
        if name in ("random", "reinforce", "parsec"):
            assert r["evaluations"] == 12 * 8, (name, r)           # one query per sample and step
        else:
            assert 0 <= r["evaluations"] <= 12 * 8, (name, r)      # rejected samples are not queried
        if "best_reward" in r:
            assert r["best_reward"] == r["best_reward_again"] and r["best_is_max_seen"], (name, r)

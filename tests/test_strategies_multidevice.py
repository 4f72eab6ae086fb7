"""Every registered strategy on 8 lanes: 8 simulated CPU devices under shard_map(check_vma=True) and
8 vmap lanes on one device (a separate process: XLA_FLAGS must be set before jax is imported). The
checks are described in tests/helpers/strategies_multidevice_check.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

from jaxnas.strategies import available

REPO = Path(__file__).resolve().parents[1]
TRACKS = ("reinforce", "advantage", "advantage_baseline", "parsec", "gdas", "random", "ma2ml_lite",
          "ma2ml")
NOT_LINEAR = ("parsec", "random", "ma2ml", "manas", "manas_ls")


def test_every_strategy_on_eight_lanes():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "helpers" / "strategies_multidevice_check.py")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(out) == available()
    for name, r in out.items():
        # (a) shard_map over 8 devices: the state is replicated, bitwise
        assert r["shards"] == 8 and r["replicated_bitwise"], (name, r)
        assert r["metrics_finite"], (name, r)
        assert {"reward", "nonfinite", "entropy", "evaluations"} <= set(r["metric_keys"]), (name, r)
        assert r["evaluations_per_step"] > 0, (name, r)
        if r["lanes_differ"] is not None and name not in ("darts", "darts2", "nasp", "shapley"):
            assert r["lanes_differ"], (name, r)   # each lane evaluated its own sample
        # (b) the process best is consistent: best_reward is the reward of best_arch
        if name in TRACKS:
            assert r["best_consistent"] and r["best_finite"], (name, r)
            if name != "random":
                assert r["best_is_max_seen"], (name, r)
        # (c) vmap over 8 lanes on one device: the same state (ints equal, floats to ulps)
        assert r["vmap"]["ints_equal"] and r["vmap"]["allclose"], (name, r["vmap"])
        assert r["vmap_metrics"]["ints_equal"] and r["vmap_metrics"]["allclose"], (name, r)
        # (d) the 8-lane update is the 1-lane update of the mean reward (not 8x as far)
        if name not in NOT_LINEAR:
            d = r["mean_reward"]
            assert d["ints_equal"] and d["allclose"] and r["moved"], (name, d)
    for name in ("darts", "gdas", "snas", "nasp", "proxyless", "darts2"):   # lane rewards differ
        assert not out[name]["same_reward_per_lane"], name

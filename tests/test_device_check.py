"""bench/device_check.py cannot rot: its smoke mode (the full mode's code at tiny sizes: C 4, one cell per
stage, 2 timed steps, 2 coalitions, 2 pipelines, one pytest function) runs end to end on CPU and writes the
JSON the GPU run writes, with positive finite timings and the platform it ran on."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _timings(entry: dict, what: str):
    for key in ("lower_s", "compile_s", "lower_compile_s"):
        assert _positive(entry[key]), (what, key, entry[key])


def test_device_check_smoke(tmp_path):
    out = tmp_path / "device_check.json"
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"} | {"JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, str(REPO / "bench" / "device_check.py"), "--smoke", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=REPO, env=env, check=False)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-4000:])
    res = json.loads(out.read_text())
    assert res["smoke"] is True and "incomplete" not in res and res["section_errors"] == []
    for key in ("device", "tests", "steps", "shapley", "ma2ml", "sizes", "utc", "elapsed_s", "load_average_start"):
        assert key in res, key
    dev = res["device"]
    assert dev["platform"] == "cpu" and dev["backend"] == "cpu" and dev["device_kind"]
    t = res["tests"]
    assert t["returncode"] == 0 and t["passed"] >= 1 and t["failed"] == 0 and t["errors"] == 0
    assert set(res["steps"]) == {"nb201", "darts8"}
    for sk, s in res["steps"].items():
        for form in ("discrete", "sparse", "dense"):
            f = s[form]
            _timings(f, f"{sk} {form}")
            assert _positive(f["step_ms"]) and len(f["steps_ms"]) == 2 and all(_positive(x) for x in f["steps_ms"])
            assert _positive(f["memory"]["temp"]) and math.isfinite(f["last_loss"])
        assert s["sparse"]["config"]["mode"] == "sparse" and s["dense"]["config"]["mode"] == "dense"
        assert s["sparse"]["distinct_archs"] >= 2          # a new architecture every step
        assert _positive(s["sparse_over_discrete"]) and _positive(s["dense_over_discrete"])
    for name, n in (("shapley", "coalitions"), ("ma2ml", "pipelines")):
        b = res[name]
        assert b[n] == 2
        for key in ("vmapped_s", "one_at_a_time_s", "speedup"):
            assert _positive(b[key]), (name, key, b[key])
        for prog in ("vmapped", "single"):
            _timings(b["compile"][prog], f"{name} {prog}")
        assert b["rewards_max_abs_diff"] < 1e-4            # the vmapped program scores what the single one does
    assert "lower+compile s" in r.stdout                   # the table

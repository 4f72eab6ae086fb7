"""bench/vs_pytorch.py cannot rot: its smoke mode (C 4, one cell per stage, 2 paired rounds of the NB201
weight and AdvantageNAS architecture steps) runs end to end on CPU and writes the JSON it documents. The
PyTorch worker runs too where torch is importable (a bench extra, ``pip install 'jaxnas[bench]'``); without
it, the jaxnas side alone."""
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.parametrize("chunk", [1, 2])    # one compiled call per step; two steps per call (--chunk)
def test_vs_pytorch_smoke(tmp_path, chunk):
    out = tmp_path / "vs_pytorch.json"
    cmd = [sys.executable, str(REPO / "bench" / "vs_pytorch.py"), "--smoke", "--chunk", str(chunk), "--out", str(out)]
    if not HAS_TORCH:
        cmd.append("--no-torch")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads(out.read_text())
    meta = res["meta"]
    for key in ("jax", "torch", "cpu_count", "cores_pinned", "load_average_before", "load_average_after", "protocol"):
        assert key in meta, key
    assert meta["smoke"] is True and meta["torch_ran"] is HAS_TORCH
    assert set(res["workloads"]) == {"nb201_weights", "nb201_advantage_arch"}
    for name, w in res["workloads"].items():
        j = w["jaxnas"]
        for key in ("start_to_first_step_s", "first_step_s", "peak_rss_mb", "import_s", "build_init_s"):
            assert _positive(j[key]), (name, key, j[key])
        assert len(j["steps_ms"]) == 2 and all(_positive(t) for t in j["steps_ms"])
        assert j["arch_mismatches"] == 0            # the torch side stepped on the architectures jaxnas did
        assert w["steps_per_call"] == chunk and w["git"] and w["utc"]
        assert len(w["load_average_before"]) == 3 and len(w["load_average_after"]) == 3
        if HAS_TORCH:
            t = w["torch"]
            for key in ("start_to_first_step_s", "first_step_s", "peak_rss_mb"):
                assert _positive(t[key]), (name, key, t[key])
            for key in ("jaxnas_step_ms_median", "torch_step_ms_median", "ratio_median", "ratio_mean", "ratio_se",
                        "ratio_of_medians"):
                assert _positive(w[key]), (name, key, w[key])
            assert w["rounds"] == 2
        else:
            assert w["torch"] is None and _positive(w["jaxnas_step_ms_median"])
    assert "| workload |" in r.stdout          # the markdown table


def test_engine_ab_smoke(tmp_path):
    """bench/engine_ab.py's kernel study at toy size: both variants compile, step in turn and compute
    the same update, in two different programs (the previous kernel swapped in for one variant only,
    the library's back for the other)."""
    out = tmp_path / "engine_ab.json"
    cmd = [sys.executable, str(REPO / "bench" / "engine_ab.py"), "pointwise", "--C", "4", "--cells", "1",
           "--steps", "2", "--batch", "8", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads(out.read_text())["pointwise"]
    conv_form, dots = res["variants"]["conv_form"], res["variants"]["dots"]
    assert conv_form["patch"] == "conv_form_1x1" and "patch" not in dots
    assert dots["max_param_diff_vs_conv_form"] < 1e-5
    assert dots["program_sha1"] != conv_form["program_sha1"]
    assert _positive(dots["step_ms_median"]) and _positive(dots["over_conv_form"]["median"])
    assert res["steps"] == 2 and len(res["measured"]["load_average_before"]) == 3


def test_first_step_smoke(tmp_path):
    """bench/first_step.py at toy size: a cold and a warm process, each with its phases; the warm one
    finds its program in the cache the cold one filled (it compiles nothing long, retrieves instead)."""
    out = tmp_path / "first_step.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "first_step.py"), "--smoke", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads(out.read_text())["nb201_weights"]
    (run,) = res["runs"]["this"]
    for start in ("cold", "warm"):
        for key in ("start_to_first_step_s", "import_s", "build_s", "init_s", "first_chunk_s", "lowering_s"):
            assert _positive(run[start][key]), (start, key, run[start][key])
    assert run["cold"]["backend_compile_s"] > run["warm"]["backend_compile_s"]
    assert run["cold"]["cache_retrieval_s"] == 0 and run["warm"]["cache_retrieval_s"] > 0
    assert res["measured"]["smoke"] is True and res["start_to_first_step_s"]["warm"]["this"]["n"] == 1

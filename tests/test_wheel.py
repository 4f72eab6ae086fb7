"""The built wheel carries what a pip-installed user needs without a clone: the shipped configs and the
embedded data, and ``jaxnas search quickstart`` runs from it in a folder that is not the repository."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = out.glob("jaxnas-*.whl")
    return path


def test_wheel_ships_the_configs_and_the_embedded_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (REPO / "jaxnas" / "configs").glob("*.py"))
    missing = [n for n in shipped if f"jaxnas/configs/{n}" not in names]
    assert not missing, missing
    embedded = [p.name for p in (REPO / "jaxnas" / "data" / "embedded").iterdir()]
    assert embedded and all(f"jaxnas/data/embedded/{n}" in names for n in embedded)


def test_a_shipped_config_runs_by_name_outside_the_repository(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site), "JAXNAS_COMPILE_CACHE": "off"}
    where = subprocess.run([sys.executable, "-c", "import jaxnas; print(jaxnas.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120).stdout.strip()
    assert Path(where).is_relative_to(site), where        # the wheel's copy, not the clone's
    r = subprocess.run([sys.executable, "-m", "jaxnas", "search", "quickstart", "search.steps=200",
                        "--workdir", "w", "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "w" / "result.json").read_text())
    assert result["finished"] and result["step"] == 200 and result["strategy"] == "tabnas"
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    assert cfg["data"]["name"] == "connect4"
    r = subprocess.run([sys.executable, "-m", "jaxnas", "list"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "quickstart" in r.stdout, r.stderr[-2000:]

"""The built wheel carries what a pip-installed user needs without a clone: the shipped configs and the
embedded data; pip-installed in a fresh venv, ``jaxnas search quickstart`` runs outside the repository."""
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


def _fresh_venv(wheel, where: Path) -> Path:
    """A new venv with the wheel pip-installed (not editable); its dependencies are seen through a .pth
    line to this interpreter's site-packages (a path entry only: this environment's editable jaxnas
    finder there is not loaded), so nothing is downloaded."""
    import site
    import venv
    venv.EnvBuilder(with_pip=True).create(where)
    py = where / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (purelib,) = (where / "lib").glob("python3*/site-packages")
    (purelib / "zz_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return where / "bin"


def test_a_shipped_config_runs_by_name_outside_the_repository(wheel, tmp_path):
    bin_ = _fresh_venv(wheel, tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["JAXNAS_COMPILE_CACHE"] = "off"
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(bin_ / "python"), "-c", "import jaxnas; print(jaxnas.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where.stdout + where.stderr
    r = subprocess.run([str(bin_ / "jaxnas"), "search", "quickstart", "search.steps=200", "--workdir", "w", "--quiet"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((work / "w" / "result.json").read_text())
    assert result["finished"] and result["step"] == 200 and result["strategy"] == "tabnas"
    cfg = json.loads((work / "w" / "config.json").read_text())
    assert cfg["data"]["name"] == "connect4"
    r = subprocess.run([str(bin_ / "jaxnas"), "list"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "quickstart" in r.stdout, r.stderr[-2000:]

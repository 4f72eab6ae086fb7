"""The docs site builds with ``mkdocs build --strict`` (a broken link, anchor or API reference fails),
every page of its nav exists, and the API pages are rendered from the docstrings."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _config() -> dict:
    return yaml.safe_load((REPO / "mkdocs.yml").read_text())


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for value in item.values():
                out.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return out


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "--site-dir", str(site)], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    r = _build(REPO / "mkdocs.yml", out)
    print(r.stderr)
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stderr}"
    return out


def _text(html: Path) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html.read_text()))


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    pages = _nav_pages(_config()["nav"])
    missing = [p for p in pages if not (DOCS / p).is_file()]
    assert not missing, f"nav pages missing: {missing}"
    assert "architecture.md" in pages
    unlisted = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if str(p.relative_to(DOCS)) not in pages)
    assert not unlisted, f"pages not in the nav: {unlisted}"


def test_strict_build_renders_the_api_from_docstrings(site):
    # known first lines of docstrings, rendered by mkdocstrings (griffe reads the source, nothing imported)
    known = {
        "api/strategies/index.html": "The strategy protocol: a search method as pure functions over a pytree state.",
        "api/evaluators/index.html": "Evaluators: what a strategy learns from",
        "api/jaxnas/index.html": "weight-sharing neural architecture search in JAX/Flax.",
    }
    for page, line in known.items():
        assert line in _text(site / page), f"{page} lacks the docstring line {line!r}"
    for page in ("getting-started", "guides/tabnas", "benchmarks", "architecture"):
        assert (site / page / "index.html").is_file()


def test_a_broken_link_fails_the_strict_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    (docs / "usage.md").write_text((docs / "usage.md").read_text() + "\n[broken](no-such-page.md)\n")
    cfg = _config()
    cfg["docs_dir"] = str(docs)
    cfg["plugins"][1]["mkdocstrings"]["handlers"]["python"]["paths"] = [str(REPO)]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(cfg))
    r = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert r.returncode != 0 and "no-such-page.md" in r.stderr, r.stderr


def test_the_quickstart_output_is_the_readme_s():
    block = re.compile(r"ends with:\n\n```\n(.*?)```", re.S)
    readme = block.search((REPO / "README.md").read_text())
    started = block.search((DOCS / "getting-started.md").read_text())
    assert readme and started and readme.group(1) == started.group(1)

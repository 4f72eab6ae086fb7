"""The benchmark tables of README.md and docs/ are rendered from bench/results (bench/readme_tables.py), not typed."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import readme_tables  # noqa: E402


def test_every_generator_is_used_and_every_file_is_found():
    found = readme_tables.files()
    assert REPO / "docs" / "benchmarks.md" in found
    used = {name for path in found for name in readme_tables.sections(path.read_text())}
    assert used == set(readme_tables.SECTIONS)


def test_tables_match_their_results():
    stale = [str(p.relative_to(REPO)) for p in readme_tables.files() if readme_tables.render(p.read_text()) != p.read_text()]
    assert not stale, f"stale tables in {stale}: run python bench/readme_tables.py"


def test_a_stale_table_is_caught():
    text = (REPO / "docs" / "benchmarks.md").read_text()
    stale = text.replace("<!-- /bench:nb201_table -->", "| made up | 99.99 |\n<!-- /bench:nb201_table -->", 1)
    assert readme_tables.render(stale) == text != stale
    assert readme_tables.main(["--check"]) == 0


def test_mean_se_uses_ddof_1():
    m, se = readme_tables.mean_se([1.0, 2.0, 3.0])
    assert m == 2.0 and abs(se - (1.0 / 3) ** 0.5) < 1e-12   # std (ddof 1) = 1, s.e. = 1 / sqrt(3)

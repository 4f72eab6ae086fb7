"""The README's benchmark tables are rendered from bench/results (bench/readme_tables.py), not typed."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import readme_tables  # noqa: E402


def test_readme_tables_match_their_results():
    text = (REPO / "README.md").read_text()
    assert set(readme_tables.sections(text)) == set(readme_tables.SECTIONS)
    assert readme_tables.render(text) == text, "stale README table: run python bench/readme_tables.py"


def test_a_stale_table_is_caught():
    text = (REPO / "README.md").read_text()
    stale = text.replace("<!-- /bench:nb201_table -->", "| made up | 99.99 |\n<!-- /bench:nb201_table -->", 1)
    assert readme_tables.render(stale) == text != stale

"""The README's benchmark tables, regenerated from ``bench/results/*.json`` (no hand-copied numbers).

    python bench/readme_tables.py           # rewrite every generated section of README.md
    python bench/readme_tables.py --check   # exit 1 if a section differs from its JSON (the CI test)

A generated section sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in README.md;
NAME is a key of ``SECTIONS``, whose function renders the table from its results file (each bench
script's own ``markdown``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
sys.path.insert(0, str(REPO / "bench"))


def _nb201_table() -> str:
    from nb201_table import markdown
    return markdown(json.loads((RESULTS / "nb201_table.json").read_text()))


def _supernet_ranking() -> str:
    from supernet_ranking import markdown
    return markdown(json.loads((RESULTS / "supernet_ranking.json").read_text()))


def _nb201_oneshot() -> str:
    from nb201_oneshot import markdown
    return markdown(json.loads((RESULTS / "nb201_oneshot.json").read_text()))


def _manas_regret() -> str:
    from manas_regret import markdown
    return markdown(json.loads((RESULTS / "manas_regret.json").read_text()))


SECTIONS = {"nb201_table": _nb201_table, "manas_regret": _manas_regret, "supernet_ranking": _supernet_ranking, "nb201_oneshot": _nb201_oneshot}
_SECTION = re.compile(r"(<!-- bench:(\w+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)


def render(text: str) -> str:
    """``text`` (the README) with every generated section rendered from its JSON."""
    def one(m):
        name = m.group(2)
        if name not in SECTIONS:
            raise KeyError(f"README section bench:{name} has no generator in bench/readme_tables.py")
        return m.group(1) + SECTIONS[name]().rstrip("\n") + "\n" + m.group(4)
    return _SECTION.sub(one, text)


def sections(text: str) -> list[str]:
    return [m.group(2) for m in _SECTION.finditer(text)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="compare only; exit 1 when a section is stale")
    args = p.parse_args(argv)
    old = README.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md's generated tables differ from bench/results: run python bench/readme_tables.py")
            return 1
        return 0
    README.write_text(new)
    print(f"rendered {', '.join(sections(new))} in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

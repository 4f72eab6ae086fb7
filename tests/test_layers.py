"""The package's layers (docs/architecture.md) hold: every import of a jaxnas module, at the top of a
file or inside a function, points down the layer order or within its own folder; no import cycles;
no module imports another module's private name. Parses the source, runs nothing."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxnas"

# bottom to top; the top-level modules (cli, runner, retrain, export, report, ...) are the top layer
LAYERS = ("core", "spaces", "models", "data", "tasks", "strategies", "benchmarks", "training",
          "evaluators", "engine", "config", "protocols", "configs", "")


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for f in sorted(package.rglob("*.py")):
        parts = list(f.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, int, list[str]]]:
    """``(imported module, line, names taken from it)`` for every jaxnas import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("jaxnas"):
                continue
            plain = []
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in known:                  # ``from jaxnas.x import module``
                    out.append((sub, node.lineno, []))
                else:
                    plain.append(a.name)
            if plain:
                out.append((target, node.lineno, plain))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno, []) for a in node.names if a.name.startswith("jaxnas")]
    return out


def private_attributes(path: Path, known: dict) -> list[tuple[str, int, str]]:
    """``module._name`` uses where ``module`` names an imported jaxnas module."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxnas"):
            for a in node.names:
                if f"{node.module}.{a.name}" in known:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("jaxnas") and a.asname:
                    aliases[a.asname] = a.name
    return [(aliases[n.value.id], n.lineno, n.attr) for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
            and n.attr.startswith("_") and not n.attr.startswith("__")]


def layer_of(module: str, package: Path = PACKAGE) -> int:
    return LAYERS.index(folder_of(module, package))


def folder_of(module: str, package: Path = PACKAGE) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (package / parts[1]).is_dir() else ""


def upward_imports(known: dict, package: Path = PACKAGE) -> list[str]:
    bad = []
    for name, path in known.items():
        for target, line, _ in imports(name, path, known):
            if target not in known:
                bad.append(f"{path.relative_to(package.parent)}:{line} imports {target}, which does not exist")
            elif layer_of(target, package) > layer_of(name, package):
                bad.append(f"{path.relative_to(package.parent)}:{line} imports {target}: layer "
                           f"{LAYERS[layer_of(name, package)] or 'top'!r} may not import the higher layer "
                           f"{LAYERS[layer_of(target, package)] or 'top'!r}")
    return bad


def cycles(known: dict) -> list[list[str]]:
    graph = {n: sorted({t for t, _, _ in imports(n, p, known) if t in known and t != n})
             for n, p in known.items()}
    out, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in graph[n]:
            if state.get(m) == 1:
                out.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n)
    return out


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def private_imports(files: dict[str, Path], known: dict) -> list[str]:
    bad = []
    for name, path in files.items():
        for target, line, names in imports(name, path, known):
            bad += [f"{_shown(path)}:{line} imports {target}.{n}" for n in names
                    if n.startswith("_") and target != name]
        bad += [f"{_shown(path)}:{line} uses {mod}.{attr}"
                for mod, line, attr in private_attributes(path, known) if mod != name]
    return bad


KNOWN = modules()


def test_every_folder_is_a_layer():
    missing = {folder_of(m) for m in KNOWN} - set(LAYERS)
    assert not missing, f"folders without a place in LAYERS (tests/test_layers.py): {missing}"


def test_imports_point_down_the_layers():
    bad = upward_imports(KNOWN)
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    found = cycles(KNOWN)
    assert not found, "\n".join(" -> ".join(c) for c in found)


def test_no_private_names_across_modules():
    scripts = {f"bench.{p.stem}": p for p in sorted((ROOT / "bench").glob("*.py"))}
    bad = private_imports({**KNOWN, **scripts}, KNOWN)
    assert not bad, "\n".join(bad)


def _copy(tmp_path) -> Path:
    import shutil
    copy = tmp_path / "jaxnas"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    return copy


@pytest.mark.parametrize("source, expect", [
    ("from jaxnas.engine.search import Search\n", "may not import the higher layer 'engine'"),
    ("def f():\n    from jaxnas.config import resolve\n", "may not import the higher layer 'config'"),
])
def test_the_check_fails_on_an_upward_import(tmp_path, source, expect):
    """The check is live: an upward import planted in a copy of a low module is reported."""
    copy = _copy(tmp_path)
    target = copy / "spaces" / "base.py"
    target.write_text(target.read_text() + "\n" + source)
    bad = upward_imports(modules(copy), copy)
    assert any(expect in b and "spaces/base.py" in b for b in bad), bad


def test_the_check_finds_a_cycle_and_a_private_name(tmp_path):
    copy = _copy(tmp_path)
    mlp = copy / "spaces" / "mlp.py"
    mlp.write_text(mlp.read_text() + "\nfrom jaxnas.spaces.product import _x\n")
    known = modules(copy)
    assert any("jaxnas.spaces.mlp" in c and "jaxnas.spaces.product" in c for c in cycles(known))
    assert any("spaces.product._x" in b for b in private_imports(known, known))

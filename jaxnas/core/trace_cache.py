"""Traced programs on disk, beside the compilation cache, so a second process skips tracing too.

The persistent compilation cache (:mod:`jaxnas.engine.compile_cache`) stores compiled programs, but
finding one needs the program first: JAX traces the Python model again in every process, which for a
DARTS-8 supernet is much of the time to the first step (its chunk ~9 s of tracing, the parameter
shapes ~3 s, loading the cached compile 3-6 s; 2026-12-07, quiet). Here a search's traced chunk is stored as a
``jax.export`` module (StableHLO, ~1 MB; :func:`chunk_caller`) and a supernet's variable shapes as
JSON (:func:`cached_shapes`); a second process deserialises and lowers the chunk (under 1 s) and
reads the shapes instead of tracing either.

A stored trace is used only where it cannot be stale. Its key covers everything the program is built
from: the resolved config (:class:`jaxnas.engine.search.Search` ``trace_key``; ``search.trace_cache``
turns it off), the source of every jaxnas module and of the files defining the search's strategy,
evaluator, space, task and network classes (user plugins included), the jax/jaxlib/flax/optax
versions, the backend and device, and the shapes, dtypes and tree of every argument. Values that are
not arguments are baked into a traced program, so a program that closes over an array larger than
``MAX_CONSTANT`` elements (a dataset or a benchmark table held by an evaluator) is not stored. One
device and one lane only; anything that goes wrong (no cache directory, no ``flatbuffers``, an
unreadable file, a program ``jax.export`` cannot serialise) falls back to tracing. Files live in
``<compilation cache>/traces``; safe to delete.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Optional

import jax

from jaxnas.core.workdir import atomic_write_bytes, atomic_write_text

MAX_CONSTANT = 1024   # elements: a closed-over array larger than this is data, not code


def directory() -> Optional[Path]:
    """``<compilation cache>/traces`` (None: no compilation cache, so no trace cache either)."""
    d = jax.config.jax_compilation_cache_dir
    return Path(d) / "traces" if d else None


@functools.lru_cache(maxsize=None)
def _files_digest(files: tuple) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode())
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def _package_digest() -> str:
    """Every jaxnas source file: a changed library is another program."""
    return _files_digest(tuple(sorted(str(p) for p in Path(__file__).resolve().parents[1].rglob("*.py"))))


def _file_digest(objects) -> str:
    files = sorted({inspect.getsourcefile(type(o)) or "" for o in objects if o is not None})
    return _files_digest(tuple(f for f in files if f and os.path.isfile(f)))


def _versions() -> dict:
    out = {}
    for name in ("jax", "jaxlib", "flax", "optax"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def key(identity: str, objects, args, static=()) -> str:
    """The file name of the traced program ``identity`` (the config) applied to ``args``."""
    leaves, treedef = jax.tree.flatten(args)
    dev = jax.devices()[0]
    parts = {"identity": identity, "package": _package_digest(), "files": _file_digest(objects),
             "versions": _versions(), "platform": dev.platform, "device": dev.device_kind,
             "tree": str(treedef), "static": [str(s) for s in static],
             "avals": [(tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False))) for x in leaves]}
    return _digest(parts)


def _digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def chunk_caller(fn: Callable, identity: Optional[str], objects, args, static=(),
                 compiler_options: Optional[dict] = None) -> Optional[Callable]:
    """A jitted callable equal to ``jax.jit(fn)`` on ``args`` (``fn(state, ...) -> (state, metrics)``,
    metrics a dict of arrays), loaded from disk when this exact program was traced before, else traced
    once, stored and used; None where no trace can be kept (the caller jits ``fn`` itself).
    ``compiler_options``: the compile's (``jax.jit``'s), not part of the trace."""
    d = directory()
    if identity is None or d is None:
        return None
    try:
        from jax import export
        from jax._src.export import serialization  # noqa: F401  (needs flatbuffers)
    except ImportError:
        return None
    path = d / f"{key(identity, objects, args, static)}.jaxexport"
    state_tree = jax.tree.structure(args[0])
    in_tree = jax.tree.structure(args)
    exported = None
    if path.exists():
        try:
            exported = export.deserialize(bytearray(path.read_bytes()))
        except Exception:   # a truncated or foreign file: trace again
            exported = None
    if exported is None:
        def flat(*leaves):
            state, metrics = fn(*jax.tree.unflatten(in_tree, leaves))
            return jax.tree.leaves(state), metrics
        jitted = jax.jit(flat)
        try:
            traced = jitted.trace(*jax.tree.leaves(args))
            if any(getattr(c, "size", 0) > MAX_CONSTANT for c in traced.jaxpr.consts):
                return None     # it holds data: a stored copy could go stale when the data changes
            exported = _without_locations(export.export(jitted)(*jax.tree.leaves(args)))  # the trace above
        except Exception:       # e.g. a custom call export does not serialise: jit as usual (an
            return None         # error of the program itself surfaces there again)
        try:
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, exported.serialize())
        except OSError:
            pass
    call = jax.jit(exported.call, compiler_options=compiler_options)

    def run(*a):
        state_leaves, metrics = call(*jax.tree.leaves(a))
        return jax.tree.unflatten(state_tree, state_leaves), metrics
    return run


def _without_locations(exported):
    """``exported`` with its module's source locations stripped (MLIR's ``strip-debuginfo``).

    Each location becomes an op's metadata in XLA's program (its name stack, ~300 characters per op):
    DARTS-8 sparse's compiled program serialises to 12 MB instead of 21 MB, XLA:CPU compiles it in
    16.9 s instead of 17.9 s (medians of 3, interleaved in one process) and loads it as fast (2.3 s
    both, 6 interleaved loads); process start to first step, cold, with the compilation cache's change
    of the same day: 32.8 s against 35.9 s, -3.1 +- 0.6 s over 4 pairs (``python bench/first_step.py
    --against``, bench/results/first_step.json). The cost: profiles and XLA dumps of a stored chunk
    lose the op names (``search.trace_cache=False`` keeps them). Unchanged where this jax cannot do it."""
    try:
        from jax._src.export import _export
        from jax._src.interpreters import mlir
        from jax._src.lib.mlir import passmanager
        with mlir.make_ir_context():
            module = exported.mlir_module(serialized=False)
            passmanager.PassManager.parse("builtin.module(strip-debuginfo)").run(module.operation)
            return dataclasses.replace(exported, mlir_module_serialized=_export._module_to_bytecode(module))
    except Exception:   # another jax's internals: keep the locations
        return exported


def _shapes_to_json(tree):
    if isinstance(tree, jax.ShapeDtypeStruct):
        return {"__shape__": list(tree.shape), "dtype": str(tree.dtype)}
    if isinstance(tree, Mapping):
        return {str(k): _shapes_to_json(v) for k, v in tree.items()}
    raise TypeError(f"not a nested dict of shapes: {type(tree).__name__}")


def _shapes_from_json(tree):
    if "__shape__" in tree:
        return jax.ShapeDtypeStruct(tuple(tree["__shape__"]), tree["dtype"])
    return {k: _shapes_from_json(v) for k, v in tree.items()}


def cached_shapes(module, args, kwargs, compute: Callable):
    """``compute()``, the variable shapes of ``module`` (nested dicts of ``ShapeDtypeStruct``; for a
    supernet its init traced under ``eval_shape``: ~3 s for DARTS-8), from disk when the same module
    (its fields, the jaxnas sources, the versions) on the same argument shapes was initialised before."""
    d = directory()
    if d is None or " at 0x" in repr(module):     # no cache, or a field with no stable repr
        return compute()
    parts = {"module": repr(module), "kwargs": repr(sorted(kwargs.items())),
             "args": [(tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(args)],
             "package": _package_digest(), "files": _file_digest([module]), "versions": _versions()}
    path = d / f"shapes-{_digest(parts)}.json"
    if path.exists():
        try:
            return _shapes_from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    shapes = compute()
    try:
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(_shapes_to_json(shapes)))
    except (OSError, TypeError):
        pass
    return shapes

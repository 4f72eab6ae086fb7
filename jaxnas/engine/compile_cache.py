"""A persistent XLA compilation cache, so a second run, a resume or a retrain of the same shapes loads
its compiled programs from disk instead of compiling them again.

The CLI (``jaxnas search|retrain|export``) and :func:`jaxnas.runner.run_search` turn it on by default
(:func:`ensure`: a cache directory the user already gave jax is kept); from Python also :func:`enable`.
What is cached: every jitted program's compiled executable (keyed by jax on the program, its shapes,
the jax/jaxlib version, the backend and the XLA flags, so a changed program or version never hits a
stale entry). Where: ``$JAXNAS_COMPILE_CACHE`` if set, else ``$XDG_CACHE_HOME/jaxnas/xla`` (default
``~/.cache/jaxnas/xla``); ``JAXNAS_COMPILE_CACHE=off`` or ``--no-compile-cache`` turns it off.
The directory is safe to delete at any time.

Measured on this CPU (a jitted 60-layer program, two fresh processes): compile 7.0 s, then 0.2 s
from the cache.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

ENV = "JAXNAS_COMPILE_CACHE"
OFF = ("off", "0", "false", "no", "")


def default_dir() -> Optional[Path]:
    """The cache directory the CLI uses (None when ``$JAXNAS_COMPILE_CACHE`` turns it off)."""
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in OFF else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxnas" / "xla"


def enable(path=None, min_compile_seconds: float = 0.0) -> Optional[Path]:
    """Turns the persistent cache on at ``path`` (default :func:`default_dir`); returns the directory,
    or None when it is turned off. Programs that compile faster than ``min_compile_seconds`` are not
    stored. Every program is, by default: a search's start runs a dozen small ones (the strategy's and
    init's eager ops, 20-60 ms each to compile, milliseconds to read back); storing them took the
    DARTS-8 sparse warm start's build + init from 0.76 to 0.30 s (``python bench/first_step.py
    --against``, 4 warm processes each, bench/results/first_step.json). An unwritable directory
    leaves the cache off with no error: caching is an optimisation, never a reason for a run to fail."""
    import jax
    path = default_dir() if path is None else Path(path).expanduser()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def ensure() -> Optional[Path]:
    """:func:`enable` unless jax already has a cache directory (the user's own choice, e.g.
    ``JAX_COMPILATION_CACHE_DIR``), which is kept; returns the directory in use or None."""
    import jax
    current = jax.config.jax_compilation_cache_dir
    return Path(current) if current else enable()


def disable() -> None:
    import jax
    jax.config.update("jax_compilation_cache_dir", None)

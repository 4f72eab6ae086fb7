"""The persistent compilation cache (jaxnas/engine/compile_cache.py): where it goes, how it is turned off, and
that a second process reads the entry the first wrote (jax's cache-hit log line)."""
import os
import subprocess
import sys

from jaxnas.engine import compile_cache

PROGRAM = """
import logging, sys
import jax, jax.numpy as jnp
from jaxnas.engine.compile_cache import enable
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout)
jax.config.update("jax_debug_log_modules", "jax._src.compilation_cache,jax._src.compiler")
print("dir", enable(sys.argv[1], min_compile_seconds=0.0))
def f(x):
    for i in range(20):
        x = jnp.sin(x) @ x + i
    return x
print("value", float(jax.jit(f)(jnp.full((8, 8), 0.01)).sum()))
"""


def _run(path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(path)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


def test_second_process_loads_the_first_ones_program(tmp_path):
    first, second = _run(tmp_path / "xla"), _run(tmp_path / "xla")
    assert any(p.name.startswith("jit_f") for p in (tmp_path / "xla").iterdir())
    value = [line for line in first.splitlines() if line.startswith("value")]
    assert value and value == [line for line in second.splitlines() if line.startswith("value")]
    assert "cache hit" not in first.lower() or "jit_f" not in first
    assert any("cache hit" in line.lower() and "jit_f" in line for line in second.splitlines()), second[-3000:]


def test_default_dir_and_off(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_dir() == tmp_path / "jaxnas" / "xla"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
    assert compile_cache.default_dir() == tmp_path / "mine"
    for off in ("off", "0", "false"):
        monkeypatch.setenv(compile_cache.ENV, off)
        assert compile_cache.default_dir() is None
        assert compile_cache.enable() is None


def test_unusable_dir_leaves_the_cache_off(tmp_path):
    (tmp_path / "a_file").write_text("")
    assert compile_cache.enable(tmp_path / "a_file" / "xla") is None   # caching never fails a run


def test_ensure_keeps_a_users_dir_and_otherwise_enables_ours(monkeypatch, tmp_path):
    """What run_search and the CLI call: a cache dir the user gave jax wins; else ours is turned on."""
    import jax
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    prev = {k: getattr(jax.config, k) for k in keys}
    try:
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "users"))
        assert compile_cache.ensure() == tmp_path / "users"
        jax.config.update("jax_compilation_cache_dir", None)
        monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "ours"))
        assert compile_cache.ensure() == tmp_path / "ours"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "ours")
        jax.config.update("jax_compilation_cache_dir", None)
        monkeypatch.setenv(compile_cache.ENV, "off")
        assert compile_cache.ensure() is None and not jax.config.jax_compilation_cache_dir
    finally:
        for k, v in prev.items():
            jax.config.update(k, v)

"""Test-session settings.

A persistent XLA compilation cache for the whole session (this process and the subprocesses the tests
start, through jax's ``JAX_*`` environment variables): tests that build the same program twice (resume
= uninterrupted, CLI runs, retrains) load it instead of compiling it again. A fresh directory per
session, so no entry outlives the code that made it. ``JAXNAS_TEST_COMPILE_CACHE=off`` turns it off.
"""
import atexit
import os
import shutil
import tempfile

if os.environ.get("JAXNAS_TEST_COMPILE_CACHE", "on").lower() in ("off", "0", "false", "no"):
    os.environ["JAXNAS_COMPILE_CACHE"] = "off"   # nor the runner's default cache in ~/.cache
elif "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _dir = tempfile.mkdtemp(prefix="jaxnas-test-xla-")
    atexit.register(shutil.rmtree, _dir, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _dir
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    os.environ["JAXNAS_COMPILE_CACHE"] = _dir   # the CLI's own cache (jaxnas.engine.compile_cache) too

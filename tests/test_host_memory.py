"""``jaxnas.core.host_memory``: the tunables merge into a user's, a process restarts itself with them,
and glibc then serves a block as large as a step's temporaries from its heap instead of ``mmap``; in
a running process, ``retain_in_process`` stops a compiled call's temporary block from being faulted
in again on every call."""
import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import pytest

from jaxnas.core import host_memory

REPO = Path(__file__).resolve().parents[1]

# where glibc puts a 64 MB block (NB201's step block is 400 MB): inside the heap's break, or mapped apart
PROBE = """
import ctypes, json, os, sys
from jaxnas.core import host_memory
if sys.argv[1] == "restart":
    host_memory.restart_retaining()
libc = ctypes.CDLL("libc.so.6")
libc.sbrk.restype = ctypes.c_void_p
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = libc.sbrk(0)
p = libc.malloc(64 << 20)
after = libc.sbrk(0)
libc.free(p)
kept = libc.sbrk(0)   # after free: the heap's top is not trimmed back
print(json.dumps({"tunables": os.environ.get("GLIBC_TUNABLES"), "grew_mb": (after - before) / 2**20,
                  "kept_mb": (kept - before) / 2**20}))
"""


def _probe(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_environment_merges_with_a_users_tunables():
    env = host_memory.environment({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=4",
                                   "X": "1"})
    parts = env["GLIBC_TUNABLES"].split(":")
    assert "glibc.malloc.tcache_count=0" in parts          # the user's own tunable stays
    assert "glibc.malloc.arena_max=4" not in parts         # ours replaces the same name
    assert host_memory.active(env) and env["X"] == "1"
    assert not host_memory.active({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"})
    chex.assert_equal(host_memory.environment(env), env)  # idempotent


@pytest.mark.skipif(not host_memory.supported(), reason="glibc tunables need Linux with glibc")
def test_a_restarted_process_keeps_large_blocks_in_its_heap():
    default, retained = _probe("default"), _probe("restart")
    assert default["tunables"] is None and host_memory.active({"GLIBC_TUNABLES": retained["tunables"]})
    assert default["grew_mb"] < 1                # glibc's default: mmap (unmapped again by free)
    assert retained["grew_mb"] >= 63 and retained["kept_mb"] >= 63   # from the heap, kept after free


def test_the_cli_option_is_refused_in_process_with_the_setting_to_use(capsys, monkeypatch):
    from jaxnas import cli
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)     # a process started without them
    with pytest.raises(SystemExit):
        cli.main(["export", "nowhere", "--retain-host-memory"])
    assert host_memory.TUNABLES in capsys.readouterr().err


# a compiled program with a 132 MB temporary block, called four times after a warm call: minor faults a call
CALLS = """
import json, resource, sys
import jax, jax.numpy as jnp
if sys.argv[1] == "in_process":
    from jaxnas.core import host_memory
    host_memory.retain_in_process()
c = jax.jit(lambda x: jnp.sum(jnp.cumsum(x, 0) * x)).lower(jnp.ones((2048, 8192), jnp.float32)).compile()
x = jnp.ones((2048, 8192), jnp.float32)
c(x).block_until_ready()
faults = []
for _ in range(4):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    c(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"temp_mb": c.memory_analysis().temp_size_in_bytes / 2**20, "faults": faults,
                  "async": jax.config.read("jax_cpu_enable_async_dispatch")}))
"""


@pytest.mark.skipif(not host_memory.supported(), reason="mallopt needs Linux with glibc")
def test_retained_in_process_a_calls_temporary_block_is_not_faulted_in_again():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    run = {m: json.loads(subprocess.run([sys.executable, "-c", CALLS, m], env=env, capture_output=True, text=True,
                                        timeout=300, check=True).stdout.strip().splitlines()[-1])
           for m in ("default", "in_process")}
    assert run["default"]["temp_mb"] > 100 and run["default"]["async"] and not run["in_process"]["async"]
    pages = run["default"]["temp_mb"] * 2**20 / os.sysconf("SC_PAGE_SIZE")
    assert min(run["default"]["faults"]) > pages / 2            # glibc's default: mapped and unmapped per call
    assert max(run["in_process"]["faults"][1:]) < pages / 100   # kept in the heap from the second call on


def test_retain_in_process_after_the_first_computation_says_when_to_call_it():
    out = subprocess.run([sys.executable, "-c", "import jax, jax.numpy as jnp; jnp.ones(1).block_until_ready(); "
                          "from jaxnas.core import host_memory; host_memory.retain_in_process()"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode != 0 and "before the first jax computation" in out.stderr

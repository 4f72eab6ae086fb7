"""``jaxnas.core.host_memory``: the tunables merge into a user's, a process restarts itself with them,
and glibc then serves a block as large as a step's temporaries from its heap instead of ``mmap``."""
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

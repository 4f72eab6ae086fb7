"""``jaxnas.core.host_memory``: ``retain_in_process`` stops a compiled call's temporary block from being
faulted in again on every call, says when it is called too late, and the CLI applies it by default."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxnas.core import host_memory

REPO = Path(__file__).resolve().parents[1]

# a compiled program with a 132 MB temporary block, called six times after a warm call: minor faults a call
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
for _ in range(6):
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
    # kept in the heap: most calls fault nothing. Not every call: on a shared machine the kernel can unmap a
    # process's pages once (NUMA balancing's hinting, reclaim), and the next call faults the block in again
    # (CI saw [*, 33866, 0, 1] once); the default faults on every call, so the median still tells them apart
    assert sorted(run["in_process"]["faults"])[len(run["in_process"]["faults"]) // 2] < pages / 100


def test_retain_in_process_after_the_first_computation_says_when_to_call_it():
    out = subprocess.run([sys.executable, "-c", "import jax, jax.numpy as jnp; jnp.ones(1).block_until_ready(); "
                          "from jaxnas.core import host_memory; host_memory.retain_in_process()"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode != 0 and "before the first jax computation" in out.stderr


def test_the_cli_retains_by_default_and_not_with_the_option():
    probe = ("import sys, jax; from jaxnas import cli; sys.argv = ['jaxnas', 'export', 'nowhere'] + sys.argv[1:]\n"
             "try:\n    cli.main()\nexcept (SystemExit, Exception):\n    pass\n"
             "print('async', jax.config.read('jax_cpu_enable_async_dispatch'))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = {opt: subprocess.run([sys.executable, "-c", probe] + ([opt] if opt else []), capture_output=True, text=True,
                               timeout=120, env=env).stdout.split() for opt in ("", "--no-retain-host-memory")}
    assert out[""][-1] == str(not host_memory.supported()) and out["--no-retain-host-memory"][-1] == "True"
    # cli.main([...]) from Python leaves its process as it is
    inline = probe.replace("cli.main()", "cli.main(sys.argv[1:])")
    assert subprocess.run([sys.executable, "-c", inline], capture_output=True, text=True, timeout=120,
                          env=env).stdout.split()[-1] == "True"

"""Keep freed host memory in the process, so a CPU step stops paying page faults (glibc on Linux).

XLA:CPU runs each call of a compiled program in one temporary block (``memory_analysis()``'s temp
size: 400 MB for the NB201 C16 N5 search step, 0.74 GB for DARTS-8 sparse). glibc serves a block that
large with ``mmap`` and returns it with ``munmap`` when the call ends, so every step faults the whole
block in again (98,000 minor faults a step for NB201) and the kernel zeroes every page. PyTorch's
tensors are small enough to come back from malloc's heap. These glibc tunables keep the block:
one malloc arena (the block cannot come from a thread's 64 MB arena heap), no ``mmap`` for large
blocks, and no trimming of the heap's free top below 16 GB. Measured (``bench/host_memory_ab.py``,
``docs/cpu-performance.md``, 2 cores): NB201 faults 98,000 -> 0 a step, the step 0.87 of the
default; but DARTS-8's step 1.16x and cold compiles ~1.3x (one arena for every thread; lock
contention is the likely cause, not profiled). The process keeps its peak heap until it exits.
The faults are paid once per call, and a search runs ``search.chunk`` steps per call (50 by
default), so at the default they cost ~1/50 of what one step per call pays: the option matters
where a program is called with few steps per call. So it is opt-in.

glibc reads tunables only at process start, so this is a property of a process, chosen by whoever
starts it: ``jaxnas search/retrain/export --retain-host-memory`` restarts itself with them (before
jax is imported), and any other program can be started with ``GLIBC_TUNABLES`` = :data:`TUNABLES`
(:func:`environment`). Nothing here changes a running process.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Mapping, Optional

TUNABLES = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"


def supported() -> bool:
    """Linux with glibc (where ``GLIBC_TUNABLES`` means anything)."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def active(env: Optional[Mapping[str, str]] = None) -> bool:
    """Whether ``env`` (default: this process's) starts processes with :data:`TUNABLES`."""
    current = (os.environ if env is None else env).get("GLIBC_TUNABLES", "")
    return all(t in current.split(":") for t in TUNABLES.split(":"))


def environment(env: Optional[Mapping[str, str]] = None) -> dict:
    """A copy of ``env`` (default: this process's) whose ``GLIBC_TUNABLES`` adds :data:`TUNABLES`
    (a user's other tunables kept; ours replace the same names)."""
    out = dict(os.environ if env is None else env)
    ours = dict(t.split("=", 1) for t in TUNABLES.split(":"))
    kept = [t for t in out.get("GLIBC_TUNABLES", "").split(":") if t and t.split("=", 1)[0] not in ours]
    out["GLIBC_TUNABLES"] = ":".join(kept + [TUNABLES])
    return out


def restart_retaining() -> None:
    """Replace this process by the same command line started with :data:`TUNABLES` (returns only
    where they are already active). For a program's entry point, before it imports jax."""
    if active():
        return
    if not supported():
        raise OSError(f"--retain-host-memory needs Linux with glibc (this is {sys.platform}, "
                      f"{platform.libc_ver()[0] or 'another C library'}); leave the option out")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), environment())


# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def retain_in_process() -> None:
    """Keep a compiled call's temporary block in this process from now on, without a restart and
    without :data:`TUNABLES`' single arena: run CPU calls on the calling thread (jax's
    ``jax_cpu_enable_async_dispatch`` off, so the block comes from the main thread's arena, which can
    grow past 64 MB) and make glibc serve large blocks from its heap (``mallopt``: no ``mmap``, no
    trimming; a negative threshold is SIZE_MAX). Other threads keep their arenas. Programs over
    several devices still dispatch asynchronously (jax's flag covers one-device calls only) and keep
    paying their faults. Call before jax creates its CPU client (the first computation); raises
    otherwise, and where glibc is not the C library."""
    import ctypes

    import jax
    from jax._src import xla_bridge
    if not supported():
        raise OSError(f"retaining host memory needs Linux with glibc (this is {sys.platform}, "
                      f"{platform.libc_ver()[0] or 'another C library'})")
    if jax.config.read("jax_cpu_enable_async_dispatch") and xla_bridge.backends_are_initialized():
        raise RuntimeError("retain host memory before the first jax computation of this process (jax's CPU "
                           "client reads jax_cpu_enable_async_dispatch when it is created): call "
                           "jaxnas.core.host_memory.retain_in_process() right after importing jax")
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, -1)):
        raise OSError("glibc refused mallopt(M_MMAP_MAX / M_TRIM_THRESHOLD)")

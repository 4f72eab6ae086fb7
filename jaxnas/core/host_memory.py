"""Keep freed host memory in the process, so a CPU step stops paying page faults (glibc on Linux).

XLA:CPU runs each call of a compiled program in one temporary block (``memory_analysis()``'s temp
size: 400 MB for the NB201 C16 N5 search step, 0.74 GB for DARTS-8 sparse). glibc serves a block that
large with ``mmap`` and returns it with ``munmap`` when the call ends, so every call faults the whole
block in again (98,000 minor faults a step for NB201, 182,000 for DARTS-8) and the kernel zeroes every
page. PyTorch's tensors are small enough to come back from malloc's heap.

:func:`retain_in_process` keeps the block: CPU calls run on the calling thread (jax's
``jax_cpu_enable_async_dispatch`` off), whose arena is glibc's main one, the only one that can grow
past 64 MB, and ``mallopt`` makes glibc serve large blocks from the heap and never trim it. Other
threads keep their own arenas. Measured process against process (``python bench/host_memory_ab.py
--variants default in_process``, ``docs/cpu-performance.md``, 2 cores, one step per call): NB201 faults
98,000 -> 700-9,000 a step and the step 0.78 of the default, DARTS-8 sparse 182,000 -> 600-15,000 and
0.85, compiles unchanged. The process keeps its peak heap until it exits (a search's steady state is that
peak anyway). The earlier form, glibc tunables read at process start with one malloc arena for every
thread, made DARTS-8's step 1.16x slower (likely the one arena's lock); it is kept in the bench for comparison.

``jaxnas search/retrain/export`` (the command, not ``cli.main([...])`` from Python) call it before any
computation (``--no-retain-host-memory``: off).
From Python, call it right after importing jax. Programs over several devices still dispatch
asynchronously (jax's flag covers one-device calls) and keep paying their faults.
"""
from __future__ import annotations

import platform
import sys

# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def supported() -> bool:
    """Linux with glibc (where ``mallopt`` means what this module needs)."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def retain_in_process() -> None:
    """Keep a compiled call's temporary block in this process from now on: synchronous CPU dispatch
    (the block comes from the main thread's arena) and ``mallopt``: no ``mmap``, no trimming (a
    negative threshold is SIZE_MAX). Call before jax creates its CPU client (the first computation);
    raises otherwise, and where glibc is not the C library."""
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

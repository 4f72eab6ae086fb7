"""One search over several processes (hosts) with JAX's own multi-process runtime (``jax.distributed``).

Every process runs the same program on the same config: the mesh of :func:`jaxnas.engine.lanes.make_mesh`
spans all processes' devices (``jax.devices()`` is global once ``jax.distributed`` is up), the search
state is replicated on every device of every process, and each process feeds only the rows of every
batch that its own devices hold (:func:`feed`), drawn from the same step-indexed samplers, so a resume
is exact and no process puts the whole batch in device memory. Process 0 alone takes the work-dir lock
and writes ``fingerprint.json``, ``config.json``, ``metrics.jsonl`` and ``result.json``; orbax writes
checkpoints collectively. Decisions one process takes for all (the lock, the fingerprint check) are
shared with :func:`agree`, so an error on one process stops every process with the same message
instead of leaving the others waiting in a collective.

Configured by ``search.distributed`` (keys in :data:`jaxnas.config.settings.SCHEMA`) or by the environment:
``JAXNAS_DISTRIBUTED=1`` turns it on; keys left ``None`` come from ``jax.distributed.initialize``'s own sources
(``JAX_COORDINATOR_ADDRESS``, ``JAX_LOCAL_DEVICE_IDS`` and cluster detection: Cloud TPU pod slices,
SLURM, Open MPI, Kubernetes), so on a TPU pod slice ``search.distributed.enabled=True`` is all it takes.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any, Callable, Optional

import jax
import numpy as np

from jaxnas.data import gather
from jaxnas.engine.lanes import batch_sharding

ENV_ENABLE = "JAXNAS_DISTRIBUTED"


class DistributedError(ValueError):
    """Multi-process setup that cannot work as configured (the message says what to change)."""


def enabled(opts: Optional[dict]) -> bool:
    env = os.environ.get(ENV_ENABLE, "").strip().lower()
    return bool((opts or {}).get("enabled")) or env in ("1", "true", "yes", "on")


def _wait_for_coordinator(address: str, timeout: float, process_id: int, stream) -> None:
    """A non-zero process checks that the coordinator's port answers before ``jax.distributed``
    tries (XLA aborts the process with a bare DEADLINE_EXCEEDED when it cannot connect)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise DistributedError(f"search.distributed.coordinator_address {address!r} must look like "
                               f"'host:port' (the address of process 0, which runs the coordinator)")
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"process {process_id} could not reach the coordinator at {address} within {timeout:g} s "
                    f"({e}): start process 0 (it runs the coordinator) with the same "
                    f"search.distributed.coordinator_address and num_processes, make sure this host can "
                    f"reach that host and port (firewall), or raise "
                    f"search.distributed.initialization_timeout if the processes start far apart") from None
            if not said:
                _say(stream, f"process {process_id}: waiting for the coordinator at {address}")
                said = True
            time.sleep(0.5)


def _say(stream, msg):
    stream = stream if stream is not None else sys.stderr
    stream.write(f"jaxnas: {msg}\n")
    stream.flush()


def initialize(opts: Optional[dict], stream=None) -> bool:
    """Starts ``jax.distributed`` when ``search.distributed`` (or ``JAXNAS_DISTRIBUTED=1``) asks for
    it; returns whether this process is one of several. Must run before anything touches a device.
    Already initialised (by the user's own ``jax.distributed.initialize``): nothing to do."""
    opts = dict(opts or {})
    if not enabled(opts):
        return jax.process_count() > 1 if jax.distributed.is_initialized() else False
    if jax.distributed.is_initialized():
        n = opts.get("num_processes")
        if n is not None and n != jax.process_count():
            raise DistributedError(f"search.distributed.num_processes={n}, but jax.distributed already runs "
                                   f"{jax.process_count()} processes: make them agree")
        return jax.process_count() > 1
    from jax._src import xla_bridge
    if xla_bridge.backends_are_initialized():
        raise DistributedError(
            "search.distributed is enabled, but JAX's devices were already in use in this process: "
            "jax.distributed must start first. Run the search in a fresh process (`jaxnas search`), or call "
            "jaxnas.engine.distributed.initialize(cfg['search']['distributed']) before any other JAX call")
    kwargs = {k: opts[k] for k in ("coordinator_address", "num_processes", "process_id", "local_device_ids")
              if opts.get(k) is not None}
    timeout = int(opts.get("initialization_timeout") or 300)
    address = kwargs.get("coordinator_address") or os.environ.get("JAX_COORDINATOR_ADDRESS")
    pid = kwargs.get("process_id")
    if address and pid not in (None, 0):
        _wait_for_coordinator(address, timeout, pid, stream)
    if address and pid is not None and kwargs.get("num_processes"):
        _say(stream, f"process {pid} of {kwargs['num_processes']}: joining the coordinator at {address} "
                     f"(waits up to {timeout} s for all processes)")
    try:
        jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
    except (ValueError, TypeError) as e:
        raise DistributedError(
            f"cannot start jax.distributed ({e}): set search.distributed.coordinator_address ('host:port' of "
            f"process 0), num_processes and process_id (e.g. `jaxnas search CONFIG "
            f"search.distributed.enabled=True search.distributed.process_id=$RANK ...`), or run where JAX "
            f"detects them (a Cloud TPU pod slice, SLURM, Open MPI, Kubernetes)") from None
    return jax.process_count() > 1


def is_primary() -> bool:
    """Process 0: the one that writes the work dir's files."""
    return jax.process_index() == 0


# ---- agreeing across processes -------------------------------------------------------------------
_MSG = 4096


def _allgather_bytes(b: bytes) -> list[bytes]:
    """Every process's ``b`` (at most 4 KiB kept), in process order; needs every process to call."""
    from jax.experimental import multihost_utils
    buf = np.zeros(_MSG + 4, np.uint8)
    b = b[:_MSG]
    buf[:4] = np.frombuffer(np.uint32(len(b)).tobytes(), np.uint8)
    buf[4:4 + len(b)] = np.frombuffer(b, np.uint8)
    out = np.asarray(multihost_utils.process_allgather(buf))
    return [bytes(r[4:4 + int(np.frombuffer(r[:4].tobytes(), np.uint32)[0])]) for r in out]


def agree(fn: Callable[[], Any], primary_only: bool = False, what: str = "") -> Any:
    """Runs ``fn`` (on process 0 only with ``primary_only``) and shares the outcome: when it raised on
    any process, every process raises (the failing process its own exception, the others a
    :class:`DistributedError` with its message). Single-process: just ``fn()``."""
    if jax.process_count() == 1:
        return fn()
    result, error = None, None
    if not primary_only or is_primary():
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001  (shared, then re-raised)
            error = e
    msg = b"" if error is None else f"{type(error).__name__}: {error}".encode("utf-8", "replace")
    msgs = _allgather_bytes(b"\x01" + msg if error is not None else b"\x00")
    if error is not None:
        raise error
    bad = [(i, m[1:].decode("utf-8", "replace")) for i, m in enumerate(msgs) if m[:1] == b"\x01"]
    if bad:
        i, m = bad[0]
        raise DistributedError(f"{what + ': ' if what else ''}process {i} stopped the run: {m}")
    return result


def check_same(name: str, value: str, fix: str) -> None:
    """Stops every process (naming the ones that differ from process 0) unless ``value`` is the same
    on all of them."""
    if jax.process_count() == 1:
        return
    vals = [v.decode() for v in _allgather_bytes(value.encode())]
    odd = [i for i, v in enumerate(vals) if v != vals[0]]
    if odd:
        raise DistributedError(f"process(es) {odd} have another {name} than process 0: {fix}")


def any_stop(signum: Optional[int]) -> Optional[int]:
    """The stop signal any process received (None: none): every process stops at the same step
    (``jaxnas.core.signals``). One process: ``signum`` itself; several: a tiny all-gather per chunk."""
    if jax.process_count() == 1:
        return signum
    from jax.experimental import multihost_utils
    got = np.asarray(multihost_utils.process_allgather(np.int32(signum or 0)))
    return int(got.max()) or None


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def local_rows(mesh, batch_size: int) -> list[tuple[Any, slice]]:
    """``(device, rows)`` of this process's devices: the rows of a global batch each one holds."""
    if batch_size % mesh.size:
        raise DistributedError(f"a batch of {batch_size} does not divide over the {mesh.size} devices of "
                               f"{jax.process_count()} process(es): make search.batch_size (and "
                               f"search.val_batch_size) a multiple of {mesh.size}")
    index = batch_sharding(mesh).addressable_devices_indices_map((1, batch_size))
    return [(d, ix[1]) for d, ix in index.items()]


def feed(arrays, idx: np.ndarray, mesh):
    """The examples ``idx`` (``[steps, batch]`` global indices, the same on every process) of the
    pytree ``arrays`` as global device arrays ``[steps, batch, ...]`` split over ``mesh``: this
    process gathers (reads) only the rows its own devices hold. Without a mesh: host arrays."""
    idx = np.asarray(idx)
    if mesh is None:
        return gather(arrays, idx)
    sharding = batch_sharding(mesh)
    parts = [(d, gather(arrays, idx[:, rows])) for d, rows in local_rows(mesh, idx.shape[1])]
    treedef = jax.tree.structure(parts[0][1])
    leaves = [jax.tree.leaves(p) for _, p in parts]
    out = []
    for j, first in enumerate(leaves[0]):
        shape = idx.shape + np.shape(first)[2:]
        shards = [jax.device_put(np.asarray(leaves[k][j]), d) for k, (d, _) in enumerate(parts)]
        out.append(jax.make_array_from_single_device_arrays(shape, sharding, shards))
    return jax.tree.unflatten(treedef, out)


def check_lanes(mesh, devices_opt) -> None:
    """Over several processes the mesh must hold every device (each process feeds its own rows)."""
    if jax.process_count() == 1:
        return
    n = 1 if mesh is None else mesh.size
    if n != jax.device_count():
        raise DistributedError(
            f"search.devices={devices_opt!r} uses {n} of the {jax.device_count()} devices of the "
            f"{jax.process_count()} processes; a multi-process search spans every process's devices: set "
            f"search.devices='all' (or {jax.device_count()})")

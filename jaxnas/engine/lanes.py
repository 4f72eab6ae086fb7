"""Lanes: the ``P`` samples of one search step, each on its own device of a 1-D ``("data",)`` mesh (or
vmapped on one device), and how arrays are placed over that mesh, within one process or several.
The search loop (``search.py``) and the multi-process machinery (``distributed.py``) both use it."""
from __future__ import annotations

from typing import Optional

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
BATCH_SPEC = P(None, AXIS)   # batches [steps, batch, ...]: split on the batch axis over the lanes


def make_mesh(num_devices: Optional[int] = None):
    """A 1-D ``("data",)`` mesh over the first ``num_devices`` devices (all by default)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices; {len(devices)} available ({devices[0].platform})")
    return jax.make_mesh((n,), (AXIS,), devices=devices[:n],
                         axis_types=(jax.sharding.AxisType.Explicit,))


def replicate(tree, mesh):
    """``tree`` replicated on every device of ``mesh``. Within one process a ``device_put``; over
    several, each process supplies its own (identical) copy through the host (``device_put`` does not
    take a committed or key array to devices of other processes). Leaves already on ``mesh`` stay."""
    sharding = NamedSharding(mesh, P())
    if all(d.process_index == jax.process_index() for d in mesh.devices.flat):
        return jax.device_put(tree, sharding)

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)
    return jax.tree.map(put, tree)


def batch_sharding(mesh):
    """Batches ``[steps, batch, ...]``: split on the batch axis over the mesh's data axis."""
    return NamedSharding(mesh, BATCH_SPEC)

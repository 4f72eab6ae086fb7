"""Fast parameter initialisation for large supernets.

``module.init`` traces every candidate op and, under jit, compiles one threefry random call per
parameter: on CPU that is ~1-2 s of XLA compile each (measured: 20 normals, 34 s), i.e. minutes for
a DARTS supernet. ``init_params`` takes the parameter shapes from ``jax.eval_shape`` (trace only, no
compile) and draws the values with numpy from a seed derived from the key, with the initialisers the
modules declare: conv kernels (4-D) He-normal, dense kernels (2-D) LeCun-normal (both truncated at
2 std), biases 0, BN scales 1, running means 0 and variances 1.
"""
from __future__ import annotations

import math

import jax
import numpy as np

from jaxnas.core import trace_cache


def _seed(key) -> int:
    data = np.asarray(jax.random.key_data(key)).reshape(-1)
    return int(np.uint64(data[-1]) + (np.uint64(data[0]) << np.uint64(32)))


def _truncated_normal(rng, shape, std):
    x = rng.standard_normal(shape)
    bad = np.abs(x) > 2
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(x) > 2
    return x * std / 0.87962566103423978  # std of a unit normal truncated at +-2


def init_variables(module, key, *args, **kwargs) -> dict:
    """Like ``module.init(key, *args, **kwargs)`` but without compiling anything."""
    # the shapes from disk where this module was initialised before (core/trace_cache.py)
    shapes = trace_cache.cached_shapes(module, args, kwargs,
                                       lambda: jax.eval_shape(lambda k: module.init(k, *args, **kwargs), key))
    # analysis hooks (perturb/sow) are not state: leave them out, as flax does when not asked for
    shapes = {c: v for c, v in shapes.items() if c not in ("perturbations", "intermediates")}
    rng = np.random.default_rng(_seed(key))

    # host arrays, moved in one transfer: a jnp constructor per leaf compiled a program per shape and
    # dtype (DARTS-8: 145 leaves, 0.5 s of a warm start); float64 -> dtype rounds as XLA's convert does
    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        collection = str(getattr(path[0], "key", path[0]))
        shape, dtype = leaf.shape, np.dtype(leaf.dtype)
        if collection == "batch_stats":
            return np.ones(shape, dtype) if name == "var" else np.zeros(shape, dtype)
        if name == "kernel":
            fan_in = math.prod(shape[:-1])
            scale = 2.0 if len(shape) == 4 else 1.0
            return _truncated_normal(rng, shape, math.sqrt(scale / fan_in)).astype(dtype)
        if name == "scale":
            return np.ones(shape, dtype)
        if name == "bias":
            return np.zeros(shape, dtype)
        raise ValueError(f"init_variables: no initialiser rule for parameter {'/'.join(map(str, path))}")

    return jax.device_put(jax.tree_util.tree_map_with_path(fill, shapes))


def init_params(module, key, *args, **kwargs) -> dict:
    """The ``params`` collection of ``init_variables``."""
    return init_variables(module, key, *args, **kwargs)["params"]

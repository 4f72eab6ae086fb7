"""The accelerator branches, forced on CPU: every ``lax.platform_dependent`` in the kernels
(jaxnas/models/ops/conv.py: the conv backward, depthwise conv, 3x3 max pool, the cotangent barrier)
takes its ``default`` branch — the code GPU and TPU run — and whole supernets give the same values
and gradients as with the CPU branches, sparse (a switch per edge) and dense, scanned and not."""
import chex
import jax
import jax.numpy as jnp
import pytest
from jax import lax

from jaxnas.models.ops import conv
from jaxnas.models.supernets import DartsNet, NasBench201Net, init_params
from jaxnas.spaces.cells import DartsSpace, NasBench201Space

KEY = jax.random.key(0)
X = jax.random.normal(KEY, (4, 8, 8, 3))
TINY_NB201 = NasBench201Space.create(C=4, cells_per_stage=1)
# every op kind (sep and dil convs, max pool, skip, none) at a small compile time (as test_supernets.py)
TINY_DARTS = DartsSpace.create(C=4, num_cells=3,
                               ops=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"))


class _AcceleratorLax:
    """``jax.lax`` whose ``platform_dependent`` takes the ``default`` (non-CPU) branch."""

    def __getattr__(self, name):
        return getattr(lax, name)

    @staticmethod
    def platform_dependent(*args, default, **_platforms):
        return default(*args)


def _values_and_grads(net, params, w, mode):
    def loss(p, w):
        return jnp.sum(jnp.sin(net.apply({"params": p}, X, w, mode=mode)))
    f = jax.jit(jax.value_and_grad(loss, (0, 1)))       # a new function: traced under the current lax
    return f(params, w), f.lower(params, w).as_text()


@pytest.mark.parametrize("space,net_kw,mode", [
    (TINY_NB201, {}, "sparse"), (TINY_NB201, {}, "dense"),
    (TINY_DARTS, {"scan_edges": True}, "sparse"), (TINY_DARTS, {"scan_edges": True}, "dense")],
    ids=["nb201-sparse", "nb201-dense", "darts-scan_edges-sparse", "darts-scan_edges-dense"])
# (the per-edge DARTS form has the same ops and switches; its forced compile alone takes ~100 s here)
def test_forced_accelerator_branches_equal_cpu_branches(monkeypatch, space, net_kw, mode):
    net = (NasBench201Net if space is TINY_NB201 else DartsNet)(space, **net_kw)
    params = init_params(net, KEY, X, jnp.zeros(space.shape))
    arch = space.sample(jax.random.key(3))
    # sparse: one op per edge, its weight not 1 (the weight's gradient flows); dense: a softmax mixture
    w = (space.one_hot(arch) * 0.7 if mode == "sparse" else
         jax.nn.softmax(jax.random.normal(jax.random.key(4), space.one_hot(arch).shape), -1))
    cpu, cpu_text = _values_and_grads(net, params, w, mode)
    monkeypatch.setattr(conv, "lax", _AcceleratorLax())
    jax.clear_caches()      # jitted kernels traced under the real lax (the sparse edge's ops) trace again
    try:
        acc, acc_text = _values_and_grads(net, params, w, mode)
    finally:
        jax.clear_caches()  # ... and none traced under the forced lax outlives the test
    if jax.default_backend() == "cpu":              # (on GPU/TPU both are already the default branch)
        assert acc_text != cpu_text                   # the forced program is another program
    chex.assert_trees_all_close(acc[0], cpu[0], atol=1e-5, rtol=1e-5)                   # values
    chex.assert_trees_all_close(acc[1], cpu[1], atol=5e-4, rtol=1e-3)                 # gradients
    chex.assert_tree_all_finite(acc[1])

"""The scanned cell form (``scan_edges=True``: each node's edges as one scanned edge over stacked
parameters) computes what the per-edge form computes, and the two parameter trees convert."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces.cells import DartsSpace, NasBench201Space, reduction_cells
from jaxnas.supernets.cells import DartsNet, NasBench201Net, edge_groups, scan_edge_params, unscan_edge_params


def _nets(kind):
    if kind == "nb201":
        sp = NasBench201Space.create(C=4, cells_per_stage=1)
        return sp, NasBench201Net(sp), NasBench201Net(sp, scan_edges=True), (), (2, 16, 16, 3)
    # pools (stride 2 in a reduction cell), skip (factorized reduce there), a sep and a dil conv
    sp = DartsSpace.create(C=4, num_cells=3, ops=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3",
                                                  "dil_conv_3x3"))
    return (sp, DartsNet(sp), DartsNet(sp, scan_edges=True), reduction_cells(3), (2, 16, 16, 3))


def test_edge_groups_cover_every_edge_once_in_loop_order():
    sp = DartsSpace.create(C=4, num_cells=3)
    for reduction in (False, True):
        members = [m for _, _, ms in edge_groups(sp, reduction) for m in ms]
        chex.assert_trees_all_equal([e for e, _, _ in members], list(range(sp.edges_per_cell)))
        strides = {name: st for name, st, _ in edge_groups(sp, reduction)}
        assert (2 in strides.values()) == reduction


@pytest.mark.parametrize("kind", ["nb201", "darts"])
def test_scanned_cells_equal_per_edge_cells_sparse_and_dense(kind):
    sp, net, scanned, reds, shape = _nets(kind)
    x = jax.random.normal(jax.random.key(0), shape)
    w = jax.nn.softmax(jax.random.normal(jax.random.key(1), sp.shape))
    params = net.init(jax.random.key(2), x, w)["params"]
    sparams = scan_edge_params(params, sp, reds)
    # the scanned module's own tree has exactly the converted structure and shapes
    own = jax.eval_shape(lambda: scanned.init(jax.random.key(2), x, w)["params"])
    chex.assert_trees_all_equal_shapes_and_dtypes(own, sparams)
    chex.assert_trees_all_equal(unscan_edge_params(sparams, sp, reds), params)

    def loss(p, w, n, mode):
        return jnp.mean(n.apply({"params": p}, x, w, mode=mode) ** 2)

    # the scanned path does not depend on the mode (only MixedEdge does): DARTS (stride-2 groups)
    # in sparse mode only, to keep the compile short; NB201 in both
    for mode in ("sparse", "dense") if kind == "nb201" else ("sparse",):
        a, (ga, gwa) = jax.jit(jax.value_and_grad(loss, (0, 1)), static_argnums=(2, 3))(params, w, net, mode)
        b, (gb, gwb) = jax.jit(jax.value_and_grad(loss, (0, 1)), static_argnums=(2, 3))(sparams, w, scanned, mode)
        np.testing.assert_allclose(b, a, rtol=1e-5)
        chex.assert_trees_all_close(gwb, gwa, rtol=1e-4, atol=1e-7)     # eq. 7 / DARTS gradients
        chex.assert_trees_all_close(unscan_edge_params(gb, sp, reds), ga, rtol=1e-4, atol=1e-7)

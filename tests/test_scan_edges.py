"""The scanned forms compute what the per-edge, per-cell supernet computes, and the parameter trees
convert: ``scan_edges=True`` (a cell's edges as one scanned edge, two in a reduction cell, over
stacked parameters) and ``scan_cells=True`` (each run of same-shape cells as one scanned cell)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.models.supernets.cells import (
    DartsNet,
    NasBench201Net,
    cell_runs,
    edge_groups,
    scan_cell_params,
    scan_edge_params,
    unscan_cell_params,
    unscan_edge_params,
)
from jaxnas.spaces.cells import DartsSpace, NasBench201Space, reduction_cells


def _nets(kind):
    if kind == "nb201":
        sp = NasBench201Space.create(C=4, cells_per_stage=1)
        return sp, NasBench201Net(sp), NasBench201Net(sp, scan_edges=True), (), (2, 16, 16, 3)
    # pools (stride 2 in a reduction cell), skip (factorized reduce there), a sep and a dil conv
    sp = DartsSpace.create(C=4, num_cells=3, ops=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3",
                                                  "dil_conv_3x3"))
    return (sp, DartsNet(sp), DartsNet(sp, scan_edges=True), reduction_cells(3), (2, 16, 16, 3))


def _assert_same_loss_and_gradients(net, params, scanned, sparams, back, x, w, modes, param_atol):
    """Loss, d/d weights (eq. 7 / DARTS) and parameter gradients (``back`` converts the scanned
    tree's) of the scanned net equal the per-edge, per-cell net's in every mode."""
    def loss(p, w, n, mode):
        return jnp.mean(n.apply({"params": p}, x, w, mode=mode) ** 2)

    for mode in modes:
        a, (ga, gwa) = jax.jit(jax.value_and_grad(loss, (0, 1)), static_argnums=(2, 3))(params, w, net, mode)
        b, (gb, gwb) = jax.jit(jax.value_and_grad(loss, (0, 1)), static_argnums=(2, 3))(sparams, w, scanned, mode)
        np.testing.assert_allclose(b, a, rtol=1e-5)
        chex.assert_trees_all_close(gwb, gwa, rtol=1e-4, atol=1e-7)
        chex.assert_trees_all_close(back(gb), ga, rtol=1e-4, atol=param_atol)


@pytest.mark.parametrize("space", [DartsSpace.create(C=4, num_cells=3), NasBench201Space.create(C=4)])
def test_edge_groups_cover_every_edge_once_in_a_valid_order(space):
    for reduction in (False, True):
        groups = edge_groups(space, reduction)
        members = [m for _, _, ms in groups for m in ms]
        assert sorted(e for e, _, _ in members) == list(range(space.edges_per_cell))
        for n, (e, j, i) in enumerate(members):
            # every node sums its edges in the per-edge loop's order, and an edge from an
            # intermediate node runs after every edge into that node
            assert all(e2 < e for e2, j2, _ in members[:n] if j2 == j)
            assert not any(j2 == i for _, j2, _ in members[n:])
        strides = {name: st for name, st, _ in groups}
        assert strides == ({"edges_in": 2, "edges_mid": 1} if reduction else {"edges": 1})


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

    # the scanned path does not depend on the mode (only MixedEdge does): DARTS (stride-2 groups)
    # in sparse mode only, to keep the compile short; NB201 in both
    _assert_same_loss_and_gradients(net, params, scanned, sparams, lambda g: unscan_edge_params(g, sp, reds), x, w,
                                    ("sparse", "dense") if kind == "nb201" else ("sparse",), param_atol=1e-7)


def test_cell_runs_are_the_same_shape_cells():
    def runs(sp, cls):
        return cell_runs(cls(sp))
    # DARTS: cell c >= 2 with neither c nor c - 1 a reduction (reductions at n // 3, 2n // 3)
    assert runs(DartsSpace.create(C=4, num_cells=8), DartsNet) == []          # 4 and 7 alone in their stage
    assert runs(DartsSpace.create(C=4, num_cells=20, unique_cells=True), DartsNet) == [(2, 5), (8, 12), (15, 19)]
    assert runs(DartsSpace.create(C=4, num_cells=10), DartsNet) == [(8, 9)]
    assert runs(NasBench201Space.create(C=4, cells_per_stage=5), NasBench201Net) == [(0, 4), (5, 9), (10, 14)]
    assert runs(NasBench201Space.create(C=4, cells_per_stage=1), NasBench201Net) == []
    with pytest.raises(ValueError, match="search supernets"):
        sp = NasBench201Space.create(C=4, cells_per_stage=2)
        NasBench201Net(sp, arch=(1,) * sp.num_decisions, scan_cells=True).init(
            jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


@pytest.mark.parametrize("kind", ["nb201", "nb201_unique_both", "darts"])
def test_scanned_cell_runs_equal_per_cell_nets(kind):
    if kind.startswith("nb201"):
        sp = NasBench201Space.create(C=4, cells_per_stage=2, unique_cells=kind != "nb201")
        cls, reds = NasBench201Net, ()
    else:   # 10 cells: one run (8, 9); skip (factorized reduce in a reduction) and a sep conv keep it short
        sp = DartsSpace.create(C=4, num_cells=10, ops=("none", "skip_connect", "sep_conv_3x3"))
        cls, reds = DartsNet, reduction_cells(10)
    edges = kind.endswith("both")   # scan_edges as well: the edge conversion first, then the cells'
    net, scanned = cls(sp), cls(sp, scan_cells=True, scan_edges=edges)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(1), sp.shape))
    params = net.init(jax.random.key(2), x, w)["params"]
    to = lambda p: scan_cell_params(scan_edge_params(p, sp, reds) if edges else p, net)
    back = lambda p: (lambda q: unscan_edge_params(q, sp, reds) if edges else q)(unscan_cell_params(p, net))
    sparams = to(params)
    own = jax.eval_shape(lambda: scanned.init(jax.random.key(2), x, w)["params"])
    chex.assert_trees_all_equal_shapes_and_dtypes(own, sparams)
    chex.assert_trees_all_equal(back(sparams), params)

    # summation order differs (stacked edges and cells): the stem's kernel gradient by 4e-7
    _assert_same_loss_and_gradients(net, params, scanned, sparams, back, x, w,
                                    ("sparse", "dense") if kind == "nb201" else ("sparse",), param_atol=1e-6)


def _conds(jaxpr) -> int:
    """The ``cond`` equations of a jaxpr, each nested jaxpr counted at every call."""
    def nested(value):
        if hasattr(value, "eqns"):
            yield value
        elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
            yield value.jaxpr
        elif isinstance(value, (tuple, list)):
            for v in value:
                yield from nested(v)
    return sum((e.primitive.name == "cond") + sum(_conds(j) for v in e.params.values() for j in nested(v))
               for e in jaxpr.eqns)


def test_scanned_edges_trace_the_ops_once_per_group():
    """The point of ``scan_edges``: the differentiated program holds one copy of the candidate ops
    per edge group (one per normal cell, two per reduction cell), not one per edge. Counted as
    the switches (``cond``, with the ops' own conditionals) of the traced gradient, every nested
    jaxpr counted where it is called (as XLA inlines them: the sparse edge's ops are jitted
    functions, traced once per shape and called per edge)."""
    sp = DartsSpace.create(C=4, num_cells=3, ops=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"))
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(1), sp.shape))

    def switches(net):
        params = jax.eval_shape(lambda: net.init(jax.random.key(2), x, w)["params"])
        grad = jax.grad(lambda p: jnp.mean(net.apply({"params": p}, x, w, mode="sparse") ** 2))
        return _conds(jax.make_jaxpr(grad)(params).jaxpr)

    per_edge, scanned = switches(DartsNet(sp)), switches(DartsNet(sp, scan_edges=True))
    groups = sum(len(edge_groups(sp, c in reduction_cells(3))) for c in range(3))
    # 3 x 14 edges against the groups: as many times fewer copies of the same ops (within 20 %)
    assert per_edge * groups >= 0.8 * 3 * sp.edges_per_cell * scanned, (per_edge, scanned, groups)

"""The sparse edge with a hand-written VJP (ops/sparse_edge.py): the same values and gradients as the
rematerialised switch it replaces, op by op and in whole NAS-Bench-201 supernets."""
import chex
import jax
import jax.numpy as jnp
import pytest
from jax import lax

from jaxnas.models.ops.conv import Kernels, avg_pool3, conv2d
from jaxnas.models.ops.layers import batch_normalize
from jaxnas.models.ops.sparse_edge import EdgeOp, switch_edge
from jaxnas.models.supernets import DartsNet, MixedEdge, NasBench201Net, init_params
from jaxnas.spaces.cells import DartsSpace, NasBench201Space

KEY = jax.random.key(0)


def _plain(op, x, kernels):
    """The op as the candidate modules compute it (ops/candidates.py)."""
    if op.kind == "zero":
        return jnp.zeros((x.shape[0], -(-x.shape[1] // op.stride), -(-x.shape[2] // op.stride), x.shape[3]))
    if op.kind == "identity":
        return x
    if op.kind == "avg_pool":
        return avg_pool3(x, op.stride)
    return batch_normalize(conv2d(jax.nn.relu(x), kernels[op.kernel], op.stride), op.epsilon)


@pytest.mark.parametrize("stride", [1, 2])
def test_switch_edge_equals_the_rematerialised_switch(stride):
    ops = (EdgeOp("zero", stride), EdgeOp("relu_conv_bn", stride, kernel=0), EdgeOp("avg_pool", stride),
           EdgeOp("relu_conv_bn", stride, kernel=1))
    if stride == 1:
        ops += (EdgeOp("identity"),)
    x = jax.random.normal(KEY, (4, 7, 6, 5))
    kernels = (jax.random.normal(jax.random.fold_in(KEY, 1), (1, 1, 5, 5)),
               jax.random.normal(jax.random.fold_in(KEY, 2), (3, 3, 5, 5)) * 0.3)
    probe = jax.random.normal(jax.random.fold_in(KEY, 3), _plain(ops[0], x, kernels).shape)

    def loss(edge):
        return lambda x, k, i: jnp.sum(jnp.sin(edge(i, x, k)) * probe)
    ours = jax.jit(jax.value_and_grad(loss(lambda i, x, k: switch_edge(ops, i, x, k)), (0, 1)))
    remat = jax.jit(jax.value_and_grad(loss(lambda i, x, k: lax.switch(
        i, [jax.checkpoint(lambda x, k, op=op: _plain(op, x, k)) for op in ops], x, k)), (0, 1)))
    for i in range(len(ops)):
        a, b = ours(x, kernels, i), remat(x, kernels, i)
        chex.assert_trees_all_close(a, b, atol=1e-5, rtol=1e-5)
        if ops[i].kind == "relu_conv_bn":   # the conv's kernel gets a gradient, the others none
            assert float(jnp.abs(a[1][1][ops[i].kernel]).max()) > 0
            assert float(jnp.abs(a[1][1][1 - ops[i].kernel]).max()) == 0


def _nb201_grads(kernels: Kernels, scan_cells: bool, archs):
    sp = NasBench201Space.create(C=4, cells_per_stage=2)
    net = NasBench201Net(sp, scan_cells=scan_cells, kernels=kernels)
    x = jax.random.normal(KEY, (8, 8, 8, 3))
    params = init_params(net, KEY, x, jnp.ones((sp.num_decisions, sp.max_choices)))

    def loss(p, w):
        return jnp.sum(jnp.sin(net.apply({"params": p}, x, w, mode="sparse", control_flow=True)))
    f = jax.jit(jax.value_and_grad(loss, (0, 1)))
    jaxpr = str(jax.make_jaxpr(loss)(params, sp.one_hot(archs[0])))
    return [f(params, 0.5 * sp.one_hot(a)) for a in archs], "custom_vjp_call" in jaxpr and "switch_edge" in jaxpr


@pytest.mark.parametrize("scan_cells", [False, True])
def test_nb201_supernet_gradients_equal_with_and_without_the_edge_vjp(scan_cells):
    sp = NasBench201Space.create(C=4, cells_per_stage=2)
    archs = [sp.sample(jax.random.fold_in(KEY, 10 + i)) for i in range(3)]
    ours, used = _nb201_grads(Kernels(), scan_cells, archs)
    ref, ref_used = _nb201_grads(Kernels(sparse_edge_vjp=False), scan_cells, archs)
    assert used and not ref_used          # the default takes the edge VJP, the option the old switch
    for a, b in zip(ours, ref):
        # float rounding: each form is up to 1e-4 from a float64 evaluation of this net (BN over 8
        # images of 8x8), 1.2e-5 from the other; a wrong BN or conv gradient is off by ~1e-2
        chex.assert_trees_all_close(a, b, atol=5e-5, rtol=1e-4)
        assert float(jnp.abs(a[1][1]).max()) > 0   # d loss / d weights reaches the chosen ops (eq. 7)


DARTS_OPS = DartsSpace.create(C=4, num_cells=3).ops      # all eight


def _form(jaxpr) -> str:
    """Which sparse switch a traced loss holds: the edge VJP, the jitted ops' rematerialised switch
    (ops/sparse_edge.py) or the candidate modules' (cells.py)."""
    text = str(jaxpr)
    return "edge_vjp" if "switch_edge" in text else "jit_remat" if "name=_forward" in text else "module_remat"


# (kernels, scan_body) -> the form it takes for DARTS's ops: the default, the edge VJP (per edge);
# a scan body's edge takes the jitted ops' rematerialised switch whatever is asked
DARTS_FORMS = {(Kernels(), False): "jit_remat", (Kernels(darts_edge_vjp=True), False): "edge_vjp",
               (Kernels(darts_edge_vjp=True), True): "jit_remat"}


@pytest.mark.parametrize("stride", [1, 2])
def test_darts_edges_equal_the_rematerialised_modules(stride):
    """Every DARTS op (its candidate module, ops/candidates.py) in each form of ops/sparse_edge.py
    (the default's jitted rematerialised switch; the edge VJP with its own backward pass; a scan
    body's edge) against the rematerialised switch of the candidate modules: the edge's
    value and the gradients of its parameters, input and weights."""
    x = jax.random.normal(KEY, (4, 6, 6, 4))
    w0 = jnp.full((len(DARTS_OPS),), 0.5)
    probe = jax.random.normal(jax.random.fold_in(KEY, 3), (4, 6 // stride, 6 // stride, 4))

    def grads(kernels, scan_body):
        edge = MixedEdge("darts", DARTS_OPS, 4, stride, kernels=kernels, scan_body=scan_body)
        params = init_params(edge, KEY, x, w0)

        def loss(p, x, w):
            return jnp.sum(jnp.sin(edge.apply({"params": p}, x, w, mode="sparse", control_flow=True)) * probe)
        f = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))
        return [f(params, x, w0.at[i].set(1.0)) for i in range(len(DARTS_OPS))], _form(jax.make_jaxpr(loss)(params, x, w0))
    ref, ref_form = grads(Kernels(sparse_edge_vjp=False), False)
    assert ref_form == "module_remat"
    for (kernels, scan_body), form in DARTS_FORMS.items():
        ours, our_form = grads(kernels, scan_body)
        assert our_form == form
        for name, a, b in zip(DARTS_OPS, ours, ref):
            # BN over 4 images of 6x6 (3x3 at stride 2): float rounding only; a wrong BN, conv or ReLU
            # gradient is off by ~1e-2
            chex.assert_trees_all_close(a, b, atol=2e-5, rtol=1e-4,
                                        custom_message=f"{name}, {form}, scan_body={scan_body}")
            if name != "none":      # the chosen op's input gradient is there
                assert float(jnp.abs(a[1][1]).max()) > 0, name


def test_darts_supernet_forms_have_the_same_gradients():
    """A DARTS supernet (a normal and two reduction cells): the default (scanned edges, the jitted
    ops' rematerialised switch, which they keep with ``darts_edge_vjp``) and per-edge cells with the
    edge VJP (``darts_edge_vjp``) have the candidate modules' rematerialised switch's values and
    gradients (four ops: every op's own is the test above)."""
    sp = DartsSpace.create(C=4, num_cells=3, ops=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"))
    x = jax.random.normal(KEY, (8, 8, 8, 3))
    archs = [sp.sample(jax.random.fold_in(KEY, 10 + i)) for i in range(3)]

    def grads(kernels, scan_edges=True):
        net = DartsNet(sp, kernels=kernels, scan_edges=scan_edges)
        params = init_params(net, KEY, x, jnp.ones((sp.num_decisions, sp.max_choices)))

        def loss(p, w):
            return jnp.sum(jnp.sin(net.apply({"params": p}, x, w, mode="sparse", control_flow=True)))
        f = jax.jit(jax.value_and_grad(loss, (0, 1)))
        return [f(params, 0.5 * sp.one_hot(a)) for a in archs], _form(jax.make_jaxpr(loss)(params, sp.one_hot(archs[0])))
    refs = {scan_edges: grads(Kernels(sparse_edge_vjp=False), scan_edges) for scan_edges in (True, False)}
    assert {form for _, form in refs.values()} == {"module_remat"}
    for kernels, scan_edges, form in ((Kernels(), True, "jit_remat"), (Kernels(darts_edge_vjp=True), True, "jit_remat"),
                                      (Kernels(darts_edge_vjp=True), False, "edge_vjp")):
        ours, our_form = grads(kernels, scan_edges)
        assert our_form == form
        for a, b in zip(ours, refs[scan_edges][0]):
            chex.assert_trees_all_close(a, b, atol=5e-5, rtol=1e-4)
            assert float(jnp.abs(a[1][1]).max()) > 0   # d loss / d weights reaches the chosen ops (eq. 7)


def test_switch_edge_refuses_a_malformed_op():
    x, k = jnp.ones((2, 4, 4, 4)), (jnp.ones((1, 1, 4, 2)),)
    for op, match in ((EdgeOp("conv"), "unknown op kind"), (EdgeOp("identity", 2), "stride 1"),
                      (EdgeOp("factorized_reduce", 1, kernel=0), "stride 2"),
                      (EdgeOp("pool_bn", pool="min"), "'max' or 'avg'"),
                      (EdgeOp("factorized_reduce", 2, kernel=0), "reads kernels")):
        with pytest.raises(ValueError, match=match):
            switch_edge((op,), 0, x, k)

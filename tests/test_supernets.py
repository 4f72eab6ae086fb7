"""Supernets: sparse == dense at one-hot weights, the eq. 7 gradient, MLP children, op costs."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.models.ops.candidates import build_op
from jaxnas.models.ops.conv import (
    Kernels,
    conv2d,
    conv2d_reference,
    cotangent_barrier,
    depthwise_conv2d,
    max_pool3,
)
from jaxnas.models.supernets import (
    MLP,
    DartsNet,
    MixedEdge,
    MLPSupernet,
    NasBench201Net,
    child_params,
    init_params,
    init_variables,
)
from jaxnas.spaces import MLPSpace
from jaxnas.spaces.cells import DartsSpace, NasBench201Space
from jaxnas.spaces.op_costs import DARTS_OPS, NB201_OPS, op_param_count
from tests.helpers.xla import flops

KEY = jax.random.key(0)
TINY_NB201 = NasBench201Space.create(C=4, cells_per_stage=1)
# DARTS with a subset of its ops keeps compile time of the test small; every op kind is present
TINY_DARTS = DartsSpace.create(C=4, num_cells=3,
                               ops=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"))


@pytest.mark.parametrize("stride,dilation,depthwise,k", [
    (1, 1, False, 3), (2, 1, False, 3), (1, 2, True, 3), (2, 1, True, 5), (2, 2, True, 5), (2, 1, False, 1),
    (1, 2, False, 3), (2, 2, False, 5), (2, 1, False, 5), (1, 1, False, 1), (1, 2, False, 1)])
def test_switch_safe_conv_gradient_equals_xla(stride, dilation, depthwise, k):
    x = jax.random.normal(KEY, (2, 9, 8, 6))
    w = jax.random.normal(jax.random.fold_in(KEY, 1), (k, k, 1 if depthwise else 6, 6))
    groups = 6 if depthwise else 1
    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, stride, dilation, groups)))
    ours = jax.jit(jax.grad(loss(conv2d), (0, 1)))(x, w)
    ref = jax.grad(loss(conv2d_reference), (0, 1))(x, w)
    chex.assert_trees_all_close(ours, ref, atol=2e-4, rtol=1e-4)
    # and inside a switch, where the CPU gradient path is the one that matters
    f = jax.jit(jax.grad(lambda x, w, i: jax.lax.switch(i, [loss(conv2d), lambda x, w: jnp.sum(x) * 0.0], x, w),
                         (0, 1)))
    chex.assert_trees_all_close(f(x, w, 0), ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (5, 1, 1), (3, 2, 1), (5, 2, 2), (3, 1, 2)])
def test_cpu_depthwise_conv_equals_xla(k, stride, dilation):
    """The shifted-slice depthwise conv (CPU lowering) and its custom gradient equal XLA's grouped
    conv, on odd spatial sizes and inside a switch."""
    x = jax.random.normal(KEY, (2, 9, 7, 5))
    w = jax.random.normal(jax.random.fold_in(KEY, 1), (k, k, 1, 5))
    loss = lambda x, w: jnp.sum(jnp.sin(depthwise_conv2d(x, w, stride, dilation)))
    xla_loss = lambda x, w: jnp.sum(jnp.sin(depthwise_conv2d(x, w, stride, dilation, cpu=False)))
    ref_out = jax.jit(lambda x, w: depthwise_conv2d(x, w, stride, dilation, cpu=False))(x, w)
    ref = jax.jit(jax.grad(xla_loss, (0, 1)))(x, w)
    chex.assert_trees_all_close(ref_out, conv2d_reference(x, w, stride, dilation, 5))
    chex.assert_shape(ref_out, (2, -(-9 // stride), -(-7 // stride), 5))
    chex.assert_trees_all_close(jax.jit(lambda x, w: depthwise_conv2d(x, w, stride, dilation))(x, w), ref_out,
                                atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(jax.jit(jax.grad(loss, (0, 1)))(x, w), ref, atol=2e-4, rtol=1e-4)
    f = jax.jit(jax.grad(lambda x, w, i: jax.lax.switch(i, [loss, lambda x, w: jnp.sum(x) * 0.0], x, w), (0, 1)))
    chex.assert_trees_all_close(f(x, w, 0), ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_cpu_max_pool_gradient_equals_xla(stride):
    """3x3 max pooling's CPU gradient routes each window's cotangent to its first maximum, exactly
    as XLA's select_and_scatter (ties included: a map of repeated values)."""
    x = jax.random.normal(KEY, (2, 9, 7, 3))
    ties = jnp.round(x)  # many equal values per window
    g = jax.random.normal(jax.random.fold_in(KEY, 2), (2, -(-9 // stride), -(-7 // stride), 3))
    for inp in (x, ties):
        loss = lambda x: jnp.sum(max_pool3(x, stride) * g)
        xla_loss = lambda x: jnp.sum(max_pool3(x, stride, cpu=False) * g)
        ref_out = jax.jit(max_pool3, static_argnums=(1, 2))(inp, stride, False)
        ref = jax.jit(jax.grad(xla_loss))(inp)
        chex.assert_trees_all_equal(jax.jit(max_pool3, static_argnums=1)(inp, stride), ref_out)
        # equal up to summation order (a wrongly routed tie would differ by a whole cotangent)
        chex.assert_trees_all_close(jax.jit(jax.grad(loss))(inp), ref, atol=1e-5, rtol=1e-5)
        # every window's cotangent arrives exactly once
        chex.assert_trees_all_close(jnp.sum(ref), jnp.sum(g), rtol=1e-5)


def test_cotangent_barrier_keeps_values_and_stops_recomputation():
    """The barrier at each edge's input is the identity, gradients included (a NaN cotangent
    passes as NaN), and it keeps XLA:CPU from recomputing a chain of dense DARTS edges per
    consumer: 4 edges cost about 4x one edge's FLOPs with it (18x without, op_cost.json)."""
    from jaxnas.models.supernets.cells import MixedEdge
    x = jax.random.normal(KEY, (4, 8, 8, 4))
    w = jax.nn.softmax(jax.random.normal(jax.random.fold_in(KEY, 1), (len(DARTS_OPS),)))

    class Chain(nn.Module):
        depth: int
        kernels: Kernels = Kernels()

        @nn.compact
        def __call__(self, x, w):
            for _ in range(self.depth):
                x = MixedEdge("darts", DARTS_OPS, 4, 1, kernels=self.kernels)(x, w, "dense", True)
            return x

    def compiled(depth, barrier=True):
        net = Chain(depth, Kernels(cotangent_barrier=barrier))
        p = net.init(KEY, x, w)
        loss = lambda p, x, w: jnp.sum(jnp.sin(net.apply(p, x, w)))
        f = jax.jit(jax.grad(loss, (0, 1, 2))).lower(p, x, w).compile()
        return f(p, x, w), flops(f)

    (_, f1), (g4, f4), (g4_plain, f4_plain) = compiled(1), compiled(4), compiled(4, barrier=False)
    chex.assert_trees_all_close(g4, g4_plain, atol=1e-5, rtol=1e-5)
    chex.assert_tree_all_finite(g4)
    assert f4 <= 4.5 * f1, (f4 / f1, f4_plain / f1)
    nan = jax.grad(lambda x: jnp.sum(cotangent_barrier(x) * jnp.nan))(x)
    assert bool(jnp.all(jnp.isnan(nan)))
    chex.assert_trees_all_equal(jax.grad(lambda x: jnp.sum(jnp.sin(cotangent_barrier(x))))(x), jnp.cos(x))


@pytest.mark.parametrize("space,net_cls", [(TINY_NB201, NasBench201Net), (TINY_DARTS, DartsNet)])
def test_sparse_equals_dense_at_one_hot(space, net_cls):
    net = net_cls(space)
    x = jax.random.normal(KEY, (4, 8, 8, 3))
    params = init_params(net, KEY, x, jnp.zeros(space.shape))
    fwd = jax.jit(lambda p, w, mode: net.apply({"params": p}, x, w, mode=mode), static_argnums=2)
    for s in range(2):
        w = space.one_hot(space.sample(jax.random.key(s + 1)))
        sparse, dense = fwd(params, w, "sparse"), fwd(params, w, "dense")
        chex.assert_shape(sparse, (4, 10))
        chex.assert_trees_all_close(sparse, dense, atol=1e-5, rtol=1e-5)
    # scaling the chosen op's weight scales that edge's output: sparse and dense still agree
    w = space.one_hot(space.sample(jax.random.key(7))) * 0.5
    chex.assert_trees_all_close(fwd(params, w, "sparse"), fwd(params, w, "dense"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_a_sparse_edge_at_init_gives_the_chosen_ops_output(stride):
    """At init a sparse MixedEdge runs every op (its params) and selects the chosen one's output
    without tracing its switch: the same output as the switch on the initialised params."""
    edge = MixedEdge("darts", DARTS_OPS, 4, stride)
    x = jax.random.normal(KEY, (2, 8, 8, 4))
    for k in (0, 3, 5):
        w = jax.nn.one_hot(k, len(DARTS_OPS)) * 0.5
        out, variables = jax.jit(lambda x, w: edge.init_with_output(KEY, x, w))(x, w)
        chex.assert_shape(out, (2, 8 // stride, 8 // stride, 4))
        chex.assert_trees_all_close(out, jax.jit(edge.apply)(variables, x, w), atol=1e-6, rtol=1e-6)
        assert k == 0 or float(jnp.abs(out).sum()) > 0


def test_sparse_weight_gradient_is_eq7():
    """d loss / d weights[d, j] = sum over cells of <dL/dO_d, O_d^j> for the chosen j, 0 elsewhere."""
    space = TINY_NB201
    net = NasBench201Net(space)
    x = jax.random.normal(KEY, (4, 8, 8, 3))
    y = jnp.arange(4) % 10
    arch = jnp.array([3, 2, 4, 1, 3, 0])  # every op kind; 'none' included
    w = space.one_hot(arch)
    params = init_params(net, KEY, x, w)

    def loss_from(out):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out), y[:, None], 1))

    g_w = jax.jit(jax.grad(lambda w: loss_from(net.apply({"params": params}, x, w))))(w)
    # independent: the op outputs (sow) and the loss gradient w.r.t. them (perturb)
    shapes = jax.eval_shape(lambda: net.init(KEY, x, w))
    perturb = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["perturbations"])
    def with_perturb(pert):
        out, state = net.apply({"params": params, "perturbations": pert}, x, w, mutable=["intermediates"])
        return loss_from(out), state["intermediates"]
    g_o, inter = jax.grad(with_perturb, has_aux=True)(perturb)
    expected = np.zeros(space.shape, np.float32)
    for c in range(3):
        for e, (j, i) in enumerate(space.edges):
            o = inter[f"cell{c}"][f"edge_{j}_{i}"]["op_output"][0]
            expected[e, int(arch[e])] += float(jnp.sum(g_o[f"cell{c}"][f"edge_{j}_{i}"]["op_output"] * o))
    chex.assert_trees_all_close(g_w, jnp.asarray(expected), atol=1e-6, rtol=1e-4)
    assert float(jnp.abs(g_w).sum()) > 0
    assert float(g_w[5, 0]) == 0.0  # the zero op's output is 0, so is its eq. 7 signal


def test_mlp_supernet_child_equals_plain_mlp():
    space = MLPSpace.create(3, 5, 3, widths=(2, 4, 8))
    net = MLPSupernet(space)
    x = jax.random.normal(KEY, (16, 5))
    params = init_params(net, KEY, x, jnp.zeros(space.shape))
    for arch in ([0, 2, 1], [2, 0, 2], [1, 1, 0]):
        arch = jnp.array(arch)
        out = net.apply({"params": params}, x, space.one_hot(arch))
        widths = [int(v) for v in space.arch_widths(arch)]
        child = MLP(widths, 3).apply({"params": child_params(space, params, arch)}, x)
        chex.assert_trees_all_close(out, child, atol=1e-5)
        dense = net.apply({"params": params}, x, space.one_hot(arch), mode="dense")
        chex.assert_trees_all_close(dense, child, atol=1e-5)
    # the child's parameters only get gradient inside the active units
    g = jax.grad(lambda p: jnp.sum(net.apply({"params": p}, x, space.one_hot(jnp.array([0, 1, 0])))))(params)
    assert float(jnp.abs(g["hidden1"]["kernel"][2:]).sum()) == 0.0  # rows of inactive layer-0 units
    assert float(jnp.abs(g["hidden1"]["kernel"][:, 4:]).sum()) == 0.0
    assert float(jnp.abs(g["hidden1"]["kernel"][:2, :4]).sum()) > 0.0


@pytest.mark.parametrize("op_set,ops", [("darts", DARTS_OPS), ("nb201", NB201_OPS)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [False, True])
def test_op_param_count_matches_modules(op_set, ops, stride, affine):
    x = jnp.zeros((2, 8, 8, 6))
    for name in ops:
        op = build_op(op_set, name, 6, stride, affine, False)
        variables = init_variables(op, KEY, x)
        n = sum(v.size for v in jax.tree.leaves(variables.get("params", {})))
        assert n == op_param_count(op_set, name, 6, stride, affine), name
        out = op.apply(variables, x)
        chex.assert_shape(out, (2, 8 // stride, 8 // stride, 6))


def test_discrete_net_trains_with_running_stats():
    space = TINY_NB201
    arch = tuple(int(a) for a in space.decode("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"))
    net = NasBench201Net(space, arch=arch, track=True)
    x = jax.random.normal(KEY, (4, 8, 8, 3))
    variables = init_variables(net, KEY, x)
    assert "batch_stats" in variables
    out, state = net.apply(variables, x, train=True, mutable=["batch_stats"])
    chex.assert_shape(out, (4, 10))
    assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state["batch_stats"],
                                         variables["batch_stats"]))
    chex.assert_shape(net.apply({**variables, **state}, x, train=False), (4, 10))
    # the discrete net holds exactly the chosen ops: 'none' edges have no module
    cell = variables["params"]["cell0"]
    assert "edge_2_0" not in cell and "edge_3_2" not in cell and "edge_3_1" in cell


def test_bad_supernet_inputs():
    net = NasBench201Net(TINY_NB201)
    x = jnp.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"\(6, 5\)"):
        init_params(net, KEY, x, jnp.zeros((6, 4)))
    with pytest.raises(ValueError, match="mode"):
        init_params(net, KEY, x, jnp.zeros((6, 5)), mode="sparce")
    with pytest.raises(ValueError, match="sep_conv_3x3"):
        build_op("nb201", "sep_conv_3x3", 4, 1, False, False)
    with pytest.raises(ValueError, match="this space needs"):
        MLPSupernet(MLPSpace.create(2, 3)).init(KEY, jnp.zeros((1, 3)), jnp.zeros((3, 20)))


def test_kernel_choices_are_static_two_programs_one_process_same_values():
    """The kernel choices are a static field of the network (``Kernels``): one jitted weight step,
    the network a static argument, traced with each choice in one process (no clear_caches) gives
    two programs, whose HLO differs, and the same values."""
    space = DartsSpace.create(C=4, num_cells=3)
    nets = {k: DartsNet(space, 10, scan_edges=True, kernels=k)
            for k in (Kernels(), Kernels(cpu=False, cotangent_barrier=False))}
    x = jax.random.normal(KEY, (4, 8, 8, 3))
    w = 0.5 * space.one_hot(space.genotype_to_arch(
        {"normal": [("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("dil_conv_5x5", 0), ("skip_connect", 2),
                    ("sep_conv_5x5", 1), ("max_pool_3x3", 2), ("dil_conv_3x3", 3), ("sep_conv_3x3", 0)],
         "reduce": [("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("dil_conv_3x3", 0), ("max_pool_3x3", 2),
                    ("sep_conv_5x5", 1), ("skip_connect", 0), ("max_pool_3x3", 3), ("dil_conv_5x5", 2)]}))
    params = init_params(next(iter(nets.values())), KEY, x, w)

    def step(net, p, x, w):    # the gradient of a dense weight step (both choices act there)
        return jax.grad(lambda p: jnp.sum(jnp.sin(net.apply({"params": p}, x, w, mode="dense"))))(p)
    f = jax.jit(step, static_argnums=0)
    texts = [f.lower(net, params, x, w).as_text() for net in nets.values()]
    assert texts[0] != texts[1]
    grads = [f(net, params, x, w) for net in nets.values()]
    assert f._cache_size() == 2           # two programs in one process, neither reusing the other's trace
    chex.assert_trees_all_close(grads[0], grads[1], atol=2e-4, rtol=1e-4)

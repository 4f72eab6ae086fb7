"""DARTS (1st/2nd order), GDAS, SNAS, NASP, ProxylessNAS: update directions against independent
computations (finite differences, closed forms, explicit loops) on tiny problems."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces.base import Space
from jaxnas.strategies import make
from jaxnas.strategies.base import SupernetContext
from jaxnas.strategies.gradient import gdas_temperature, gumbel_softmax, sample_two_paths, snas_temperature

# Ragged space: decision "b" has 3 choices, "c" 2 (masked entries must stay at probability 0).
SPACE = Space(("a", "b", "c"), (("none", "x", "y", "z"), ("x", "y", "z"), ("x", "y")))
MASK = np.asarray(SPACE.mask)
# One clearly best op per decision, and the only one with a positive reward (NASP's box needs it).
TABLE = jnp.array([[-1.0, -0.5, 1.0, -2.0], [-0.3, -1.0, 0.8, 0.0], [0.6, -0.6, 0.0, 0.0]])
BEST = np.array([2, 2, 0])
NAMES = ["darts", "darts2", "gdas", "snas", "nasp", "proxyless"]
PLAIN = dict(optimizer="sgd", lr=1.0, weight_decay=0.0, clip=None,   # alpha step = reward grad
             lr_schedule="constant")


def dense_linear(w):
    return jnp.sum(w * TABLE), None


def sparse_linear(w):
    """What a sparse supernet computes: only the argmax op runs, scaled by its weight."""
    idx = jnp.argmax(w, -1)
    return jnp.sum(jnp.take_along_axis(w * TABLE, idx[:, None], -1)), None


def nonlinear(w, xp=jnp):
    """A smooth reward with cross-decision interactions (xp=np: the float64 reference)."""
    c = np.arange(12.0).reshape(3, 4) / 7.0
    return -xp.sum((w * c).sum(-1) ** 2) + xp.sin(xp.sum(w * np.asarray(TABLE, np.float64))), None


C_TRAIN = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
W0 = np.linspace(0.2, -0.4, 12).reshape(3, 4)


def linear_ctx(weight_lr=0.3):
    """Quadratic 'supernet' for DARTS 2nd order: params {'w': [D, K]}."""
    train_loss = lambda p, a: jnp.sum((p["w"] - C_TRAIN * a) ** 2) + 0.1 * jnp.sum(p["w"] ** 2 * a)
    val_reward = lambda p, a: (jnp.sum(a * TABLE) - 2.0 * jnp.sum((p["w"] * a - 0.3) ** 2), None)
    return SupernetContext({"w": jnp.asarray(W0, jnp.float32)}, train_loss, val_reward, weight_lr)


def reward_for(strategy):
    return sparse_linear if strategy.mode == "sparse" else dense_linear


def jstep(strategy, reward_fn, ctx=None):
    return jax.jit(lambda s, k: strategy.step(s, k, reward_fn, ctx=ctx))


def run(strategy, steps, reward_fn, ctx=None, seed=0):
    step = jax.jit(lambda s, k: strategy.step(s, k, reward_fn, ctx=ctx))
    state = strategy.init(jax.random.key(seed))
    metrics = []
    for k in jax.random.split(jax.random.key(seed + 1), steps):
        state, m = step(state, k)
        metrics.append(m)
    return state, metrics


def fd_grad(f, x, eps=1e-5):
    """Central differences in float64 (f takes and returns numpy)."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


def masked_softmax_np(alpha):
    a = np.where(MASK, np.asarray(alpha, np.float64), -np.inf)
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("name", NAMES)
def test_converges_to_best_op_and_masks(name):
    s = make(name, SPACE, lr=0.1, total_steps=60)
    ctx0 = linear_ctx()

    @jax.jit
    def step(state, key, scale):  # scale = nan makes every reward non-finite (same compilation)
        rf = lambda w: (reward_for(s)(w)[0] * scale, None)
        ctx = ctx0._replace(val_reward=lambda p, a: (ctx0.val_reward(p, a)[0] * scale, None))
        return s.step(state, key, rf, ctx=ctx)

    state, metrics = s.init(jax.random.key(0)), []
    for k in jax.random.split(jax.random.key(1), 60):
        state, m = step(state, k, 1.0)
        metrics.append(m)
    np.testing.assert_array_equal(np.asarray(s.derive(state)), BEST)
    p = np.asarray(s.probs(state))
    assert np.all(p[~MASK] == 0.0), p
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    arch, w = s.sample(state, jax.random.key(3))
    assert np.all(np.asarray(w)[~MASK] == 0.0)
    SPACE.check_arch(arch)
    assert not any(bool(m["nonfinite"]) for m in metrics)
    chex.assert_shape(metrics[-1]["entropy_per_decision"], (3,))
    np.testing.assert_allclose(metrics[-1]["entropy"], metrics[-1]["entropy_per_decision"].mean(),
                               rtol=1e-6)
    # the distribution concentrated: the last entropy is below the initial one
    p0 = np.asarray(s.probs(s.init(jax.random.key(0))), np.float64)
    h0 = -np.sum(np.where(p0 > 0, p0 * np.log(np.where(p0 > 0, p0, 1.0)), 0.0), -1).mean()
    assert float(metrics[-1]["entropy"]) < h0 - 0.1
    # a non-finite reward is flagged and the update skipped: alpha never sees NaN
    new, m = step(state, jax.random.key(4), jnp.nan)
    assert bool(m["nonfinite"])
    chex.assert_trees_all_equal(new.alpha, state.alpha)


def test_darts_first_order_gradient_is_reward_gradient_at_softmax():
    s = make("darts", SPACE, init_std=0.5, **PLAIN)
    state = s.init(jax.random.key(0))
    new, _ = jax.jit(lambda st, k: s.step(st, k, nonlinear))(state, jax.random.key(1))
    f = lambda a: nonlinear(masked_softmax_np(a), np)[0]
    expected = np.where(MASK, fd_grad(f, state.alpha), 0.0)
    np.testing.assert_allclose(np.asarray(new.alpha - state.alpha), expected, atol=2e-5)
    _, w = s.sample(state, jax.random.key(2))
    np.testing.assert_allclose(np.asarray(w), masked_softmax_np(state.alpha), atol=1e-6)


def test_darts_second_order_matches_unrolled_finite_differences():
    ctx = linear_ctx()
    xi = ctx.weight_lr

    def unrolled_reward(alpha):  # float64 closed form: grad_w train_loss = 2 (w - c a) + 0.2 w a
        a = masked_softmax_np(alpha)
        w1 = W0 - xi * (2 * (W0 - C_TRAIN * a) + 0.2 * W0 * a)
        return np.sum(a * np.asarray(TABLE, np.float64)) - 2.0 * np.sum((w1 * a - 0.3) ** 2)

    s = make("darts2", SPACE, init_std=0.5, **PLAIN)
    state = s.init(jax.random.key(0))
    step = jax.jit(lambda st, k, p: s.step(st, k, None, ctx=ctx._replace(params=p)))
    new, m = step(state, jax.random.key(1), ctx.params)
    expected = np.where(MASK, fd_grad(unrolled_reward, state.alpha, eps=1e-5), 0.0)
    np.testing.assert_allclose(np.asarray(new.alpha - state.alpha), expected, atol=2e-5)
    assert abs(float(m["reward"]) - unrolled_reward(state.alpha)) < 1e-5
    # it differs from the first-order gradient (the test would not notice a dropped term otherwise)
    first = make("darts", SPACE, init_std=0.5, **PLAIN)
    new1, _ = jstep(first, lambda a: ctx.val_reward(ctx.params, a))(state, jax.random.key(1))
    assert np.abs(np.asarray(new1.alpha - new.alpha)).max() > 1e-2, "2nd-order term too small"
    # DARTS eq. 8 (finite-difference Hessian-vector product) approximates the exact one
    fd = make("darts2", SPACE, init_std=0.5, unroll="finite_difference", **PLAIN)
    new_fd, _ = jax.jit(lambda st, k: fd.step(st, k, None, ctx=ctx))(state, jax.random.key(1))
    np.testing.assert_allclose(np.asarray(new_fd.alpha), np.asarray(new.alpha), atol=1e-3)
    with pytest.raises(ValueError, match="ctx=SupernetContext"):
        s.step(state, jax.random.key(1), dense_linear)


def test_gumbel_straight_through_is_exact_one_hot_with_soft_gradient():
    alpha = jax.random.normal(jax.random.key(0), (3, 4))
    key, tau = jax.random.key(5), 0.7
    hard, idx = gumbel_softmax(key, alpha, MASK, tau, hard=True)
    chex.assert_trees_all_equal(hard, jax.nn.one_hot(idx, 4))
    assert np.all(MASK[np.arange(3), np.asarray(idx)])
    # independent soft sample: softmax((log_softmax(alpha) + g) / tau) with the same noise
    g = jax.random.gumbel(key, alpha.shape)
    logits = np.where(MASK, (np.asarray(jax.nn.log_softmax(jnp.where(MASK, alpha, -1e9))) + g) / tau,
                      -np.inf)
    soft = np.exp(logits - logits.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    soft_j, idx_s = gumbel_softmax(key, alpha, MASK, tau, hard=False)
    np.testing.assert_allclose(np.asarray(soft_j), soft, atol=1e-6)
    chex.assert_trees_all_equal(idx, idx_s)
    c = jnp.arange(12.0).reshape(3, 4)
    jh = jax.grad(lambda a: jnp.sum(c * gumbel_softmax(key, a, MASK, tau, True)[0]))(alpha)
    js = jax.grad(lambda a: jnp.sum(c * gumbel_softmax(key, a, MASK, tau, False)[0]))(alpha)
    chex.assert_trees_all_close(jh, js, atol=1e-6)
    assert np.abs(np.asarray(jh)).max() > 1e-3


def test_temperature_schedules_hit_endpoints():
    T = 7
    gd = np.asarray(gdas_temperature(jnp.arange(T + 2), T))
    np.testing.assert_allclose(gd[0], 10.0)
    np.testing.assert_allclose(gd[T - 1:], 0.1, rtol=1e-5)
    np.testing.assert_allclose(np.diff(gd[:T]), -9.9 / (T - 1), rtol=1e-5)  # linear
    sn = np.asarray(snas_temperature(jnp.arange(T + 2), T))
    np.testing.assert_allclose(sn[0], 1.0)
    np.testing.assert_allclose(sn[T - 1:], 1e-3)  # 0 at the end, floored
    np.testing.assert_allclose(sn[3], 0.5 * (1 + math.cos(math.pi * 3 / 6)), rtol=1e-6)
    # the strategies report the temperature they used at each step
    for name, first, last in (("gdas", 10.0, 0.1), ("snas", 1.0, 1e-3)):
        s = make(name, SPACE, total_steps=T)
        _, metrics = run(s, T, nonlinear)
        np.testing.assert_allclose([float(metrics[0]["temperature"]),
                                    float(metrics[-1]["temperature"])], [first, last], rtol=1e-5)


@pytest.mark.parametrize("name", ["snas", "gdas"])
def test_no_nan_when_temperature_reaches_its_floor(name):
    s = make(name, SPACE, total_steps=3, lr=0.5, init_std=3.0)
    state, metrics = run(s, 6, nonlinear)
    assert np.all(np.isfinite(np.asarray(state.alpha)))
    assert not any(bool(m["nonfinite"]) for m in metrics)
    if name == "snas":  # even a far smaller floor keeps the gradient finite
        st, m = run(make(name, SPACE, total_steps=2, tau_floor=1e-8, init_std=3.0), 4, nonlinear)
        assert np.all(np.isfinite(np.asarray(st.alpha))) and not bool(m[-1]["nonfinite"])


def test_gdas_sample_is_one_hot_and_step_uses_straight_through_gradient():
    s = make("gdas", SPACE, total_steps=10, init_std=0.5, **PLAIN)
    state = s.init(jax.random.key(0))
    arch, w = s.sample(state, jax.random.key(1))
    chex.assert_trees_all_equal(w, jax.nn.one_hot(arch, 4))
    key = jax.random.key(2)
    new, _ = jstep(s, sparse_linear)(state, key)
    _, idx = gumbel_softmax(key, state.alpha, MASK, 10.0, hard=True)
    # d/d alpha of sum_d TABLE[d, idx_d] * soft[d, idx_d]: soft's Jacobian, by finite differences
    g = jax.random.gumbel(key, state.alpha.shape)

    def f(a):
        logits = np.where(MASK, (np.log(masked_softmax_np(a) + 1e-300) + np.asarray(g)) / 10.0,
                          -np.inf)
        soft = np.exp(logits - logits.max(-1, keepdims=True))
        soft /= soft.sum(-1, keepdims=True)
        return float(np.sum(np.asarray(TABLE)[np.arange(3), idx] * soft[np.arange(3), idx]))
    expected = np.where(MASK, fd_grad(f, state.alpha), 0.0)
    np.testing.assert_allclose(np.asarray(new.alpha - state.alpha), expected, atol=2e-5)


def test_proxyless_updates_only_the_sampled_pair_and_keeps_other_probabilities():
    space = Space(("a", "b"), (("p", "q", "r", "s", "t"), ("p", "q", "r", "s", "t")))
    table = jnp.arange(10.0).reshape(2, 5) / 5.0 - 1.0
    rf = lambda w: (jnp.sum(jnp.take_along_axis(w * table, jnp.argmax(w, -1)[:, None], -1)), None)
    rf_dense = lambda w: (jnp.sum(w * table), None)
    s = make("proxyless", space, mode="sparse", init_std=0.7, **PLAIN)
    state = s.init(jax.random.key(0))
    key = jax.random.key(4)
    new, _ = jstep(s, rf)(state, key)
    pair, p = jax.jit(lambda k, a: sample_two_paths(k, a, space.mask))(key, state.alpha)
    pair, p = np.asarray(pair), np.asarray(p)
    old_a, new_a = np.asarray(state.alpha), np.asarray(new.alpha)
    for d in range(2):
        i, j = pair[d]
        others = [k for k in range(5) if k not in (i, j)]
        np.testing.assert_array_equal(new_a[d, others], old_a[d, others])  # exactly unchanged
        np.testing.assert_allclose(np.exp(new_a[d, others]) / np.exp(new_a[d]).sum(),
                                   np.exp(old_a[d, others]) / np.exp(old_a[d]).sum(), rtol=1e-5)
        # eq. 4 over the pair, by explicit loops, with gate gradients = table entries
        gates = np.asarray(table)[d, [i, j]]
        grad = [sum(gates[m] * p[d, m] * ((n == m) - p[d, n]) for m in range(2)) for n in range(2)]
        np.testing.assert_allclose(p[d], np.exp(old_a[d, [i, j]]) / np.exp(old_a[d, [i, j]]).sum(),
                                   rtol=1e-6)
        np.testing.assert_allclose((new_a[d, i] - new_a[d, j]) - (old_a[d, i] - old_a[d, j]),
                                   grad[0] - grad[1], atol=1e-5)
        assert abs(grad[0] - grad[1]) > 1e-3
    # dense mode (one evaluation, exact gate gradients) agrees on a mode-independent reward
    sd = make("proxyless", space, mode="dense", init_std=0.7, **PLAIN)
    new_d, _ = jstep(sd, rf_dense)(state, key)
    chex.assert_trees_all_close(new_d.alpha, new.alpha, atol=1e-6)
    # weight-step samples are one-hot binary gates
    arch, w = jax.jit(s.sample)(state, jax.random.key(9))
    chex.assert_trees_all_equal(w, jax.nn.one_hot(arch, 5))


def test_proxyless_pair_sampling_frequencies():
    """Top-2 Gumbel = sampling without replacement; the active path follows the pair's probs."""
    alpha = jnp.array([[0.0, 1.0, -1.0, 0.5]])
    keys = jax.random.split(jax.random.key(0), 20000)
    pairs, _ = jax.vmap(lambda k: sample_two_paths(k, alpha, np.ones((1, 4), bool)))(keys)
    first = np.bincount(np.asarray(pairs[:, 0, 0]), minlength=4) / len(keys)
    # P(active = i) = sum_j P(pair {i, j}) * p_i / (p_i + p_j), pairs drawn without replacement
    q = np.exp(np.asarray(alpha[0], np.float64))
    q /= q.sum()
    expected = np.zeros(4)
    for i in range(4):
        for j in range(4):
            if i != j:
                pij = q[i] * q[j] / (1 - q[i]) + q[j] * q[i] / (1 - q[j])  # unordered pair
                expected[i] += pij * q[i] / (q[i] + q[j])
    np.testing.assert_allclose(expected.sum(), 1.0, rtol=1e-9)
    np.testing.assert_allclose(first, expected, atol=0.012)


def test_nasp_discrete_forward_and_box():
    s = make("nasp", SPACE, init_value=0.5, init_std=0.1, **{**PLAIN, "lr": 0.3})
    state = s.init(jax.random.key(0))
    arch, w = s.sample(state, jax.random.key(1))
    a = np.asarray(state.alpha)
    np.testing.assert_array_equal(np.asarray(arch), np.argmax(np.where(MASK, a, -np.inf), -1))
    chex.assert_trees_all_equal(w, jax.nn.one_hot(arch, 4))
    new, _ = jstep(s, nonlinear)(state, jax.random.key(2))
    # gradient w.r.t. the one-hot a_bar (finite differences) applied to alpha, then clipped to [0, 1]
    g = fd_grad(lambda x: nonlinear(x, np)[0], np.asarray(w, np.float64))
    expected = np.where(MASK, np.clip(a + 0.3 * g, 0.0, 1.0), 0.0)
    np.testing.assert_allclose(np.asarray(new.alpha), expected, atol=2e-5)
    state, _ = run(make("nasp", SPACE, lr=0.5, total_steps=20), 20, nonlinear)
    alpha = np.asarray(state.alpha)
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    assert np.all(alpha[~MASK] == 0.0)


def test_darts_derive_skips_the_zero_op_but_gdas_does_not():
    s = make("darts", SPACE, total_steps=1)
    state = s.init(jax.random.key(0))
    state = state.replace(alpha=jnp.where(MASK, jnp.array([[5.0, 1, 2, 0]] * 3), 0.0))
    assert int(s.derive(state)[0]) == 2          # 'none' excluded (DARTS sec. 2.4)
    g = make("gdas", SPACE, total_steps=5)
    assert int(g.derive(state)[0]) == 0


def test_gdas_process_best_keeps_the_best_sampled_architecture():
    s = make("gdas", SPACE, total_steps=30, final="process_best", lr=1e-6)
    state, metrics = run(s, 30, sparse_linear)
    # independent: the best reward among the steps, and the table value of the derived arch
    best = max(float(m["reward"]) for m in metrics)
    arch = np.asarray(s.derive(state))
    np.testing.assert_allclose(float(np.asarray(TABLE)[np.arange(3), arch].sum()), best, rtol=1e-6)
    np.testing.assert_allclose(float(state.best_reward), best, rtol=1e-6)


def test_bad_configs_raise_actionable_errors():
    with pytest.raises(ValueError, match="process_best"):
        make("gdas", SPACE, total_steps=3, final="best")
    with pytest.raises(ValueError, match="clip"):
        make("nasp", SPACE, clip=0.0)
    with pytest.raises(ValueError, match="total_steps"):
        make("gdas", SPACE)
    with pytest.raises(ValueError, match="total_steps"):
        make("darts", SPACE, lr_schedule="cosine")
    with pytest.raises(ValueError, match="optimizer"):
        make("snas", SPACE, total_steps=3, optimizer="rmsprop")
    with pytest.raises(ValueError, match="box"):
        make("nasp", SPACE, box="sphere")
    with pytest.raises(ValueError, match="options"):
        make("proxyless", SPACE, temperature=1.0)


def test_every_method_steps_on_the_mlp_supernet_and_darts2_unrolls_flax_params():
    """End to end on a real Flax supernet (TabNAS MLP, dense or sparse as the method asks); darts2's
    hypergradient through a flax params pytree against central differences (float32, loose)."""
    from jaxnas.models.supernets.mlp import MLPSupernet
    from jaxnas.spaces.mlp import MLPSpace
    space = MLPSpace.create(2, 3, 1, widths=(2, 4, 6))
    net = MLPSupernet(space)
    kx, kp = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (32, 3))
    y = jnp.sin(x.sum(-1, keepdims=True))
    params = jax.jit(net.init)(kp, x, jnp.ones(space.shape) / 3)["params"]

    def loss(p, w, mode):
        return jnp.mean((net.apply({"params": p}, x, w, mode=mode) - y) ** 2)

    s = make("proxyless", space, mode="sparse", total_steps=2)  # two evaluations per step
    st, m = run(s, 2, lambda w: (-loss(params, w, s.mode), None))
    assert np.all(np.isfinite(np.asarray(st.alpha))) and not bool(m[-1]["nonfinite"])

    ctx = SupernetContext(params, lambda p, w: loss(p, w, "dense"),
                          lambda p, w: (-loss(p, w, "dense"), None), 0.1)
    s = make("darts2", space, init_std=0.5, **PLAIN)
    state = s.init(jax.random.key(1))
    new, m = jstep(s, None, ctx=ctx)(state, jax.random.key(2))
    assert not bool(m["nonfinite"])
    mask = np.asarray(space.mask)

    @jax.jit
    def unrolled(alpha):
        a = jax.nn.softmax(jnp.where(mask, alpha, -1e9), -1)
        g = jax.grad(lambda p: loss(p, a, "dense"))(params)
        return -loss(jax.tree.map(lambda p, q: p - 0.1 * q, params, g), a, "dense")
    fd = np.zeros(space.shape)
    for i in zip(*np.nonzero(mask)):
        d = np.zeros(space.shape, np.float32)
        d[i] = 1e-2
        a0 = np.asarray(state.alpha)
        fd[i] = (float(unrolled(a0 + d)) - float(unrolled(a0 - d))) / 2e-2
    got = np.asarray(new.alpha - state.alpha)
    np.testing.assert_allclose(got, fd, atol=2e-2 * np.abs(fd).max() + 1e-5)


def test_proxyless_lanes_update_the_union_of_their_pairs():
    """Two vmap lanes with different pairs: the mean of the lanes' pair gradients is applied to the
    union of the pairs, which is then rescaled so the other paths keep their probabilities."""
    from jaxnas.strategies.gradient import proxyless_pair_grad
    space = Space(("a", "b"), (("p", "q", "r", "s", "t"), ("p", "q", "r", "s", "t")))
    table = jnp.arange(10.0).reshape(2, 5) / 5.0 - 1.0
    rf = lambda w: (jnp.sum(w * table), None)
    s = make("proxyless", space, mode="dense", init_std=0.7, axis_name="p", **PLAIN)
    state = s.init(jax.random.key(0))
    keys = jnp.stack([jax.random.key(4), jax.random.key(9)])
    new, m = jax.jit(jax.vmap(lambda k: s.step(state, k, rf), out_axes=(None, 0),
                              axis_name="p"))(keys)
    old_a, new_a = np.asarray(state.alpha), np.asarray(new.alpha)
    pairs = [np.asarray(sample_two_paths(k, state.alpha, space.mask)[0]) for k in keys]
    g = sum(proxyless_pair_grad(jnp.take_along_axis(table, jnp.asarray(pr), -1), jnp.asarray(pr),
                                sample_two_paths(k, state.alpha, space.mask)[1], 5)
            for pr, k in zip(pairs, keys)) / 2
    for d in range(2):
        union = sorted(set(pairs[0][d]) | set(pairs[1][d]))
        others = [k for k in range(5) if k not in union]
        np.testing.assert_array_equal(new_a[d, others], old_a[d, others])      # exactly unchanged
        np.testing.assert_allclose(np.exp(new_a[d, others]) / np.exp(new_a[d]).sum(),
                                   np.exp(old_a[d, others]) / np.exp(old_a[d]).sum(), rtol=1e-5)
        # inside the union: old + mean gradient, shifted by one constant (the rescaling)
        shift = (new_a[d, union] - old_a[d, union]) - np.asarray(g)[d, union]
        np.testing.assert_allclose(shift, shift[0], atol=1e-5)
    assert any(set(pairs[0][d]) != set(pairs[1][d]) for d in range(2))   # the pairs differ
    np.testing.assert_allclose(np.asarray(m["evaluations"]), 1.0)


def test_nasp_linear_reward_finds_the_best_op_whatever_the_op_order():
    """Every order of 5 ops (120 decisions, one per permutation) on a linear reward whose best op
    (conv3) is the only one with a positive coefficient and two ops (none, skip) have coefficient 0.
    Defaults (Adam, App. D weight decay) and weight decay 0: the forward pick and derive are conv3
    on every decision. (Starting at 1 on the bound with ties to the lowest index, weight decay 0
    keeps every zero-coefficient op tied at 1 with conv3 and picks whichever comes first.)"""
    import itertools
    ops = ("none", "skip", "conv1", "conv3", "pool")
    coef = {"none": 0.0, "skip": 0.0, "conv1": -0.2, "conv3": 0.5, "pool": -0.7}
    perms = list(itertools.permutations(ops))
    space = Space(tuple(f"e{i}" for i in range(len(perms))), tuple(perms))
    table = jnp.asarray([[coef[o] for o in perm] for perm in perms], jnp.float32)
    best = np.asarray([perm.index("conv3") for perm in perms])
    rf = lambda w: (jnp.sum(w * table), None)
    for wd in (3e-3, 0.0):
        s = make("nasp", space, lr=0.01, weight_decay=wd, total_steps=150)
        state, _ = run(s, 150, rf)
        np.testing.assert_array_equal(np.asarray(s.derive(state)), best)
        np.testing.assert_array_equal(np.asarray(s.sample(state, jax.random.key(5))[0]), best)
    # the old start (ones, on the bound) with weight decay 0 picks the first zero-coefficient op
    s = make("nasp", space, lr=0.01, weight_decay=0.0, total_steps=150, init_value=1.0, init_std=0.0)
    state, _ = run(s, 150, rf)
    assert np.mean(np.asarray(s.sample(state, jax.random.key(5))[0]) == best) < 0.5


def test_nasp_ties_are_broken_at_random_and_sgd_reaches_the_proximal_fixed_point():
    """Exact ties of alpha: the forward pick is uniform over the tied ops (not the first one).
    Plain proximal SGD with L2 decay wd on a linear reward c converges to clip(c / wd, 0, 1)
    (the fixed point of alpha <- clip(alpha + lr (c - wd alpha))), whose argmax is the best op."""
    space = Space(("a",), (("p", "q", "r", "s"),))
    s = make("nasp", space, init_value=1.0, init_std=0.0, total_steps=1)
    state = s.init(jax.random.key(0))
    picks = jax.vmap(lambda k: s.sample(state, k)[0][0])(jax.random.split(jax.random.key(1), 4000))
    freq = np.bincount(np.asarray(picks), minlength=4) / 4000
    np.testing.assert_allclose(freq, 0.25, atol=0.03)
    c = jnp.array([[0.05, 0.2, 0.5, 0.1]])
    s = make("nasp", space, optimizer="sgd", lr=0.1, weight_decay=1.0, clip=None,
             lr_schedule="constant")
    state, _ = run(s, 300, lambda w: (jnp.sum(w * c), None))
    np.testing.assert_allclose(np.asarray(state.alpha), np.asarray(c), atol=1e-5)
    assert int(s.derive(state)[0]) == 2


def test_proxyless_default_gradient_is_the_original_binary_gate_gradient():
    """A two-decision chain supernet x -> h1 = sum_k g1k tanh(W1k x) -> h2 = sum_k g2k tanh(W2k h1)
    -> reward -mean((h2 v - y)^2), evaluated densely as the default mode asks. The original
    (proxylessnas mix_op.py, MODE='two'): run the active paths, backpropagate to each decision's
    output (delta_d), gate gradient of path j = sum(O_j * delta_d), eq. 4 over the pair, rescale the
    pair. Computed here by an explicit active-path network and vjp, then compared with one step of
    the default strategy (SGD lr 1 so the step is the gradient)."""
    K_ = 3
    space = Space(("a", "b"), (("p", "q", "r"), ("p", "q", "r")))
    k1, k2, k3, k4, k5 = jax.random.split(jax.random.key(0), 5)
    W1 = jax.random.normal(k1, (K_, 4, 4)) / 2
    W2 = jax.random.normal(k2, (K_, 4, 4)) / 2
    v = jax.random.normal(k3, (4,))
    x = jax.random.normal(k4, (16, 4))
    y = jax.random.normal(k5, (16,))
    ops1 = lambda h: jnp.tanh(jnp.einsum("kij,bj->kbi", W1, h))      # [K, B, 4]
    ops2 = lambda h: jnp.tanh(jnp.einsum("kij,bj->kbi", W2, h))

    def supernet(w):                                                 # dense, gates w [2, K]
        h1 = jnp.einsum("k,kbi->bi", w[0], ops1(x))
        h2 = jnp.einsum("k,kbi->bi", w[1], ops2(h1))
        return -jnp.mean((h2 @ v - y) ** 2)

    s = make("proxyless", space, init_std=0.7, **PLAIN)
    assert s.mode == "dense"
    state = s.init(jax.random.key(1))
    key = jax.random.key(7)
    new, _ = jstep(s, lambda w: (supernet(w), None))(state, key)
    # the original, by hand
    pair, _ = sample_two_paths(key, state.alpha, space.mask)
    pair, alpha = np.asarray(pair), np.asarray(state.alpha, np.float64)
    act = pair[:, 0]
    h1 = ops1(x)[act[0]]                                             # active path outputs
    reward_of = lambda o1, o2: -jnp.mean((o2 @ v - y) ** 2)
    o2 = ops2(h1)[act[1]]
    # delta_2 = d r / d h2 at the active network; delta_1 = d r / d h1 through the active path of 2
    delta2 = jax.grad(lambda o: reward_of(h1, o))(o2)
    delta1 = jax.grad(lambda h: reward_of(h, ops2(h)[act[1]]))(h1)
    outs = [ops1(x), ops2(h1)]
    expected = alpha.copy()
    for d, delta in enumerate((delta1, delta2)):
        i, j = pair[d]
        gate = np.array([float(jnp.sum(outs[d][m] * delta)) for m in (i, j)])
        p = np.exp(alpha[d, [i, j]]) / np.exp(alpha[d, [i, j]]).sum()
        g = [sum(gate[m] * p[m] * ((n == m) - p[n]) for m in range(2)) for n in range(2)]  # eq. 4
        new_pair = alpha[d, [i, j]] + np.array(g)
        shift = np.log(np.exp(new_pair).sum()) - np.log(np.exp(alpha[d, [i, j]]).sum())
        expected[d, [i, j]] = new_pair - shift                       # rescale_updated_arch_param
        assert abs(g[0]) > 1e-4
    np.testing.assert_allclose(np.asarray(new.alpha), expected, atol=2e-6)

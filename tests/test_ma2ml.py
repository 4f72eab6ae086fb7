"""MA2ML / MA2ML-Lite (jaxnas/strategies/ma2ml.py) and the product space (jaxnas/spaces/product.py),
checked against independent computations: enumeration of a small product space, sampling
statistics, orbax round trips."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces.base import Space
from jaxnas.spaces.product import AugSpace, HPOSpace, ProductSpace
from jaxnas.strategies import categorical as K
from jaxnas.strategies import ma2ml as M
from jaxnas.strategies import make


def small_space():
    """3 agents, ragged (2-3-2 | 4 | 2-2 choices): 6 * 4 * 4 = 96 joint actions."""
    a = Space(("x", "y"), (("0", "1"), ("0", "1", "2")))
    b = Space(("z",), (("0", "1", "2", "3"),))
    c = Space(("u", "v"), (("0", "1"), ("0", "1")))
    return ProductSpace.create([("aug", a), ("nas", b), ("hpo", c)], nas="")


def random_logits(space, key, scale=1.0):
    return jnp.where(space.mask, scale * jax.random.normal(key, space.shape), -1e9)


def joint_probs(space, logits, archs):
    return np.exp(np.asarray(jax.vmap(lambda a: K.log_prob(logits, a, space.mask))(archs), np.float64))


def table_q(space, table):
    """Q as a lookup table over the space's ids (the 'exact critic')."""
    radix = np.array([int(np.prod(space.num_choices[d + 1:])) for d in range(space.num_decisions)])
    t = jnp.asarray(table, jnp.float32)
    return lambda a: t[jnp.sum(a * radix)]


def test_product_space_structure_and_strings():
    sp = small_space()
    chex.assert_equal(sp.shape, (5, 4))
    assert sp.agent_slices == ((0, 2), (2, 3), (3, 5))
    np.testing.assert_array_equal(sp.agent_of_decision, [0, 0, 1, 2, 2])
    assert sp.mask.sum() == 2 + 3 + 4 + 2 + 2
    assert [M.agent_action_count(sp, i) for i in range(3)] == [6, 4, 4]
    for a in sp.all_archs()[::17]:
        np.testing.assert_array_equal(sp.decode(sp.encode(a)), a)
    with pytest.raises(ValueError, match="agent"):
        sp.decode("aug: x=0,y=1")
    aug = AugSpace.create(num_subpolicies=2)
    hpo = HPOSpace.create({"lr": (0.01, 0.1), "weight_decay": (0.0, 5e-4, 1e-3)})
    full = ProductSpace.create({"aug": aug, "hpo": hpo})
    arch = full.sample(jax.random.key(0))
    np.testing.assert_array_equal(full.decode(full.encode(arch)), arch)
    op, prob, mag = aug.policy(full.split(arch, "aug"))
    chex.assert_shape((op, prob, mag), (2, 2))
    chex.assert_trees_all_close(hpo.values(full.split(arch, "hpo")),
                                jnp.asarray([hpo.grids[0][int(arch[12])], hpo.grids[1][int(arch[13])]]))
    with pytest.raises(ValueError, match="unknown augmentation op"):
        AugSpace.create(ops=("ShearX", "Mixup"))


def test_counterfactual_baseline_is_the_enumerated_expectation():
    """b_i(A_-i) = sum_{a_i} pi_i(a_i) Q(a_i, A_-i), enumerated in numpy over the whole joint space."""
    sp = small_space()
    archs = sp.all_archs()
    table = np.asarray(jax.random.normal(jax.random.key(3), (len(archs),)))
    q = table_q(sp, table)
    logits = random_logits(sp, jax.random.key(4))
    logp = np.asarray(K.log_softmax(logits, sp.mask), np.float64)
    plan = M.baseline_plan(sp, cf_exact_max=100)
    assert all(p is not None for p in plan)
    baselines = jax.jit(lambda a: M.counterfactual_baselines(q, logits, a, sp, plan, jax.random.key(0)))
    for arch in archs[[0, 37, 70, 95]]:
        b = baselines(jnp.asarray(arch))
        for i, (s, e) in enumerate(sp.agent_slices):
            ref = 0.0
            for j, a in enumerate(archs):
                others = np.r_[0:s, e:sp.num_decisions]
                if np.array_equal(a[others], arch[others]):
                    ref += np.exp(sum(logp[d, a[d]] for d in range(s, e))) * table[j]
            np.testing.assert_allclose(float(b[i]), ref, rtol=1e-5, atol=1e-6)
    # Monte Carlo (cf_exact_max below every agent) is unbiased: its mean over keys is the exact value
    mc_plan = M.baseline_plan(sp, cf_exact_max=1)
    assert all(p is None for p in mc_plan)
    arch = jnp.asarray(archs[37])
    exact = baselines(arch)
    draws = jax.jit(jax.vmap(lambda k: M.counterfactual_baselines(q, logits, arch, sp, mc_plan, k, 16)))(
        jax.random.split(jax.random.key(1), 2000))
    se = np.std(np.asarray(draws), 0) / np.sqrt(2000)
    assert np.all(np.abs(np.mean(np.asarray(draws), 0) - np.asarray(exact)) < 5 * se + 1e-6)


def test_kl_is_exact():
    """KL(pi || rho) of the factorised policies = the enumerated sum over all joint actions."""
    sp = small_space()
    archs = sp.all_archs()
    lp, lq = random_logits(sp, jax.random.key(5)), random_logits(sp, jax.random.key(6), 2.0)
    p, q = joint_probs(sp, lp, archs), joint_probs(sp, lq, archs)
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
    ref = float(np.sum(p * np.log(p / q)))
    np.testing.assert_allclose(float(M.kl_divergence(lp, lq, sp.mask)), ref, rtol=1e-5)
    assert float(M.kl_divergence(lp, lp, sp.mask)) == pytest.approx(0.0, abs=1e-6)


def test_counterfactual_gradient_lower_variance_same_mean():
    """Exact critic (a reward table with interactions between agents): the MA2ML per-agent gradient
    and MA2ML-Lite's (baseline = the exact E[R]) both average to the enumerated grad E_pi[R]; MA2ML's
    has a lower variance; the full MA2ML ascent is that gradient minus lambda grad KL(pi || rho)."""
    sp = small_space()
    archs = sp.all_archs()
    rng = np.random.default_rng(0)
    # per-agent effects (large) plus pairwise interactions (smaller)
    eff = [rng.normal(0, 1.0, (6,)), rng.normal(0, 1.0, (4,)), rng.normal(0, 1.0, (4,))]
    ids = [archs[:, 0] * 3 + archs[:, 1], archs[:, 2], archs[:, 3] * 2 + archs[:, 4]]
    table = sum(e[i] for e, i in zip(eff, ids)) + 0.3 * rng.normal(0, 1, (6, 4))[ids[0], ids[1]] \
        + 0.3 * rng.normal(0, 1, (4, 4))[ids[1], ids[2]]
    q = table_q(sp, table)
    logits = random_logits(sp, jax.random.key(7))
    target = random_logits(sp, jax.random.key(8))
    exact = jax.grad(lambda th: jnp.sum(jnp.exp(jax.vmap(lambda a: K.log_prob(th, a, sp.mask))(
        jnp.asarray(archs))) * jnp.asarray(table, jnp.float32)))(logits)
    exact = jnp.where(sp.mask, exact, 0.0)
    plan = M.baseline_plan(sp, 100)
    n = 4000
    samples = sp.sample(jax.random.key(9), logits, (n,))
    keys = jax.random.split(jax.random.key(10), n)
    g_ma, _, _ = jax.jit(jax.vmap(lambda a, k: M.counterfactual_gradient(q, logits, a, sp, plan, k)))(samples, keys)
    mean_r = float(np.sum(joint_probs(sp, logits, archs) * table))
    g_lite = jax.jit(jax.vmap(lambda a: M.lite_gradient(logits, a, q(a), mean_r, sp.mask)))(samples)
    for g in (g_ma, g_lite):
        se = np.std(np.asarray(g), 0) / np.sqrt(n)
        assert np.all(np.abs(np.mean(np.asarray(g), 0) - np.asarray(exact)) <= 5 * se + 1e-5)
    var_ma, var_lite = float(np.sum(np.var(np.asarray(g_ma), 0))), float(np.sum(np.var(np.asarray(g_lite), 0)))
    assert var_ma < 0.5 * var_lite, (var_ma, var_lite)
    # policy_ascent = mean counterfactual gradient - lambda grad KL, exactly
    lam = 0.3
    ascent, m = jax.jit(lambda: M.policy_ascent(q, logits, target, samples, sp, plan, jax.random.key(10), lam))()
    kl_grad = jax.grad(M.kl_divergence)(logits, target, sp.mask)
    chex.assert_trees_all_close(ascent + lam * kl_grad, jnp.mean(g_ma, 0), atol=1e-5)
    chex.assert_trees_all_close(m["kl"], M.kl_divergence(logits, target, sp.mask))


def test_buffer_insert_ring_and_skips():
    B, D = 5, 2
    buf_a, buf_r, count = jnp.zeros((B, D), jnp.int32), jnp.zeros((B,)), jnp.int32(0)
    for t in range(4):
        archs = jnp.full((3, D), t, jnp.int32) + jnp.arange(3)[:, None] * 10
        ok = jnp.asarray([True, t != 1, True])
        buf_a, buf_r, count = M.buffer_insert(buf_a, buf_r, count, archs, archs[:, 0].astype(jnp.float32), ok)
    # inserted in order: 0,10,20 | 1,21 | 2,12,22 | 3,13,23 -> 11 entries, the last 5 kept (ring)
    order = [0, 10, 20, 1, 21, 2, 12, 22, 3, 13, 23]
    assert int(count) == 11
    expect = np.zeros(B)
    for j, v in enumerate(order):
        expect[j % B] = v
    np.testing.assert_array_equal(np.asarray(buf_r), expect)


def _quadratic(space, seed=0):
    t = jax.random.randint(jax.random.key(seed), (space.num_decisions,), 0, space.num_choices)
    tw = space.one_hot(t)
    return (lambda w: (-jnp.sum((w - tw) ** 2), None)), t


def test_replay_buffer_survives_checkpoint_bit_for_bit(tmp_path):
    """5 steps, orbax save, restore into a fresh process-like abstract state, 5 more steps == 10
    uninterrupted steps, every leaf bitwise (buffer, critic, target policy, key)."""
    import orbax.checkpoint as ocp
    sp = small_space()
    rf, _ = _quadratic(sp)
    s = make("ma2ml", sp, total_steps=10, min_buffer=2, buffer_size=8, critic_steps=3, policy_steps=2,
             num_samples=4)
    keys = jax.random.split(jax.random.key(1), 10)
    run = jax.jit(lambda st, ks: jax.lax.scan(lambda a, k: s.step(a, k, rf), st, ks)[0])
    half = run(s.init(jax.random.key(0)), keys[:5])
    assert int(half.extra["count"]) == 5
    with ocp.CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save(5, args=ocp.args.StandardSave(half))
        mgr.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, half)
    with ocp.CheckpointManager(tmp_path / "ck") as mgr:
        restored = mgr.restore(5, args=ocp.args.StandardRestore(abstract))
    full, resumed = run(half, keys[5:]), run(restored, keys[5:])     # uninterrupted vs resumed
    for a, b in ((half, restored), (full, resumed)):
        la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
        assert len(la) == len(lb)
        for x, y in zip(la, lb):
            if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
                x, y = jax.random.key_data(x), jax.random.key_data(y)
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert int(full.extra["count"]) == 10        # the buffer wrapped (size 8)


@pytest.mark.parametrize("on_policy", [False, True])
def test_ma2ml_learns_the_product_space(on_policy):
    """A few hundred pipelines on the small product space (quadratic reward): the derived pipeline
    is the optimum; the critic fits; the target policy trails the policy (KL > 0 and small)."""
    sp = small_space()
    rf, target = _quadratic(sp, 2)
    s = make("ma2ml", sp, total_steps=150, on_policy=on_policy, lr=0.1)
    st, m = jax.jit(lambda st, ks: jax.lax.scan(lambda a, k: s.step(a, k, rf), st, ks))(
        s.init(jax.random.key(0)), jax.random.split(jax.random.key(1), 150))
    np.testing.assert_array_equal(np.asarray(s.derive(st)), np.asarray(target))
    assert float(m["critic_loss"][-1]) < 0.1
    assert np.all(np.isfinite(np.asarray(m["kl"])))
    assert {"entropy_aug", "entropy_nas", "entropy_hpo"} <= set(m)


def test_options_are_checked_before_compiling():
    sp = small_space()
    with pytest.raises(ValueError, match="min_buffer"):
        make("ma2ml", sp, min_buffer=10, buffer_size=4)
    with pytest.raises(ValueError, match="kl_weight"):
        make("ma2ml", sp, kl_weight=-1.0)
    s = make("ma2ml", sp, axis_name="data", buffer_size=2, min_buffer=1)
    rf, _ = _quadratic(sp)
    lanes = lambda ks: jax.eval_shape(jax.vmap(lambda k: s.step(s.init(jax.random.key(0)), k, rf), axis_name="data",
                     out_axes=(None, 0)), ks)   # raises while tracing: nothing compiles
    with pytest.raises(ValueError, match="buffer_size"):
        lanes(jax.random.split(jax.random.key(0), 4))

"""TabNAS (Yang et al. 2022): P(V) estimators, rejection REINFORCE, warm-up, Alg. 3, App. B.2.2, toy.

Every check compares against an independent computation: brute-force enumeration written here,
closed-form Monte-Carlo variance (App. G.1), or the policy gradient of E[Q | y in V] by enumeration.
"""
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces.mlp import TABNAS_WIDTHS, MLPSpace
from jaxnas.strategies import budget as C
from jaxnas.strategies import make
from jaxnas.strategies import tabnas as T

ROOT = Path(__file__).resolve().parents[1]
W20 = TABNAS_WIDTHS


def _space3():
    return MLPSpace.create(3, 30, 1, widths=W20)       # 8,000 architectures


def _logits(space, seed, scale=1.0):
    lg = scale * jax.random.normal(jax.random.key(seed), space.shape)
    return jnp.where(jnp.asarray(space.mask), lg, -1e9)


_BRUTE = {}


def _costs(space):
    """Integer parameter count of every architecture (id order), computed here in numpy."""
    archs = space.all_archs()
    w = np.asarray(space.width_table)[np.arange(space.num_layers), archs].astype(np.int64)
    fan_in = np.concatenate([np.full((len(archs), 1), space.num_inputs), w], 1)
    fan_out = np.concatenate([w, np.full((len(archs), 1), space.num_outputs)], 1)
    return archs, np.sum(fan_in * fan_out + fan_out, 1)


def _brute(space, limit, logits):
    """P(V) and its gradient by brute force for a batch of logits [B, D, K]: the sum over every
    feasible architecture of prod_d p_d(a_d). One compiled function per space."""
    if space not in _BRUTE:
        archs, cost = _costs(space)
        a = jnp.asarray(archs)

        def pv(lg, feas):
            p = jax.nn.softmax(jnp.where(jnp.asarray(space.mask), lg, -1e9), -1)
            probs = jnp.prod(p[jnp.arange(space.num_layers), a], -1)
            return jnp.sum(jnp.where(feas, probs, 0.0))
        _BRUTE[space] = (jax.jit(jax.vmap(jax.value_and_grad(pv), in_axes=(0, None))), cost)
    f, cost = _BRUTE[space]
    return f(logits, jnp.asarray(cost <= limit))


# ---- exact P(V): dynamic programme == enumeration --------------------------------------------
def _check_dp_against_enumeration(cases):
    """cases: [(space, limits, logits[B, D, K])]. One compiled function evaluates every P(V) and
    gradient (compilation dominates the cost), then each is compared with brute force."""
    dps = [[C.make_budget(space, lim).exact for lim in limits] for space, limits, _ in cases]
    assert all(isinstance(d, C.AdjacentCostDP) for ds in dps for d in ds)
    got = jax.jit(lambda lgs: [[jax.vmap(jax.value_and_grad(d))(lg) for d in ds]
                               for ds, lg in zip(dps, lgs)])([lg for _, _, lg in cases])
    for (space, limits, lg), res in zip(cases, got):
        for lim, (v, g) in zip(limits, res):
            v_ref, g_ref = _brute(space, lim, lg)
            chex.assert_trees_all_close(v, v_ref, rtol=2e-5, atol=1e-7)
            chex.assert_trees_all_close(g, g_ref, rtol=2e-4, atol=2e-7)
    return got


def test_dp_equals_enumeration_value_and_grad():
    space = _space3()                                            # 3 layers x 20 widths: 8,000
    lg = jnp.stack([_logits(space, 0), _logits(space, 1, 3.0)])
    (v, _), = _check_dp_against_enumeration([(space, [41_153], lg)])[0]
    assert 0.01 < float(v.min()) and float(v.max()) < 0.99      # a non-trivial budget


def _small_space():
    return MLPSpace.create(3, 7, 2, widths=(3, 5, 8, 13, 21, 34))


def test_dp_exact_at_the_boundary_ragged_one_layer_and_infeasible_everything():
    space = _small_space()
    cost = _costs(space)[1]
    c1, c2 = np.random.default_rng(0).choice(cost, 2)            # budgets equal to real costs
    limits = [500, c1 - 1, c1, c2 + 0.5, cost.max()]          # the last: every architecture
    ragged = MLPSpace.create(3, 7, 3, widths=[(4, 8, 12), (2, 5, 9, 11, 16), (3, 6)])
    one = MLPSpace.create(1, 10, 2, widths=(3, 5, 8, 13))
    lg = jnp.stack([_logits(space, 3), _logits(space, 4, 2.0)])
    got = _check_dp_against_enumeration([(space, limits, lg),
                                         (ragged, [200, 260], _logits(ragged, 5)[None]),
                                         (one, [100], _logits(one, 6)[None])])
    v, g = got[0][-1]                                            # P(V) = 1, gradient 0
    chex.assert_trees_all_close(v, jnp.ones(2), atol=1e-6)
    chex.assert_trees_all_close(g, jnp.zeros_like(g), atol=1e-6)
    first, pairs, last = space.layer_cost_terms()
    dp0 = C.AdjacentCostDP.build(space.mask, first, pairs, last, limit=cost.min() - 1)
    v, g = jax.value_and_grad(dp0)(lg[0])
    assert float(v) == 0.0 and np.all(np.asarray(g) == 0.0)


def test_budget_cost_equals_parameter_count():
    ragged = MLPSpace.create(3, 7, 3, widths=[(4, 8, 12), (2, 5, 9, 11, 16), (3, 6)])
    for space in (_space3(), ragged):
        archs, cost = _costs(space)
        b = C.make_budget(space, 10**6)
        np.testing.assert_array_equal(np.asarray(jax.jit(b.cost)(archs)), cost)
        np.testing.assert_array_equal(np.asarray(space.param_count(archs)), cost)
        assert b.min_cost == cost.min()


def test_enumeration_method_matches_brute_force():
    space = _small_space()
    b = C.make_budget(space, 1_500, exact="enum")
    assert b.exact_method == "enum"
    lg = _logits(space, 5)
    v_ref, g_ref = _brute(space, 1_500, lg[None])
    chex.assert_trees_all_close(jax.jit(jax.value_and_grad(b.pv_exact))(lg), (v_ref[0], g_ref[0]),
                                rtol=2e-5, atol=1e-7)


# ---- Monte-Carlo P̂(V), Alg. 2 / App. G -------------------------------------------------------
def test_mc_sufficient_statistics_equal_alg2_literal():
    """pv_from_counts == (1/N) sum p/q 1[z in V] in value and gradient on the same samples."""
    space = _space3()
    b = C.make_budget(space, 20_000)
    lg = _logits(space, 6, 0.5)
    probs = jnp.exp(C.log_probs(lg, space.mask))
    z = C.sample_archs(jax.random.key(1), probs, 3000, space.num_choices)
    f = b.feasible(z)
    counts = np.zeros(space.shape, np.float32)                   # counted here, in numpy
    for zi, fi in zip(np.asarray(z), np.asarray(f)):
        if fi:
            counts[np.arange(3), zi] += 1
    naive = lambda l: C.pv_mc_naive(l, space.mask, z, f)
    suff = lambda l: C.pv_from_counts(l, space.mask, 3000, jnp.sum(f), jnp.asarray(counts))
    chex.assert_trees_all_close(jax.jit(jax.value_and_grad(suff))(lg),
                                jax.jit(jax.value_and_grad(naive))(lg),
                                rtol=1e-5, atol=1e-7)


def test_mc_counts_chunking_and_sampler():
    space = _space3()
    lg = _logits(space, 7)
    n, chunk = 10_000, 3_000                                     # last chunk partial
    nf, counts = C.mc_feasible_counts(jax.random.key(0), lg, space.mask,
                                      lambda z: jnp.ones(z.shape[:-1], bool), n, chunk)
    assert float(nf) == n
    chex.assert_trees_all_close(counts.sum(-1), jnp.full((3,), float(n)))
    # inverse-CDF sampler: per-decision frequencies match the policy (5 sigma)
    p = np.asarray(jnp.exp(C.log_probs(lg, space.mask)))
    sd = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(np.asarray(counts) / n - p) <= 5 * sd + 1e-9)


def test_mc_unbiased_and_error_falls_like_inverse_sqrt_n():
    space = _space3()
    b = C.make_budget(space, 20_000)
    lg = _logits(space, 8, 0.7)
    v_ref, g_ref = _brute(space, 20_000, lg[None])
    p_true, g_true = float(v_ref[0]), np.asarray(g_ref[0])
    seeds = 400
    rmse = {}
    for n in (100, 10_000):
        vg = jax.jit(jax.vmap(lambda k: jax.value_and_grad(lambda l: b.pv_mc(k, l, n))(lg)))
        v, g = vg(jax.random.split(jax.random.key(n), seeds))
        v, g = np.asarray(v), np.asarray(g)
        se = v.std(ddof=1) / np.sqrt(seeds)
        assert abs(v.mean() - p_true) < 3 * se, (n, v.mean(), p_true, se)       # unbiased
        g_se = g.std(0, ddof=1) / np.sqrt(seeds) + 1e-12
        assert np.max(np.abs(g.mean(0) - g_true) / g_se) < 4.0                 # gradient too
        rmse[n] = np.sqrt(np.mean((v - p_true) ** 2))
        # App. G.1 with q = sg(p): Var = P(V)(1 - P(V)) / N
        theory = np.sqrt(p_true * (1 - p_true) / n)
        assert 0.8 < rmse[n] / theory < 1.2, (n, rmse[n], theory)
    assert 7.0 < rmse[100] / rmse[10_000] < 14.0                # sqrt(100) = 10


# ---- the rejection gradient is the policy gradient of E[Q | y in V] ----------------------------
@pytest.mark.parametrize("pv", ["exact", "mc"])
def test_rejection_gradient_is_conditional_policy_gradient(pv):
    space = MLPSpace.create(2, 3, 1, widths=(2, 4, 6, 8))
    limit = 50
    b = C.make_budget(space, limit)
    archs = space.all_archs()
    feas = np.asarray(b.feasible(archs))
    q = np.asarray(jax.random.uniform(jax.random.key(0), (len(archs),)))
    lg = _logits(space, 9, 0.6)
    baseline = 0.3

    # independent: grad of E_{y ~ P(.|V)}[Q] = sum_{y in V} Q(y) P(y) / P(V), by enumeration
    def cond_value(l):
        p = jax.nn.softmax(jnp.where(jnp.asarray(space.mask), l, -1e9), -1)
        py = jnp.prod(p[jnp.arange(2), jnp.asarray(archs)], -1)
        pv_ = jnp.sum(jnp.where(feas, py, 0.0))
        return jnp.sum(jnp.where(feas, py * q, 0.0)) / pv_, pv_
    (_, pv_true), grad_true = jax.value_and_grad(cond_value, has_aux=True)(lg)
    py = np.asarray(jnp.exp(C.arch_log_prob(C.log_probs(lg, space.mask), jnp.asarray(archs))))

    if pv == "exact":
        pv_fn = b.pv_exact
    else:  # a large fixed MC sample: P̂(V) is consistent (App. G.2)
        pv_fn = lambda l: b.pv_mc(jax.random.key(1), l, 2_000_000)
    per_y = jax.jit(jax.vmap(lambda y, adv: jax.grad(
        lambda l: T.reinforce_objective(l, space.mask, y, adv, pv_fn)[0])(lg)))
    gy = np.asarray(per_y(jnp.asarray(archs), jnp.asarray(q - baseline)))
    # E over y ~ P (infeasible y skipped, i.e. contribute 0) = P(V) * grad E[Q | V]
    expected = np.tensordot(py * feas, gy, 1)
    tol = dict(rtol=1e-4, atol=1e-6) if pv == "exact" else dict(rtol=2e-2, atol=3e-3)
    chex.assert_trees_all_close(expected, float(pv_true) * np.asarray(grad_true), **tol)


# ---- the strategy: skips, warm-up, zero P̂(V), metrics -----------------------------------------
def _toy():
    space = MLPSpace.create(2, 2, 1, widths=(2, 3, 4))
    loss = jnp.asarray([[0.74, 0.76, 0.72], [0.64, 0.66, 0.52], [0.46, 0.44, 0.40]])
    calls = []

    def reward_fn(w):          # the engine's reward, -loss: Q = reward + q_offset (1) = 1 - loss
        a = jnp.argmax(w, -1)
        return -loss[a[0], a[1]], None
    return space, reward_fn, loss, calls


def test_infeasible_samples_are_skipped_and_feasible_ones_update():
    space, reward_fn, loss, _ = _toy()
    s = make("tabnas", space, budget=25, pv="exact", lr=0.1, warmup_frac=0.0)
    st = s.init(jax.random.key(0))
    step = jax.jit(lambda st, k: s.step(st, k, reward_fn))
    seen = {True: 0, False: 0}
    for i in range(40):
        new, m = step(st, jax.random.key(i))
        changed = not np.allclose(np.asarray(new.logits), np.asarray(st.logits))
        feasible = bool(m["feasible"])
        seen[feasible] += 1
        assert changed == feasible and bool(m["updated"]) == feasible
        assert int(new.skipped_infeasible) == int(st.skipped_infeasible) + (not feasible)
        assert float(m["reward"]) == (0.0 if not feasible else float(m["reward"]))
        chex.assert_trees_all_close(m["pv"], m["pv_exact"], rtol=1e-6)
        st = new
    assert seen[True] > 0 and seen[False] > 0
    assert int(st.num_updates) == seen[True]


def test_zero_mc_estimate_skips_without_nan():
    space = MLPSpace.create(3, 30, 1, widths=W20)
    limit = 3_000                                               # P(V) ~ 0.6% under uniform logits
    s = make("tabnas", space, budget=limit, pv="mc", num_mc_samples=1, lr=0.1, warmup_frac=0.0,
             log_exact_pv=False)
    assert float(_brute(space, limit, space.uniform_logits()[None])[0][0]) < 0.05

    def reward_fn(w):
        return jnp.float32(0.9), None
    st = s.init(jax.random.key(0))
    step = jax.jit(jax.vmap(lambda k: s.step(st, k, reward_fn)))
    new, m = step(jax.random.split(jax.random.key(1), 4000))
    zero = np.asarray(m["feasible"] > 0) & np.asarray(m["pv"] == 0)
    assert zero.sum() > 0
    assert np.all(np.isfinite(np.asarray(new.logits)[:, np.asarray(space.mask)]))
    np.testing.assert_array_equal(np.asarray(m["skipped_zero_pv"])[zero], 1.0)
    np.testing.assert_array_equal(np.asarray(m["updated"])[zero], 0.0)
    chex.assert_trees_all_equal(np.asarray(new.logits)[zero], np.broadcast_to(
        np.asarray(st.logits), (zero.sum(),) + space.shape))


def test_warmup_schedule_and_no_rl_during_warmup():
    space, _, _, _ = _toy()
    total, frac = 100, 0.25
    s = make("tabnas", space, budget=25, total_steps=total, warmup_frac=frac, pv="exact")
    st = s.init(jax.random.key(0))
    full = np.array([2, 2])
    keys = jax.random.split(jax.random.key(3), 4000)
    sample = jax.jit(jax.vmap(s.sample, in_axes=(None, 0)))
    for step_i, p_expected in ((0, 1.0), (10, 0.6), (20, 0.2), (25, 0.0), (60, 0.0)):
        archs, w = sample(st.replace(step=jnp.int32(step_i)), keys)
        chex.assert_trees_all_equal(w, jax.nn.one_hot(archs, 3))
        frac_full = np.mean(np.all(np.asarray(archs) == full, -1))
        p_full = p_expected + (1 - p_expected) / 9                 # uniform policy hits 4-4 too
        assert abs(frac_full - p_full) < 4 * np.sqrt(p_full * (1 - p_full) / 4000) + 1e-9

    def nan_reward(w):  # must not be called (or used) during warm-up
        return jnp.float32(jnp.nan), None
    step = jax.jit(lambda st, k: s.step(st, k, nan_reward))
    for i in range(25):
        st2, m = step(st, jax.random.key(i))
        assert float(m["warmup"]) == 1.0 and float(m["updated"]) == 0.0
        chex.assert_trees_all_equal(st2.logits, st.logits)
        st = st2
    assert int(st.step) == 25 and int(st.skipped_infeasible) == 0
    flags = []
    for i in range(100, 112):      # after warm-up a NaN reward is flagged and never applied
        st2, m = step(st, jax.random.key(i))
        assert float(m["warmup"]) == 0.0 and float(m["updated"]) == 0.0
        assert float(m["nonfinite"]) == float(m["feasible"])
        chex.assert_trees_all_equal(st2.logits, st.logits)
        flags.append(float(m["nonfinite"]))
    assert 0 < sum(flags) < len(flags)


def test_bad_budget_and_config_raise():
    space = _space3()
    smallest = 31 * 8 + 2 * (8 * 8 + 8) + (8 + 1)               # 8-8-8 with 30 inputs, 1 output
    with pytest.raises(ValueError, match=rf"below the smallest.*{smallest}") as e:
        make("tabnas", space, budget=300, total_steps=10)
    assert "300" in str(e.value)
    make("tabnas", space, budget=smallest, total_steps=10)      # exactly one architecture: fine
    with pytest.raises(ValueError, match="total_steps"):
        make("tabnas", space, budget=50_000)
    with pytest.raises(ValueError, match="pv must be"):
        make("tabnas", space, budget=50_000, warmup_frac=0, pv="approx")
    with pytest.raises(ValueError, match="target"):
        make("tunas_abs", space, beta=-1.0, warmup_frac=0)


def test_alg3_final_choice():
    space = _space3()
    b = C.make_budget(space, 20_000)
    lg = _logits(space, 10, 0.5)
    key = jax.random.key(0)
    arch, ok = jax.jit(lambda lg, k: T.select_final(b, lg, k, 500))(lg, key)
    samples = np.asarray(space.sample(key, lg, (500,)))          # the same draws, judged here
    cost = np.asarray(b.cost(samples))
    feas = cost <= 20_000
    assert bool(ok) and feas.any()
    assert float(b.cost(arch)) == cost[feas].max()
    assert any(np.array_equal(arch, a) for a in samples[feas & (cost == cost[feas].max())])
    top3 = T.select_final_n(b, lg, key, n=3)
    assert len(top3) == 3 and len({tuple(a) for a in top3}) == 3
    assert float(b.cost(top3[0])) == cost[feas].max()
    # a deterministic policy: the argmax
    det = jnp.where(jnp.asarray(space.mask), -30.0, -1e9).at[:, 2].set(30.0)
    s = make("tabnas", space, budget=20_000, warmup_frac=0, log_exact_pv=False)
    st = s.init(jax.random.key(0)).replace(logits=det)
    derive = jax.jit(s.derive)
    chex.assert_trees_all_equal(derive(st), jnp.array([2, 2, 2], jnp.int32))
    chex.assert_trees_all_equal(derive(st), derive(st))


def test_shaped_rewards_closed_form():
    q, t0 = 0.8, 25.0
    chex.assert_trees_all_close(C.abs_reward(q, 30.0, t0, -2.0), 0.8 - 2.0 * 0.2)
    chex.assert_trees_all_close(C.mnas_soft_reward(q, 30.0, t0, -0.5), 0.8 * 1.2 ** -0.5)
    chex.assert_trees_all_close(C.mnas_hard_reward(q, 30.0, t0, -0.5), 0.8 * 1.2 ** -0.5)
    chex.assert_trees_all_close(C.mnas_hard_reward(q, 20.0, t0, -0.5), 0.8)


# ---- App. B.2.2: averaging over devices whose sample was feasible ------------------------------
def test_feasible_mean_under_vmap_collectives():
    x = jax.random.normal(jax.random.key(0), (8, 3, 4))
    f = jnp.array([1, 0, 1, 1, 0, 0, 1, 0], bool)
    out, n = jax.vmap(lambda xi, fi: C.feasible_mean(xi, fi, "dev"), axis_name="dev")(x, f)
    ref = np.asarray(x)[np.asarray(f)].mean(0)
    chex.assert_trees_all_close(out, np.broadcast_to(ref, (8, 3, 4)), rtol=1e-6)
    assert np.all(np.asarray(n) == 4)
    out0, n0 = jax.vmap(lambda xi, fi: C.feasible_mean(xi, fi, "dev"), axis_name="dev")(
        x, jnp.zeros(8, bool))
    assert np.all(np.asarray(out0) == 0) and np.all(np.asarray(n0) == 0)


def _multi_device_step(space, reward_fn, n_dev):
    s1 = make("tabnas", space, budget=25, pv="exact", lr=0.1, warmup_frac=0.0)
    sN = make("tabnas", space, budget=25, pv="exact", lr=0.1, warmup_frac=0.0, axis_name="dev")
    st = s1.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(0), n_dev)
    return s1, sN, st, keys


def test_multi_device_step_under_vmap_equals_feasible_average():
    space, reward_fn, _, _ = _toy()
    s1, sN, st, keys = _multi_device_step(space, reward_fn, 8)
    new, m = jax.jit(jax.vmap(lambda k: sN.step(st, k, reward_fn), axis_name="dev"))(keys)
    chex.assert_trees_all_close(new.logits, jnp.broadcast_to(new.logits[0], new.logits.shape))
    # independent: per-device J gradients by hand, averaged over the feasible devices, one Adam step
    b = C.make_budget(space, 25)
    grad_j = jax.jit(jax.grad(lambda l, y, q: T.reinforce_objective(l, space.mask, y, q, b.pv_exact)[0]))
    gs, fs = [], []
    ys = np.asarray(jax.vmap(lambda k: space.sample(jax.random.split(k)[0], st.logits))(keys))
    for y in ys:                                  # the architecture each device draws
        feas = bool(space.param_count(y) <= 25)
        q = 1.0 - float(_toy()[2][y[0], y[1]])
        g = grad_j(st.logits, y, q - 0.0)                         # Q̄ = 0 at the first step
        gs.append(np.asarray(g))
        fs.append(feas)
    fs = np.array(fs)
    assert 0 < fs.sum() < len(fs), fs             # key 0: a mix of feasible and infeasible draws
    g_mean = np.mean(np.stack(gs)[fs], 0)
    import optax
    tx = optax.adam(0.1, b1=0.9, b2=0.999, eps=1e-3)
    upd, _ = tx.update(-jnp.asarray(g_mean), tx.init(st.logits), st.logits)
    chex.assert_trees_all_close(new.logits[0], st.logits + upd, rtol=1e-5, atol=1e-6)
    assert np.allclose(np.asarray(m["feasible"]), fs.mean())


def test_multi_device_step_under_shard_map_matches_vmap():
    """4 fake CPU devices in a subprocess (XLA_FLAGS must precede the jax import)."""
    code = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import PartitionSpec as P
        from jaxnas.spaces.mlp import MLPSpace
        from jaxnas.strategies import make
        space = MLPSpace.create(2, 2, 1, widths=(2, 3, 4))
        loss = jnp.asarray([[0.74, 0.76, 0.72], [0.64, 0.66, 0.52], [0.46, 0.44, 0.40]])
        def reward_fn(w):
            a = jnp.argmax(w, -1); return 1.0 - loss[a[0], a[1]], None
        s = make("tabnas", space, budget=25, pv="mc", num_mc_samples=512, mc_chunk=200, lr=0.1,
                 warmup_frac=0.0, axis_name="dev")
        st = s.init(jax.random.key(0))
        keys = jax.random.split(jax.random.key(6), 4)     # 3 of 4 devices draw a feasible y
        ref, m_ref = jax.jit(jax.vmap(lambda k: s.step(st, k, reward_fn), axis_name="dev"))(keys)
        assert float(m_ref["feasible"][0]) == 0.75
        mesh = jax.make_mesh((4,), ("dev",))
        with jax.set_mesh(mesh):
            kd = jax.reshard(jax.random.key_data(keys), P("dev"))
            for vma in (True, False):
                f = jax.jit(jax.shard_map(
                    lambda st, k: s.step(st, jax.random.wrap_key_data(k[0]), reward_fn),
                    mesh=mesh, in_specs=(P(), P("dev")), out_specs=P(), check_vma=vma))
                new, m = f(st, kd)
                assert np.allclose(new.logits, ref.logits[0], atol=1e-6), (vma, new.logits)
                assert np.allclose(m["reward"], m_ref["reward"][0]), vma
        print("OK")
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


# ---- Fig. 1 toy (reduced bench/tabnas_toy.py) --------------------------------------------------
def _toy_bench():
    spec = importlib.util.spec_from_file_location("tabnas_toy_bench", ROOT / "bench" / "tabnas_toy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_toy_rejection_finds_bottleneck_abs_reward_does_not():
    bench = _toy_bench()
    cfg = bench.load_config()
    seeds, steps = 50, 250
    r = bench.run_method("tabnas", cfg["tabnas"], cfg, seeds, steps)
    assert r["success_rate"] >= 0.95, r
    small = bench.run_method("tunas_abs", dict(cfg["tunas_abs"], beta=-0.1), cfg, seeds, steps)
    assert small["infeasible_rate"] >= 0.9, small
    large = bench.run_method("tunas_abs", dict(cfg["tunas_abs"], beta=-5.0), cfg, seeds, steps)
    assert large["worse_feasible_rate"] >= 0.5, large


def test_option_names_final_decay_eps():
    """One name per concept: final ("alg3" | "argmax"), decay (Alg. 1 line 18's gamma, the weight of
    the old value), eps (Adam); the old names are rejected with the list of options."""
    space, reward_fn, _, _ = _toy()
    s = make("tabnas", space, budget=25, pv="exact", warmup_frac=0.0, final="argmax", decay=0.5,
             eps=1e-3, lr=0.1)
    st = s.init(jax.random.key(0)).replace(logits=jnp.asarray([[0.0, 5.0, 1.0], [2.0, 0.0, 1.0]]))
    chex.assert_trees_all_equal(s.derive(st), jnp.array([1, 0], jnp.int32))
    new, m = jax.jit(lambda st, k: s.step(st, k, reward_fn))(s.init(jax.random.key(0)), jax.random.key(2))
    assert float(m["updated"]) == 1.0    # key 2: a feasible sample
    # Q̄ = (0.5 * 0 + 0.5 Q) / (0.5 * 0 + 0.5) = Q after one update (bias-corrected EMA)
    np.testing.assert_allclose(float(new.baseline), float(m["reward"]), rtol=1e-6)
    for bad in ({"final": "best"}, {"decay": 1.0}, {"adam_eps": 1e-3}, {"baseline_decay": 0.9},
                {"derive_mode": "argmax"}):
        with pytest.raises(ValueError):
            make("tabnas", space, budget=25, pv="exact", warmup_frac=0.0, **bad)


# ---- the final choice made visible (sec. 3.4, Alg. 3) -------------------------------------------
def _feasible_mode_brute(space, limit, logits):
    archs, cost = _costs(space)
    p = np.asarray(jax.nn.softmax(jnp.where(jnp.asarray(space.mask), logits, -1e9), -1), np.float64)
    lp = np.sum(np.log(p[np.arange(space.num_layers), archs]), -1)
    lp[cost > limit] = -np.inf
    return archs[np.argmax(lp)], np.exp(lp.max()), np.exp(lp[np.isfinite(lp)]).sum()


def _space_small():
    return MLPSpace.create(3, 5, 1, widths=(2, 4, 6, 8, 12))   # 125 architectures


def test_mode_of_p_given_v_by_dp_enumeration_and_samples_equals_brute_force():
    """Budget.mode: the max-product DP (Viterbi over the adjacent-layer cost), enumeration and the
    best of many policy samples all return argmax_{y in V} P(y), checked by brute force."""
    space = _space_small()
    _, cost = _costs(space)
    for seed, q in ((0, 0.05), (1, 0.3), (2, 0.7)):
        limit = float(np.quantile(cost, q))
        lg = _logits(space, seed, 1.5)
        ref = _feasible_mode_brute(space, limit, lg)[0]
        for exact in ("dp", "enum"):
            arch, is_exact = C.make_budget(space, limit, exact=exact).mode(lg)
            assert is_exact
            np.testing.assert_array_equal(np.asarray(arch), ref)
        arch, is_exact = C.make_budget(space, limit, exact="none").mode(lg, jax.random.key(3), 20_000)
        assert not is_exact
        np.testing.assert_array_equal(np.asarray(arch), ref)


def test_final_rules_and_policy_summary():
    """final='mode' derives the mode of P(y | y in V); summary reports P(arch), P(arch | V) =
    P(arch)/P(V), the Alg. 3 top-3 (the first is what final='alg3' derives), the mode and the
    entropies; a near-uniform policy and an Alg. 3 choice that is not the mode are warned about."""
    space = _space_small()
    limit = 127
    lg = _logits(space, 10, 0.5)
    ref, p_ref, pv_ref = _feasible_mode_brute(space, limit, lg)
    sm = make("tabnas", space, budget=limit, warmup_frac=0, final="mode", log_exact_pv=False)
    sa = make("tabnas", space, budget=limit, warmup_frac=0, log_exact_pv=False)
    st = sa.init(jax.random.key(0)).replace(logits=lg)
    np.testing.assert_array_equal(np.asarray(jax.jit(sm.derive)(st)), ref)
    arch = np.asarray(jax.jit(sa.derive)(st))
    info = sa.summary(st, arch)
    assert info["final_rule"] == "alg3" and info["pv_method"] == "dp"
    np.testing.assert_allclose(info["pv"], pv_ref, rtol=1e-4)
    p_arch = float(np.exp(np.sum(np.log(np.asarray(jax.nn.softmax(lg, -1)))[np.arange(3), arch])))
    np.testing.assert_allclose(info["chosen"]["prob"], p_arch, rtol=1e-4)
    np.testing.assert_allclose(info["chosen"]["prob_given_feasible"], p_arch / pv_ref, rtol=1e-4)
    assert info["chosen"]["arch"] == space.encode(arch)
    assert info["mode"]["arch"] == space.encode(ref) and info["mode"]["exact"]
    np.testing.assert_allclose(info["mode"]["prob_given_feasible"], p_ref / pv_ref, rtol=1e-4)
    cands = info["alg3_candidates"]
    top3 = T.select_final_n(C.make_budget(space, limit), lg, jax.random.key(0), n=3)
    assert len(top3) == 3
    assert [c["arch"] for c in cands] == [space.encode(a) for a in top3]
    assert cands[0]["arch"] == info["chosen"]["arch"]          # derive = the first candidate
    assert all(c["cost"] <= limit and c["feasible"] for c in cands)
    assert [c["cost"] for c in cands] == sorted((c["cost"] for c in cands), reverse=True)
    ent = np.asarray(info["entropy_per_decision"])
    assert ent.shape == (3,) and np.all(ent <= np.asarray(info["max_entropy_per_decision"]) + 1e-6)
    # near-uniform: not concentrated, and Alg. 3 (largest cost) is not the mode: two warnings
    assert not info["concentrated"] and len(info["warnings"]) == 2
    assert "not concentrated" in info["warnings"][0] and "final='mode'" in info["warnings"][1]
    # a concentrated policy on a feasible architecture: no warning, every rule agrees
    det = jnp.where(jnp.asarray(space.mask), -30.0, -1e9).at[:, 2].set(30.0)
    st = st.replace(logits=det)
    info = sa.summary(st, np.asarray(sa.derive(st)))
    assert info["concentrated"] and info["warnings"] == []
    assert info["chosen"]["arch"] == info["mode"]["arch"] == space.encode(np.array([2, 2, 2]))


def test_q_offset_defaults_to_one_and_multiplicative_rewards_refuse_q_not_positive():
    """Q = reward + q_offset, default 1 (Q = 1 - loss from a reward of -loss); a MnasNet reward
    with Q <= 0 stops the search (the engine's check after the chunk) with an error that names
    q_offset (the penalty would be reversed)."""
    space, _, loss, _ = _toy()
    neg_loss = lambda w: (-loss[jnp.argmax(w[0]), jnp.argmax(w[1])], None)
    s = make("tabnas", space, budget=1e9, pv="exact", warmup_frac=0.0)
    st, m = jax.jit(lambda st, k: s.step(st, k, neg_loss))(s.init(jax.random.key(0)), jax.random.key(1))
    y = space.sample(jax.random.split(jax.random.key(1))[0], s.init(jax.random.key(0)).logits)
    np.testing.assert_allclose(float(m["reward"]), 1.0 - float(loss[y[0], y[1]]), rtol=1e-6)
    big_loss = lambda w: (neg_loss(w)[0] - 1.0, None)            # loss > 1: Q = 1 - loss < 0
    from jaxnas.engine.search import check_metrics
    for name in ("mnas_soft", "mnas_hard"):
        s = make(name, space, target=25, beta=-0.5, warmup_frac=0.0)
        _, m1 = jax.jit(lambda st, k: s.step(st, k, big_loss))(s.init(jax.random.key(0)), jax.random.key(1))
        assert float(m1["q_nonpositive"]) == 1.0
        with pytest.raises(ValueError, match="q_offset"):
            check_metrics({"strategy/q_nonpositive": np.asarray([float(m1["q_nonpositive"])])}, 0)
    # with lanes (vmap here, devices under shard_map alike) the step counts the lanes with Q <= 0
    s = make("mnas_soft", space, target=25, beta=-0.5, warmup_frac=0.0, axis_name="data")
    lanes = jax.jit(jax.vmap(lambda st, k: s.step(st, k, big_loss)[1], in_axes=(None, 0), out_axes=None,
                             axis_name="data"))
    m = lanes(s.init(jax.random.key(0)), jax.random.split(jax.random.key(1), 4))
    jax.effects_barrier()
    assert float(m["q_nonpositive"]) == 4.0
    with pytest.raises(ValueError, match="at step 7 <= 0.*q_offset"):
        check_metrics({"strategy/q_nonpositive": np.array([0.0, 0.0, 2.0])}, 5)
    check_metrics({"strategy/q_nonpositive": np.zeros(3)}, 5)
    ok = make("mnas_soft", space, target=25, beta=-0.5, warmup_frac=0.0, q_offset=3.0)
    st, m = jax.jit(lambda st, k: ok.step(st, k, big_loss))(ok.init(jax.random.key(0)), jax.random.key(1))
    jax.effects_barrier()
    assert float(m["reward"]) > 0

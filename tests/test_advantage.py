"""AdvantageNAS: variance (sec. 4.4), unbiasedness (Thm 4.2), eq. 7, zero-op rule (App. B)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces.base import Space
from jaxnas.strategies import categorical as cat
from jaxnas.strategies import make
from jaxnas.strategies.advantage import exact_advantages, per_decision_estimate, taylor_advantages, zero_op_rule
from jaxnas.strategies.reinforce import reinforce_estimate


def _space(D, K, zero=False):
    ops = (("none",) if zero else ()) + tuple(f"op{j}" for j in range(K - int(zero)))
    return Space(tuple(f"e{i}" for i in range(D)), (ops,) * D)


def test_score_is_grad_log_prob():
    space = _space(3, 4)
    logits = jax.random.normal(jax.random.key(0), (3, 4))
    arch = jnp.array([0, 3, 1])
    chex.assert_trees_all_close(cat.score(logits, arch, space.mask),
                                jax.grad(cat.log_prob)(logits, arch, space.mask), atol=1e-6)


def test_variance_closed_form_sec_4_4():
    """Linear reward r = sum_i r_i^T a_i. The paper's Var[delta] is the trace over the logits of
    edge i of E[delta_i delta_i^T] (second moment): E||delta_adv,i||^2 = sum_j mu_j r_j^2
    (1 - 2 mu_j + ||mu||^2) exactly; its Var[delta_base] adds (1 - ||mu_i||^2) sum_{k!=i} sum_j
    (r_k^j)^2 mu_k^j, which is exact when the other edges' rewards are centred under the policy
    (E[r_k^T a_k] = 0; otherwise cross terms appear). Both estimators are unbiased, so the trace of
    the covariance is the same expressions minus ||grad_{theta_i} J||^2; checked too."""
    D, K, N = 4, 3, 200_000
    space = _space(D, K)
    k1, k2, k3 = jax.random.split(jax.random.key(42), 3)
    logits = jax.random.normal(k1, (D, K))
    mu = cat.softmax(logits, space.mask)
    R = jax.random.normal(k2, (D, K))
    R = R - jnp.sum(mu * R, -1, keepdims=True)          # centre every edge: E[r_k^T a_k] = 0

    def reward_fn(w):
        return jnp.sum(R * w), None

    def estimates(arch):
        w = space.one_hot(arch)
        adv, reward, _, _ = taylor_advantages(reward_fn, w)            # eq. 7
        d_adv = per_decision_estimate(logits, arch, adv, space.mask)  # Alg. 1 line 9
        d_base = reinforce_estimate(logits, arch, reward, space.mask)  # eq. 4, no baseline
        return d_adv, d_base

    archs = space.sample(k3, logits, shape=(N,))
    d_adv, d_base = jax.jit(jax.vmap(estimates))(archs)
    m_adv = np.asarray(jnp.mean(jnp.sum(d_adv ** 2, -1), 0), np.float64)     # per edge i
    m_base = np.asarray(jnp.mean(jnp.sum(d_base ** 2, -1), 0), np.float64)

    mu, R = np.asarray(mu, np.float64), np.asarray(R, np.float64)
    nmu2 = np.sum(mu ** 2, -1)
    var_adv = np.sum(mu * R ** 2 * (1 - 2 * mu + nmu2[:, None]), -1)
    per_edge = np.sum(R ** 2 * mu, -1)
    var_base = var_adv + (1 - nmu2) * (per_edge.sum() - per_edge)
    np.testing.assert_allclose(m_adv, var_adv, rtol=0.03)
    np.testing.assert_allclose(m_base, var_base, rtol=0.03)
    assert np.all(var_base > var_adv)

    grad_j = mu * (R - np.sum(mu * R, -1, keepdims=True))     # exact grad of J = sum_i mu_i^T r_i
    g2 = np.sum(grad_j ** 2, -1)
    tr_adv = np.asarray(jnp.sum(jnp.var(d_adv, 0), -1), np.float64)
    tr_base = np.asarray(jnp.sum(jnp.var(d_base, 0), -1), np.float64)
    np.testing.assert_allclose(tr_adv, var_adv - g2, rtol=0.03)
    np.testing.assert_allclose(tr_base, var_base - g2, rtol=0.03)


def _nonlinear_reward(D, K, key):
    """A nonlinear reward of the (relaxed) weights, defined for zeroed edges too."""
    k1, k2 = jax.random.split(key)
    c = jax.random.normal(k1, (D * K,))
    M = jax.random.normal(k2, (D * K, D * K))

    def reward_fn(w):
        v = w.reshape(-1)
        return jnp.sin(c @ v) + 0.3 * v @ M @ v, None
    return reward_fn


def test_unbiased_eq6_theorem_4_2():
    """E[A_i (a_i - mu_i)] with the exact advantage (eq. 6) = grad_theta J by enumeration of all
    27 architectures; a Monte-Carlo mean agrees within its standard error; eq. 7 (a first-order
    approximation) is biased on this nonlinear reward, as the paper says."""
    D, K = 3, 3
    space = _space(D, K)
    reward_fn = _nonlinear_reward(D, K, jax.random.key(3))
    logits = jax.random.normal(jax.random.key(4), (D, K))
    archs = jnp.asarray(space.all_archs())
    rewards = jax.vmap(lambda a: reward_fn(space.one_hot(a))[0])(archs)

    def J(theta):
        logp = jax.vmap(lambda a: cat.log_prob(theta, a, space.mask))(archs)
        return jnp.sum(jnp.exp(logp) * rewards)

    grad_j = jax.grad(J)(logits)
    p = jnp.exp(jax.vmap(lambda a: cat.log_prob(logits, a, space.mask))(archs))

    def eq6(arch):
        adv, _, _ = exact_advantages(reward_fn, space.one_hot(arch))
        return per_decision_estimate(logits, arch, adv, space.mask)

    def eq7(arch):
        adv, _, _, _ = taylor_advantages(reward_fn, space.one_hot(arch))
        return per_decision_estimate(logits, arch, adv, space.mask)

    mean6 = jnp.tensordot(p, jax.vmap(eq6)(archs), 1)
    chex.assert_trees_all_close(mean6, grad_j, atol=1e-5)
    mean7 = jnp.tensordot(p, jax.vmap(eq7)(archs), 1)
    assert float(jnp.max(jnp.abs(mean7 - grad_j))) > 1e-2
    # REINFORCE with a constant baseline is unbiased as well
    mean_r = jnp.tensordot(p, jax.vmap(lambda a, r: reinforce_estimate(
        logits, a, r, space.mask, 0.7))(archs, rewards), 1)
    chex.assert_trees_all_close(mean_r, grad_j, atol=1e-5)

    N = 50_000
    samples = space.sample(jax.random.key(5), logits, shape=(N,))
    d = jax.jit(jax.vmap(eq6))(samples)
    mc, se = jnp.mean(d, 0), jnp.std(d, 0) / np.sqrt(N)
    assert bool(jnp.all(jnp.abs(mc - grad_j) <= 4 * se + 1e-6)), (mc, grad_j, se)


def test_taylor_advantage_is_grad_dot_weights():
    """Eq. 7 on a reward that reads only the chosen op: A_i = dr/dw[i, a_i]."""
    D, K = 4, 5
    space = _space(D, K)
    reward_fn = _nonlinear_reward(D, K, jax.random.key(8))
    arch = jnp.array([1, 0, 4, 2])
    w = space.one_hot(arch)
    adv, r, _, g = taylor_advantages(reward_fn, w)
    chex.assert_trees_all_close(adv, g[jnp.arange(D), arch])
    # finite differences of r(w + eps e_{i, a_i})
    eps = 1e-3
    fd = [(reward_fn(w.at[i, arch[i]].add(eps))[0] - reward_fn(w.at[i, arch[i]].add(-eps))[0])
          / (2 * eps) for i in range(D)]
    chex.assert_trees_all_close(adv, jnp.stack(fd), atol=2e-2, rtol=1e-2)


def test_zero_op_rule_matches_eq9():
    space = _space(3, 4, zero=True)           # choice 0 is "none" on every edge
    rng = np.random.default_rng(0)
    ema = rng.normal(size=(3, 4)).astype(np.float32)
    adv = np.array([0.0, 0.5, -0.2], np.float32)
    arch = np.array([0, 2, 3])
    zero_idx = np.zeros(3, np.int32)
    gamma = 0.05                               # eq. 9's gamma: decay = 1 - gamma
    new_adv, new_ema = zero_op_rule(jnp.asarray(adv), jnp.asarray(arch), jnp.asarray(ema),
                                    zero_idx, space.mask, 1.0 - gamma)
    ref_ema = ema.copy()
    for i in range(3):
        ref_ema[i, arch[i]] += gamma * (adv[i] - ema[i, arch[i]])
    ref_adv = adv.copy()
    ref_adv[0] = ref_ema[0, 1:].min()          # worst moving average of the other ops
    chex.assert_trees_all_close(new_ema, ref_ema, atol=1e-6)
    chex.assert_trees_all_close(new_adv, ref_adv, atol=1e-6)


def test_zero_op_rule_keeps_search_off_none():
    """App. B: every real op lowers the reward (negative advantage) and 'none' contributes 0.
    Without the rule 'none' is never updated and wins; with it, the best real op wins."""
    D, K = 4, 4
    space = _space(D, K, zero=True)
    R = jnp.tile(jnp.array([0.0, -1.0, -2.0, -3.0]), (D, 1))

    def reward_fn(w):
        return jnp.sum(R * w), None

    def run(zero_op):
        s = make("advantage", space, zero_op=zero_op, lr=0.05)
        state = s.init(jax.random.key(0))
        body = lambda st, k: (s.step(st, k, reward_fn)[0], None)
        state, _ = jax.lax.scan(body, state, jax.random.split(jax.random.key(1), 1000))
        return s.derive(state)

    chex.assert_trees_all_equal(jax.jit(lambda: run(None))(), jnp.zeros(D, jnp.int32))
    chex.assert_trees_all_equal(jax.jit(lambda: run("none"))(), jnp.ones(D, jnp.int32))


@pytest.mark.parametrize("name", ["advantage", "advantage_baseline"])
def test_step_follows_algorithm_1(name):
    """One step = Adam ascent on A_i (a_i - mu_i) (baseline: minus the per-edge EMA), with the
    sampled architecture reproduced from the key."""
    D, K = 3, 4
    space = _space(D, K)
    reward_fn = _nonlinear_reward(D, K, jax.random.key(9))
    s = make(name, space, lr=0.1, zero_op=None)
    state = s.init(jax.random.key(0))
    key1, key2 = jax.random.key(11), jax.random.key(12)
    state1, _ = s.step(state, key1, reward_fn)
    state2, m2 = s.step(state1, key2, reward_fn)

    arch2 = space.sample(key2, state1.logits)
    adv2, r2, _, _ = taylor_advantages(reward_fn, space.one_hot(arch2))
    coeff = adv2
    if name == "advantage_baseline":
        arch1 = space.sample(key1, state.logits)
        adv1 = taylor_advantages(reward_fn, space.one_hot(arch1))[0]
        coeff = adv2 - adv1                      # baseline initialised by the first advantage
    delta = coeff[:, None] * (space.one_hot(arch2) - cat.softmax(state1.logits, space.mask))
    opt = cat.make_optimizer("test", lr=0.1)
    upd, _ = opt.update(-delta, state1.opt_state, state1.logits)
    chex.assert_trees_all_close(state2.logits, state1.logits + upd, atol=1e-6)
    chex.assert_trees_all_close(m2["reward"], r2)


def test_exact_estimator_strategy_runs_and_learns():
    D, K = 3, 3
    space = _space(D, K)
    target = jnp.array([2, 0, 1])

    def reward_fn(w):
        return -jnp.sum((w - space.one_hot(target)) ** 2), None

    s = make("advantage", space, estimator="exact", lr=0.05)
    state = s.init(jax.random.key(0))
    body = lambda st, k: (s.step(st, k, reward_fn)[0], None)
    state, _ = jax.jit(lambda st: jax.lax.scan(body, st, jax.random.split(jax.random.key(1), 200)))(state)
    chex.assert_trees_all_equal(s.derive(state), target)


@pytest.mark.parametrize("name", ["advantage", "reinforce", "parsec"])
def test_process_best_tracks_best_seen(name):
    D, K = 4, 3
    space = _space(D, K)
    table = jax.random.normal(jax.random.key(2), (K,) * D)

    def reward_fn(w):
        a = jnp.argmax(w, -1)
        return table[tuple(a)] + 0.0 * jnp.sum(w), None

    s = make(name, space, final="process_best", lr=0.01)
    state = s.init(jax.random.key(0))
    body = lambda st, k: s.step(st, k, reward_fn)
    state, m = jax.jit(lambda st: jax.lax.scan(body, st, jax.random.split(jax.random.key(1), 60)))(state)
    best = s.derive(state)
    chex.assert_trees_all_close(state.best_reward, jnp.max(m["reward"]))
    chex.assert_trees_all_close(table[tuple(best)], jnp.max(m["reward"]))


@pytest.mark.parametrize("name", ["advantage", "advantage_baseline", "reinforce", "parsec"])
def test_nan_reward_leaves_policy_untouched(name):
    space = _space(3, 3)
    s = make(name, space, num_samples=1) if name == "parsec" else make(name, space)
    state = s.init(jax.random.key(0))
    nan_fn = lambda w: (jnp.sum(w) * jnp.nan, None)
    new, m = jax.jit(lambda st: s.step(st, jax.random.key(1), nan_fn))(state)
    assert bool(m["nonfinite"])
    chex.assert_trees_all_equal(new.logits, state.logits)
    assert bool(jnp.all(jnp.isfinite(new.logits[jnp.asarray(space.mask)])))


def test_bad_config_errors():
    space = _space(3, 3)
    for kwargs in ({"decay": 1.0}, {"gamma": 0.05}, {"estimator": "third"}, {"final": "best"}, {"lr": -1.0}):
        with pytest.raises(ValueError):
            make("advantage", space, **kwargs)


def test_needs_follows_the_estimator():
    space = _space(3, 3)
    assert make("advantage", space).needs == "gradient"           # eq. 7 differentiates reward_fn
    assert make("advantage", space, estimator="exact").needs == "reward"   # eq. 6: rewards only
    assert make("reinforce", space).needs == "reward"


def test_zero_op_rule_lanes_move_each_entry_to_the_mean_of_the_lanes_that_sampled_it():
    """Eq. 9 over P lanes: an entry sampled by several ok lanes moves towards their mean advantage;
    a non-ok lane does not count; every lane gets the same average and its own replaced zero op."""
    space = _space(2, 4, zero=True)
    ema = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4)), jnp.float32)
    adv = jnp.array([[0.0, 0.4], [0.0, -0.2], [0.0, 9.0]], jnp.float32)
    arch = jnp.array([[0, 2], [1, 2], [1, 2]])
    ok = jnp.array([True, True, False])
    zero_idx = np.zeros(2, np.int32)
    new_adv, new_ema = jax.vmap(
        lambda a, s, o: zero_op_rule(a, s, ema, zero_idx, space.mask, 0.95, o, "p"),
        axis_name="p", out_axes=(0, None))(adv, arch, ok)
    ref = np.asarray(ema).copy()
    ref[1, 2] += 0.05 * (np.mean([0.4, -0.2]) - ref[1, 2])     # lanes 0 and 1 (lane 2 not ok)
    ref[0, 1] += 0.05 * (0.0 - ref[0, 1])                        # lane 1 alone
    ref[0, 0] += 0.05 * (0.0 - ref[0, 0])                        # lane 0's zero op (advantage 0)
    chex.assert_trees_all_close(new_ema, ref, atol=1e-6)
    assert float(new_adv[0, 0]) == pytest.approx(ref[0, 1:].min())   # lane 0 sampled the zero op

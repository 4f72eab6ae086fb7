"""REINFORCE, PARSEC, random search, the toy teacher-student supernet and the toy bench (smoke)."""
import json
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.models.supernets import toy
from jaxnas.spaces.base import Space
from jaxnas.strategies import categorical as cat
from jaxnas.strategies import make
from jaxnas.strategies.parsec import importance_estimate

ROOT = Path(__file__).resolve().parents[1]


def rkey(seed):
    """rbg keys for the toy-network tests: several times faster to compile than threefry on CPU."""
    return jax.random.key(seed, impl="rbg")


def _space(D, K):
    return Space(tuple(f"e{i}" for i in range(D)), (tuple(f"op{j}" for j in range(K)),) * D)


def _table_reward(space, key):
    table = jax.random.normal(key, tuple(space.num_choices))

    def reward_fn(w):
        return table[tuple(jnp.argmax(w, -1))] + 0.0 * jnp.sum(w), None
    return table, reward_fn


def _scan(strategy, reward_fn, n, seed=1):
    state = strategy.init(jax.random.key(0))
    body = lambda st, k: strategy.step(st, k, reward_fn)
    return jax.jit(lambda st: jax.lax.scan(body, st, jax.random.split(jax.random.key(seed), n)))(state)


# ---- REINFORCE ------------------------------------------------------------------------------------
def test_reinforce_baseline_is_ema_of_past_rewards():
    space = _space(3, 4)
    _, reward_fn = _table_reward(space, jax.random.key(2))
    s = make("reinforce", space, decay=0.95)   # AdvantageNAS gamma = 1 - decay = 0.05
    state, m = _scan(s, reward_fn, 30)
    r = np.asarray(m["reward"], np.float64)
    b = r[0]                                   # initialised with the first reward
    used = [b]
    for x in r[:-1]:
        b = b + 0.05 * (x - b)
        used.append(b)
    b = b + 0.05 * (r[-1] - b)
    np.testing.assert_allclose(np.asarray(m["baseline"]), used, rtol=1e-5)
    np.testing.assert_allclose(float(state.extra["baseline"]), b, rtol=1e-5)


def test_reinforce_step_is_adam_on_eq4():
    space = _space(3, 4)
    _, reward_fn = _table_reward(space, jax.random.key(3))
    s = make("reinforce", space, lr=0.1)
    state0 = s.init(jax.random.key(0))
    k1, k2 = jax.random.key(5), jax.random.key(6)
    state1, m1 = s.step(state0, k1, reward_fn)
    chex.assert_trees_all_close(state1.logits, state0.logits)    # (r - b) = 0 on the first step
    state2, m2 = s.step(state1, k2, reward_fn)
    arch = space.sample(k2, state1.logits)
    delta = (m2["reward"] - m1["reward"]) * (space.one_hot(arch) - cat.softmax(state1.logits, space.mask))
    upd, _ = cat.make_optimizer("test", lr=0.1).update(-delta, state1.opt_state, state1.logits)
    chex.assert_trees_all_close(state2.logits, state1.logits + upd, atol=1e-6)


@pytest.mark.parametrize("name", ["reinforce", "advantage", "parsec"])
def test_policy_strategies_find_best_arch_of_additive_reward(name):
    """An additive reward (a separable optimum the product policy can reach): each method ends on
    the best architecture."""
    space = _space(3, 3)
    R = jnp.array([[1.0, 0.0, -1.0], [-0.5, 0.5, 0.0], [0.0, -1.0, 1.0]])
    reward_fn = lambda w: (jnp.sum(R * w), None)
    s = make(name, space, lr=0.05)
    state, _ = _scan(s, reward_fn, 1500)
    chex.assert_trees_all_equal(s.derive(state), jnp.argmax(R, -1).astype(jnp.int32))


# ---- PARSEC ---------------------------------------------------------------------------------------
def test_parsec_importance_estimate_matches_numpy():
    space = _space(4, 3)
    logits = jax.random.normal(jax.random.key(0), (4, 3))
    archs = space.sample(jax.random.key(1), logits, shape=(8,))
    rewards = jax.random.normal(jax.random.key(2), (8,))
    got = importance_estimate(logits, archs, rewards, space.mask, temperature=0.5)
    mu = np.exp(np.asarray(logits, np.float64))
    mu /= mu.sum(-1, keepdims=True)
    w = np.exp(np.asarray(rewards, np.float64) / 0.5)
    w /= w.sum()
    ref = sum(w[k] * (np.eye(3)[np.asarray(archs[k])] - mu) for k in range(8))
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5)


def test_parsec_accumulates_eight_samples_per_update():
    space = _space(3, 4)
    _, reward_fn = _table_reward(space, jax.random.key(7))
    s = make("parsec", space, lr=0.1)
    state = s.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 8)
    archs, rewards = [], []
    for i, k in enumerate(keys):
        before = state
        archs.append(space.sample(k, state.logits))
        state, m = s.step(state, k, reward_fn)
        rewards.append(m["reward"])
        if i < 7:
            chex.assert_trees_all_close(state.logits, before.logits)   # theta fixed while sampling
    delta = importance_estimate(before.logits, jnp.stack(archs), jnp.stack(rewards), space.mask)
    upd, _ = cat.make_optimizer("test", lr=0.1).update(-delta, before.opt_state, before.logits)
    chex.assert_trees_all_close(state.logits, before.logits + upd, atol=1e-6)
    assert int(state.extra["count"]) == 0


def test_parsec_batch_mode_one_update_per_step():
    space = _space(3, 4)
    _, reward_fn = _table_reward(space, jax.random.key(7))
    s = make("parsec", space, accumulate=False, lr=0.1)
    state = s.init(jax.random.key(0))
    key = jax.random.key(3)
    new, _ = s.step(state, key, reward_fn)
    archs = space.sample(key, state.logits, shape=(8,))
    rewards = jnp.stack([reward_fn(space.one_hot(a))[0] for a in archs])
    delta = importance_estimate(state.logits, archs, rewards, space.mask)
    upd, _ = cat.make_optimizer("test", lr=0.1).update(-delta, state.opt_state, state.logits)
    chex.assert_trees_all_close(new.logits, state.logits + upd, atol=1e-6)
    chex.assert_trees_all_close(new.best_reward, jnp.max(rewards))


# ---- random search --------------------------------------------------------------------------------
def test_random_search_keeps_top_k_and_derives_best():
    space = _space(4, 3)
    table, reward_fn = _table_reward(space, jax.random.key(8))
    s = make("random", space, buffer_size=5)
    state, m = _scan(s, reward_fn, 50)
    top = np.sort(np.asarray(m["reward"]))[::-1][:5]
    np.testing.assert_allclose(np.asarray(state.rewards), top, rtol=1e-6)
    for a, r in zip(state.archs, state.rewards):
        chex.assert_trees_all_close(table[tuple(a)], r)
    chex.assert_trees_all_close(table[tuple(s.derive(state))], jnp.max(m["reward"]))
    chex.assert_trees_all_close(s.probs(state), jnp.full((4, 3), 1 / 3))
    with pytest.raises(ValueError):
        make("random", space, buffer_size=0)


# ---- the toy teacher-student supernet (sec. 5.1) ----------------------------------------------------
def _explicit_net(params, x, arch):
    """Loops over edges and output pixels, float64: node_e = tanh(conv7x7 stride 2), y = mean_e
    <node_e, K2_e>; returns (y, per-edge op outputs O_e)."""
    K1 = np.asarray(params["op_kernels"], np.float64)
    K2 = np.asarray(params["out_kernels"], np.float64)
    x = np.asarray(x, np.float64)[..., 0]
    B, E = x.shape[0], K1.shape[0]
    O = np.zeros((E, B, 4, 4))
    for e in range(E):
        for h in range(4):
            for w in range(4):
                patch = x[:, 2 * h:2 * h + 7, 2 * w:2 * w + 7]
                O[e, :, h, w] = np.tanh(np.einsum("bij,ij->b", patch, K1[e, arch[e]]))
    y = np.mean(np.einsum("ebhw,ehw->eb", O, K2), 0)
    return y, O


def test_toy_sparse_equals_explicit_network_and_grad_is_eq7():
    task = toy.make_task(rkey(0))
    x = toy.sample_inputs(rkey(1), 16)
    arch = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    w = jax.nn.one_hot(arch, 10)
    soft = jax.nn.softmax(jax.random.normal(rkey(2), (10, 10)))

    @jax.jit
    def compute(task, x, w, soft):
        return (toy.predict(task, x, w), jax.grad(lambda w: toy.loss(task, x, w))(w),
                toy.predict(task, x, w, "dense"), toy.predict(task, x, soft, "dense"))

    y, g, y_dense, y_soft_got = compute(task, x, w, soft)
    y_ref, O = _explicit_net(task.params, x, arch)
    np.testing.assert_allclose(np.asarray(y), y_ref, atol=1e-5)
    # teacher output by hand, then dL/dw[e, a_e] = sum_b dL/dO_e[b] . O_e[b]
    t_ref, _ = _explicit_net(task.params, x, np.asarray(task.teacher))
    K2 = np.asarray(task.params["out_kernels"], np.float64)
    B, E = 16, 10
    dL_dO = (2.0 / B) * (y_ref - t_ref)[None, :, None, None] * K2[:, None] / E   # [E, B, 4, 4]
    ref = np.zeros((E, 10))
    ref[np.arange(E), arch] = np.einsum("ebhw,ebhw->e", dL_dO, O)
    np.testing.assert_allclose(np.asarray(g), ref, atol=1e-6, rtol=1e-4)
    # dense mode agrees at one-hot weights and is eq. 1 at soft weights
    chex.assert_trees_all_close(y_dense, y, atol=1e-5)
    outs = np.stack([_explicit_net(task.params, x, np.full(10, k))[1] for k in range(10)], -1)
    K2 = np.asarray(task.params["out_kernels"], np.float64)
    mixed = np.einsum("ebhwk,ek->ebhw", outs, np.asarray(soft, np.float64))
    y_soft = np.mean(np.einsum("ebhw,ehw->eb", mixed, K2), 0)
    np.testing.assert_allclose(np.asarray(y_soft_got), y_soft, atol=1e-5)


def test_toy_loss_zero_iff_teacher_and_vmap_over_trials():
    keys = jax.random.split(rkey(0), 3)
    x = toy.sample_inputs(rkey(1), 50)

    @jax.jit
    def compute(keys):
        tasks = jax.vmap(toy.make_task)(keys)
        tw = jax.nn.one_hot(tasks.teacher, 10)
        wrong = tw.at[:, 4].set(jax.nn.one_hot((tasks.teacher[:, 4] + 1) % 10, 10))
        losses = jax.vmap(lambda t, w: toy.loss(t, x, w))(tasks, tw)
        lw = jax.vmap(lambda t, w: toy.loss(t, x, w))(tasks, wrong)
        single = jax.tree.map(lambda a: a[1], tasks)
        return losses, lw, toy.loss(single, x, wrong[1])

    losses, lw, l1 = compute(keys)
    chex.assert_trees_all_equal(losses, jnp.zeros(3))
    assert bool(jnp.all(lw > 1e-6))
    chex.assert_trees_all_close(l1, lw[1], rtol=1e-5)
    space = toy.toy_space()
    assert space.shape == (10, 10) and space.decision_names[0] == "1<-0"


def test_advantage_beats_reinforce_on_small_toy():
    """3 edges x 10 convs, 5 trials: AdvantageNAS recovers the teacher in fewer iterations."""
    space = toy.toy_space(3, 10)

    def iters_to_teacher(name, key):
        s = make(name, space, lr=0.01)
        task = toy.make_task(key, 3, 10)

        def it(st, k):
            kx, ks = jax.random.split(k)
            st, _ = s.step(st, ks, toy.reward_fn(task, toy.sample_inputs(kx, 100)))
            return st, jnp.all(s.derive(st) == task.teacher)
        _, hit = jax.lax.scan(it, s.init(key), jax.random.split(key, 300))
        stays = jnp.flip(jnp.cumprod(jnp.flip(hit)))      # True from the point it stays correct
        return 300 - jnp.sum(stays)

    keys = jax.random.split(rkey(0), 5)
    adv, rei = jax.jit(lambda ks: (jax.vmap(lambda k: iters_to_teacher("advantage", k))(ks),
                                   jax.vmap(lambda k: iters_to_teacher("reinforce", k))(ks)))(keys)
    assert np.median(adv) < np.median(rei), (adv, rei)


def test_bench_advantage_toy_smoke(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import advantage_toy
    out = tmp_path / "toy.json"
    advantage_toy.main(["--smoke", "--methods", "advantage", "--out", str(out)])
    res = json.loads(out.read_text())
    r = res["methods"]["advantage"]
    n = len(res["iterations"])
    assert n == res["iters"] // res["eval_every"] + 1
    assert len(r["median"]) == n and len(r["iters_to_zero"]) == res["trials"]
    assert np.all(np.asarray(r["p25"]) <= np.asarray(r["median"]) + 1e-12)
    assert np.all(np.asarray(r["median"]) <= np.asarray(r["p75"]) + 1e-12)
    assert r["zero_iff_teacher"]
    assert res["steps_per_second"]["advantage"] > 0 and res["steps_per_second"]["reinforce"] > 0
    assert out.with_suffix(".png").exists()
    # the helper that defines "reaching zero"
    grid = np.array([0, 10, 20, 30])
    assert advantage_toy.iters_to_zero(np.array([1.0, 0.0, 1.0, 0.0]), grid) == 30
    assert advantage_toy.iters_to_zero(np.array([1.0, 0.0, 0.0, 0.0]), grid) == 10
    assert advantage_toy.iters_to_zero(np.array([0.0, 0.0, 0.0, 1.0]), grid) == float("inf")


# ---- P lanes (vmap with an axis name; shard_map: tests/test_strategies_multidevice.py) -------------
def _lanes(strategy, state, keys, reward_fns=None):
    """One step on len(keys) vmap lanes; the returned state must be lane-invariant (out_axes=None)."""
    rf = reward_fns or (lambda lane: _table_reward(strategy.space, jax.random.key(7))[1])
    return jax.jit(jax.vmap(lambda k: strategy.step(state, k, rf(jax.lax.axis_index("p"))),
                            out_axes=(None, 0), axis_name="p"))(keys)


def test_best_over_lanes_nan_never_wins_ties_go_to_lowest_lane():
    rewards = jnp.array([1.0, jnp.nan, 3.0, 3.0, -jnp.inf])
    archs = jnp.arange(5)[:, None] * jnp.ones((1, 2), jnp.int32)
    ok = jnp.array([True, True, True, True, True])
    r, a = jax.vmap(lambda r, a, o: cat.best_over_lanes(r, a, o, "p"), axis_name="p",
                    out_axes=None)(rewards, archs, ok)
    assert float(r) == 3.0 and a.tolist() == [2, 2]
    r, a = jax.vmap(lambda r, a, o: cat.best_over_lanes(r, a, o, "p"), axis_name="p",
                    out_axes=None)(rewards, archs, ok.at[2].set(False))
    assert float(r) == 3.0 and a.tolist() == [3, 3]                       # lane 2 was not ok
    r, _ = jax.vmap(lambda r, a: cat.best_over_lanes(r, a, True, "p"), axis_name="p",
                    out_axes=None)(jnp.full(3, jnp.nan), archs[:3])
    assert float(r) == -np.inf


def test_random_search_inserts_every_lane_sample():
    space = _space(4, 3)
    table, reward_fn = _table_reward(space, jax.random.key(8))
    s = make("random", space, buffer_size=5, axis_name="p")
    keys = jax.random.split(jax.random.key(1), 3)
    new, m = _lanes(s, s.init(jax.random.key(0)), keys, lambda lane: reward_fn)
    archs = jax.vmap(lambda k: space.sample(k, space.uniform_logits()))(keys)
    expected = np.sort(np.asarray(jax.vmap(lambda a: table[tuple(a)])(archs)))[::-1]
    np.testing.assert_allclose(np.asarray(new.rewards[:3]), expected, rtol=1e-6)
    assert np.all(np.isinf(np.asarray(new.rewards[3:])))
    np.testing.assert_allclose(np.asarray(m["evaluations"]), 1.0)


def test_parsec_lanes_fill_the_buffer_and_drop_what_does_not_fit():
    """S = 8 samples per update, P = 3 lanes: 3, 6, then 2 of 3 fit and theta is updated with the
    8 buffered samples (the 9th is dropped: not a sample of the updated policy)."""
    space = _space(3, 4)
    _, reward_fn = _table_reward(space, jax.random.key(7))
    s = make("parsec", space, lr=0.1, axis_name="p")
    state = s.init(jax.random.key(0))
    archs, rewards = [], []
    for i in range(3):
        keys = jax.random.split(jax.random.key(10 + i), 3)
        before = state
        state, m = _lanes(s, state, keys, lambda lane: reward_fn)
        archs += list(jax.vmap(lambda k: space.sample(k, before.logits))(keys))
        rewards += list(np.asarray(m["reward"]))
        assert int(state.extra["count"]) == [3, 6, 0][i]
        if i < 2:
            chex.assert_trees_all_close(state.logits, before.logits)   # theta fixed while sampling
    delta = importance_estimate(before.logits, jnp.stack(archs[:8]), jnp.asarray(rewards[:8]),
                                space.mask)
    upd, _ = cat.make_optimizer("test", lr=0.1).update(-delta, before.opt_state, before.logits)
    chex.assert_trees_all_close(state.logits, before.logits + upd, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(m["updated"]), 1.0)


def test_reinforce_lanes_average_directions_of_finite_lanes():
    """Lane 1's reward is NaN: the update is the mean direction of lanes 0 and 2, flagged on lane 1."""
    space = _space(3, 4)
    table, reward_fn = _table_reward(space, jax.random.key(3))
    s = make("reinforce", space, lr=0.1, baseline=False, axis_name="p")
    state = s.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(4), 3)
    bad = lambda lane: (lambda w: (reward_fn(w)[0] + jnp.where(lane == 1, jnp.nan, 0.0), None))
    new, m = _lanes(s, state, keys, bad)
    np.testing.assert_array_equal(np.asarray(m["nonfinite"]), [False, True, False])
    archs = jax.vmap(lambda k: space.sample(k, state.logits))(keys)
    delta = sum(table[tuple(archs[i])] * cat.score(state.logits, archs[i], space.mask)
                for i in (0, 2)) / 2
    upd, _ = cat.make_optimizer("test", lr=0.1).update(-delta, state.opt_state, state.logits)
    chex.assert_trees_all_close(new.logits, state.logits + upd, atol=1e-6)

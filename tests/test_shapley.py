"""Shapley-NAS (jaxnas/strategies/shapley_values.py, jaxnas/strategies/shapley.py) against independent computations:
closed-form Shapley values, exact enumeration (eq. 3), a plain Python loop of Alg. 1, one-at-a-time
evaluation of the masked dense supernet, and a numpy recomputation of Alg. 2's update."""
import dataclasses
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.engine.search import Search
from jaxnas.evaluators.shared_weights import SharedWeightsEvaluator
from jaxnas.models.supernets.cells import NasBench201Net
from jaxnas.models.supernets.toy import ToyNet, toy_space
from jaxnas.spaces.cells import DartsSpace, NasBench201Space
from jaxnas.strategies import make
from jaxnas.strategies import shapley_values as SH
from jaxnas.strategies.base import BatchContext
from jaxnas.strategies.shapley import keep_weights, players_of
from jaxnas.tasks.classification import ClassificationTask


# ---- games ---------------------------------------------------------------------------------------
def pair_game(a, B, c=0.3):
    """V(S) = c + sum_{i in S} a_i + sum_{i<j in S} B_ij: phi_i = a_i + 1/2 sum_{j != i} B_ij."""
    Bu = np.triu(B, 1)
    f = lambda m: c + m @ a + np.einsum("bi,ij,bj->b", m, Bu, m)
    return f, a + 0.5 * (Bu + Bu.T).sum(1)


def unanimity_game(T, n):
    """V(S) = 1 if T is a subset of S: phi_i = 1/|T| on T, 0 elsewhere."""
    t = np.zeros(n, bool)
    t[list(T)] = True
    return (lambda m: np.all(np.asarray(m)[:, t], 1).astype(float)), t / t.sum()


def table_game(values_of_masks, n):
    """Every coalition's value, looked up by its bits (the MC tests run many permutations cheaply)."""
    table = jnp.asarray(np.concatenate([np.asarray(values_of_masks(m)) for m in
                                        np.array_split(SH.all_coalitions(n), 4)]), jnp.float32)
    bits = 2 ** jnp.arange(n)
    return lambda masks: table[jnp.sum(jnp.asarray(masks, jnp.int32) * bits, -1)], table


def toy_supernet_game(null=None, twins=None, seed=0):
    """The AdvantageNAS toy supernet (dense, 3 edges x 4 ops = 12 players) at uniform mixing
    weights; V(S) = exp(-MSE) against a random teacher architecture. ``null=(e, k)`` zeroes that
    op's kernel (its output tanh(0) = 0: a null player); ``twins=(e, k, k2)`` copies op k's kernel
    to op k2 on edge e (symmetric players)."""
    space = toy_space(3, 4)
    net = ToyNet(3, 4)
    kx, kp, kt = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.uniform(kx, (32, 13, 13, 1), minval=-1, maxval=1)
    params = net.init(kp, x, jnp.ones((3, 4)) / 4, mode="dense")["params"]
    kern = params["op_kernels"]
    if null is not None:
        kern = kern.at[null].set(0.0)
    if twins is not None:
        e, k, k2 = twins
        kern = kern.at[e, k2].set(kern[e, k])
    params = {**params, "op_kernels": kern}
    teacher = space.one_hot(jax.random.randint(kt, (3,), 0, 4))
    y = net.apply({"params": params}, x, teacher, mode="dense")
    players = players_of(space, None)
    full = jnp.full((3, 4), 0.25)

    @jax.jit
    def values_of(params, x, y, masks):    # arguments, not constants: XLA would constant-fold the net
        ws = keep_weights(full, players, masks)
        out = jax.vmap(lambda w: net.apply({"params": params}, x, w, mode="dense"))(
            ws.reshape(-1, 3, 4)).reshape(masks.shape[:-1] + (32,))
        return jnp.exp(-jnp.mean((out - y) ** 2, -1))
    return (lambda masks: values_of(params, x, y, masks)), len(players)


# ---- exact ---------------------------------------------------------------------------------------
def test_exact_enumeration_matches_closed_forms_and_is_linear():
    rng = np.random.default_rng(0)
    n = 7
    f, want = pair_game(rng.normal(size=n), rng.normal(size=(n, n)))
    chex.assert_trees_all_close(SH.exact_shapley(f, n, chunk=37), want, atol=1e-12)
    g, want_g = unanimity_game((1, 4, 5), n)
    chex.assert_trees_all_close(SH.exact_shapley(g, n), want_g, atol=1e-12)
    both = SH.exact_shapley(lambda m: 2.0 * f(m) - 3.0 * g(m), n)     # linearity
    chex.assert_trees_all_close(both, 2.0 * want - 3.0 * want_g, atol=1e-12)
    chex.assert_trees_all_close(both.sum(), 2.0 * (f(np.ones((1, n))) - f(np.zeros((1, n))))[0]
                                - 3.0, atol=1e-12)                     # efficiency


# ---- Monte Carlo (Alg. 1) --------------------------------------------------------------------------
def test_mc_without_truncation_is_unbiased_and_error_falls_like_inverse_sqrt_m():
    """Eq. 4 on the toy supernet (12 players): the mean of R independent M-permutation estimates is
    the exact value within its standard error, and the RMS error over replicates falls like
    1/sqrt(M) (log-log slope -1/2)."""
    values, n = toy_supernet_game()
    game, _ = table_game(values, n)
    exact = SH.exact_shapley(lambda m: np.asarray(values(jnp.asarray(m))), n)
    R, Ms = 300, (4, 16, 64)
    total = R * sum(Ms)
    perms = SH.permutations(jax.random.key(0), n, total)
    contrib = np.asarray(jax.jit(lambda p: SH.truncated_mc(game, p, jnp.full((total,), game(
        jnp.ones((1, n), bool))[0]), None, chunk=6).contributions)(perms))
    rmse, start = [], 0
    for M in Ms:                                                       # disjoint permutations
        est = contrib[start:start + R * M].reshape(R, M, n).mean(1)    # R estimates
        start += R * M
        se = est.std(0, ddof=1) / np.sqrt(R)
        assert np.all(np.abs(est.mean(0) - exact) <= 4.5 * se + 1e-7), (M, est.mean(0) - exact, se)
        rmse.append(np.sqrt(np.mean((est - exact) ** 2)))
    slope = np.polyfit(np.log(Ms), np.log(rmse), 1)[0]
    assert -0.6 < slope < -0.4, (rmse, slope)


def test_efficiency_null_player_and_symmetry():
    """Per permutation the contributions sum to V(N) - V(empty) (efficiency); a null op (zero
    kernel) gets exactly 0 in every permutation and in the exact values; two ops with the same
    kernel on one edge get equal exact values (symmetry) and, with M large, close MC estimates."""
    null, twins = (1, 2), (0, 1, 3)
    values, n = toy_supernet_game(null=null, twins=twins, seed=1)
    game, table = table_game(values, n)
    v_full, v_empty = float(table[-1]), float(table[0])
    perms = SH.permutations(jax.random.key(3), n, 4000)
    res = jax.jit(lambda p: SH.truncated_mc(game, p, jnp.full((4000,), v_full), None, 5))(perms)
    c = np.asarray(res.contributions)
    chex.assert_trees_all_close(c.sum(1), np.full(4000, v_full - v_empty), atol=2e-6)
    i_null, i_a, i_b = null[0] * 4 + null[1], twins[0] * 4 + twins[1], twins[0] * 4 + twins[2]
    assert np.all(c[:, i_null] == 0.0)
    exact = SH.exact_shapley(lambda m: np.asarray(values(jnp.asarray(m))), n)
    assert exact[i_null] == 0.0 and abs(exact[i_a]) > 1e-3
    chex.assert_trees_all_close(exact[i_a], exact[i_b], atol=1e-6)
    chex.assert_trees_all_close(exact.sum(), v_full - v_empty, atol=1e-6)
    mc = c.mean(0)
    se = c.std(0) / np.sqrt(4000)
    assert abs(mc[i_a] - mc[i_b]) < 4.5 * np.hypot(se[i_a], se[i_b])


def alg1_loop(value_of_mask, perm, removable, eta):
    """Alg. 1 (App. A.1) for one permutation, as written: a plain Python loop, one evaluation at a
    time. Returns (contributions per player, evaluations)."""
    n = len(perm)
    mask = np.ones(n, bool)
    v_n = v = float(value_of_mask(mask))
    phi, evals = np.zeros(n), 0
    for p in perm:
        if (eta is None or v > eta * v_n) and removable[p]:
            mask[p] = False
            new = float(value_of_mask(mask))
            evals += 1
            phi[p] = v - new
            v = new
    return phi, evals


@pytest.mark.parametrize("eta", [0.5, 0.8])
def test_truncation_equals_a_plain_loop_of_alg1(eta):
    """The compiled Alg. 1 (permutations side by side, prefix chunks, while_loop) gives exactly the
    plain loop's contributions and number of removals on the same permutations, for chunk sizes
    that do and do not divide n, with non-removable (zero-op) players; whole chunks are skipped."""
    n = 11
    rng = np.random.default_rng(1)
    a = rng.uniform(0.2, 1.0, n)
    value = lambda m: (jnp.asarray(m, jnp.float32) @ a / a.sum()) ** 2      # in [0, 1]
    removable = np.ones(n, bool)
    removable[[2, 7]] = False
    perms = SH.permutations(jax.random.key(5), n, 16)
    want = [alg1_loop(lambda m: value(m[None])[0], list(np.asarray(p)), removable, eta) for p in perms]
    want_c = np.stack([w[0] for w in want])
    assert 0 < sum(w[1] for w in want) < 16 * 9              # truncation happened
    for chunk in (1, 3, 4, 11):
        res = jax.jit(lambda p: SH.truncated_mc(value, p, jnp.ones((16,)), eta, chunk,
                                                removable=jnp.asarray(removable)))(perms)
        chex.assert_trees_all_close(np.asarray(res.contributions), want_c, atol=1e-6)
        assert int(res.removals) == sum(w[1] for w in want)
        np.testing.assert_array_equal(np.asarray(res.truncated), [w[1] < 9 for w in want])
        # chunks run until every permutation has truncated (or run out of removable players): the
        # longest run's chunks, no more
        longest = max(w[1] for w in want)
        assert int(res.evaluations) == 16 * chunk * -(-longest // chunk)
        # packed: the running permutations share each batch; same contributions and removals, and
        # never more batches than lock-step (fewer here: the runs' lengths differ)
        pk = jax.jit(lambda p: SH.truncated_mc(value, p, jnp.ones((16,)), eta, chunk, packed=True,
                                               removable=jnp.asarray(removable)))(perms)
        chex.assert_trees_all_close(np.asarray(pk.contributions), want_c, atol=1e-6)
        assert int(pk.removals) == sum(w[1] for w in want)
        np.testing.assert_array_equal(np.asarray(pk.truncated), [w[1] < 9 for w in want])
        assert sum(w[1] for w in want) <= int(pk.evaluations) <= int(res.evaluations)


def test_packed_schedule_saves_batches_when_runs_differ_in_length():
    """A 'key' player whose removal drops V to 0 truncates each permutation where it stands, so the
    runs' lengths spread over 1..n: lock-step batches run as long as the longest run, packed ones
    hand the stopped permutations' slots to the running ones. Same contributions as Alg. 1's loop."""
    n, m, chunk = 24, 10, 4
    a = np.random.default_rng(2).uniform(0.2, 1.0, n)
    value = lambda mk: jnp.asarray(mk, jnp.float32)[..., 0] * (jnp.asarray(mk, jnp.float32) @ a / a.sum())
    perms = SH.permutations(jax.random.key(9), n, m)
    want = [alg1_loop(lambda mk: value(mk[None])[0], list(np.asarray(p)), np.ones(n, bool), 0.5)
            for p in perms]
    lengths = [w[1] for w in want]
    assert max(lengths) - min(lengths) >= 5                      # the runs differ in length
    run = lambda packed: jax.jit(lambda p: SH.truncated_mc(value, p, jnp.ones((m,)), 0.5, chunk,
                                                           packed=packed))(perms)
    lock, pk = run(False), run(True)
    for r in (lock, pk):
        chex.assert_trees_all_close(np.asarray(r.contributions), np.stack([w[0] for w in want]), atol=1e-6)
        assert int(r.removals) == sum(lengths)
    assert int(lock.evaluations) == m * chunk * -(-max(lengths) // chunk)
    assert sum(lengths) <= int(pk.evaluations) < int(lock.evaluations)


# ---- the strategy on a real dense supernet -------------------------------------------------------
def _nb201_evaluator(vmap_chunk=3):
    space = NasBench201Space.create(C=2, cells_per_stage=1)
    task = ClassificationTask(space, NasBench201Net(space), (8, 8, 3), reward="accuracy")
    ev = SharedWeightsEvaluator(task=task, optimizer=None, lr_at=None, mode="dense",
                                vmap_chunk=vmap_chunk)
    kx, ky, kp = jax.random.split(jax.random.key(0), 3)
    batch = (jax.random.normal(kx, (64, 8, 8, 3)), jax.random.randint(ky, (64,), 0, 10))
    params = task.init_params(kp)
    return space, ev, EvState(params), batch


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class EvState:                 # what reward_fn reads of the evaluator's state: the parameters
    params: dict


def test_vmapped_masked_evaluation_equals_one_at_a_time():
    """Masked dense NB201 supernets scored as one vmapped batch (chunks of 3, last one padded) give
    the rewards and accuracies of one call per mask."""
    space, ev, state, batch = _nb201_evaluator()
    players = players_of(space, "none")
    full = jax.nn.softmax(jax.random.normal(jax.random.key(1), space.shape), -1)
    masks = jax.random.bernoulli(jax.random.key(2), 0.6, (7, len(players)))
    ws = keep_weights(full, players, masks)
    # parameters and batch as arguments (closed-over arrays would be constant-folded by XLA)
    got, aux = jax.jit(lambda st, b, ws: ev.batched_reward_fn(st, (), b, None)(ws))(state, batch, ws)
    one = jax.jit(lambda st, b, w: ev.reward_fn(st, (), b, None)(w))
    want = [one(state, batch, w) for w in ws]
    chex.assert_trees_all_close(got, jnp.stack([w[0] for w in want]), atol=1e-6)
    chex.assert_trees_all_close(aux["loss"], jnp.stack([w[1]["loss"] for w in want]), rtol=1e-5)
    # a removed player's weight is 0, the others are not renormalised (remove_players)
    w0 = np.asarray(ws[0]).reshape(-1)
    removed = players[~np.asarray(masks[0])]
    assert np.all(w0[removed] == 0) and np.array_equal(np.delete(w0, removed),
                                                       np.delete(np.asarray(full).reshape(-1), removed))


def test_strategy_step_equals_plain_alg1_and_alg2_on_a_supernet():
    """One strategy step on the dense NB201 supernet (accuracy as V, eta = 0.5, M = 6): phi is the
    plain loop of Alg. 1 over the same permutations with one-at-a-time evaluations (zero op
    skipped), and alpha moves by lr * phi / ||phi|| (Alg. 2 from s_0 = 0)."""
    space, ev, state, batch = _nb201_evaluator()
    s = make("shapley", space, total_steps=1, num_samples=6, eta=0.5, prefix_chunk=5, init_std=0.5)
    st0 = s.init(jax.random.key(3))
    key = jax.random.key(4)
    st1, metrics = jax.jit(lambda st, es, b: s.step(st, key, ev.batched_reward_fn(es, (), b, None)))(
        st0, state, batch)
    one_ = jax.jit(lambda es, b, w: ev.reward_fn(es, (), b, None)(w)[1]["accuracy"])
    one = lambda w: one_(state, batch, w)
    players = players_of(space, "none")
    full = np.asarray(s.sample(st0, key)[1]).reshape(-1)

    def value_of_mask(mask):
        w = full.copy()
        w[players[~mask]] = 0.0
        return one(jnp.asarray(w.reshape(space.shape)))
    perms = SH.permutations(key, len(players), 6)
    loops = [alg1_loop(value_of_mask, list(np.asarray(p)), np.ones(len(players), bool), 0.5)
             for p in perms]
    phi = np.zeros(space.shape[0] * space.shape[1])
    phi[players] = np.mean([l[0] for l in loops], 0)
    chex.assert_trees_all_close(np.asarray(st1.phi).reshape(-1), phi, atol=1e-6)
    assert np.abs(phi).max() > 0
    step = np.asarray(st1.alpha - st0.alpha).reshape(-1)
    chex.assert_trees_all_close(step, 0.1 * phi / np.linalg.norm(phi), atol=1e-6)
    assert float(metrics["removals"]) == sum(l[1] for l in loops)
    assert float(metrics["evaluations_full"]) == 6 * len(players) + 1
    # whole chunks of 5 prefix positions: what truncation skips, up to the padded last chunk
    assert float(metrics["removals"]) < float(metrics["evaluations"]) <= 6 * 5 * 5 + 1
    chex.assert_trees_all_close(float(metrics["reward"]), float(value_of_mask(np.ones(len(players), bool))))


# ---- Alg. 2 and the official code's options -----------------------------------------------------
def _linear_reward(space, seed=0):
    """An additive game on the weights, reward(w) = sum c * w: phi = c * softmax(alpha) exactly."""
    c = jax.random.normal(jax.random.key(seed), space.shape)
    return c, jax.vmap(lambda w: (jnp.sum(c * w), {"accuracy": jnp.sum(c * w)}))


def _softmax(alpha, mask):
    e = np.where(mask, np.exp(alpha - alpha.max(-1, keepdims=True)), 0.0)
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("normalize", ["l2", "zscore"])
def test_alg2_update_on_an_additive_game(normalize):
    """Three steps on DARTS cells (2 cell types) with reward sum c * w: phi = c * softmax(alpha)
    (zero op: 0); l2 (eq. 6-7): s = mu s + (1 - mu) phi/|phi|, alpha += eps s/|s|; zscore (official
    change_alpha): per cell type (phi - mean)/std(ddof=1), alpha += eps s. Recomputed in numpy."""
    space = DartsSpace.create()
    mask, zero = np.asarray(space.mask), np.array([[n == "none" for n in ch] for ch in space.choices])
    c, reward = _linear_reward(space)
    s = make("shapley", space, total_steps=3, num_samples=2, eta=None, prefix_chunk=200,
             normalize=normalize, value="reward", init_std=1.0)
    st = s.init(jax.random.key(0))
    alpha, mom = np.asarray(st.alpha, np.float64), np.zeros(space.shape)
    step = jax.jit(lambda st, k: s.step(st, k, reward))
    for t in range(3):
        st, _ = step(st, jax.random.key(t))
        phi = np.where(zero, 0.0, np.asarray(c) * _softmax(alpha, mask))
        chex.assert_trees_all_close(np.asarray(st.phi), phi, atol=1e-5)
        if normalize == "l2":
            mom = 0.8 * mom + 0.2 * phi / np.linalg.norm(phi)
            alpha = alpha + 0.1 * mom / np.linalg.norm(mom)
        else:
            z = np.zeros_like(phi)
            for b in range(2):
                p = phi[14 * b:14 * b + 14]
                z[14 * b:14 * b + 14] = (p - p.mean()) / p.std(ddof=1)
            mom = 0.8 * mom + 0.2 * z
            alpha = alpha + 0.1 * mom
        chex.assert_trees_all_close(np.asarray(st.momentum), mom, atol=1e-5)
        chex.assert_trees_all_close(np.asarray(st.alpha), alpha, atol=1e-5)


def test_fresh_batch_and_mean_minus_std_equal_the_plain_loop():
    """fresh_batch=True (official: a new validation batch per permutation) scores permutation j on
    slice j of the lane's batch; subtract_std=True (official) reports mean - std (ddof = 0) over the
    permutations. Game with interactions: V = (b_j + sum c * w)^2, b_j the mean of slice j."""
    space = NasBench201Space.create()
    c = jax.random.uniform(jax.random.key(0), space.shape, minval=0.1)
    game = lambda b, w: (jnp.mean(b) + jnp.sum(c * w)) ** 2
    reward_on = lambda b: jax.vmap(lambda w: (game(b, w), {"accuracy": game(b, w)}))
    batch = jnp.arange(20.0) / 10.0
    M = 4
    s = make("shapley", space, total_steps=1, num_samples=M, eta=0.5, fresh_batch=True,
             subtract_std=True, prefix_chunk=7, init_std=1.0)
    st0 = s.init(jax.random.key(1))
    st1, m = jax.jit(lambda st: s.step(st, jax.random.key(2), reward_on(batch),
                                       ctx=BatchContext(batch, reward_on)))(st0)
    players = players_of(space, "none")
    full = np.asarray(s.sample(st0, None)[1]).reshape(-1)
    perms = SH.permutations(jax.random.key(2), len(players), M)
    contrib = []
    for j, p in enumerate(perms):
        def value_of_mask(mask, j=j):
            w = full.copy()
            w[players[~mask]] = 0.0
            return float(game(batch[5 * j:5 * j + 5], jnp.asarray(w.reshape(space.shape))))
        contrib.append(alg1_loop(value_of_mask, list(np.asarray(p)), np.ones(len(players), bool), 0.5)[0])
    contrib = np.array(contrib)
    phi = np.zeros(full.shape)
    phi[players] = contrib.mean(0) - contrib.std(0)
    chex.assert_trees_all_close(np.asarray(st1.phi).reshape(-1), phi, atol=1e-5)
    assert float(m["evaluations_full"]) == M * len(players) + M      # one V(N) per batch slice


def test_every_estimates_once_per_period():
    """every=3: steps 0 and 3 estimate (alpha moves, evaluations > 0); the others leave the state
    (but the step count) as it is and report 0 evaluations and the last V(N). Step 0 is the
    every=1 strategy's step."""
    space = NasBench201Space.create()
    _, reward = _linear_reward(space)
    s = make("shapley", space, total_steps=6, every=3, num_samples=2, value="reward", eta=None)
    st0 = s.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 5)

    def body(x, k):
        x, m = s.step(x, k, reward)
        return x, (m, x.alpha)
    st, (m, alphas) = jax.jit(lambda x: jax.lax.scan(body, x, keys))(st0)
    est = np.asarray(m["estimated"])
    np.testing.assert_array_equal(est, [1, 0, 0, 1, 0])
    assert np.all((np.asarray(m["evaluations"]) > 0) == (est > 0))
    np.testing.assert_array_equal(np.asarray(m["reward"])[1:3], np.asarray(m["reward"])[0])
    assert int(st.step) == 5
    one = make("shapley", space, total_steps=6, num_samples=2, value="reward", eta=None)
    st_a, _ = jax.jit(lambda x: one.step(x, keys[0], reward))(st0)
    a = np.asarray(alphas)
    chex.assert_trees_all_close(a[0], np.asarray(st_a.alpha))
    np.testing.assert_array_equal(a[1], a[0])
    np.testing.assert_array_equal(a[2], a[0])
    assert not np.allclose(a[3], a[0]) and not np.allclose(a[0], np.asarray(st0.alpha))


# ---- errors a user can act on ---------------------------------------------------------------------
@pytest.mark.parametrize("opts,needle", [
    ({"eta": 1.5}, "eta"), ({"value": "loss"}, "value"), ({"normalize": "max"}, "normalize"),
    ({"num_samples": 0}, "num_samples"), ({"final": "process_best"}, "final"),
    ({"decay": 1.0}, "decay"), ({"every": 0}, "every"),
])
def test_bad_options_raise_before_compiling(opts, needle):
    with pytest.raises(ValueError, match=needle):
        make("shapley", NasBench201Space.create(), **opts)


def test_errors_at_trace_time_and_in_the_engine():
    space = NasBench201Space.create()
    s = make("shapley", space)                              # value='accuracy'
    no_acc = jax.vmap(lambda w: (jnp.sum(w), None))
    with pytest.raises(ValueError, match="value='reward'"):
        jax.eval_shape(lambda st: s.step(st, jax.random.key(0), no_acc), s.init(jax.random.key(0)))
    f = make("shapley", space, fresh_batch=True, num_samples=3, value="reward")
    batch = jnp.zeros((10,))
    with pytest.raises(ValueError, match="multiple of 3"):
        jax.eval_shape(lambda st: f.step(st, jax.random.key(0), no_acc,
                                         ctx=BatchContext(batch, lambda b: no_acc)), f.init(jax.random.key(0)))
    table_like = types.SimpleNamespace(name="table", max_lane_batch=64, needs_batches=False,
                                       differentiable=False, has_weights=False)
    with pytest.raises(ValueError, match="shared_weights"):
        Search(table_like, s)


# ---- PC-DARTS partial channel connections (the DARTS supernet of sec. 4.1) ------------------------
def test_channel_shuffle_is_pytorch_view_transpose():
    from jaxnas.models.supernets.cells import channel_shuffle
    x = jnp.arange(2 * 12, dtype=jnp.float32).reshape(2, 1, 1, 12)
    got = np.asarray(channel_shuffle(x, 4))[0, 0, 0]
    # torch: x.view(b, 4, 3, h, w).transpose(1, 2): out channel j * 4 + g = in channel g * 3 + j
    want = [g * 3 + j for j in range(3) for g in range(4)]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channel_edge_equals_manual_pc_darts(stride):
    """A K = 4 mixed edge (dense, 8 channels) = its ops on the first 2 channels (the same parameters
    in a 2-channel edge), the other 6 passed through (2x2 max-pooled on a stride-2 edge),
    concatenated and channel-shuffled."""
    from jaxnas.models.supernets.cells import MixedEdge
    from jaxnas.spaces.op_costs import DARTS_OPS
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 8))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(1), (len(DARTS_OPS),)))
    pc = MixedEdge("darts", DARTS_OPS, 8, stride, partial_channels=4)
    params = pc.init(jax.random.key(2), x, w, "dense")
    got = pc.apply(params, x, w, "dense")
    small = MixedEdge("darts", DARTS_OPS, 2, stride).apply(params, x[..., :2], w, "dense")
    rest = x[..., 2:]
    if stride == 2:
        rest = rest.reshape(2, 4, 2, 4, 2, 6).max((2, 4))
    cat = np.concatenate([np.asarray(small), np.asarray(rest)], -1)
    want = cat[..., [g * 2 + j for j in range(2) for g in range(4)]]
    chex.assert_trees_all_close(np.asarray(got), want, atol=1e-6)
    n_pc = sum(v.size for v in jax.tree.leaves(params))
    n_full = sum(v.size for v in jax.tree.leaves(MixedEdge("darts", DARTS_OPS, 8, stride).init(
        jax.random.key(2), x, w, "dense")))
    assert n_pc < n_full / 4                   # the ops are built for C / K channels


def test_partial_channel_darts_net_sparse_equals_dense_at_one_hot():
    from jaxnas.models.supernets.cells import DartsNet
    space = DartsSpace.create(C=8, num_cells=3)
    net = DartsNet(space, partial_channels=4)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    arch = jnp.asarray([(d % 7) + 1 for d in range(space.num_decisions)])
    w = space.one_hot(arch)
    params = net.init(jax.random.key(1), x, w, mode="dense")
    dense = net.apply(params, x, w, mode="dense")
    sparse = net.apply(params, x, w, mode="sparse")
    chex.assert_shape(dense, (2, 10))
    chex.assert_trees_all_close(dense, sparse, atol=1e-5)
    with pytest.raises(ValueError, match="partial_channels"):
        DartsNet(DartsSpace.create(C=6, num_cells=3), partial_channels=4).init(jax.random.key(1), x, w)

"""MANAS and MANAS-LS (jaxnas/strategies/manas.py) against independent computations.

- the coordinated estimator is unbiased for E[L | a_i = k] under the sampling policy (exact
  enumeration of a small ragged space);
- least squares recovers beta up to one constant per agent on noiseless linear losses;
- the accumulated normal equations equal the batch Z Z^T, Z L of the same rows bit for bit (float64,
  dyadic losses: any difference is bookkeeping, not rounding), and so does the solution;
- Zipf probabilities sum to 1 and follow 1 / (rank H_K); EXP3 mixing never goes below explore / K;
- on a ragged space no masked op is ever sampled, for every credit x sampler combination;
- P lanes contribute P samples; bad option combinations raise before anything compiles.
"""
import itertools
import math
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces.base import Space
from jaxnas.spaces.cells import DartsSpace
from jaxnas.strategies import make
from jaxnas.strategies.manas import coordinated_credit, exp3_probs, exp3_rates, solve_normal_equations, zipf_probs

REPO = Path(__file__).resolve().parents[1]
RAGGED = Space(decision_names=("a", "b", "c", "d"),
               choices=(("x", "y", "z"), ("x", "y"), ("x", "y", "z", "w"), ("x", "y", "z")))


def _random_probs(key, space):
    p = jax.random.uniform(key, space.shape, minval=0.05, maxval=1.0) * jnp.asarray(space.mask)
    return p / p.sum(-1, keepdims=True)


def _table_reward(space, table):
    """reward(weights) = -table[arch]: arch read off the one-hot weights (mixed-radix id)."""
    radix = np.array([int(np.prod(space.num_choices[d + 1:])) for d in range(space.num_decisions)])
    table = jnp.asarray(table)

    def reward_fn(w):
        arch = jnp.argmax(w, -1)
        return -table[jnp.sum(arch * radix)], None
    return reward_fn


# ---- coordinated credit ----------------------------------------------------------------------------
def test_coordinated_estimator_is_unbiased_by_enumeration():
    space = RAGGED
    probs = _random_probs(jax.random.key(0), space)
    archs = space.all_archs()                                   # [A, D]
    losses = np.asarray(jax.random.normal(jax.random.key(1), (len(archs),)), np.float64) + 2.0
    p64 = np.asarray(probs, np.float64)
    pi_a = np.prod(p64[np.arange(space.num_decisions), archs], -1)   # joint probability of each arch
    # E_pi[credit]: the estimator averaged over every architecture under pi
    credits = np.asarray(jax.vmap(lambda a, l: coordinated_credit(a, l, probs, space.mask))(
        jnp.asarray(archs), jnp.asarray(losses, jnp.float32)), np.float64)
    expected = np.einsum("a,adk->dk", pi_a, credits)
    # E[L | a_i = k] from the other agents' marginals only
    cond = np.zeros(space.shape)
    for i, ki in enumerate(space.num_choices):
        for k in range(ki):
            sel = archs[:, i] == k
            w = pi_a[sel] / p64[i, k]                            # prod_{j != i} pi_j(a_j)
            cond[i, k] = np.sum(w * losses[sel])
            np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    chex.assert_trees_all_close(expected, np.where(space.mask, cond, 0.0), rtol=1e-5, atol=1e-6)


def test_step_adds_the_importance_weighted_losses_of_every_lane():
    """One step on 4 vmapped lanes: the score change is the sum of the 4 lanes' credits. The default
    is sec. 4.1's update exactly (no baseline); with ``baseline=True``, of L - b with b the first
    step's mean loss."""
    space, P = RAGGED, 4
    table = np.asarray(jax.random.uniform(jax.random.key(2), (space.num_archs,)) * 2, np.float32)
    reward_fn = _table_reward(space, table)
    for baseline in (None, True):
        s = make("manas", space, axis_name="lanes", total_steps=50,
                 **({} if baseline is None else {"baseline": baseline}))
        state = s.init(jax.random.key(0))
        state = state.replace(scores=jax.random.normal(jax.random.key(3), space.shape) * 5)
        keys = jax.random.split(jax.random.key(4), P)
        new, _ = jax.vmap(lambda k: s.step(state, k, reward_fn), axis_name="lanes", out_axes=(None, 0))(keys)
        # the policy the step sampled from (its lr/explore set from P lanes) and its samples
        probs = s.probs(state.replace(lr=new.lr, explore=new.explore))
        archs = jax.vmap(lambda k: s.sample(state.replace(lr=new.lr, explore=new.explore), k)[0])(keys)
        losses = jnp.asarray(table)[jnp.asarray([space.arch_to_id(a) for a in np.asarray(archs)])]
        b = jnp.mean(losses) if baseline else 0.0
        want = sum(coordinated_credit(a, l - b, probs, space.mask) for a, l in zip(archs, losses))
        chex.assert_trees_all_close(new.scores - state.scores, want, rtol=1e-5, atol=1e-5)
        assert float(new.rows) == P
        lr, ex = exp3_rates(space.max_choices, 50 * P)          # App. B.1 with n = steps x lanes
        np.testing.assert_allclose([float(new.lr), float(new.explore)], [lr, ex], rtol=1e-6)


# ---- least squares -----------------------------------------------------------------------------------
@pytest.mark.parametrize("space", [RAGGED, DartsSpace.create(C=4, num_cells=3)], ids=["ragged", "darts3"])
def test_least_squares_recovers_beta_up_to_a_constant_per_agent(space):
    """Noiseless linear losses L = sum_i beta[i, a_i]: after enough rows (Zipf-sampled, solves every
    collect_steps), the scores minus beta are one constant per agent (valid ops), in float32."""
    D, K = space.shape
    beta = np.asarray(jax.random.uniform(jax.random.key(5), (D, K)), np.float32) * space.mask
    steps = 4 * int(space.mask.sum())

    def reward_fn(w):
        return -jnp.sum(w * beta), None

    s = make("manas_ls", space, total_steps=steps, collect_steps=steps // 4)
    state, _ = jax.jit(lambda st, ks: jax.lax.scan(lambda c, k: s.step(c, k, reward_fn), st, ks))(
        s.init(jax.random.key(0)), jax.random.split(jax.random.key(6), steps))
    diff = np.where(space.mask, np.asarray(state.scores) - beta, np.nan)
    spread = np.nanmax(diff, -1) - np.nanmin(diff, -1)
    assert spread.max() < 1e-3 * np.abs(beta).max(), spread.max()
    # every agent's ranking is beta's: the derived architecture is the loss minimiser
    if not isinstance(space, DartsSpace):
        np.testing.assert_array_equal(np.asarray(s.derive(state)),
                                      np.argmin(np.where(space.mask, beta, np.inf), -1))


def test_accumulated_normal_equations_equal_the_batch_solution_bitwise_float64():
    """4 vmapped lanes x 15 steps, losses on a 2^-10 grid (every partial sum exact in float64): the
    state's G and h equal Z Z^T and Z L of the 60 rows bit for bit, the solve at step 15 equals
    (Z Z^T)^+ Z L of the batch bit for bit, and the minimum-norm least squares of numpy to 1e-10."""
    space, P, T = RAGGED, 4, 15
    with jax.enable_x64(True):
        table = np.round(np.asarray(jax.random.uniform(jax.random.key(7), (space.num_archs,)) * 1024)) / 1024
        reward_fn = _table_reward(space, table.astype(np.float64))
        s = make("manas_ls", space, axis_name="lanes", total_steps=T, collect_steps=T)
        state = s.init(jax.random.key(0))
        assert state.gram.dtype == jnp.float64
        lane_step = jax.jit(jax.vmap(lambda st, k: s.step(st, k, reward_fn), in_axes=(None, 0),
                                     out_axes=(None, 0), axis_name="lanes"))
        rows = []
        for t in range(T):
            keys = jax.random.split(jax.random.fold_in(jax.random.key(8), t), P)
            rows += list(np.asarray(jax.vmap(lambda k: s.sample(state, k)[0])(keys)))   # what step draws
            state, _ = lane_step(state, keys)
        archs = np.stack(rows)
        z = np.asarray(jax.nn.one_hot(archs, space.max_choices), np.float64).reshape(len(archs), -1)
        L = table[[space.arch_to_id(a) for a in archs]]
        gram, moment = z.T @ z, z.T @ L
        assert np.array_equal(np.asarray(state.gram), gram) and np.array_equal(np.asarray(state.moment), moment)
        batch = np.asarray(jax.jit(solve_normal_equations)(jnp.asarray(gram), jnp.asarray(moment)))
        assert np.array_equal(np.asarray(state.scores).reshape(-1), batch)       # solved at step T
        lstsq = np.linalg.lstsq(z, L, rcond=None)[0]                              # minimum norm
        np.testing.assert_allclose(batch, lstsq, rtol=1e-10, atol=1e-10)


# ---- sampling ----------------------------------------------------------------------------------------
def test_zipf_probabilities_follow_the_rank():
    space = RAGGED
    scores = np.asarray(jax.random.normal(jax.random.key(9), space.shape))      # no ties
    p = np.asarray(zipf_probs(jnp.asarray(scores), space.mask), np.float64)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    for d, kd in enumerate(space.num_choices):
        h = sum(1.0 / r for r in range(1, kd + 1))
        rank = np.argsort(np.argsort(scores[d, :kd])) + 1                     # lowest score = rank 1
        np.testing.assert_allclose(p[d, :kd], 1.0 / (rank * h), rtol=1e-6)
        assert np.all(p[d, kd:] == 0)
    # ties share their ranks' mass; all equal (the start) is uniform
    tied = np.asarray(zipf_probs(jnp.asarray([[0.0, 1.0, 0.0, 5.0]]), np.ones((1, 4), bool)))[0]
    h4 = 1 + 1 / 2 + 1 / 3 + 1 / 4
    np.testing.assert_allclose(tied, [(1 + 1 / 2) / 2 / h4, 1 / 3 / h4, (1 + 1 / 2) / 2 / h4, 1 / 4 / h4],
                               rtol=1e-6)
    uni = np.asarray(zipf_probs(jnp.zeros(space.shape), space.mask))
    np.testing.assert_allclose(uni, space.mask / space.num_choices[:, None], rtol=1e-6)


def test_exp3_floor_and_rates():
    space = RAGGED
    scores = jnp.asarray([[-1e6, 0.0, 1e6, 0.0], [3e5, -3e5, 0, 0], [0.0, 0, 0, 1e9], [1, 2, 3, 0]],
                         jnp.float32)
    for explore in (0.0, 0.1, 0.5, 1.0):
        p = np.asarray(exp3_probs(scores, space.mask, 0.7, explore))
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
        floor = explore / space.num_choices[:, None]
        assert np.all(p[space.mask] >= (floor * np.ones(space.shape))[space.mask] * (1 - 1e-6))
        assert np.all(p[~space.mask] == 0)
    # low loss -> high probability (the sign of sec. 4.2's softmax, written for losses)
    p = np.asarray(exp3_probs(scores, space.mask, 0.7, 0.1))
    assert p[3, 0] > p[3, 1] > p[3, 2] > 0 and p[0, 0] > p[0, 1] >= p[0, 2]
    # App. B.1 as cited (Bubeck & Cesa-Bianchi Thm 3.3) and as printed
    np.testing.assert_allclose(exp3_rates(8, 1e4), (0.95 * math.sqrt(math.log(8) / 8e4),
                                                    1.05 * math.sqrt(8 * math.log(8) / 1e4)))
    np.testing.assert_allclose(exp3_rates(8, 1e4, printed=True), (0.95 * math.sqrt(math.log(8)) / 8e4,
                                                                  1.05 * 8 * math.log(8) / 1e4))


@pytest.mark.parametrize("credit,sampler", list(itertools.product(("coordinated", "linear"),
                                                                   ("softmax", "zipf"))))
def test_ragged_masks_are_never_sampled(credit, sampler):
    """A reward that is NaN whenever a masked op carries weight: no step may report it, the policy is
    0 on masked ops, and 2,000 samples from the final policy are valid."""
    space, T = RAGGED, 150
    table = np.asarray(jax.random.uniform(jax.random.key(10), (space.num_archs,)), np.float32)
    base = _table_reward(space, table)
    bad = jnp.asarray(~space.mask)

    def reward_fn(w):
        r, aux = base(w)
        return jnp.where(jnp.any(w * bad > 0), jnp.nan, r), aux

    s = make("manas", space, total_steps=T, credit=credit, sampler=sampler,
             **({"collect_steps": 13} if credit == "linear" else {}))
    state, m = jax.jit(lambda st, ks: jax.lax.scan(lambda c, k: s.step(c, k, reward_fn), st, ks))(
        s.init(jax.random.key(0)), jax.random.split(jax.random.key(11), T))
    assert not np.any(np.asarray(m["nonfinite"]))
    p = np.asarray(s.probs(state))
    assert np.all(p[~space.mask] == 0) and np.allclose(p.sum(-1), 1, atol=1e-5)
    archs = np.asarray(jax.vmap(lambda k: s.sample(state, k)[0])(jax.random.split(jax.random.key(12), 2000)))
    assert np.all(archs < space.num_choices[None, :])
    for a in (s.derive(state),):
        space.check_arch(np.asarray(a))


# ---- final architecture, schedule and errors ---------------------------------------------------------
def test_final_rules_and_darts_genotype():
    space = DartsSpace.create(C=4, num_cells=3, unique_cells=True)
    beta = np.asarray(jax.random.uniform(jax.random.key(13), space.shape))
    steps = 2 * int(space.mask.sum())
    reward_fn = lambda w: (-jnp.sum(w * beta), None)
    s0 = make("manas_ls", space, total_steps=steps, collect_steps=steps)
    state, _ = jax.jit(lambda st, ks: jax.lax.scan(lambda c, k: s0.step(c, k, reward_fn), st, ks))(
        s0.init(jax.random.key(0)), jax.random.split(jax.random.key(14), steps))
    for final in ("argmax", "sample", "process_best"):   # the final rule changes only derive
        s = make("manas_ls", space, total_steps=steps, final=final, collect_steps=steps)
        arch = np.asarray(s.derive(state))
        space.check_arch(arch)
        if final == "argmax":      # the DARTS rule on centred scores: best non-zero op per kept edge
            assert "genotype" in space.describe(arch) and space.describe(arch)["genotype"].count("cell") == 3
            kept = arch != space.zero_op
            best = np.argmin(np.where(space.derive_mask(("none",)), beta, np.inf), -1)
            np.testing.assert_array_equal(arch[kept], best[kept])
            assert kept.sum() == 3 * 8                                 # 2 inputs x 4 nodes x 3 cells
        if final == "process_best":
            assert float(state.best_reward) == pytest.approx(-float(np.sum(beta[np.arange(len(arch)), arch])))


def test_manas_ls_schedule_and_option_errors():
    space = RAGGED
    s = make("manas_ls", space, total_steps=10, collect_steps=5, train_steps=3)
    ph = s.phases(50, 4)
    assert sum(n for _, n in ph) == 50 and ph[-1] == ("strategy", 5)
    assert [k for k, _ in ph] == ["weights", "strategy"] * 5       # (50 - 4) // (3 + 5) rounds
    assert ph[0] == ("weights", 4 + 6 + 3)                         # warm-up + leftover + one round
    assert make("manas", space, total_steps=10).phases is None
    with pytest.raises(ValueError, match="no room"):
        s.phases(7, 0)
    bad = [dict(sampler="zipf", lr=0.1), dict(credit="linear", baseline=True),
           dict(credit="coordinated", collect_steps=3), dict(final="best"), dict(explore=1.5),
           dict(credit="quadratic")]
    for opts in bad:
        with pytest.raises(ValueError):
            make("manas", space, total_steps=10, **opts)
    with pytest.raises(ValueError, match="total_steps"):
        make("manas", space)                                        # EXP3 defaults need n
    make("manas", space, lr=0.1, explore=0.1)                       # ... unless given


# ---- end to end: a tiny 20-unique-cell DARTS search (CI) ---------------------------------------------
# few, cheap ops: the 8-op 20-cell sparse supernet takes minutes to compile on a CPU. Measured CPU time
# of this search (weight steps and MANAS steps, checkpoint, evaluation), mostly compiling: 73 s with
# these two ops, 119 s with avg_pool_3x3 added (2-core CPU, under load)
CI_OPS = ["none", "skip_connect"]


def test_tiny_darts20_unique_search_end_to_end(tmp_path):
    """configs/manas_darts20_tiny.py with 4 steps, C = 2, batch 4 and two ops: 280 agents,
    the shared-weight search (weight step + MANAS step per batch) runs, checkpoints and rates its
    result, a 20-cell genotype with 2 inputs per node."""
    from jaxnas.config.settings import load_config, raw_config
    from jaxnas.runner import run_search
    path = "configs/manas_darts20_tiny.py"
    if not Path(raw_config(REPO / path)["data"]["path"]).exists():
        pytest.skip("the CIFAR-10 subset is not beside the repository")
    cfg = load_config(REPO / path, [f"space.ops={CI_OPS}", "space.C=2", "search.steps=4", "search.chunk=4",
                                    "search.batch_size=4", "search.val_batch_size=4", "data.max_train=64",
                                    "search.checkpoint_every=4", "search.eval_batch_size=64"])
    result = run_search(cfg, tmp_path, progress=None)
    assert result["finished"] and result["step"] == 4 and result["evaluations"] == 4
    genotype = result["genotype"]
    print(genotype)
    cells = [f"cell{i}=" for i in range(20)]
    assert all(c in genotype for c in cells) and "cell20=" not in genotype
    arch = np.asarray(result["arch_indices"]).reshape(20, 14)
    assert np.all((arch != CI_OPS.index("none")).sum(-1) == 8)      # 2 inputs x 4 nodes per cell
    assert np.isfinite(result["val_loss"])

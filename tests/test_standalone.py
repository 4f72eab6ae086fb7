"""Stand-alone training (jaxnas/training/standalone.py) and the TabNAS paper configs (configs/tabnas_*.py)."""
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnas.config.settings import load_config
from jaxnas.models.supernets.mlp import MLP
from jaxnas.spaces import MLPSpace
from jaxnas.tasks.classification import classification_loss
from jaxnas.training import standalone as S

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("tabnas_*.py"))


def _toy_data(n=96, f=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)).astype(np.float32)
    y = (np.argmax(x[:, :classes] + 0.3 * rng.normal(size=(n, classes)), -1)).astype(np.int32)
    return x, y


def _child_reference(x, y, xv, yv, widths, max_widths, key, cfg, ncls):
    """Independent run: flax ``MLP`` of the child's own shapes, a Python loop over the same batches,
    starting from the leading block of the masked initialisation."""
    k_init, k_data = jax.random.split(key)
    full = S.init_masked(k_init, jnp.asarray(widths), max_widths, x.shape[1], ncls)
    params, fan_in = {}, x.shape[1]
    for l, w in enumerate(widths):
        p = full[f"hidden{l}"]
        params[f"hidden{l}"] = {"kernel": p["kernel"][:fan_in, :w], "bias": p["bias"][:w]}
        fan_in = w
    params["logits"] = {"kernel": full["logits"]["kernel"][:fan_in], "bias": full["logits"]["bias"]}
    net = MLP(tuple(widths), ncls)
    spe = len(y) // cfg.batch_size
    total = cfg.max_steps
    tx = cfg.make_optimizer(total)
    opt = tx.init(params)
    loss_fn = lambda p, xb, yb: classification_loss(net.apply({"params": p}, xb), yb)[0]

    @jax.jit
    def step(params, opt, xb, yb):            # one plain optax step on the child
        upd, opt = tx.update(jax.grad(loss_fn)(params, xb, yb), opt, params)
        return optax.apply_updates(params, upd), opt
    t = 0
    for e in range(-(-total // spe)):
        for idx in np.asarray(S.epoch_indices(k_data, e, len(y), cfg.batch_size)):
            if t == total:
                break
            params, opt = step(params, opt, x[idx], y[idx])
            t += 1
    logits = net.apply({"params": params}, xv)
    loss, acc = classification_loss(logits, yv)
    return float(loss), float(acc)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_masked_members_equal_child_training(optimizer):
    x, y = _toy_data()
    xv, yv = _toy_data(40, seed=1)
    max_widths = (9, 7)
    cfg = S.TrainConfig(epochs=2, batch_size=16, lr=0.05, schedule="cosine", optimizer=optimizer,
                        momentum=0.9 if optimizer == "sgd" else 0.0, max_steps=9)  # 6 steps/epoch: stops mid-epoch
    train = S.make_trainer(x, y, xv, yv, max_widths, 3, 3, cfg)
    widths = jnp.asarray([[3, 5], [9, 2], [3, 5]], jnp.int32)
    keys = jax.vmap(jax.random.key)(jnp.asarray([0, 1, 0]))
    out = jax.device_get(train(widths, keys))
    # member 0 and 2: same architecture and seed -> same result; members are independent under vmap
    chex.assert_trees_all_close(out["val_loss"][0], out["val_loss"][2], rtol=0, atol=0)
    for m in (0, 1):
        ref_loss, ref_acc = _child_reference(x, y, xv, yv, [int(w) for w in widths[m]], max_widths,
                                             keys[m], cfg, 3)
        np.testing.assert_allclose(out["val_loss"][m], ref_loss, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(out["val_accuracy"][m], ref_acc, atol=1e-6)
    assert out["val_loss"][0] != out["val_loss"][1]


def test_init_uses_child_fan_in():
    key = jax.random.key(3)
    p = S.init_masked(key, jnp.asarray([50, 300]), (400, 400), 20, 1)
    for name, fan_in, block in (("hidden0", 20, (20, 50)), ("hidden1", 50, (50, 300)), ("logits", 300, (300, 1))):
        k = np.asarray(p[name]["kernel"])[:block[0], :block[1]]
        np.testing.assert_allclose(k.std(), 1 / np.sqrt(fan_in), rtol=0.08)
        chex.assert_trees_all_equal(p[name]["bias"], jnp.zeros_like(p[name]["bias"]))


def test_balanced_error_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    y[y == 2] = 3                               # a class absent from the labels is ignored
    logits = rng.normal(size=(300, 4))
    want = 1 - metrics.balanced_accuracy_score(y, logits.argmax(-1))
    np.testing.assert_allclose(S.balanced_error(jnp.asarray(logits), jnp.asarray(y), 4), want, atol=1e-6)
    z = rng.normal(size=(300, 1))               # one logit: binary
    yb = (rng.random(300) < 0.2).astype(int)
    want = 1 - metrics.balanced_accuracy_score(yb, (z[:, 0] > 0).astype(int))
    np.testing.assert_allclose(S.balanced_error(jnp.asarray(z), jnp.asarray(yb), 2), want, atol=1e-6)


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(1)
    cost, loss = rng.integers(0, 30, 60).astype(float), rng.random(60)
    front = set(S.pareto_front(cost, loss).tolist())
    dominated = {i for i in range(60) for j in range(60)
                 if (cost[j] <= cost[i] and loss[j] <= loss[i]) and (cost[j] < cost[i] or loss[j] < loss[i])}
    # among exact duplicates (same cost and loss) the front keeps one
    assert front <= set(range(60)) - dominated
    assert {(cost[i], loss[i]) for i in set(range(60)) - dominated} == {(cost[i], loss[i]) for i in front}


def test_train_archs_on_connect4_and_errors():
    from jaxnas.data import load_tabular
    data = load_tabular("connect4", max_train=2048, seed=0)
    space = MLPSpace.create(2, data.num_inputs, 3, (8, 16))
    cfg = S.TrainConfig(epochs=1, batch_size=256, lr=3e-3)
    r = S.train_archs(data, space, [[0, 0], [1, 1]], seeds=(0, 1), cfg=cfg, member_batch=4)
    chex.assert_shape(r["val_loss"], (2, 2))
    assert np.all(np.isfinite(r["val_loss"])) and np.all((r["val_balanced_error"] >= 0) & (r["val_balanced_error"] <= 1))
    assert r["total_steps"] == 8
    with pytest.raises(ValueError, match="outputs"):
        S.train_archs(data, MLPSpace.create(2, data.num_inputs, 1, (8, 16)), [[0, 0]], cfg=cfg)
    with pytest.raises(ValueError, match="batch_size"):
        S.TrainConfig(batch_size=4096).steps_per_epoch(2048)
    with pytest.raises(ValueError, match="schedule"):
        S.TrainConfig(schedule="step")


# ---- configs ----------------------------------------------------------------------------------
# (config, number of inputs the paper feeds, outputs, reference architecture whose size is the budget)
REFERENCES = {
    "tabnas_criteo.py": (1027, 1, "32-144-24"),
    "tabnas_volkert4.py": (180, 10, "48-160-32-144"),
    "tabnas_volkert9.py": (180, 10, "144-128-112-16-16-48-144-24-160"),
    "tabnas_aloi.py": (128, 1000, "64-192-48-32"),
}


def test_every_tabnas_config_loads_and_builds():
    from jaxnas.config.experiment import build
    from jaxnas.spaces import TABNAS_WIDTHS
    from jaxnas.strategies import make
    names = {p.name for p in CONFIGS}
    assert {"tabnas_connect4.py", "tabnas_criteo.py", "tabnas_volkert4.py", "tabnas_volkert9.py",
            "tabnas_aloi.py", "tabnas_higgs.py"} <= names
    for path in CONFIGS:
        if path.name == "tabnas_toy.py":       # not an engine config (bench/tabnas_toy.py reads it)
            continue
        cfg = load_config(path)
        s = cfg["strategy"]
        assert s["name"] == "tabnas" and "total_steps" not in s   # the engine supplies it
        if cfg["data"]["name"] == "tabular":
            assert cfg["data"]["path"] is None   # the user supplies it
            with pytest.raises(ValueError, match="data.path"):
                build(cfg)
        if path.name in REFERENCES:              # the budget is the paper's reference size
            f, out, ref = REFERENCES[path.name]
            widths = tuple(cfg["space"]["widths"] or TABNAS_WIDTHS)
            space = MLPSpace.create(cfg["space"]["num_layers"], f, out, widths)
            assert float(space.param_count(space.decode(ref))) == s["budget"], path.name
            opts = {k: v for k, v in s.items() if k != "name"}
            strat = make("tabnas", space, total_steps=cfg["search"]["steps"],
                         **{**opts, "num_mc_samples": 256, "log_exact_pv": False})
            assert strat.name == "tabnas"
    cfg = load_config(ROOT / "configs" / "tabnas_connect4.py",
                      ["search.steps=4", "search.chunk=2", "search.checkpoint_every=2"])
    exp = build(cfg)
    assert exp.space.num_archs == 400 and exp.space.num_inputs == 42 and exp.space.num_outputs == 3
    state = exp.search.strategy.init(jax.random.key(0))
    arch = exp.search.strategy.derive(state)
    assert float(exp.space.param_count(arch)) <= cfg["strategy"]["budget"]
    tcfg = S.train_config_from(cfg, epochs=60)
    assert (tcfg.batch_size, tcfg.lr, tcfg.schedule, tcfg.optimizer) == (32, 5e-4, "cosine", "adam")

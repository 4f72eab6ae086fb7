"""Recurrent cell space and supernet (AdvantageNAS sec. 5.3 / App. E): strings, parameter count,
sparse == dense at one-hot weights, the eq. 7 gradient per edge, the App. E formulas in numpy."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.models.supernets.rnn import RNNLanguageModel, cell_step, count_params, init_rnn_params
from jaxnas.spaces.rnn import RNN_OPS, RNNCellSpace

KEY = jax.random.key(0)
SMALL = RNNCellSpace.create(num_nodes=3, vocab_size=23, emb_size=5, hidden_size=4)
T, B = 3, 2


def _inputs(space=SMALL, T=T, B=B, seed=1):
    k1, k2 = jax.random.split(jax.random.key(seed))
    tokens = jax.random.randint(k1, (T, B), 0, space.vocab_size)
    hidden = 0.5 * jax.random.normal(k2, (B, space.hidden_size))
    return tokens, hidden


def test_space_strings_and_app_e_size():
    sp = RNNCellSpace.create()                         # App. E: N = 3, 300 units, 10k words
    assert sp.shape == (6, 5) and sp.decision_names == ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")
    arch = np.array([1, 2, 4, 3, 0, 1])
    text = sp.encode(arch)
    assert text == "|tanh~0|+|relu~0|identity~1|+|sigmoid~0|none~1|tanh~2|"
    np.testing.assert_array_equal(sp.decode(text), arch)
    with pytest.raises(ValueError, match="unknown|not a choice"):
        sp.decode(text.replace("relu", "gelu"))
    with pytest.raises(ValueError, match="choose from"):
        RNNCellSpace.create(ops=("tanh", "swish"))
    # embedding 3M + input node (E+H) x 2H + 6 edges x 2 H^2 + decoder 3M + bias 10k
    assert float(sp.param_count(np.array([1, 1, 1, 1, 1, 1]))) == 7_450_000.0
    assert float(sp.param_count(arch)) == 7_450_000.0 - 300 * 300   # a 'none' edge keeps W^c only
    chex.assert_trees_all_close(sp.param_count(np.stack([arch, np.ones(6, int)])),
                                jnp.array([7_360_000.0, 7_450_000.0]))


@pytest.mark.parametrize("arch", [(1, 2, 3, 4, 1, 2), (0, 4, 0, 3, 2, 0), (0, 0, 0, 0, 0, 0)])
def test_discrete_param_count_equals_module(arch):
    net = RNNLanguageModel(SMALL, arch=arch)
    params = init_rnn_params(net, KEY)
    assert count_params(params) == int(SMALL.param_count(np.array(arch)))
    assert all(float(jnp.max(jnp.abs(x))) <= 0.1 for x in jax.tree.leaves(params))   # U(-0.1, 0.1)


def _apply(net, params, w, mode, tokens, hidden):
    return net.apply({"params": params}, tokens, hidden, w, mode=mode)


def test_sparse_equals_dense_and_discrete_at_one_hot():
    net = RNNLanguageModel(SMALL)
    tokens, hidden = _inputs()
    params = init_rnn_params(net, KEY)
    f = jax.jit(lambda p, w, h: (_apply(net, p, w, "sparse", tokens, h), _apply(net, p, w, "dense", tokens, h)))
    for seed in range(2):
        arch = SMALL.sample(jax.random.key(seed + 10))
        w = SMALL.one_hot(arch)
        (ls, hs), (ld, hd) = f(params, w, hidden)
        chex.assert_trees_all_close((ls, hs), (ld, hd), atol=1e-5, rtol=1e-5)
        # the discrete model of the same cell, on the same parameters (a 'none' edge has no W^h)
        disc = RNNLanguageModel(SMALL, arch=tuple(int(a) for a in arch))
        dp = {k: v for k, v in params.items() if k in init_rnn_params(disc, KEY)}
        chex.assert_trees_all_close(jax.jit(disc.apply)({"params": dp}, tokens, hidden), (ls, hs), atol=1e-5, rtol=1e-5)
    # a scaled one-hot scales the chosen op's output in both modes alike
    w = SMALL.one_hot(jnp.array([1, 2, 3, 4, 1, 2])) * 0.5
    (ls, hs), (ld, hd) = f(params, w, hidden)
    chex.assert_trees_all_close((ls, hs), (ld, hd), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs"):
        _apply(net, params, jnp.zeros((5, 5)), "sparse", tokens, hidden)


def _loss(logits, tokens):
    targets = jnp.roll(tokens, -1, 0)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], -1))


def test_sparse_theta_gradient_is_eq7_per_edge():
    """d loss / d w[d, j] at the chosen j = sum_t <dL/dO_d(t), O_d^j(t)> (eq. 7 summed over the time
    steps sharing the edge), 0 at the other ops; checked against the probe gradient and against
    central finite differences of the loss in float64."""
    net = RNNLanguageModel(SMALL)
    tokens, hidden = _inputs(T=4)
    params = init_rnn_params(net, KEY)
    arch = jnp.array([1, 2, 0, 3, 4, 1])                  # every activation, 'none' included
    w = SMALL.one_hot(arch)
    loss_w = lambda w: _loss(_apply(net, params, w, "sparse", tokens, hidden)[0], tokens)
    g_w = jax.jit(jax.grad(loss_w))(w)
    probe0 = jnp.zeros((4, SMALL.num_decisions, B, SMALL.hidden_size))

    def with_probe(pr):
        logits, _, aux = net.apply({"params": params}, tokens, hidden, w, probe=pr)
        return _loss(logits, tokens), aux["ops"]
    g_o, ops = jax.jit(jax.grad(with_probe, has_aux=True))(probe0)
    eq7 = np.zeros(SMALL.shape, np.float64)
    eq7[np.arange(6), np.asarray(arch)] = np.asarray(jnp.sum(g_o * ops, (0, 2, 3)))
    chex.assert_trees_all_close(g_w, jnp.asarray(eq7, jnp.float32), atol=1e-7, rtol=1e-4)
    assert float(g_w[2, 0]) == 0.0                       # the zero op's output is 0: so is eq. 7
    assert np.count_nonzero(np.asarray(g_w)) == 5         # only the chosen, non-zero ops
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: x.astype(jnp.float64), params)
        h64, w64 = hidden.astype(jnp.float64), w.astype(jnp.float64)
        f = jax.jit(lambda w: _loss(_apply(net, p64, w, "sparse", tokens, h64)[0], tokens))
        eps = 1e-5
        fd = [(f(w64.at[d, arch[d]].add(eps)) - f(w64.at[d, arch[d]].add(-eps))) / (2 * eps) for d in range(6)]
    np.testing.assert_allclose(np.asarray(g_w)[np.arange(6), np.asarray(arch)], np.array(fd), rtol=1e-3, atol=1e-7)


def _np_step(p, space, arch, x_e, h):
    """App. E for one time step, by hand in numpy (float64)."""
    sig = lambda z: 1 / (1 + np.exp(-z))
    acts = {"none": lambda z: 0 * z, "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), "sigmoid": sig,
            "identity": lambda z: z}
    H = space.hidden_size
    W0 = p["W0"]
    c_in = sig(np.concatenate([x_e, h], -1) @ W0[:, :H])
    x0 = h + c_in * (np.tanh(np.concatenate([x_e, h], -1) @ W0[:, H:]) - h)
    nodes, edges = {0: x0}, []
    for j in range(1, space.num_nodes + 1):
        ys = []
        for i in range(j):
            e = space.edges.index((j, i))
            x = nodes[i]
            c = sig(x @ p[f"Wc_{j}_{i}"])
            op = space.ops[arch[e]]
            a = 0 * x if op == "none" else acts[op](x @ p[f"Wh_{j}_{i}"])
            ys.append(x + c * (a - x))                    # y_i = x + c (act(W^h x) - x)
            edges.append((e, ys[-1]))
        nodes[j] = np.mean(ys, 0)                         # node: mean of its edges (authors' code)
    out = np.mean([nodes[j] for j in range(1, space.num_nodes + 1)], 0)   # output node: mean
    return out, dict(edges)


@pytest.mark.parametrize("arch", [(1, 2, 3, 4, 0, 1), (4, 0, 2, 1, 3, 3)])
def test_each_edge_matches_app_e_in_numpy(arch):
    params = init_rnn_params(RNNLanguageModel(SMALL), KEY)
    p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    rng = np.random.default_rng(3)
    x_e, h = rng.normal(size=(B, SMALL.emb_size)), rng.normal(size=(B, SMALL.hidden_size))
    ref_out, ref_edges = _np_step(p64, SMALL, arch, x_e, h)
    probe = jnp.zeros((SMALL.num_decisions, B, SMALL.hidden_size))
    for mode, w, a in (("sparse", SMALL.one_hot(jnp.array(arch)), None), ("dense", SMALL.one_hot(jnp.array(arch)), None),
                       ("sparse", None, arch)):
        out, aux = cell_step(params, SMALL, jnp.asarray(x_e, jnp.float32), jnp.asarray(h, jnp.float32),
                             w, mode, a, probe)
        for e in range(SMALL.num_decisions):
            np.testing.assert_allclose(np.asarray(aux["edges"][e]), ref_edges[e], rtol=1e-5, atol=1e-6,
                                       err_msg=f"edge {SMALL.decision_names[e]} ({mode}, arch={a})")
        np.testing.assert_allclose(np.asarray(out), ref_out, rtol=1e-5, atol=1e-6)


def test_ops_are_the_papers():
    assert set(RNN_OPS) == {"none", "tanh", "relu", "sigmoid", "identity"}   # sec. 5.3: |J| = 5

"""Search spaces: encodings, NAS-Bench-201 oracle, TabNAS parameter counts, product spaces, errors."""
import csv
import gzip
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.models.supernets import MLP, NasBench201Net, init_variables
from jaxnas.spaces import MLPSpace, Space
from jaxnas.spaces.cells import DartsSpace, NasBench201Space

NB201_CSV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"


@pytest.fixture(scope="module")
def nb201_rows():
    if not NB201_CSV.exists():
        pytest.skip(f"NAS-Bench-201 table not found at {NB201_CSV} (CI has ../shared beside the repo)")
    with gzip.open(NB201_CSV, "rt") as f:
        return list(csv.DictReader(f))


def test_nb201_all_cells_round_trip_and_param_count(nb201_rows):
    sp = NasBench201Space.create()
    assert len(nb201_rows) == 15625 == sp.num_archs
    archs = np.stack([sp.decode(r["arch"]) for r in nb201_rows])
    assert [sp.encode(a) for a in archs] == [r["arch"] for r in nb201_rows]
    assert len({sp.arch_to_id(a) for a in archs}) == 15625  # the table covers the space exactly once
    ours = np.asarray(sp.param_count(archs)) / 1e6
    theirs = np.array([float(r["params_cifar10_M"]) for r in nb201_rows])
    np.testing.assert_allclose(ours, theirs, atol=5e-7)
    sp100 = NasBench201Space.create(num_classes=100)
    np.testing.assert_allclose(np.asarray(sp100.param_count(archs[:500])) / 1e6,
                               [float(r["params_cifar100_M"]) for r in nb201_rows[:500]], atol=5e-7)


@pytest.mark.parametrize("arch_str", [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|none~0|+|nor_conv_1x1~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|",
])
def test_nb201_module_param_count_equals_formula(arch_str):
    sp = NasBench201Space.create()
    arch = sp.decode(arch_str)
    net = NasBench201Net(sp, arch=tuple(int(a) for a in arch), track=True)
    variables = init_variables(net, jax.random.key(0), jnp.zeros((2, 32, 32, 3)))
    n = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert n == int(sp.param_count(arch))


@pytest.mark.parametrize("arch,inputs,outputs,expected", [
    ("32-144-24", 1027, 1, 41153), ("48-160-32-144", 180, 10, 27882), ("4-2", 2, 1, 25)])
def test_mlp_param_count(arch, inputs, outputs, expected):
    layers = arch.count("-") + 1
    widths = (2, 3, 4) if arch == "4-2" else None
    sp = MLPSpace.create(layers, inputs, outputs, **({"widths": widths} if widths else {}))
    a = sp.decode(arch)
    assert sp.encode(a) == arch
    assert float(sp.param_count(a)) == expected
    mlp = MLP([int(w) for w in arch.split("-")], outputs)
    params = init_variables(mlp, jax.random.key(0), jnp.zeros((1, inputs)))["params"]
    assert sum(x.size for x in jax.tree.leaves(params)) == expected


def test_mlp_param_count_vectorised_and_layer_terms():
    sp = MLPSpace.create(3, 7, 3, widths=(2, 5, 9, 16))
    archs = sp.all_archs()
    counts = np.asarray(sp.param_count(archs))
    chex.assert_shape(counts, (64,))
    first, pairs, last = sp.layer_cost_terms()
    by_terms = [first[a[0]] + sum(pairs[l][a[l], a[l + 1]] for l in range(2)) + last[a[-1]] for a in archs]
    np.testing.assert_array_equal(counts, by_terms)
    chex.assert_shape(sp.param_count(archs.reshape(8, 8, 3)), (8, 8))


def test_darts_space_genotype_round_trip():
    sp = DartsSpace.create()
    chex.assert_equal(sp.shape, (28, 8))
    w = np.random.default_rng(0).random(sp.shape)
    geno = sp.genotype(w)
    assert set(geno) == {"normal", "reduce"} and all(len(g) == 8 for g in geno.values())
    assert all(op != "none" for g in geno.values() for op, _ in g)
    arch = sp.genotype_to_arch(geno)
    per_node = lambda g: {b: [sorted(ops[i:i + 2], key=lambda t: t[1]) for i in range(0, 8, 2)]
                          for b, ops in g.items()}  # an arch fixes each node's inputs, not their order
    assert per_node(sp.genotype(sp.one_hot(arch))) == per_node(geno)
    np.testing.assert_array_equal(sp.decode(sp.encode(arch)), arch)
    # the strongest non-zero input of node 2 (edges 0, 1) is picked first
    strength = np.where(np.arange(8) == 0, -np.inf, w[:2]).max(-1)
    assert geno["normal"][0][1] == int(np.argmax(strength))


def test_darts_unique_cells_layout():
    sp = DartsSpace.create(num_cells=20, unique_cells=True)
    chex.assert_equal(sp.shape, (280, 8))
    assert sp.unique_cells and sp.block_of_cell(7) == 7
    rep = DartsSpace.create(num_cells=8)
    assert [rep.block_of_cell(c) for c in range(8)] == [0, 0, 1, 0, 0, 1, 0, 0]
    w = jnp.arange(280 * 8.0).reshape(280, 8)
    chex.assert_shape(sp.block_weights(w), (20, 14, 8))
    # a unique-cell space's cost equals the repeated one's when every cell picks the same ops
    arch14 = np.random.default_rng(1).integers(0, 8, 14)
    u8 = DartsSpace.create(num_cells=8, unique_cells=True)
    red = [2, 5]
    uarch = np.concatenate([arch14 if c not in red else arch14[::-1] for c in range(8)])
    np.testing.assert_allclose(float(u8.param_count(uarch)),
                               float(rep.param_count(np.concatenate([arch14, arch14[::-1]]))))


def test_sampling_respects_mask():
    sp = Space(("a", "b"), (("x", "y", "z"), ("p",)))
    chex.assert_equal(sp.mask.tolist(), [[True, True, True], [True, False, False]])
    archs = sp.sample(jax.random.key(0), shape=(1000,))
    chex.assert_shape(archs, (1000, 2))
    assert int(archs[:, 1].max()) == 0 and set(np.asarray(archs[:, 0]).tolist()) == {0, 1, 2}
    for i in range(sp.num_archs):
        assert sp.arch_to_id(sp.id_to_arch(i)) == i


@pytest.mark.parametrize("call,needle", [
    (lambda: NasBench201Space.create().decode("|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"), "conv_9x9"),
    (lambda: NasBench201Space.create().decode("|none~0|+|none~0|"), "nodes"),
    (lambda: NasBench201Space.create().decode("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"), "op~0"),
    (lambda: MLPSpace.create(2, 4).decode("32-33"), "33"),
    (lambda: MLPSpace.create(2, 4).decode("32"), "this space has 2"),
    (lambda: NasBench201Space.create().check_arch([0, 1, 2, 3, 4, 5]), "index 5"),
    (lambda: NasBench201Space.create().check_weights(jnp.zeros((6, 4))), "(..., 6, 5)"),
    (lambda: DartsSpace.create().decode("normal:|none~0|"), "blocks"),
])
def test_bad_input_names_value(call, needle):
    with pytest.raises(ValueError, match=None) as e:
        call()
    assert needle in str(e.value), str(e.value)


def test_spaces_are_hashable_static_args():
    sp = NasBench201Space.create()
    assert hash(sp) == hash(NasBench201Space.create())
    f = jax.jit(lambda a, space: space.param_count(a), static_argnums=1)
    chex.assert_trees_all_close(f(jnp.zeros(6, jnp.int32), sp), sp.param_count(np.zeros(6, np.int32)))


def test_darts_derive_is_the_genotype():
    """Space-aware derive (traceable): on DARTS the two strongest non-zero inputs per node with their
    strongest non-zero op, every other edge 'none' == DARTS's host-side genotype; ties included."""
    import jax

    from jaxnas.spaces.cells import DartsSpace
    sp = DartsSpace.create()
    rng = np.random.default_rng(0)
    derive = jax.jit(sp.derive)
    for t in range(20):
        w = rng.normal(size=sp.shape).astype(np.float32)
        if t % 4 == 0:
            w = np.round(w)                                   # ties between inputs
        a = np.asarray(derive(w))
        np.testing.assert_array_equal(a, sp.genotype_to_arch(sp.genotype(w)))
        blocks = a.reshape(2, 14)
        assert np.all(np.sum(blocks != sp.zero_op, -1) == 8)  # 4 nodes x 2 inputs per cell
    assert "genotype" in sp.describe(a) and sp.describe(a)["arch_indices"] == a.tolist()

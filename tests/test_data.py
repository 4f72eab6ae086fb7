"""Tests of jaxnas.data: tabular split/standardisation, batching, tfds/npz images, augmentation, PTB."""
from __future__ import annotations

import gzip
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import data as D

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
PTB_DIR = SHARED / "data" / "ptb"
CIFAR_NPZ = SHARED / "data" / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"
needs_ptb = pytest.mark.skipif(not PTB_DIR.is_dir(), reason=f"real PTB files not found at {PTB_DIR}")
needs_cifar = pytest.mark.skipif(not CIFAR_NPZ.is_file(), reason=f"CIFAR subset not found at {CIFAR_NPZ}")


@pytest.fixture(scope="module")
def connect4():
    return D.load_embedded("connect4")


# ---- tabular ---------------------------------------------------------------------------------
def test_embedded_connect4_matches_source_counts(connect4):
    d = connect4
    assert d.num_train + d.num_val == 67_557
    assert d.num_inputs == 42 and d.num_classes == 3
    assert d.class_names == ("draw", "loss", "win")
    assert d.feature_names[:2] == ("a1", "a2") and d.feature_names[-1] == "g6"
    y = np.concatenate([d.y_train, d.y_val])
    np.testing.assert_array_equal(np.bincount(y), [6_449, 16_635, 44_473])  # SOURCE.md / UCI
    # Undo the standardisation: the raw board values and their counts come back (SOURCE.md).
    raw = np.concatenate([d.x_train, d.x_val]) * d.feature_std + d.feature_mean
    codes = np.rint(raw)
    np.testing.assert_allclose(raw, codes, atol=1e-4)
    np.testing.assert_array_equal(np.unique(codes, return_counts=True)[1], [2_296_938, 270_228, 270_228])
    assert d.val_majority_rate == pytest.approx(np.mean(d.y_val == 2))  # "win" is the majority
    assert 0.65 < d.val_majority_rate < 0.67
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32


def test_load_tabular_name_is_embedded(connect4):
    d = D.load_tabular("connect4")
    np.testing.assert_array_equal(d.x_val, connect4.x_val)
    np.testing.assert_array_equal(d.y_train, connect4.y_train)


def test_split_seeded_disjoint_covering_stratified():
    y = np.repeat(np.arange(4), [7, 30, 50, 113])
    tr, va = D.stratified_split(y, 0.2, seed=3)
    tr2, va2 = D.stratified_split(y, 0.2, seed=3)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(va, va2)
    assert not np.intersect1d(tr, va).size
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(y)))
    np.testing.assert_array_equal(np.bincount(y[va]), np.rint(0.2 * np.array([7, 30, 50, 113])))
    tr3, _ = D.stratified_split(y, 0.2, seed=4)
    assert not np.array_equal(tr, tr3)


def test_standardise_uses_training_rows_only():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (300, 4)).astype(np.float32)
    x[:, 3] = 5.0  # a constant column is centred, not divided by 0
    y = rng.integers(0, 3, 300)
    d = D.make_tabular(x, y, val_fraction=0.25, seed=1)
    tr, va = D.stratified_split(np.unique(y, return_inverse=True)[1], 0.25, seed=1)
    np.testing.assert_allclose(d.feature_mean, x[tr].mean(0), rtol=1e-6)
    np.testing.assert_allclose(d.feature_std[:3], x[tr, :3].std(0), rtol=1e-5)
    assert d.feature_std[3] == 1.0
    np.testing.assert_allclose(d.x_train, (x[tr] - x[tr].mean(0)) / d.feature_std, atol=1e-5)
    np.testing.assert_allclose(d.x_val, (x[va] - x[tr].mean(0)) / d.feature_std, atol=1e-5)
    # Changing validation rows changes nothing in the statistics.
    x2 = x.copy()
    x2[va] = 1e6
    d2 = D.make_tabular(x2, y, val_fraction=0.25, seed=1)
    np.testing.assert_array_equal(d2.feature_mean, d.feature_mean)
    np.testing.assert_array_equal(d2.x_train, d.x_train)
    raw = D.make_tabular(x, y, val_fraction=0.25, seed=1, standardize=False)
    np.testing.assert_array_equal(raw.x_train, x[tr])


def test_max_train_subsamples_train_only(connect4):
    d = D.load_embedded("connect4", max_train=1000)
    assert d.num_train == 1000
    np.testing.assert_array_equal(d.y_val, connect4.y_val)  # validation split unchanged
    raw_train = d.x_train * d.feature_std + d.feature_mean
    np.testing.assert_allclose(raw_train.mean(0), d.feature_mean, atol=1e-4)  # stats of the subsample


def test_csv_loader(tmp_path):
    rows = [("1.5", "cat", "red", "2"), ("2.5", "dog", "blue", "4"), ("0.5", "cat", "red", "6"),
            ("3.0", "bird", "blue", "8"), ("1.0", "dog", "red", "10"), ("2.0", "bird", "red", "12")]
    p = tmp_path / "t.csv"
    p.write_text("a,animal,colour,b\n" + "\n".join(",".join(r) for r in rows) + "\n")
    d = D.load_tabular(p, label="animal", val_fraction=0.5, seed=0, standardize=False)
    assert d.class_names == ("bird", "cat", "dog") and d.feature_names == ("a", "colour", "b")
    x = np.array([[float(r[0]), {"blue": 0, "red": 1}[r[2]], float(r[3])] for r in rows], np.float32)
    y = np.array([{"bird": 0, "cat": 1, "dog": 2}[r[1]] for r in rows])
    tr, va = D.stratified_split(y, 0.5, seed=0)
    np.testing.assert_array_equal(d.x_train, x[tr])
    np.testing.assert_array_equal(d.y_val, y[va])
    q = tmp_path / "num.csv"
    q.write_text("u,v,label\n" + "".join(f"{i},{i % 3},{(i % 2) * 10}\n" for i in range(8)))
    last = D.load_csv(q, val_fraction=0.5, standardize=False)  # default: last column, numeric labels
    assert last.class_names == ("0", "10") and last.feature_names == ("u", "v")
    np.testing.assert_array_equal(last.y_train, last.x_train[:, 0] % 2)
    gz = tmp_path / "t.tsv.gz"
    gz.write_bytes(gzip.compress(p.read_text().replace(",", "\t").encode()))
    d_gz = D.load_tabular(gz, label=1, val_fraction=0.5, seed=0, standardize=False)
    np.testing.assert_array_equal(d_gz.x_train, d.x_train)


def test_tabular_errors(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(ValueError, match=r"nope\.csv.*\.npz"):
        D.load_tabular(missing)
    p = tmp_path / "t.csv"
    p.write_text("a,b,y\n1,2,0\n3,,1\n4,5,0\n6,7,1\n")
    with pytest.raises(ValueError, match="NaN"):
        D.load_tabular(p)
    with pytest.raises(ValueError, match=r"'label'.*columns are"):
        D.load_tabular(p, label="label")
    with pytest.raises(ValueError, match="NaN"):
        D.make_tabular(np.array([[1.0], [np.nan], [2.0], [3.0]]), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="embedded"):
        D.load_embedded("higgs")
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="'X'"):
        D.load_tabular(bad)


# ---- batching --------------------------------------------------------------------------------
def test_batch_sampler_resumes_and_covers_epochs():
    s = D.BatchSampler(num_examples=103, batch_size=10, seed=7)
    assert s.steps_per_epoch == 10
    full = s.chunk(0, 35)
    for k in (0, 1, 9, 10, 17, 30):
        np.testing.assert_array_equal(s.chunk(k, 35 - k), full[k:])
        np.testing.assert_array_equal(s.indices(k), full[k])
    # A fresh sampler (no shared state) gives the same batches.
    np.testing.assert_array_equal(D.BatchSampler(103, 10, seed=7).chunk(12, 5), full[12:17])
    for e in range(3):
        epoch = full[10 * e:10 * (e + 1)].reshape(-1)
        assert len(np.unique(epoch)) == 100 and epoch.min() >= 0 and epoch.max() < 103
        np.testing.assert_array_equal(epoch, s.permutation(e)[:100])
    assert not np.array_equal(full[:10], full[10:20])  # each epoch reshuffled
    assert not np.array_equal(D.BatchSampler(103, 10, seed=8).chunk(0, 10), full[:10])
    with pytest.raises(ValueError, match="batch_size"):
        D.BatchSampler(5, 10)


def test_gather_pytree():
    x = np.arange(40).reshape(20, 2)
    y = np.arange(20) * 10
    idx = D.BatchSampler(20, 4, seed=0).chunk(3, 6)
    out = D.gather({"x": x, "y": (y, y + 1)}, idx)
    chex.assert_shape(out["x"], (6, 4, 2))
    np.testing.assert_array_equal(out["x"][2, 1], x[idx[2, 1]])
    np.testing.assert_array_equal(out["y"][1], idx * 10 + 1)
    np.testing.assert_array_equal(D.gather_batches(y, D.BatchSampler(20, 4, 0), 3, 6), out["y"][0])


# ---- images ----------------------------------------------------------------------------------
def test_tfds_image_loader_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        src = D.open_tfds("cifar10", "train", data_dir=None)
        assert len(src) == 6 and src.num_classes == 10 and src.image_shape == (32, 32, 3)
        imgs, labels = src.read([4, 1, 1])
        chex.assert_shape(imgs, (3, 32, 32, 3))
        assert imgs.dtype == np.uint8 and labels.dtype == np.int32
        np.testing.assert_array_equal(imgs[0], src.source[4]["image"])
        assert labels[1] == src.source[1]["label"]
        idx = np.array([[0, 5], [2, 3]])
        g_img, g_lab = D.gather(src, idx)  # lazy leaf: read on demand
        chex.assert_shape(g_img, (2, 2, 32, 32, 3))
        np.testing.assert_array_equal(g_img[1, 0], src.source[2]["image"])
        data = D.load_tfds_images("cifar10", train_split="train", val_split="test", max_train=4)
        assert data.num_train == 4 and data.num_val == 6 and data.image_shape == (32, 32, 3)
        assert data.mean == D.CIFAR10_MEAN and data.x_train.dtype == np.uint8
        d100 = D.load_tfds_images("cifar100")
        assert d100.num_classes == 100 and d100.std == D.CIFAR100_STD


def test_tfds_missing_data_dir_says_how_to_prepare(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    where = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError, match="--file_format=array_record") as e:
        D.open_tfds("cifar10", "train", data_dir=where)
    assert isinstance(e.value, ValueError) and str(where) in str(e.value)
    assert "tfds build cifar10" in str(e.value)
    with pytest.raises(ValueError, match="no data set named"):
        D.open_tfds("no_such_dataset_xyz", "train", data_dir=where)


@needs_cifar
def test_cifar_subset_npz():
    d = D.load_image_npz(CIFAR_NPZ, val_fraction=0.5, seed=0)
    assert d.num_train + d.num_val == 5_000 and d.image_shape == (32, 32, 3)
    assert d.x_train.dtype == np.uint8 and d.class_names == D.CIFAR10_CLASSES
    np.testing.assert_array_equal(np.bincount(d.y_train, minlength=10), [250] * 10)
    assert d.mean == D.CIFAR10_MEAN  # known CIFAR-10 classes -> CIFAR-10 constants
    z = np.asarray(d.normalize(d.x_train[:500]))
    assert np.all(np.abs(z.mean((0, 1, 2))) < 0.2) and np.all(np.abs(z.std((0, 1, 2)) - 1) < 0.1)


def test_normalize_and_channel_stats():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    mean, std = D.channel_stats(x)
    flat = x.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-9)
    z = np.asarray(D.normalize(x, mean, std))
    np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.reshape(-1, 3).std(0), 1, atol=1e-5)


def test_random_crop_flip_is_a_padded_crop_and_deterministic():
    rng = np.random.default_rng(1)
    x = rng.integers(1, 256, (16, 8, 8, 3), dtype=np.uint8)  # no zeros: padding is recognisable
    key = jax.random.key(0)
    out = D.random_crop_flip(key, jnp.asarray(x))
    chex.assert_shape(out, x.shape)
    assert out.dtype == jnp.uint8
    np.testing.assert_array_equal(out, D.random_crop_flip(key, jnp.asarray(x)))
    np.testing.assert_array_equal(out, jax.jit(D.random_crop_flip)(key, jnp.asarray(x)))
    assert not np.array_equal(out, D.random_crop_flip(jax.random.key(1), jnp.asarray(x)))
    # Independent check: every output is one of the 9 x 9 x 2 crops of the zero-padded input.
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    out = np.asarray(out)
    flips, offsets = [], []
    for i in range(len(x)):
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)
                if np.array_equal(out[i],
                                  padded[i, dy:dy + 8, dx:dx + 8][:, ::-1] if f else
                                  padded[i, dy:dy + 8, dx:dx + 8])]
        assert hits, f"image {i} is not a padded crop"
        flips.append(hits[0][2])
        offsets.append(hits[0][:2])
    assert 0 < sum(flips) < len(x)  # both flipped and unflipped occur
    assert len(set(offsets)) > 4  # offsets vary per example
    assert np.array_equal(D.random_crop_flip(key, jnp.asarray(x), padding=0)[~np.array(flips, bool)],
                          x[~np.array(flips, bool)])


# ---- text ------------------------------------------------------------------------------------
@needs_ptb
def test_ptb_corpus_counts():
    c = D.load_ptb(PTB_DIR)
    assert len(c.train) == 929_589 and len(c.valid) == 73_760 and len(c.test) == 82_430
    assert c.vocab_size == 10_000 and "<eos>" in c.vocab and "<unk>" in c.vocab
    assert c.train.dtype == np.int32 and c.train.max() == 9_999
    with gzip.open(PTB_DIR / "ptb.valid.txt.gz", "rt") as f:
        first = f.readline().split() + ["<eos>"]
    assert c.decode(c.valid[: len(first)]) == first
    # Ids in first-appearance order: the first new word of the stream gets the next id.
    _, first_pos = np.unique(c.train, return_index=True)
    np.testing.assert_array_equal(np.argsort(first_pos), np.arange(c.vocab_size))


def test_ptb_missing_files(tmp_path):
    (tmp_path / "ptb.train.txt").write_text("a b\n")
    with pytest.raises(FileNotFoundError, match=r"\['valid', 'test'\]"):
        D.load_ptb(tmp_path)


def test_ptb_small_dir_and_unknown_words(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" a b c\n b a\n")
    (tmp_path / "ptb.valid.txt").write_text(" c a\n")
    (tmp_path / "ptb.test.txt").write_text(" zz\n")
    with pytest.raises(ValueError, match="zz"):
        D.load_ptb(tmp_path)
    (tmp_path / "ptb.test.txt").write_text(" b\n")
    c = D.load_ptb(tmp_path)
    assert c.vocab == ("a", "b", "c", "<eos>")
    np.testing.assert_array_equal(c.train, [0, 1, 2, 3, 1, 0, 3])
    np.testing.assert_array_equal(c.valid, [2, 0, 3])


def test_batchify_and_bptt_windows():
    ids = np.arange(103, dtype=np.int32)
    src = D.batchify(ids, 4)  # 25 rows x 4 columns, last 3 tokens dropped
    chex.assert_shape(src, (25, 4))
    for b in range(4):
        np.testing.assert_array_equal(src[:, b], ids[b * 25:(b + 1) * 25])
    x, y = D.bptt_window(src, 20, 7)  # clipped at the end: rows 20..23 -> targets 21..24
    chex.assert_shape(x, (4, 4))
    np.testing.assert_array_equal(y, src[21:25])
    xs, ys = D.bptt_windows(src, 6)
    chex.assert_shape(xs, (4, 6, 4))
    for w in range(4):
        wx, wy = D.bptt_window(src, 6 * w, 6)
        np.testing.assert_array_equal(xs[w], wx)
        np.testing.assert_array_equal(ys[w], wy)
    np.testing.assert_array_equal(ys[:, :-1], xs[:, 1:])


# ---- bad labels and files (issue 28, low) ----------------------------------------------------
def _images(n=40, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)


def test_float_labels_are_accepted_when_whole_and_refused_naming_the_file(tmp_path):
    whole = tmp_path / "whole.npz"
    np.savez(whole, X=_images(), y=np.repeat([0.0, 1.0], 20))
    d = D.load_image_npz(whole)
    assert d.num_classes == 2 and d.y_train.dtype == np.int32
    frac = tmp_path / "frac.npz"                      # silently truncated to 0 / 1 before
    np.savez(frac, X=_images(), y=np.repeat([0.5, 1.5], 20))
    with pytest.raises(ValueError, match=r"labels of '.*frac.npz' are float64 .* not whole numbers \(first: 0.5 at y\[0\]\)"):
        D.load_image_npz(frac)
    target = np.random.default_rng(0).random(40)      # a regression target: "leaves an empty split" before
    np.savez(tmp_path / "t.npz", X=np.random.default_rng(1).normal(size=(40, 3)), y=target)
    with pytest.raises(ValueError, match=r"labels of '.*t.npz' are float64 with 40 of 40 values that are not whole"):
        D.load_tabular(tmp_path / "t.npz")
    csv = tmp_path / "t.csv"
    csv.write_text("a,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(target)))
    with pytest.raises(ValueError, match=r"labels of column 'y' of '.*t.csv' are float64 .* at row 2\)"):
        D.load_tabular(csv)
    csv.write_text("a,y\n" + "".join(f"{i},{float(i % 2)}\n" for i in range(40)))   # 0.0 / 1.0: classes
    assert D.load_tabular(csv).class_names == ("0", "1")


def test_a_stray_image_label_is_an_error_naming_it_and_its_row(tmp_path):
    y = np.repeat([0, 1], 20)
    y[7] = 57                                         # a silent 58-class head before
    np.savez(tmp_path / "s.npz", X=_images(), y=y)
    with pytest.raises(ValueError, match=r"would get 58 classes of which 55 \(ids 2..56\) have no example: "
                                         r"label 57 at y\[7\] of '.*s.npz'.*class_names \(58 names\)"):
        D.load_image_npz(tmp_path / "s.npz")
    names = np.array([str(i) for i in range(58)])     # declared: classes without examples are wanted
    np.savez(tmp_path / "n.npz", X=_images(), y=y, class_names=names)
    assert D.load_image_npz(tmp_path / "n.npz").num_classes == 58


def test_a_class_only_in_validation_is_warned_of_naming_the_file(tmp_path):
    np.savez(tmp_path / "tr.npz", X=_images(), y=np.repeat([0, 1], 20))
    np.savez(tmp_path / "va.npz", X=_images(10, 1), y=np.array([0, 1, 2, 2, 0, 1, 0, 1, 2, 0]))
    with pytest.warns(UserWarning, match=r"validation split \('.*va.npz'\) has class\(es\) 2 \(3 rows\) that never "
                                         r"occur in training"):
        D.load_image_npz(tmp_path / "tr.npz", val_path=tmp_path / "va.npz")
    (tmp_path / "tr.csv").write_text("a,y\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(20)))
    (tmp_path / "va.csv").write_text("a,y\n" + "".join(f"{i},{'abc'[i % 3]}\n" for i in range(9)))
    with pytest.warns(UserWarning, match=r"validation split \('.*va.csv'\) has class\(es\) c \(3 rows\)"):
        D.load_tabular(tmp_path / "tr.csv", val_path=tmp_path / "va.csv")
    with pytest.warns(UserWarning, match=r"class\(es\) .* never occur in training.*kept by max_train"):
        D.make_tabular(np.zeros((40, 2)), np.r_[np.zeros(18), np.ones(18), np.full(4, 2.0)], max_train=6, seed=1)


def test_an_empty_ptb_file_is_named(tmp_path):
    for split, text in (("train", ""), ("valid", "a b\n"), ("test", "a\n")):
        (tmp_path / f"ptb.{split}.txt").write_text(text)
    with pytest.raises(ValueError, match=r"the PTB train file .*ptb.train.txt is empty \(no words\)"):
        D.load_ptb(tmp_path)        # "3 words of ptb.valid.txt are not in the training vocabulary" before
    (tmp_path / "ptb.train.txt").write_text("a b\n")
    (tmp_path / "ptb.test.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"the PTB test file .*ptb.test.txt is empty"):
        D.load_ptb(tmp_path)

"""AutoAugment ops (jaxnas/data/augment.py) against PIL, AutoAugment's reference, on real images: the
embedded digits (8x8 grey) and, where it is beside the repository, the CIFAR-10 subset (32x32 RGB)."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from jaxnas.data import augment as A

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"
FILL = (128, 128, 128)


def images():
    """Six CIFAR-10 images where the subset is present (RGB exercises every op), else six digits."""
    if CIFAR.exists():
        return list(np.load(CIFAR)["X"][:6])
    return list(np.load(REPO / "jaxnas" / "data" / "embedded" / "digits.npz")["X"][[0, 7, 42, 100, 500, 900]])


IMAGES = images()


def pil(img):
    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def back(p, like):
    a = np.asarray(p)
    return a[..., None] if like.shape[-1] == 1 else a


def pil_reference(op, img, m, sign):
    """AutoAugment's op at magnitude m (0..9) with PIL (module docstring of jaxnas/data/augment.py)."""
    p, W = pil(img), img.shape[1]
    fill = 128 if img.shape[-1] == 1 else FILL
    f = 1.8 * m / 10 + 0.1
    if op == "ShearX":
        return back(p.transform(p.size, Image.AFFINE, (1, sign * 0.3 * m / 10, 0, 0, 1, 0), Image.NEAREST, fillcolor=fill), img)
    if op == "ShearY":
        return back(p.transform(p.size, Image.AFFINE, (1, 0, 0, sign * 0.3 * m / 10, 1, 0), Image.NEAREST, fillcolor=fill), img)
    if op in ("TranslateX", "TranslateY"):
        px = sign * round(m / 10 * 10 / 32 * W)
        c = (1, 0, px, 0, 1, 0) if op == "TranslateX" else (1, 0, 0, 0, 1, px)
        return back(p.transform(p.size, Image.AFFINE, c, Image.NEAREST, fillcolor=fill), img)
    if op == "Rotate":
        return back(p.rotate(sign * int(m * 30 / 10), Image.NEAREST, fillcolor=fill), img)
    if op == "AutoContrast":
        return back(ImageOps.autocontrast(p), img)
    if op == "Invert":
        return back(ImageOps.invert(p), img)
    if op == "Equalize":
        return back(ImageOps.equalize(p), img)
    if op == "Solarize":
        return back(ImageOps.solarize(p, 256 - int(m * 256 / 10)), img)
    if op == "Posterize":
        return back(ImageOps.posterize(p, 4 - int(m * 4 / 10)), img)
    enh = {"Contrast": ImageEnhance.Contrast, "Color": ImageEnhance.Color,
           "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}[op]
    return back(enh(p).enhance(f), img)


PIL_OPS = [o for o in A.AUG_OPS if o != "Cutout"]


@pytest.mark.parametrize("op", PIL_OPS)
def test_op_matches_pil(op):
    """Every image, magnitudes 0, 3, 6, 9 and both signs: at most 1 grey level off on >= 99% of the
    values (PIL rounds in integers, we in float32), and never more than 1% of values differ by > 1."""
    fn = jax.jit(lambda x, m, s: A.apply_op(op, x, m, jax.random.key(0), sign=s))
    worst = []
    for img in IMAGES:      # one image shape: one compile per op
        for m in (0, 3, 6, 9):
            for sign in ((1, -1) if op in A.SIGNED else (1,)):
                if op == "Color" and img.shape[-1] == 1:
                    continue        # PIL's Color is the identity on grey images; ours too (checked below)
                ref = pil_reference(op, img, m, sign).astype(np.float64)
                ours = np.asarray(fn(jnp.asarray(img, jnp.float32), m, sign), np.float64)
                assert ours.shape == ref.shape
                d = np.abs(ours - ref)
                worst.append((float(np.mean(d > 1)), float(np.mean(d > 0)), m, sign, img.shape))
                assert np.mean(d > 1) <= 0.01, (op, m, sign, img.shape, np.mean(d > 1), d.max())
                assert np.mean(d > 0) <= 0.05, (op, m, sign, img.shape, np.mean(d > 0))
    assert worst


def test_ops_move_the_image_and_keep_uint8_values():
    """Magnitude 9 changes every op's output (not an identity); outputs are integral in [0, 255]."""
    img = jnp.asarray(IMAGES[-1], jnp.float32)
    outs = jax.jit(lambda x: [A.apply_op(op, x, 9, jax.random.key(1), sign=1) for op in A.AUG_OPS])(img)
    for op, out in zip(A.AUG_OPS, outs):
        out = np.asarray(out)
        assert out.min() >= 0 and out.max() <= 255 and np.all(out == np.round(out)), op
        assert not np.array_equal(out, np.asarray(img)), op
    grey = jnp.asarray(np.load(REPO / "jaxnas" / "data" / "embedded" / "digits.npz")["X"][0], jnp.float32)
    np.testing.assert_array_equal(np.asarray(A.apply_op("Color", grey, 9, jax.random.key(0))), np.asarray(grey))


def test_cutout_matches_numpy_reference():
    """AutoAugment's cutout: a size x size square (clipped) at a random centre, filled grey."""
    img = jnp.asarray(IMAGES[-1], jnp.float32)
    H, W = img.shape[:2]
    for m in (3, 9):
        key = jax.random.key(5)
        out = np.asarray(A.apply_op("Cutout", img, m, key))
        size = int(m / 10 * 20 / 32 * W)
        ky, kx = jax.random.split(jax.random.split(key)[1])
        cy, cx = int(jax.random.randint(ky, (), 0, H)), int(jax.random.randint(kx, (), 0, W))
        ref = np.asarray(img).copy()
        ref[max(cy - size // 2, 0):max(cy - size // 2 + size, 0), max(cx - size // 2, 0):max(cx - size // 2 + size, 0)] = 128
        np.testing.assert_array_equal(out, ref)


def test_policy_applies_ops_with_their_probabilities():
    """A one-sub-policy policy (Invert p=0.3, then Posterize at m=9 with p=1): per image, inverted
    with frequency ~0.3 (binomial 5 sigma) and always posterized to 1 bit."""
    imgs = jnp.asarray(np.repeat(IMAGES[-1][None], 400, 0), jnp.float32)
    ops = jnp.asarray([[A.AUG_OPS.index("Invert"), A.AUG_OPS.index("Posterize")]])
    out = np.asarray(jax.jit(A.apply_policy)(imgs, jax.random.key(3), ops, jnp.asarray([[0.3, 1.0]]),
                                             jnp.asarray([[0.0, 9.0]])))
    assert set(np.unique(out)) <= {0.0, 128.0}
    plain = np.asarray(A.apply_op("Posterize", imgs[0], 9, jax.random.key(0)))
    inv = np.asarray(A.apply_op("Posterize", 255.0 - imgs[0], 9, jax.random.key(0)))
    is_inv = np.array([np.array_equal(o, inv) for o in out])
    assert all(np.array_equal(o, plain) or i for o, i in zip(out, is_inv))
    assert abs(is_inv.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 400)

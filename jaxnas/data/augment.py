"""AutoAugment's image ops in JAX, and policies applied per image inside a compiled program.

Op definitions follow AutoAugment (Cubuk et al. 2019, App. A.1 and the authors' released
``augmentation_transforms.py``): a magnitude ``m`` in ``0..9`` maps to the op's parameter as
``m / 10 * max`` (the released code's ``PARAMETER_MAX = 10``), the geometric ops (shear, translate,
rotate) take a random sign, the enhance factors do not (``1.8 m/10 + 0.1`` is always positive); every op works on uint8 values (float32 arrays in ``[0, 255]``, integral after
every op, as PIL):

==============  =============================================================================
ShearX/Y        affine shear ``0.3 m/10`` (random sign), nearest neighbour, fill 128
TranslateX/Y    ``round(m/10 * 10/32 * width)`` pixels (10 px at 32 x 32; random sign), fill 128
Rotate          ``3 m`` degrees (``int(m * 30 / 10)``; random sign) about the centre, nearest, fill 128
AutoContrast    per channel: stretch ``[min, max]`` to ``[0, 255]`` (PIL ``ImageOps.autocontrast``)
Invert          ``255 - v``
Equalize        per-channel histogram equalisation (PIL ``ImageOps.equalize``)
Solarize        invert values ``>= 256 - int(25.6 m)``
Posterize       keep ``4 - int(0.4 m)`` bits
Contrast        blend with the mean grey level: factor ``1.8 m/10 + 0.1``
Color           blend with the greyscale image: factor ``1.8 m/10 + 0.1``
Brightness      blend with black: factor ``1.8 m/10 + 0.1``
Sharpness       blend with PIL's SMOOTH filter (3x3, centre 5, border kept): factor ``1.8 m/10 + 0.1``
Cutout          a grey (128) square of side ``int(m/10 * 20/32 * width)`` at a uniform random centre
==============  =============================================================================

The fill value 128 is tensorflow/models' ``replace`` grey (the released AutoAugment code fills
with the mean); magnitudes follow the released code, not RandAugment's. dm-pix provides the affine
resampling (``dm_pix.affine_transform``, order 0) and ``dm_pix.solarize``; the rest are jnp
(dm-pix has no posterize, equalize, autocontrast, invert, sharpness or cutout, and its brightness /
contrast are not PIL's blends). ``tests/test_augment.py`` checks every op against PIL on real images.

:func:`apply_policy` applies an AutoAugment policy to a batch: per image one of the sub-policies
uniformly at random, each of its two ops with its probability (AutoAugment sec. 3). Every op is
evaluated and the chosen one selected (``jnp.select``), so per-image choices and traced policies
(``vmap`` over candidates) work without ``lax.switch``.
"""
from __future__ import annotations

import math

import dm_pix as pix
import jax
import jax.numpy as jnp

from jaxnas.spaces.product import AUG_OPS

FILL = 128.0


def _u8(x):
    """Round-trip to PIL's uint8 semantics: clip to [0, 255], truncate."""
    return jnp.floor(jnp.clip(x, 0.0, 255.0))


def _grey(img):
    """PIL ``convert('L')``: ``(R*19595 + G*38470 + B*7471 + 0x8000) >> 16``; greyscale stays."""
    if img.shape[-1] == 1:
        return img[..., 0]
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return jnp.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)


def _blend(degenerate, img, factor):
    """PIL ``Image.blend(degenerate, img, factor)`` on uint8 values."""
    return _u8(degenerate + factor * (img - degenerate))


# ---- geometric ops (PIL AFFINE with NEAREST; dm-pix resamples) -----------------------------------
def pil_affine(img, coeffs, fill: float = FILL):
    """PIL ``img.transform(size, Image.AFFINE, (a, b, c, d, e, f), NEAREST, fillcolor=fill)``: output
    pixel (x, y) reads input ``floor(a(x+.5) + b(y+.5) + c), floor(d(x+.5) + e(y+.5) + f)``.
    ``dm_pix.affine_transform`` (order 0) reads ``floor(M o + offset + 0.5)`` in (row, col, channel)
    coordinates, so the PIL matrix is moved to rows first and its offsets shifted by half a pixel."""
    a, b, c, d, e, f = coeffs
    m = jnp.asarray([[e, d, 0.0, f + 0.5 * (d + e) - 0.5],
                     [b, a, 0.0, c + 0.5 * (a + b) - 0.5],
                     [0.0, 0.0, 1.0, 0.0],
                     [0.0, 0.0, 0.0, 1.0]], jnp.float32)
    return pix.affine_transform(img, m, order=0, mode="constant", cval=fill)


def rotate_coeffs(degrees, width: int, height: int):
    """The affine coefficients of PIL ``Image.rotate(degrees)`` (counter-clockwise about the centre)."""
    ang = -jnp.deg2rad(degrees)
    cos, sin = jnp.cos(ang), jnp.sin(ang)
    cx, cy = width / 2.0, height / 2.0
    a, b, d, e = cos, sin, -sin, cos
    c = a * (-cx) + b * (-cy) + cx
    f = d * (-cx) + e * (-cy) + cy
    return (a, b, c, d, e, f)


# ---- the ops: (img [H, W, C] float uint8-valued, magnitude 0..9, sign +-1, key) -> img ------------
def shear_x(img, v):
    return pil_affine(img, (1.0, v, 0.0, 0.0, 1.0, 0.0))


def shear_y(img, v):
    return pil_affine(img, (1.0, 0.0, 0.0, v, 1.0, 0.0))


def translate_x(img, px):
    return pil_affine(img, (1.0, 0.0, px, 0.0, 1.0, 0.0))


def translate_y(img, px):
    return pil_affine(img, (1.0, 0.0, 0.0, 0.0, 1.0, px))


def rotate(img, degrees):
    return pil_affine(img, rotate_coeffs(degrees, img.shape[1], img.shape[0]))


def auto_contrast(img):
    lo, hi = jnp.min(img, (0, 1)), jnp.max(img, (0, 1))
    scale = 255.0 / jnp.maximum(hi - lo, 1.0)
    out = jnp.clip(jnp.floor(img * scale - lo * scale), 0.0, 255.0)   # PIL: int(ix * scale + offset)
    return jnp.where(hi > lo, out, img)


def invert(img):
    return 255.0 - img


def equalize(img):
    """PIL ``ImageOps.equalize`` per channel: ``step = (N - h[last nonzero]) // 255``,
    ``lut[i] = (step // 2 + sum_{j<i} h[j]) // step``; identity where step is 0."""
    def channel(x):
        xi = x.astype(jnp.int32)
        h = jnp.zeros((256,), jnp.int32).at[xi.reshape(-1)].add(1)
        last = 255 - jnp.argmax(h[::-1] > 0)
        step = (jnp.sum(h) - h[last]) // 255
        cum = jnp.cumsum(h) - h
        lut = jnp.minimum((step // 2 + cum) // jnp.maximum(step, 1), 255)
        return jnp.where(step > 0, lut[xi].astype(x.dtype), x)
    return jnp.stack([channel(img[..., c]) for c in range(img.shape[-1])], -1)


def solarize(img, threshold):
    # PIL: v < threshold ? v : 255 - v; dm-pix on [0, 1] values: where(x < t, x, 1 - x)
    return jnp.round(pix.solarize(img / 255.0, threshold / 255.0) * 255.0)


def posterize(img, bits):
    shift = 8 - bits
    q = jnp.exp2(shift)
    return jnp.floor(img / q) * q


def contrast(img, factor):
    # PIL ImageEnhance.Contrast: the degenerate image is the mean of the greyscale histogram, int(+0.5)
    mean = jnp.floor(jnp.mean(_grey(img)) + 0.5)
    return _blend(jnp.full_like(img, 0.0) + mean, img, factor)


def color(img, factor):
    return _blend(jnp.broadcast_to(_grey(img)[..., None], img.shape), img, factor)


def brightness(img, factor):
    return _blend(jnp.zeros_like(img), img, factor)


def sharpness(img, factor):
    """PIL ``ImageEnhance.Sharpness``: blend with ``ImageFilter.SMOOTH`` (kernel 1 1 1 / 1 5 1 / 1 1 1,
    /13, rounded), whose border pixels are the original's."""
    k = jnp.asarray([[1, 1, 1], [1, 5, 1], [1, 1, 1]], jnp.float32) / 13.0
    x = jnp.moveaxis(img, -1, 0)[:, None]                                    # [C, 1, H, W]
    sm = jax.lax.conv_general_dilated(x, k[None, None], (1, 1), "SAME")[:, 0]
    sm = jnp.moveaxis(jnp.floor(sm + 0.5), 0, -1)
    H, W = img.shape[:2]
    inner = (jnp.arange(H)[:, None, None] > 0) & (jnp.arange(H)[:, None, None] < H - 1) & \
            (jnp.arange(W)[None, :, None] > 0) & (jnp.arange(W)[None, :, None] < W - 1)
    return _blend(jnp.where(inner, sm, img), img, factor)


def cutout(img, size, key):
    """A ``size x size`` grey square centred at a uniform random pixel (clipped at the border)."""
    H, W = img.shape[:2]
    ky, kx = jax.random.split(key)
    cy, cx = jax.random.randint(ky, (), 0, H), jax.random.randint(kx, (), 0, W)
    y0, x0 = cy - size // 2, cx - size // 2
    ys, xs = jnp.arange(H)[:, None, None], jnp.arange(W)[None, :, None]
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return jnp.where(inside & (size > 0), FILL, img)


# ---- magnitudes -----------------------------------------------------------------------------------
def op_parameter(op: str, magnitude, width: int):
    """The parameter of ``op`` at magnitude ``0..9`` (unsigned; module docstring)."""
    m = jnp.asarray(magnitude, jnp.float32)
    if op in ("ShearX", "ShearY"):
        return 0.3 * m / 10.0
    if op in ("TranslateX", "TranslateY"):
        return jnp.round(m / 10.0 * 10.0 / 32.0 * width)
    if op == "Rotate":
        return jnp.floor(m * 30.0 / 10.0)
    if op == "Solarize":
        return 256.0 - jnp.floor(m * 256.0 / 10.0)
    if op == "Posterize":
        return 4.0 - jnp.floor(m * 4.0 / 10.0)
    if op in ("Contrast", "Color", "Brightness", "Sharpness"):
        return 1.8 * m / 10.0 + 0.1
    if op == "Cutout":
        return jnp.floor(m / 10.0 * 20.0 / 32.0 * width).astype(jnp.int32)
    return m                                            # AutoContrast, Invert, Equalize: unused


SIGNED = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def apply_op(op: str, img, magnitude, key, sign=None):
    """``op`` (a name of :data:`AUG_OPS`) on one image ``[H, W, C]`` (uint8 values) at ``magnitude``.
    ``sign``: +-1 for the signed ops (default: random from ``key``, as AutoAugment)."""
    k_sign, k_op = jax.random.split(key)
    v = op_parameter(op, magnitude, img.shape[1])
    if op in SIGNED:
        s = jnp.where(jax.random.bernoulli(k_sign), 1.0, -1.0) if sign is None else jnp.asarray(sign, jnp.float32)
        v = v * s
    fns = {"ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x, "TranslateY": translate_y,
           "Rotate": rotate, "Solarize": solarize, "Posterize": posterize, "Contrast": contrast,
           "Color": color, "Brightness": brightness, "Sharpness": sharpness}
    if op in fns:
        return fns[op](img, v)
    if op == "AutoContrast":
        return auto_contrast(img)
    if op == "Invert":
        return invert(img)
    if op == "Equalize":
        return equalize(img)
    if op == "Cutout":
        return cutout(img, v, k_op)
    raise ValueError(f"unknown augmentation op {op!r}; valid: {', '.join(AUG_OPS)}")


def apply_any(op_index, img, magnitude, key, op_names=AUG_OPS):
    """The op ``AUG_OPS[op_index]`` (traced index, one of ``op_names``): every op of ``op_names`` runs,
    the chosen one is selected (an index outside ``op_names`` leaves the image unchanged)."""
    ids = jnp.asarray([AUG_OPS.index(o) for o in op_names], jnp.int32)
    outs = jnp.stack([apply_op(o, img, magnitude, key) for o in op_names] + [img])
    sel = jnp.where(ids == op_index, jnp.arange(len(op_names)), len(op_names)).min()
    return outs[sel]


def apply_policy_one(img, key, ops, probs, mags, op_names=AUG_OPS):
    """One image: a uniformly chosen sub-policy ``s``; op ``j`` of it applied with ``probs[s, j]``.
    ``ops int[S, 2]`` index :data:`AUG_OPS`; ``probs``/``mags float[S, 2]``; ``op_names``: the ops
    the policy may use (only those are computed)."""
    k_s, k0, k1, a0, a1 = jax.random.split(key, 5)
    s = jax.random.randint(k_s, (), 0, ops.shape[0])
    for j, (kp, ka) in enumerate(((k0, a0), (k1, a1))):
        new = apply_any(ops[s, j], img, mags[s, j], ka, op_names)
        img = jnp.where(jax.random.bernoulli(kp, probs[s, j]), new, img)
    return img


def apply_policy(images, key, ops, probs, mags, op_names=AUG_OPS):
    """A batch ``[N, H, W, C]`` of uint8-valued float images through the policy (per-image draws)."""
    keys = jax.random.split(key, images.shape[0])
    one = lambda im, k: apply_policy_one(im, k, ops, probs, mags, tuple(op_names))
    return jax.vmap(one)(images, keys)


def ops_count() -> int:
    return len(AUG_OPS)


__all__ = ["AUG_OPS", "apply_op", "apply_any", "apply_policy", "apply_policy_one", "op_parameter",
           "pil_affine", "rotate_coeffs", "FILL", "math"]

"""The candidate op names of the cell spaces and their parameter counts in closed form: a property of
the space (its cost function), so it lives here; the Flax modules are ``jaxnas.models.ops``."""
from __future__ import annotations

DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5")
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def op_param_count(op_set: str, name: str, C: int, stride: int, affine: bool) -> int:
    """Parameters of one op at C channels (closed form; checked against the modules in tests)."""
    bn = 2 * C if affine else 0
    if name in ("none", "max_pool_3x3", "avg_pool_3x3"):
        return 0
    if name == "skip_connect":
        return 0 if stride == 1 else 2 * C * (C // 2) + bn
    if name.startswith("nor_conv_"):
        k = int(name[-1])
        return k * k * C * C + bn
    k = int(name[-1])
    dil = C * k * k + C * C + bn
    return 2 * dil if name.startswith("sep_conv") else dil

"""XLA:CPU compile options of the engine's programs (``search.cpu_convolutions``).

XLA:CPU (jaxlib 0.10) hands three kinds of fusion to YNNPACK by default: single dots, reductions and
single convolutions (its flag's help says the default list is empty; the compiled programs say
otherwise). YNNPACK's convolutions, the 1x1 forward convolutions of every conv supernet here, are
slower than XLA's own on our CPU: the engine's weight step without them, paired in one process,
NB201 C16 N5 0.81x, DARTS-8 sparse (scanned edges) 0.96x, within noise (``python bench/engine_ab.py
cpu_convolutions``, ``bench/results/engine_ab.json``). Leaving reductions to XLA as well was faster
for NB201 but 1.3x slower for DARTS-8 (scratch A/Bs), so only the convolutions move. A compile option
of each program, not a process flag: it composes with a user's ``XLA_FLAGS`` and reaches the
compilation cache's key.
"""
from __future__ import annotations

import functools
from typing import Optional

CPU_CONVOLUTIONS = ("xla", "ynnpack")
_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# XLA:CPU's default list without LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION (an exact list: the
# option has no "-type" form, that is XLA_FLAGS only)
_WITHOUT_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def compiler_options(convolutions: str, platform: str) -> Optional[dict]:
    """``jax.jit(..., compiler_options=)`` for a program on ``platform`` whose single convolutions
    run in ``convolutions`` ("xla": XLA's own, "ynnpack": XLA:CPU's default). None: XLA's defaults
    (every platform but CPU, "ynnpack", or a jaxlib without the option)."""
    if convolutions not in CPU_CONVOLUTIONS:
        raise ValueError(f"search.cpu_convolutions must be one of {CPU_CONVOLUTIONS}, got {convolutions!r}")
    if platform != "cpu" or convolutions == "ynnpack" or not _supported():
        return None
    return {_OPTION: _WITHOUT_CONVOLUTIONS}


@functools.lru_cache(maxsize=None)
def _supported() -> bool:
    """Whether this jaxlib's XLA:CPU takes the option (older and newer ones may not know it or its
    values: then the programs compile with XLA's defaults instead of failing)."""
    import jax
    import jax.numpy as jnp
    try:
        jax.jit(lambda x: x + 1, compiler_options={_OPTION: _WITHOUT_CONVOLUTIONS}).lower(
            jnp.zeros((), jnp.float32)).compile()
        return True
    except Exception:
        return False

"""``search.cpu_convolutions``: on CPU the engine's chunks compile with XLA's own convolutions
(core/cpu_compile.py) unless the config asks for XLA:CPU's default (YNNPACK's); both compute the
same step to float rounding; other platforms and bad values."""
from __future__ import annotations

import re

import chex
import jax
import pytest

from jaxnas.config.experiment import build
from jaxnas.config.settings import resolve
from jaxnas.core import cpu_compile
from jaxnas.core.workdir import RUN_NEUTRAL_KEYS
from jaxnas.data.batching import BatchSampler, gather
from tests.test_lowering import _image_cfg, needs_cifar


def test_options_per_platform_and_value():
    assert cpu_compile.compiler_options("ynnpack", "cpu") is None
    assert cpu_compile.compiler_options("xla", "tpu") is None
    assert cpu_compile.compiler_options("xla", "cuda") is None
    if cpu_compile._supported():
        assert cpu_compile.compiler_options("xla", "cpu") == {
            "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
    with pytest.raises(ValueError, match="cpu_convolutions must be one of"):
        cpu_compile.compiler_options("onednn", "cpu")
    with pytest.raises(ValueError, match="cpu_convolutions"):
        resolve({"search": {"cpu_convolutions": "onednn"}})
    assert resolve({})["search"]["cpu_convolutions"] == "xla"
    assert "search.cpu_convolutions" in RUN_NEUTRAL_KEYS      # equal to float rounding: a resume may change it


def test_an_unsupported_option_falls_back_to_xla_defaults(monkeypatch):
    monkeypatch.setattr(cpu_compile, "_supported", lambda: False)
    assert cpu_compile.compiler_options("xla", "cpu") is None


def _ynn_fused_ops(text: str) -> set:
    """The HLO ops inside the program's YNNPACK fusions."""
    bodies, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m and not line.startswith(" "):
            cur = bodies.setdefault(m.group(1), [])
        elif cur is not None:
            cur.append(line)
    ops = set()
    for line in text.splitlines():
        if '"__ynn_fusion"' in line:
            called = re.search(r"calls=%?([\w.\-]+)", line).group(1)
            ops |= {m.group(1) for b in bodies[called] for m in [re.search(r"= \S+ ([a-z][\w-]*)\(", b)] if m}
    return ops


@needs_cifar
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU compile option")
def test_search_chunk_convolutions_leave_ynnpack_and_compute_the_same_step():
    runs = {}
    for lib in ("xla", "ynnpack"):
        exp = build(_image_cfg({"name": "nb201", "C": 8, "cells_per_stage": 1}, {"name": "random"},
                               batch_size=16, chunk=1, cpu_convolutions=lib))
        search, d = exp.search, exp.data
        tb = gather((d.x_train, d.y_train), BatchSampler(len(d.y_train), 16, 0).chunk(0, 1))
        vb = gather((d.x_val, d.y_val), BatchSampler(len(d.y_val), 16, 1).chunk(0, 1))
        state, args = search.init(jax.random.key(0)), (search.inputs, search.shard_batches((tb, vb)))
        chunk, _ = search._chunk_fn("weights")
        text = chunk.lower(state, *args).compile().as_text()
        runs[lib] = (_ynn_fused_ops(text), chunk(state, *args)[0].evaluator.params)
    if not cpu_compile._supported():
        pytest.skip("this jaxlib's XLA:CPU does not take the option")
    assert "convolution" in runs["ynnpack"][0], "XLA:CPU's default no longer gives YNNPACK convolutions"
    assert "convolution" not in runs["xla"][0]
    chex.assert_trees_all_close(runs["xla"][1], runs["ynnpack"][1], atol=1e-5, rtol=1e-4)

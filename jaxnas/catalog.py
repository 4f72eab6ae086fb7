"""``jaxnas list``: what is registered and what each option is, read from the registries and schemas
(nothing here is typed by hand, so a newly registered strategy, space, evaluator or data set appears).

- ``jaxnas list``: spaces, strategies (what each needs from an evaluator and which evaluators give
  it), evaluators and data sets;
- ``jaxnas list strategy NAME`` (``space``, ``evaluator``, ``data``): every option with its type and
  range (the schema's words), its default, and the entry's one-line description.
"""
from __future__ import annotations

import inspect

from jaxnas import evaluators, strategies
from jaxnas.config.experiment import DATASETS, SPACES
from jaxnas.config.settings import shipped_configs
from jaxnas.core import schema as S
from jaxnas.spaces.cells import NasBench201Space
from jaxnas.strategies.base import OPTION_FIELDS

KINDS = ("space", "strategy", "evaluator", "data")
# what a strategy needs from its evaluator, and the evaluators that give it (the engine's checks:
# gradients and unrolled weight steps need a differentiable supernet, batched rewards its batch form)
NEEDS_SUPERNET = ("gradient", "unroll", "batch")


def _first_line(obj) -> str:
    """The first sentence of ``obj``'s docstring (its first paragraph, up to a full stop)."""
    para = " ".join((inspect.getdoc(obj) or "").strip().split("\n\n")[0].split())
    cut = para.find(". ")
    return para if cut < 0 else para[:cut + 1]


def _probe_options(name: str) -> dict:
    """Just enough options to build ``name`` on a small space (budgets every cell meets)."""
    return {"tabnas": {"budget": 1e12}, "tunas_abs": {"target": 1e12, "beta": -0.1},
            "mnas_soft": {"target": 1e12, "beta": -0.07}, "mnas_hard": {"target": 1e12, "beta": -1.0}}.get(name, {})


def strategy_profile(name: str) -> dict:
    """``needs``, ``mode`` and the evaluators strategy ``name`` runs on."""
    s = strategies.make(name, NasBench201Space.create(), total_steps=10, **_probe_options(name))
    evs = [e for e in evaluators.available()
           if s.needs not in NEEDS_SUPERNET or evaluators.get(e).has_weights]
    return {"needs": s.needs, "mode": s.mode, "evaluators": evs}


def overview() -> str:
    lines = ["spaces:      " + ", ".join(SPACES.names()),
             "evaluators:  " + ", ".join(f"{e} ({'supernet' if evaluators.get(e).has_weights else 'no weights'}"
                                         f"{', data' if evaluators.get(e).needs_data else ''})"
                                         for e in evaluators.available()),
             "data sets:   " + ", ".join(n for n in DATASETS.names() if n != "tfds") + ", any tfds name (prepared "
             "offline in data.data_dir)", "strategies:"]
    for name in strategies.available():
        p = strategy_profile(name)
        lines.append(f"  {name:20s} needs {p['needs']:8s} {p['mode']:6s} on {', '.join(p['evaluators'])}")
    lines.append("configs:     " + ", ".join(shipped_configs()) + " (jaxnas search NAME)")
    lines.append("details: jaxnas list strategy NAME | space NAME | evaluator NAME | data NAME")
    return "\n".join(lines)


def _default(v) -> str:
    return "None (the strategy's own choice)" if v is None else repr(v)


def _schema_lines(schema: dict, defaults: dict) -> list[str]:
    out = []
    for key, field in schema.items():
        if isinstance(field, dict):
            continue
        default = defaults.get(key, field.default)
        shown = "(required)" if default is S.MISSING else repr(default)
        out.append(f"  {key:22s} {field.expected():55s} default {shown}")
    return out


def details(kind: str, name: str) -> str:
    if kind == "strategy":
        fn = strategies.factory(name)
        p = strategy_profile(name)
        lines = [f"strategy {name}: {_first_line(fn)}",
                 f"needs {p['needs']} ({p['mode']}); runs on: {', '.join(p['evaluators'])}", "options:"]
        params = inspect.signature(fn).parameters
        for opt in strategies.options(name):
            field = OPTION_FIELDS.get(opt)
            what = field.expected() if field is not None else "any value"
            lines.append(f"  {opt:22s} {what:55s} default {_default(params[opt].default)}")
        return "\n".join(lines)
    if kind == "space":
        fn = SPACES.get(name)
        return "\n".join([f"space {name}: {_first_line(fn)}", "keys (space.KEY):",
                          *_schema_lines(fn.schema, fn.defaults)])
    if kind == "evaluator":
        fn = evaluators.get(name)          # an unknown name: the registry's error, listing the names
        return "\n".join([f"evaluator {name}: {_first_line(fn)}", "keys (evaluator.KEY):",
                          *_schema_lines(fn.schema, fn.defaults)])
    if kind == "data":
        from jaxnas.config.settings import SCHEMA
        fn = DATASETS.get(name)
        return "\n".join([f"data {name}: {_first_line(fn)}", "keys (data.KEY):",
                          *_schema_lines(SCHEMA["data"], {"name": name})])
    raise ValueError(f"jaxnas list takes one of {', '.join(KINDS)}, got {kind!r}")

"""Typed config fields: one (type, range) declaration per key, every bad key reported at once.

A schema is a dict ``{key: Field}`` (nested dicts for sections). ``check(schema, values, prefix)``
returns the values converted to their canonical form (an int-valued float such as ``1e3`` becomes
``1000``, an int given for a float becomes a float, tuples become lists, paths become strings: the
resolved config is plain JSON) and a list of problems, one line per bad key naming the dotted key,
what it must be and the value given. ``defaults(schema)`` gives the default values.

Why a small in-house schema and not ``ml_collections.ConfigDict``: a ConfigDict types a field by
the type of its default (a ``None`` default, like ``data.max_train`` or ``optimizer.clip``, is
untyped), has no ranges or choices, raises at the first bad assignment instead of listing them all,
and the tagged sections of jaxnas (``space``/``evaluator``/``strategy``, whose keys depend on their
``name``) would need placeholders. A table of fields does all of that with the plain dicts the
rest of jaxnas, ``config.json`` and ``jaxnas search CONFIG key=value`` already use.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Callable
from typing import Optional as _Opt

MISSING = object()


class Bad(Exception):
    """A value does not fit its field (internal)."""


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


class Field:
    """A typed config value. ``default`` is what the key holds when not given (``MISSING``: none)."""

    def __init__(self, default: Any = MISSING, doc: str = ""):
        self.default = default
        self.doc = doc

    def expected(self, plural: bool = False) -> str:
        """What the field accepts, for messages (``plural``: said of the items of a list); ``doc``
        replaces the generated text."""
        return self.doc or self._expected(plural)

    def _expected(self, plural: bool) -> str:
        raise NotImplementedError

    def convert(self, value):
        """The canonical value, or ``raise Bad``."""
        raise NotImplementedError

    def __or__(self, other: "Field") -> "Field":
        return Either(self, other)


def _range_text(ge, gt, le, lt) -> str:
    lo = f"[{_fmt(ge)}" if ge is not None else (f"({_fmt(gt)}" if gt is not None else None)
    hi = f"{_fmt(le)}]" if le is not None else (f"{_fmt(lt)})" if lt is not None else None)
    if lo and hi:
        return f" in {lo}, {hi}"
    if lo:
        return f" >= {_fmt(ge)}" if ge is not None else f" > {_fmt(gt)}"
    if hi:
        return f" <= {_fmt(le)}" if le is not None else f" < {_fmt(lt)}"
    return ""


class _Number(Field):
    kind = "number"

    def __init__(self, default=MISSING, *, ge=None, gt=None, le=None, lt=None, doc=""):
        super().__init__(default, doc)
        self.ge, self.gt, self.le, self.lt = ge, gt, le, lt

    def _in_range(self, x) -> bool:
        return ((self.ge is None or x >= self.ge) and (self.gt is None or x > self.gt)
                and (self.le is None or x <= self.le) and (self.lt is None or x < self.lt))

    def _expected(self, plural: bool) -> str:
        noun = f"{self.kind}s" if plural else f"{'an' if self.kind == 'int' else 'a'} {self.kind}"
        return noun + _range_text(self.ge, self.gt, self.le, self.lt)


_TRACED = object()


def _real(value):
    """A Python number from ``value`` (a number or a 0-d numeric array), ``_TRACED`` for a traced
    array (not checkable), or ``raise Bad``."""
    if isinstance(value, bool):
        raise Bad
    if isinstance(value, numbers.Real):
        return value
    dtype = getattr(value, "dtype", None)
    if getattr(value, "shape", None) == () and getattr(dtype, "kind", "") in ("i", "u", "f"):
        try:
            return value.item()
        except Exception:  # noqa: BLE001  (a tracer under jit/vmap)
            return _TRACED
    raise Bad


class Int(_Number):
    """An integer (an int-valued float such as ``1e3`` is accepted and converted; ``100.5``, a
    string or a bool is not)."""
    kind = "int"

    def convert(self, value):
        real = _real(value)
        if real is _TRACED:
            return value
        value = real
        if not isinstance(value, numbers.Integral):
            if not (math.isfinite(value) and float(value).is_integer()):
                raise Bad
        value = int(value)
        if not self._in_range(value):
            raise Bad
        return value


class Float(_Number):
    """A finite real number (ints accepted, converted to float)."""
    kind = "float"

    def convert(self, value):
        real = _real(value)
        if real is _TRACED:
            return value
        value = real
        value = float(value)
        if not math.isfinite(value) or not self._in_range(value):
            raise Bad
        return value


class Bool(Field):
    def _expected(self, plural: bool) -> str:
        return "True or False"

    def convert(self, value):
        if isinstance(value, bool):
            return value
        if type(value).__name__ == "bool_":   # numpy bool
            return bool(value)
        raise Bad


class Str(Field):
    """A string; ``choices`` restricts it to those names."""

    def __init__(self, default=MISSING, *, choices=None, doc=""):
        super().__init__(default, doc)
        self.choices = None if choices is None else tuple(choices)

    def _expected(self, plural: bool) -> str:
        if self.choices is not None:
            return ("names among " if plural else "one of ") + ", ".join(repr(c) for c in self.choices)
        return "non-empty strings" if plural else "a non-empty string"

    def convert(self, value):
        if not isinstance(value, str) or not value:
            raise Bad
        if self.choices is not None and value not in self.choices:
            raise Bad
        return value


def Choice(*choices, default=MISSING, doc="") -> Str:
    return Str(default, choices=choices, doc=doc)


class Path(Field):
    """A file or directory path (a string or an ``os.PathLike``; stored as a string)."""

    def _expected(self, plural: bool) -> str:
        return "paths (strings)" if plural else "a path (string)"

    def convert(self, value):
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value:
            raise Bad
        return value


class List(Field):
    """A list (or tuple) of ``item``; ``min_len`` items at least; ``increasing``: strictly;
    ``unique``: no repeats."""

    def __init__(self, item: Field, default=MISSING, *, min_len: int = 0, increasing: bool = False,
                 unique: bool = False, doc=""):
        super().__init__(default, doc)
        self.item, self.min_len, self.increasing, self.unique = item, min_len, increasing, unique

    def _expected(self, plural: bool) -> str:
        what = "non-empty list" if self.min_len == 1 else (
            f"list of >= {self.min_len} items" if self.min_len > 1 else "list")
        what = f"{what}s" if plural else f"a {what}"
        order = ", strictly increasing" if self.increasing else (", no repeats" if self.unique else "")
        return f"{what} of {self.item.expected(plural=True)}{order}"

    def convert(self, value):
        if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
            raise Bad
        out = [self.item.convert(v) for v in value]
        if self.increasing and any(b <= a for a, b in zip(out, out[1:])):
            raise Bad
        if self.unique and len({repr(v) for v in out}) < len(out):
            raise Bad
        return out



class Tuple(Field):
    """A fixed-length list (or tuple) whose items have the given fields, e.g. ``[kind, steps]``."""

    def __init__(self, *items: Field, default=MISSING, doc=""):
        super().__init__(default, doc)
        self.items = items

    def _expected(self, plural: bool) -> str:
        inner = ", ".join(f.expected() for f in self.items)
        return f"[{inner}] pairs" if plural and len(self.items) == 2 else (
            f"[{inner}] lists" if plural else f"a list [{inner}]")

    def convert(self, value):
        if not isinstance(value, (list, tuple)) or len(value) != len(self.items):
            raise Bad
        return [f.convert(v) for f, v in zip(self.items, value)]


class Optional(Field):
    """``None`` or ``field``. The default is ``None`` unless given."""

    def __init__(self, field: Field, default=None, doc=""):
        super().__init__(default, doc)
        self.field = field

    def _expected(self, plural: bool) -> str:
        return f"None or {self.field.expected(plural)}"

    def convert(self, value):
        return None if value is None else self.field.convert(value)


class Either(Field):
    """The first of ``fields`` that accepts the value."""

    def __init__(self, *fields: Field, default=MISSING, doc=""):
        super().__init__(default, doc)
        self.fields = fields

    def _expected(self, plural: bool) -> str:
        return " or ".join(f.expected(plural) for f in self.fields)

    def convert(self, value):
        for f in self.fields:
            try:
                return f.convert(value)
            except Bad:
                pass
        raise Bad


class Object(Field):
    """A Python object given through the Python API (a callable, a ``Budget``): not a number,
    string, bool or container; ``what`` names it in messages."""

    def __init__(self, what: str, default=MISSING, *, test: _Opt[Callable[[Any], bool]] = None, doc=""):
        super().__init__(default, doc)
        self.what, self.test = what, test

    def _expected(self, plural: bool) -> str:
        return self.what

    def convert(self, value):
        if isinstance(value, (str, bool, numbers.Number, list, tuple, dict)) or value is None:
            raise Bad
        if self.test is not None and not self.test(value):
            raise Bad
        return value


class Anything(Field):
    """Any value (not checked); for plain, untyped defaults."""

    def _expected(self, plural: bool) -> str:
        return "anything"

    def convert(self, value):
        return value


# ---- schemas -------------------------------------------------------------------------------------
def typed(spec: _Opt[dict]) -> dict:
    """``{key: Field}`` from a schema or a plain ``{key: default}`` dict (values there become
    unchecked fields with that default)."""
    return {k: (v if isinstance(v, (Field, dict)) else Anything(v)) for k, v in (spec or {}).items()}


def defaults(schema: dict) -> dict:
    """The default values of a schema (nested dicts stay nested; fields without one are left out)."""
    out = {}
    for k, f in schema.items():
        if isinstance(f, dict):
            out[k] = defaults(f)
        elif f.default is not MISSING:
            out[k] = f.default
    return out


def problem(key: str, value, field: Field) -> str:
    return f"{key} must be {field.expected()}, got {value!r}"


def check(schema: dict, values: dict, prefix: str = "") -> tuple[dict, list[str]]:
    """``values`` converted field by field, and one problem line per bad key (``prefix`` + key).
    Keys without a field are kept as they are (unknown keys are the caller's business)."""
    out, problems = dict(values), []
    for k, v in values.items():
        f = schema.get(k)
        if f is None:
            continue
        if isinstance(f, dict):
            if isinstance(v, dict):
                out[k], more = check(f, v, f"{prefix}{k}.")
                problems += more
            continue
        try:
            out[k] = f.convert(v)
        except Bad:
            problems.append(problem(prefix + k, v, f))
    return out, problems


def report(problems: list[str], what: str = "config") -> str:
    n = len(problems)
    head = f"{n} problem{'s' if n > 1 else ''} in the {what}" + (" (fix all of them):" if n > 1 else ":")
    return head + "".join(f"\n  {p}" for p in problems)


def raise_if(problems: list[str], what: str = "config") -> None:
    if problems:
        raise ValueError(report(problems, what))

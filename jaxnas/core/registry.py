"""A named registry: ``@REG.register("name", defaults)`` and ``REG.get(name)`` with an error that lists
the names. Data sets, spaces, tasks (jaxnas.config.experiment) use it; strategies and evaluators keep their own
``register`` with the same shape."""
from __future__ import annotations

from typing import Any, Callable, Optional

from jaxnas.core import schema


class Registry:
    def __init__(self, kind: str, fallback: Optional[str] = None):
        self.kind = kind
        self.fallback = fallback        # entry used for unknown names (e.g. any tfds data set)
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, defaults: Optional[dict] = None):
        """``defaults``: the entry's config keys, as a typed schema ``{key: jaxnas.core.schema.Field}``
        (``fn.schema``; ``fn.defaults`` are its defaults) or plain ``{key: default}`` (unchecked)."""
        def deco(fn):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            fn.schema = schema.typed(defaults)
            fn.defaults = schema.defaults(fn.schema)
            self._entries[name] = fn
            return fn
        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str):
        if name in self._entries:
            return self._entries[name]
        if self.fallback is not None:
            return self._entries[self.fallback]
        raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")

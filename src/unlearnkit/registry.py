"""A tiny generic registry shared by datasets, models, methods and metrics."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps stable snake_case names (and aliases) to objects.

    Example:
        >>> R = Registry("widget")
        >>> @R.register("round_widget", aliases=("rw",))
        ... def make(): return "o"
        >>> R.get("rw")()
        'o'
    """

    def __init__(self, kind: str, list_command: str | None = None) -> None:
        self.kind = kind
        self.list_command = list_command or f"unlearnkit list {kind}s"
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = (), replace: bool = False) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            for key in (name, *aliases):
                if not replace and (key in self._items or key in self._aliases):
                    raise ValueError(f"{self.kind} name {key!r} is already registered; pass replace=True to override")
            self._items[name] = obj
            for a in aliases:
                self._aliases[a] = name
            return obj

        return deco

    def canonical(self, name: str) -> str:
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        choices = list(self._items) + list(self._aliases)
        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}{hint} Known: {', '.join(sorted(self._items))}. See `{self.list_command}`."
        )

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def aliases_of(self, name: str) -> list[str]:
        return sorted(a for a, n in self._aliases.items() if n == name)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self):
        return iter(self.names())

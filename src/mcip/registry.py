"""A tiny name -> factory registry; unknown names fail with the list of valid ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from mcip.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories.

    >>> losses = Registry("loss")
    >>> @losses.register("infonce")
    ... def make(): ...
    >>> losses.names()
    ['infonce']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ConfigError(f"{self.kind} '{name}' is registered twice; pick another name.")
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise ConfigError(f"Unknown {self.kind} '{name}'. Valid names: {valid}.") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

"""A small typed registry: one per family of interchangeable parts (models, metrics...).

>>> from stormfusion.registry import Registry
>>> shapes: Registry[type] = Registry("shape")
>>> @shapes.register("square")
... class Square: ...
>>> shapes.get("square") is Square
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from stormfusion.errors import StormFusionError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one family; unknown names list the valid ones."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` (names are unique)."""

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.family} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The object registered as ``name``; a clear error listing valid names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise StormFusionError(
                f"unknown {self.family} {name!r}; valid names: {valid}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

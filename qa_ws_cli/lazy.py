"""``LazyTuple``: a read-only sequence whose items are made on first read.

For values on the chat path that most readers never look at (a session's history: parsed from
the store, turned into ``Turn``s): whoever reads pays, once; whoever does not, nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar, overload

T = TypeVar("T")


class LazyTuple(Sequence[T]):
    """Subclasses say how to make the items (``_make``); it reads, compares and hashes as the
    tuple of them."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: tuple[T, ...] | None = None

    def _make(self) -> tuple[T, ...]:
        raise NotImplementedError

    def _all(self) -> tuple[T, ...]:
        if self._items is None:
            self._items = self._make()
        return self._items

    def __len__(self) -> int:
        return len(self._all())

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...
    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        return self._all()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self._all() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:  # as the tuple of its items (equal to it, so hashed alike)
        return hash(self._all())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._all())!r})"

"""A bounded map for per-shape device state (CUDA graphs, TensorRT buffers): with OCR's varying input shapes an
unbounded one grows until the GPU's memory runs out."""

from __future__ import annotations

import collections
from typing import Generic, Hashable, Optional, TypeVar

V = TypeVar("V")


class LRU(Generic[V]):
    """At most ``size`` values; ``get`` makes a value the most recent, ``put`` past ``size`` drops the least recent.
    Not locked: each owner uses it from one thread at a time."""

    def __init__(self, size: int):
        self.size = size
        self._items: "collections.OrderedDict[Hashable, V]" = collections.OrderedDict()

    def get(self, key: Hashable) -> Optional[V]:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> Optional[V]:
        """Store ``value``; returns the value dropped to make room, if any (its owner may free it now)."""
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.size:
            return self._items.popitem(last=False)[1]
        return None

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()

"""An LRU cache of analyses keyed by (artist, title, sha256(lyrics), model).

The model id is part of the key so a canary with a new fine-tune never serves the stable
model's answers. Artist and title are compared as given (after the request model strips
surrounding whitespace): "Abba" and "ABBA" are different keys, on purpose — the cache must
never hand one song's score to another.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Generic, TypeVar

ValueT = TypeVar("ValueT")
CacheKey = tuple[str, str, str, str]


def cache_key(artist: str, title: str, lyrics: str, model: str) -> CacheKey:
    return (artist, title, hashlib.sha256(lyrics.encode()).hexdigest(), model)


class LruCache(Generic[ValueT]):
    """A bounded least-recently-used map; ``max_entries=0`` stores nothing."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, ValueT] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> ValueT | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: CacheKey, value: ValueT) -> None:
        if self.max_entries == 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

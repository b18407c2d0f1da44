"""A TTL cache with a size bound for orchestrated answers.

Entries expire ``ttl_s`` after they were stored (not after their last read, so an
answer popular enough to be read constantly is still refreshed now and then).
When the cache is full the least recently used entry is evicted. Time comes in
through ``clock`` so tests move it explicitly instead of sleeping.

The cache is used from one asyncio event loop only, so it takes no lock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    value: V
    expires_at: float


class TTLCache(Generic[V]):
    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s < 0:
            raise ValueError("ttl_s must be >= 0 (0 disables caching)")
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0 (0 disables caching)")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0 and self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: str, value: V) -> None:
        if not self.enabled:
            return
        now = self._clock()
        self._entries[key] = _Entry(value, now + self.ttl_s)
        self._entries.move_to_end(key)
        self._drop_expired(now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _drop_expired(self, now: float) -> None:
        expired = [key for key, entry in self._entries.items() if now >= entry.expires_at]
        for key in expired:
            del self._entries[key]

"""A controller work queue: one entry per key, deduplicated, with delays and back-off.

The semantics of client-go's rate-limited work queue, in asyncio:
- a key is queued at most once; a key added while a worker processes it is queued again
  when that worker calls ``done`` (never processed by two workers at once);
- ``add(key, after=...)`` delays it; the earliest pending time wins;
- ``failed(key)`` re-adds it after a per-key exponential back-off (``base * 2**n``,
  capped), which ``succeeded(key)`` resets;
- two lanes: work that is due (watch events, ``requeue_after``, back-off) is always
  taken before periodic resyncs, so hundreds of idle resources resyncing at once never
  delay an analysis round or a rollback that is due.

Time is the event loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from enum import IntEnum
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Lane(IntEnum):
    DUE = 0  # a change, a requested requeue, a retry
    RESYNC = 1  # the periodic look at a resource at rest


class WorkQueue(Generic[K]):
    def __init__(self, backoff_base: float = 0.5, backoff_cap: float = 300.0) -> None:
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._ready: dict[Lane, deque[K]] = {lane: deque() for lane in Lane}
        self._queued: dict[K, Lane] = {}
        self._processing: set[K] = set()
        self._dirty: dict[K, Lane] = {}  # added while being processed
        self._timers: dict[K, tuple[float, Lane]] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._sequence = itertools.count()
        self._failures: dict[K, int] = {}
        self._available = asyncio.Event()
        self._timer_changed = asyncio.Event()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def __len__(self) -> int:
        return len(self._queued)

    def pending(self, key: K) -> bool:
        return key in self._queued or key in self._timers

    def add(self, key: K, after: float = 0.0, lane: Lane = Lane.DUE) -> None:
        """Queue ``key`` now (or after ``after`` seconds); a queued key is not queued twice."""
        if after > 0:
            due = self._now() + after
            current = self._timers.get(key)
            if current is None or due < current[0]:
                self._timers[key] = (due, lane)
                heapq.heappush(self._heap, (due, next(self._sequence), key))
                self._timer_changed.set()
            return
        self._timers.pop(key, None)
        if key in self._processing:
            self._dirty[key] = min(lane, self._dirty.get(key, lane))
            return
        queued = self._queued.get(key)
        if queued is not None and queued <= lane:
            return
        if queued is not None:  # promote a queued resync to due work
            self._ready[queued].remove(key)
        self._queued[key] = lane
        self._ready[lane].append(key)
        self._notify()

    def forget(self, key: K) -> None:
        """The resource is gone: drop its timers, queue entry and failure count."""
        self._timers.pop(key, None)
        self._failures.pop(key, None)
        self._dirty.pop(key, None)
        lane = self._queued.pop(key, None)
        if lane is not None:
            self._ready[lane].remove(key)

    def _notify(self) -> None:
        self._available.set()

    async def get(self) -> K:
        """The next key to process; the caller must call ``done(key)`` afterwards."""
        while True:
            for lane in Lane:
                if self._ready[lane]:
                    key = self._ready[lane].popleft()
                    del self._queued[key]
                    self._processing.add(key)
                    return key
            self._available.clear()
            await self._available.wait()

    def done(self, key: K) -> None:
        self._processing.discard(key)
        lane = self._dirty.pop(key, None)
        if lane is not None:
            self.add(key, lane=lane)

    def succeeded(self, key: K) -> None:
        self._failures.pop(key, None)

    def failed(self, key: K, cap: float | None = None) -> float:
        """Retry ``key`` after its back-off (at most ``cap`` seconds, when given, else the
        queue's cap); returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self._backoff_cap if cap is None else cap, self._backoff_base * 2.0**failures)
        self.add(key, after=delay)
        return delay

    async def run_timers(self) -> None:
        """Move delayed keys to the ready lanes when their time comes (one task runs this)."""
        while True:
            now = self._now()
            while self._heap and self._heap[0][0] <= now:
                due, _, key = heapq.heappop(self._heap)
                timer = self._timers.get(key)
                if timer is not None and timer[0] == due:
                    del self._timers[key]
                    self.add(key, lane=timer[1])
            self._timer_changed.clear()
            delay = self._heap[0][0] - now if self._heap else 3600.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_changed.wait(), timeout=delay)

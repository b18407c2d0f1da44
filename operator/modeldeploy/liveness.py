"""Heartbeats of the operator's loops, which Kopf's liveness probe checks (``handlers.py``).

Every call the operator makes has a deadline, so no loop should ever hang; this is the
net for the case where one does anyway (a call without a deadline slipping in, a
deadlock, a thread that never returns). Each loop promises, at every beat, to beat
again within some time; the probe fails while any promise is broken, and the kubelet
restarts the container (a fresh process resumes every rollout from its status):

- ``controller loop``: the controller's scheduling loop beats every half second;
- ``tick of NAMESPACE/NAME``: a reconcile in progress, from its start until its end,
  so one stuck tick (and the worker it holds) fails the probe, while an idle operator
  with nothing to reconcile stays healthy;
- ``leader election``: each finished attempt to acquire or renew the Lease (HA mode),
  whatever its answer, so a renewal that stopped finishing fails the probe.

Time is the monotonic clock: a wall-clock jump neither fails nor hides a stuck loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class _Beat:
    at: float
    within: float


class Heartbeats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._beats: dict[str, _Beat] = {}

    def beat(self, name: str, next_within: float) -> None:
        """``name`` is alive now, and promises to beat (or stop) within ``next_within`` s."""
        self._beats[name] = _Beat(self._clock(), next_within)

    def stop(self, name: str) -> None:
        """``name`` ended on purpose: nothing more is expected of it."""
        self._beats.pop(name, None)

    @contextmanager
    def running(self, name: str, at_most: float) -> Iterator[None]:
        """A piece of work expected to end within ``at_most`` seconds of its start."""
        self.beat(name, at_most)
        try:
            yield
        finally:
            self.stop(name)

    def silence(self) -> dict[str, float]:
        """Seconds since each live loop's last beat."""
        now = self._clock()
        return {name: round(now - beat.at, 3) for name, beat in sorted(self._beats.items())}

    def overdue(self) -> list[str]:
        """One line per loop that broke its promise, for the probe's answer and the log."""
        now = self._clock()
        return [
            f"{name}: no heartbeat for {now - beat.at:.0f}s (expected within {beat.within:.0f}s)"
            for name, beat in sorted(self._beats.items())
            if now - beat.at > beat.within
        ]

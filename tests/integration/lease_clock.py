"""A replica's two clocks, moved by the test: monotonic (its own view of the Lease) and wall
(the ``renewTime`` it writes), so each can jump without the other."""

from __future__ import annotations

import datetime as dt


class FakeClock:
    def __init__(self, wall: dt.datetime | None = None) -> None:
        self._monotonic = 1000.0
        self._wall = wall or dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> dt.datetime:
        return self._wall

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move."""
        self._monotonic += seconds
        self._wall += dt.timedelta(seconds=seconds)

    def set_wall(self, by: dt.timedelta) -> None:
        """Someone sets the wall clock (NTP step, an operator, a VM resumed): it jumps alone."""
        self._wall += by

"""Money spent upstream, for GET /stats.

``cost_per_hour_usd`` is an estimate from a sliding window of the last hour:
the spend inside the window divided by the time the window covers. A process
younger than an hour extrapolates from its lifetime, floored at one minute so a
single expensive call in the first second does not read as thousands of dollars
an hour. Totals count since the process started (the Prometheus counter
``model_cost_usd_total`` is the durable record; these numbers are a quick look).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

WINDOW_S = 3600.0
MIN_SPAN_S = 60.0


class CostLedger:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._window: deque[tuple[float, float]] = deque()
        self._window_usd = 0.0
        self.total_usd = 0.0
        self.by_model: dict[str, float] = {}

    def add(self, model: str, usd: float) -> None:
        if usd <= 0:
            return
        now = self._clock()
        self.total_usd += usd
        self.by_model[model] = self.by_model.get(model, 0.0) + usd
        self._window.append((now, usd))
        self._window_usd += usd
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._window and self._window[0][0] <= now - WINDOW_S:
            _, usd = self._window.popleft()
            self._window_usd -= usd
        if not self._window:
            self._window_usd = 0.0  # no float drift once the window empties

    def cost_per_hour_usd(self) -> float:
        now = self._clock()
        self._expire(now)
        span = max(MIN_SPAN_S, min(WINDOW_S, now - self._started))
        return self._window_usd * 3600.0 / span

    def uptime_s(self) -> float:
        return self._clock() - self._started

    def summary(self) -> dict[str, Any]:
        return {
            "cost_usd_total": round(self.total_usd, 8),
            "cost_per_hour_usd": round(self.cost_per_hour_usd(), 8),
            "cost_usd_by_model": {model: round(usd, 8) for model, usd in self.by_model.items()},
            "uptime_s": round(self.uptime_s(), 3),
        }

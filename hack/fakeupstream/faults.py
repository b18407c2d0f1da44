"""Per-model faults and the deterministic schedule that applies them.

Rates are applied by a counter, not a random draw, so a test knows exactly which request
fails: with ``rate`` r, the n-th request (n = 1, 2, ... counted per model since its fault was
last set) is hit when ``floor(n·r) > floor((n-1)·r)``. So ``error_rate=1`` fails every
request, ``0.5`` fails the 2nd, 4th, 6th..., ``0.25`` the 4th, 8th..., and any window of k
requests holds ``k·r`` hits give or take one. Each rate (timeout, error, malformed) runs on
the same request index; when several hit one request, the first of timeout, error,
malformed wins. ``latency_s`` delays every answer that is not a hang.

The fault for model ``*`` applies to every model that has none of its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WILDCARD = "*"
Action = Literal["ok", "timeout", "error", "malformed"]


class Fault(BaseModel):
    """The body of ``PUT /admin/faults/{model}``."""

    model_config = ConfigDict(extra="forbid")

    latency_s: float = Field(default=0.0, ge=0, le=3600, description="Delay before answering.")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="Share answered status_code.")
    timeout_rate: float = Field(default=0.0, ge=0, le=1, description="Share that hang hang_s.")
    malformed_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of chat answers whose content is not JSON."
    )
    status_code: int = Field(default=500, ge=400, le=599, description="Status of injected errors.")
    hang_s: float = Field(
        default=300.0, ge=0, le=3600, description="How long a timed-out request hangs."
    )
    retry_after_s: int = Field(
        default=1, ge=0, le=86_400, description="Retry-After of injected 429 answers."
    )


def _hit(index: int, rate: float) -> bool:
    exact = Fraction(rate).limit_denominator(1_000_000)
    return (index * exact).__floor__() > ((index - 1) * exact).__floor__()


@dataclass
class _ModelFault:
    fault: Fault
    requests_seen: int = 0


@dataclass
class FaultBook:
    """Thread-safe faults by model, and request outcome counts for /admin/stats."""

    _faults: dict[str, _ModelFault] = field(default_factory=dict)
    _stats: dict[str, dict[str, int]] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _peak_in_flight: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, model: str, fault: Fault) -> None:
        with self._lock:
            self._faults[model] = _ModelFault(fault)

    def clear(self, model: str | None = None) -> None:
        with self._lock:
            if model is None:
                self._faults.clear()
            else:
                self._faults.pop(model, None)

    def snapshot(self) -> dict[str, dict[str, float | int]]:
        with self._lock:
            return {model: entry.fault.model_dump() for model, entry in self._faults.items()}

    def decide(self, model: str) -> tuple[Action, Fault]:
        """The action for the next request to ``model`` and the fault in force."""
        with self._lock:
            entry = self._faults.get(model) or self._faults.get(WILDCARD)
            if entry is None:
                return "ok", Fault()
            entry.requests_seen += 1
            n, fault = entry.requests_seen, entry.fault
        if _hit(n, fault.timeout_rate):
            return "timeout", fault
        if _hit(n, fault.error_rate):
            return "error", fault
        if _hit(n, fault.malformed_rate):
            return "malformed", fault
        return "ok", fault

    def count(self, model: str, outcome: str) -> None:
        with self._lock:
            by_outcome = self._stats.setdefault(model, {})
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {model: dict(counts) for model, counts in self._stats.items()}

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()
            # The peak restarts from what is in flight now, not from zero.
            self._peak_in_flight = dict(self._in_flight)

    def enter(self, model: str) -> None:
        """A request to ``model`` is being answered (see :meth:`concurrency`)."""
        with self._lock:
            now = self._in_flight.get(model, 0) + 1
            self._in_flight[model] = now
            self._peak_in_flight[model] = max(now, self._peak_in_flight.get(model, 0))

    def leave(self, model: str) -> None:
        with self._lock:
            self._in_flight[model] -= 1

    def concurrency(self) -> dict[str, dict[str, int]]:
        """Requests in flight by model now, and the most at once since stats were reset."""
        with self._lock:
            return {model: {"in_flight": self._in_flight.get(model, 0), "peak": peak}
                    for model, peak in self._peak_in_flight.items()}  # fmt: skip

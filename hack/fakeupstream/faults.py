"""Per-model faults and the deterministic schedule that applies them.

Rates are applied by a counter, not a random draw, so a test knows exactly which request
fails: with ``rate`` r, the n-th request (n = 1, 2, ... counted per model since its fault was
last set) is hit when ``floor(n·r) > floor((n-1)·r)``. So ``error_rate=1`` fails every
request, ``0.5`` fails the 2nd, 4th, 6th..., ``0.25`` the 4th, 8th..., and any window of k
requests holds ``k·r`` hits give or take one. Each rate (timeout, error, malformed,
malformed body) runs on the same request index; when several hit one request, the first of
timeout, error, malformed, malformed body wins. Two equal rates therefore hit the same
requests and only the first of them shows: ``error_rate=0.15, malformed_body_rate=0.2``
fails 15% with errors and 15% with malformed bodies (every 20th request is hit by both and
answered an error). ``latency_s`` delays every answer that is not a hang; with
``latency_jitter`` j the n-th request's delay is ``latency_s · (1 + j·(2·frac(n·φ) - 1))``
(φ the golden ratio): spread evenly over ``latency_s · [1 - j, 1 + j]``, deterministically, so
``latency_s=0.4, latency_jitter=0.5`` delays answers 0.2 s to 0.6 s.

``malformed_rate`` garbles a chat answer's *content* (a valid completion whose content is not
JSON); ``malformed_body_rate`` answers 200 with a *body* that is not a chat completion at all,
its shape taking each of :data:`MALFORMED_BODIES` in turn (the k-th malformed body of a model
since its fault was set is ``MALFORMED_BODIES[(k - 1) % 4]``): JSON cut mid-object, a JSON
object without ``choices``, one with ``choices: []``, and a gateway's HTML error page.

``score_offset`` N is not a rate: every song-score answer of the model (the song-score
convention of :mod:`fakeupstream.app`) has its ``score`` shifted by N and clamped to 0..100,
a valid 200 with wrong scores (a fine-tune that regressed). The request is otherwise answered
as usual and counted ``success``; when a rate hits it, that fault is answered instead.

The fault for model ``*`` applies to every model that has none of its own.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WILDCARD = "*"
Action = Literal["ok", "timeout", "error", "malformed", "malformed_body"]
MalformedBody = Literal["truncated_json", "no_choices", "empty_choices", "html_error_page"]
# The shapes a malformed body takes, in turn.
MALFORMED_BODIES: tuple[MalformedBody, ...] = (
    "truncated_json",
    "no_choices",
    "empty_choices",
    "html_error_page",
)


class Fault(BaseModel):
    """The body of ``PUT /admin/faults/{model}``."""

    model_config = ConfigDict(extra="forbid")

    latency_s: float = Field(default=0.0, ge=0, le=3600, description="Delay before answering.")
    latency_jitter: float = Field(
        default=0.0, ge=0, le=1, description="Each delay is latency_s x (1 +- up to this share)."
    )
    error_rate: float = Field(default=0.0, ge=0, le=1, description="Share answered status_code.")
    timeout_rate: float = Field(default=0.0, ge=0, le=1, description="Share that hang hang_s.")
    malformed_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of chat answers whose content is not JSON."
    )
    malformed_body_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of chat answers that are 200 with a body that is not a chat completion.",
    )
    status_code: int = Field(default=500, ge=400, le=599, description="Status of injected errors.")
    hang_s: float = Field(
        default=300.0, ge=0, le=3600, description="How long a timed-out request hangs."
    )
    retry_after_s: int = Field(
        default=1, ge=0, le=86_400, description="Retry-After of injected 429 answers."
    )
    score_offset: int = Field(
        default=0,
        ge=-100,
        le=100,
        description="Added to every song-score answer's score (clamped to 0..100).",
    )


# The golden ratio's fractional part: n·φ mod 1 spreads evenly over [0, 1) (a Weyl sequence).
_GOLDEN = (math.sqrt(5) - 1) / 2


def jittered_latency(index: int, fault: Fault) -> float:
    """The delay of the ``index``-th request (1, 2, ...) under ``fault`` (see the module doc)."""
    spread = 2 * ((index * _GOLDEN) % 1.0) - 1  # in [-1, 1)
    return fault.latency_s * (1 + fault.latency_jitter * spread)


def _hit(index: int, rate: float) -> bool:
    exact = Fraction(rate).limit_denominator(1_000_000)
    return (index * exact).__floor__() > ((index - 1) * exact).__floor__()


@dataclass
class _ModelFault:
    fault: Fault
    requests_seen: int = 0
    malformed_bodies: int = 0


@dataclass(frozen=True)
class Decision:
    """What to do with one request: the action, the fault in force, when the action is
    ``malformed_body`` the shape of the body, and the delay before answering (``latency_s``
    with its jitter applied; a hang waits ``hang_s`` instead)."""

    action: Action
    fault: Fault
    malformed_body: MalformedBody | None = None
    latency_s: float = 0.0


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
        decision = self.decision(model)
        return decision.action, decision.fault

    def decision(self, model: str) -> Decision:
        """:meth:`decide`, with the malformed body's shape when that is the action."""
        with self._lock:
            entry = self._faults.get(model) or self._faults.get(WILDCARD)
            if entry is None:
                return Decision("ok", Fault())
            entry.requests_seen += 1
            n, fault = entry.requests_seen, entry.fault
            if _hit(n, fault.timeout_rate):
                return Decision("timeout", fault)
            latency = jittered_latency(n, fault)
            if _hit(n, fault.error_rate):
                return Decision("error", fault, latency_s=latency)
            if _hit(n, fault.malformed_rate):
                return Decision("malformed", fault, latency_s=latency)
            if _hit(n, fault.malformed_body_rate):
                shape = MALFORMED_BODIES[entry.malformed_bodies % len(MALFORMED_BODIES)]
                entry.malformed_bodies += 1
                return Decision("malformed_body", fault, shape, latency)
        return Decision("ok", fault, latency_s=latency)

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

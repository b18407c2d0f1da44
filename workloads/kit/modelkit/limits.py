"""Admission control: a bounded number of model requests run, a bounded number wait.

One :class:`ConcurrencyLimiter` per app (the kit's middleware owns it; settings
``MAX_CONCURRENT_REQUESTS`` and ``MAX_QUEUED_REQUESTS``):

- a request is *admitted* when fewer than ``max_running + max_queued`` are admitted; any other
  is answered at once with 429 ``rate_limit_error``, code ``capacity_exceeded``, and a
  ``Retry-After`` of the recent mean run time (whole seconds, at least 1). It is counted as
  ``rejected``: the limit is the service's published capacity, and a slow canary shows up in
  its latency gates, not in shed load;
- an admitted request reads its body, then waits in arrival order for one of the
  ``max_running`` run slots. So the request bodies held in memory never exceed
  ``(max_running + max_queued) * MAX_REQUEST_BYTES``;
- ``max_running = 0`` means no limit (the kit's default, for apps that are not model
  services, such as the fake upstream); every model service sets its own default.

The rate limit per client (:mod:`modelkit.ratelimit`, ``RATE_LIMIT_PER_MINUTE``, code
``rate_limit_exceeded``) is separate from this and checked before it: that one shares the
service fairly between callers; this one bounds the work in the process, whatever its callers.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from modelkit.errors import ServiceError, rate_limited
from modelkit.health import Check

# Weight of the newest run time in the moving mean behind Retry-After.
_MEAN_WEIGHT = 0.2


class ConcurrencyLimiter:
    """``max_running`` requests run at once; ``max_queued`` more wait; the rest get 429."""

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.admitted = 0
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._mean_run_s: float | None = None

    @property
    def unlimited(self) -> bool:
        return self.max_running == 0

    @property
    def waiting(self) -> int:
        """Admitted requests not running yet (reading their body or queued for a slot)."""
        return self.admitted - self.running

    def admit(self) -> ServiceError | None:
        """Take a place for a new request, or return the 429 to answer instead."""
        if not self.unlimited and self.admitted >= self.max_running + self.max_queued:
            return rate_limited(
                f"the service is at capacity: {self.max_running} requests running and "
                f"{self.max_queued} queued (MAX_CONCURRENT_REQUESTS, MAX_QUEUED_REQUESTS); "
                "retry after Retry-After seconds",
                retry_after_s=self.retry_after_s(),
                code="capacity_exceeded",
                outcome="rejected",
            )
        self.admitted += 1
        return None

    def try_start(self) -> bool:
        """Take a run slot for an admitted request if one is free now with nobody ahead."""
        if self.unlimited or (self.running < self.max_running and not self._waiters):
            self.running += 1
            return True
        return False

    async def start(self) -> None:
        """Wait, in arrival order, for a run slot for an admitted request.

        Cancelled while waiting (the client left), the request gives up its turn; a slot
        handed over at the moment of cancellation is passed on to the next in line.
        """
        if self.try_start():
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._hand_over()  # the slot was ours already: give it to the next in line
            else:
                self._waiters.remove(turn)
            raise

    def finish(self, *, started: bool, run_s: float | None = None) -> None:
        """Release an admitted request's place (and its run slot when it had one)."""
        self.admitted -= 1
        if run_s is not None:
            self._mean_run_s = (
                run_s
                if self._mean_run_s is None
                else (1 - _MEAN_WEIGHT) * self._mean_run_s + _MEAN_WEIGHT * run_s
            )
        if started:
            self._hand_over()

    def _hand_over(self) -> None:
        """A run slot is free: the next waiter gets it, or it goes back to the pool."""
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # running stays the same: the slot changes hands
                return
        self.running -= 1

    def retry_after_s(self) -> int:
        """Seconds a refused caller should wait: the recent mean run time, at least 1."""
        return max(1, math.ceil(self._mean_run_s or 1.0))

    def check(self) -> Check:
        """The /health ``capacity`` check: saturation is reported, never unhealthy."""
        if self.unlimited:
            return Check.ok(f"{self.running} running (no limit)")
        return Check.ok(
            f"{self.admitted} of {self.max_running + self.max_queued} places taken: "
            f"{self.running} running (MAX_CONCURRENT_REQUESTS {self.max_running}), "
            f"{self.waiting} waiting (MAX_QUEUED_REQUESTS {self.max_queued})"
        )

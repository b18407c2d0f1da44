"""How song-analyzer calls its model provider: bounded concurrency, retries, one deadline.

- :class:`UpstreamSlots` bounds the upstream calls in flight in the process
  (``UPSTREAM_MAX_CONCURRENCY``). It is apart from the kit's ``MAX_CONCURRENT_REQUESTS``
  (requests into the service): a request takes a slot only for the length of one try, after
  its cache lookup, so a cache hit never waits for one and a request waiting to retry holds
  none.
- :class:`RetryPolicy` retries an upstream 429 or 5xx at most ``UPSTREAM_MAX_RETRIES`` times,
  waiting ``max(base·2^k, Retry-After) + uniform(0, base·2^k)`` before retry k (k = 0, 1, ...;
  ``base`` is ``UPSTREAM_RETRY_BASE_DELAY_S``): exponential back-off, never sooner than the
  provider asked, with jitter so the callers it refused together do not come back together.
  Any other failure (another 4xx, a timeout, an unreachable provider, an unusable answer) is
  answered at once: a retry would not change it, or there is no time left for one.
- :func:`call_with_retries` runs the tries under one deadline (``LLM_TIMEOUT``) for the whole
  of it: waiting for a slot, every try and every back-off. A back-off that would end past the
  deadline is not waited out: the last failure is answered at once (a provider's Retry-After
  of an hour is a 429 now, not a 504 after ``LLM_TIMEOUT``).

The openai SDK's own retries stay off (:func:`modelkit.upstream_client` sets
``max_retries=0``): this is the one retry mechanism, and each of its tries is counted in
``model_upstream_requests_total`` with its own outcome, so a canary's failing tries show in
its metrics even when a retry saves the request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import openai
from modelkit import Check, ServiceError, upstream_message, upstream_timeout

log = logging.getLogger("song_analyzer.upstream")

AnswerT = TypeVar("AnswerT")


class UpstreamSlots:
    """At most ``limit`` upstream calls in flight; the others wait, in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.waiting = 0
        self._semaphore = asyncio.Semaphore(limit)

    @asynccontextmanager
    async def taken(self, deadline: float, *, model: str) -> AsyncIterator[None]:
        """Hold a slot for the block; 504 when none frees before ``deadline`` (loop time)."""
        self.waiting += 1
        try:
            async with asyncio.timeout_at(deadline):
                await self._semaphore.acquire()
        except TimeoutError:
            log.warning(
                "no upstream slot was free before the deadline",
                extra={"fields": {"model": model, "upstream_max_concurrency": self.limit}},
            )
            raise upstream_timeout(upstream_message("timeout", model)) from None
        finally:
            self.waiting -= 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._semaphore.release()

    def check(self) -> Check:
        """The /health ``upstream_slots`` check: a full house is load, never unhealthy."""
        return Check.ok(
            f"{self.in_flight} of {self.limit} upstream calls in flight "
            f"(UPSTREAM_MAX_CONCURRENCY), {self.waiting} waiting"
        )


def retry_after_s(error: openai.APIStatusError) -> float | None:
    """The wait the provider asked for, in seconds: ``retry-after-ms``, or ``retry-after`` as
    seconds or an HTTP date; None when it asked for none (or said something unreadable)."""
    headers = error.response.headers
    for name, seconds_per_unit in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * seconds_per_unit
        except ValueError:
            try:
                when = parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            value = (when - datetime.now(UTC)).total_seconds()
        if math.isnan(value):
            continue
        return max(0.0, value)  # +inf stays: a wait no deadline allows
    return None


def retryable(error: ServiceError) -> openai.APIStatusError | None:
    """The provider's 429 or 5xx behind ``error`` (the kit raises the mapped error from the
    SDK's), or None when ``error`` is not worth a retry."""
    cause = error.__cause__
    if isinstance(cause, openai.APIStatusError) and (cause.status_code == 429 or cause.status_code >= 500):
        return cause
    return None


@dataclass
class RetryPolicy:
    """Which failures are retried, how often, and how long to wait before each retry."""

    max_retries: int
    base_delay_s: float
    jitter: random.Random = field(default_factory=random.Random)

    def wait_before_retry(self, error: ServiceError, retries_done: int) -> float | None:
        """Seconds to wait before the next try after ``error``; None: answer ``error``."""
        provider_error = retryable(error)
        if provider_error is None or retries_done >= self.max_retries:
            return None
        step = self.base_delay_s * 2.0**retries_done
        asked = retry_after_s(provider_error) or 0.0
        return max(step, asked) + self.jitter.uniform(0.0, step)


async def call_with_retries(
    try_once: Callable[[float], Awaitable[AnswerT]],
    *,
    model: str,
    policy: RetryPolicy,
    slots: UpstreamSlots,
    timeout_s: float,
) -> AnswerT:
    """``try_once(seconds_left)``'s answer, retried by ``policy``, all within ``timeout_s``.

    ``try_once`` makes one upstream call, bounded by the seconds it is given, and raises the
    :class:`ServiceError` to answer when it fails (counted by the kit as one upstream request).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    retries_done = 0
    while True:
        async with slots.taken(deadline, model=model):
            try:
                return await try_once(deadline - loop.time())
            except ServiceError as error:
                failure = error  # decided on below, once the slot is free for others
        wait_s = policy.wait_before_retry(failure, retries_done)
        if wait_s is None:
            raise failure
        if loop.time() + wait_s >= deadline:
            log.warning(
                "not retrying the upstream call: the back-off would pass the deadline",
                extra={"fields": {"model": model, "code": failure.code,
                                  "wait_s": round(wait_s, 3),
                                  "seconds_left": round(deadline - loop.time(), 3)}},
            )  # fmt: skip
            raise failure
        retries_done += 1
        log.info(
            "retrying the upstream call",
            extra={"fields": {"model": model, "code": failure.code, "retry": retries_done,
                              "wait_s": round(wait_s, 3)}},
        )  # fmt: skip
        await asyncio.sleep(wait_s)

"""Rate limit per client: each client may send ``RATE_LIMIT_PER_MINUTE`` model requests a minute.

One :class:`ClientRateLimiter` per app (the kit's middleware owns it, next to the
:class:`~modelkit.limits.ConcurrencyLimiter`, which bounds the work in the process whatever
its callers; this one shares that work fairly between them):

- *who* a request is counted against (:func:`client_of`): its API key when it carries one
  (``X-API-Key``, else ``Authorization: Bearer``), else the address it connected from (the
  ASGI scope's client host). A key is kept only as a keyed hash with a per-process secret,
  never as itself, and is never logged. ``X-Forwarded-For`` is not trusted: any caller can
  write it, so counting by it would let a caller pick a fresh budget per request; behind an
  ingress every caller therefore has the ingress's address (see the default below). (The
  address is the peer as the server reports it: uvicorn takes it from ``X-Forwarded-For``
  only when the peer is in its ``FORWARDED_ALLOW_IPS``, by default 127.0.0.1, a proxy in the
  same pod, and then the entry that proxy appended, not what the caller wrote.)
- a key is only as trustworthy as what checks it. With ``API_KEY`` set, the kit refuses
  every key but the service's one before the limit is consulted (401), so all authorised
  callers share that key's budget. With ``API_KEY`` unset, a key is whatever the caller sends,
  and a caller who changes it per request gets a budget per request: the limit then shares
  the service fairly between callers who identify themselves, it does not stop one who lies;
- the algorithm is a token bucket per client, capacity ``RATE_LIMIT_PER_MINUTE``, refilled
  continuously at that many a minute, kept as one number: the moment the bucket is full
  again (the generic cell rate algorithm). A request takes a token or gets 429
  ``rate_limit_error``, code ``rate_limit_exceeded``, with ``Retry-After`` = the whole
  seconds until the next token (at least 1), counted ``rejected`` (the caller's fault);
- memory is bounded: a full bucket is the same as no bucket, so buckets full again (all
  those idle for over a minute, at the latest) are dropped, and at most ``max_clients``
  (10,000) are kept, the least recently used dropped first. So a flood of distinct addresses
  or keys cannot grow memory; its cost is that a client evicted by one starts afresh;
- ``RATE_LIMIT_PER_MINUTE = 0`` (the default) means no limit: clients behind one ingress, or
  behind the sandbox's data plane, share one address, and a default per-address limit would
  throttle them all as one client. A deployment that knows its clients sets it.

Only model requests are counted (not /health, /metrics, the service's ``uncounted_paths``,
nor a CORS preflight ``OPTIONS``), after authentication and before the body is read or a
place in the concurrency limiter is taken, so a limited client costs almost nothing. The
limit is per process: with R replicas behind a load balancer a client may get up to R times
it. Everything runs on the event loop's thread, so no lock is needed.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import Scope

from modelkit.errors import ServiceError, rate_limited

MAX_CLIENTS = 10_000
WINDOW_S = 60.0
# Float rounding forgiven when comparing moments, so that N requests in one instant always fit
# a bucket of N, whatever the clock reads.
_ROUNDING_S = 1e-6
# The secret of the keyed hash of API keys: the bucket table holds neither a key nor a digest
# that could be checked against guessed keys.
_KEY_HASH_SECRET = secrets.token_bytes(32)


@dataclass(frozen=True)
class Client:
    """Whom a request is counted against: ``bucket`` keys the table, ``described`` names it
    in the 429's message (never the key itself)."""

    bucket: str
    described: str


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def client_of(scope: Scope, headers: Headers) -> Client:
    """The request's API key (as a keyed hash), else its connection's address; never
    ``X-Forwarded-For``, which any caller can write."""
    key = headers.get("x-api-key") or _bearer_token(headers.get("authorization"))
    if key:
        digest = hashlib.blake2b(key.encode(), key=_KEY_HASH_SECRET, digest_size=16).hexdigest()
        return Client(bucket=f"key:{digest}", described="this API key")
    peer = scope.get("client")
    host = str(peer[0]) if peer else "unknown"
    return Client(bucket=f"address:{host}", described="this client address")


class ClientRateLimiter:
    """A token bucket of ``per_minute`` per client; ``per_minute = 0`` means no limit.

    ``clock`` gives monotonic seconds (``time.monotonic``); tests replace it to move time on.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self.clock = clock
        # Bucket → the moment it is full again; least recently used first.
        self._full_at: OrderedDict[str, float] = OrderedDict()

    @property
    def unlimited(self) -> bool:
        return self.per_minute == 0

    @property
    def clients(self) -> int:
        """Buckets kept: clients that are not back to a full budget yet."""
        return len(self._full_at)

    def take(self, client: Client) -> ServiceError | None:
        """Take a token from ``client``'s bucket, or return the 429 to answer instead."""
        if self.unlimited:
            return None
        now = self.clock()
        self._drop_full(now)
        full_at = max(self._full_at.get(client.bucket, now), now) + WINDOW_S / self.per_minute
        wait_s = full_at - now - WINDOW_S
        if wait_s > _ROUNDING_S:
            # Only a kept bucket can be empty; a client still sending stays remembered.
            self._full_at.move_to_end(client.bucket)
            return rate_limited(
                f"rate limit reached for {client.described}: {self.per_minute} requests a "
                f"minute per client (RATE_LIMIT_PER_MINUTE); retry after Retry-After seconds",
                retry_after_s=math.ceil(wait_s),
                code="rate_limit_exceeded",
                outcome="rejected",
            )
        self._full_at[client.bucket] = full_at
        self._full_at.move_to_end(client.bucket)
        while len(self._full_at) > self.max_clients:
            self._full_at.popitem(last=False)
        return None

    def _drop_full(self, now: float) -> None:
        """Drop buckets full again from the least recently used end. One idle for over a
        minute was full by then, and so is every one used before it: all of those go."""
        while self._full_at:
            bucket, full_at = next(iter(self._full_at.items()))
            if full_at > now:
                return
            del self._full_at[bucket]

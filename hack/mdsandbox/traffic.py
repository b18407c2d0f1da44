"""A bounded background traffic generator for a model service behind the sandbox's data plane.

Analysis needs live traffic: the integration tests, the demo and ``hack/bench rollback``
run one of these against a Service (``sandbox.service_url(namespace, name)``) while a
rollout runs. It posts requests at a steady rate from a background thread, records the
outcome of every request and the pod that served it (the data plane's ``X-Sandbox-Pod``
header), and always ends: after ``max_requests`` requests, after ``max_seconds``, or on
``stop()``, whichever comes first.

API::

    from mdsandbox.traffic import TrafficGenerator, song_request

    with TrafficGenerator(url + "/analyze", body=song_request, rate=15) as traffic:
        ...                                   # the rollout runs; traffic flows
        mark = traffic.mark()                 # an index into traffic.responses()
        ...
        recent = traffic.responses(since=mark)
        TrafficGenerator.pods(recent)         # Counter {"ns/pod": n}
        TrafficGenerator.statuses(recent)     # Counter {200: n, 502: m, None: k}
    # leaving the block stops the thread and waits for requests in flight

    # or: a fixed sample, waited for
    sample = TrafficGenerator(url, body=song_request, rate=20, max_requests=40).run()

- ``body``: the JSON body of request ``n`` (0, 1, 2, ...) as a callable, so bodies can
  differ (song-analyzer caches repeated songs: :func:`song_request` makes distinct
  lyrics), or one fixed JSON value, or None for an empty body.
- ``rate``: requests started per second, at most; ``concurrency`` requests in flight at
  most (a slow service lowers the rate rather than piling requests up; no catch-up
  bursts afterwards).
- ``timeout_s``: the client's timeout per request; a request with no answer in time, or
  no answer at all, is recorded with ``status=None`` and ``error`` set.
- ``max_requests`` / ``max_seconds``: the bounds; ``join(timeout)`` waits for them,
  ``stop()`` ends early. Both wait for requests in flight (at most ``timeout_s``).
- :class:`Response` fields: ``index``, ``started`` (``time.monotonic()``), ``elapsed_s``,
  ``status`` (None: no HTTP answer), ``pod`` (``"namespace/pod"`` or None), ``error``,
  ``ok`` (a 2xx answer).

Thread-safe: ``responses()`` returns a snapshot and may be called while traffic runs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

POD_HEADER = "X-Sandbox-Pod"
Body = Callable[[int], Any] | dict[str, Any] | list[Any] | None


@dataclass(frozen=True)
class Response:
    """What happened to one request."""

    index: int
    started: float
    elapsed_s: float
    status: int | None
    pod: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def song_request(n: int) -> dict[str, str]:
    """A valid song-analyzer ``POST /analyze`` body, distinct for every ``n`` (no cache hits)."""
    return {
        "artist": "Traffic",
        "title": f"Song {n}",
        "lyrics": f"Verse {n}: under the neon rain we count the seconds, chorus {n * 7919 % 1000}",
    }


def image_request(n: int) -> dict[str, str]:
    """A valid image-gen ``POST /submit`` body (no size or quality: every model accepts it)."""
    return {"prompt": f"a lighthouse in a storm, study {n}"}


class TrafficGenerator:
    """Posts requests to ``url`` at ``rate`` per second from a background thread."""

    def __init__(
        self,
        url: str,
        body: Body = None,
        *,
        rate: float = 10.0,
        concurrency: int = 8,
        max_requests: int = 10_000,
        max_seconds: float = 300.0,
        timeout_s: float = 30.0,
        method: str = "POST",
        headers: dict[str, str] | None = None,
    ) -> None:
        if rate <= 0 or concurrency < 1 or max_requests < 1 or max_seconds <= 0:
            raise ValueError("rate, concurrency, max_requests and max_seconds must be positive")
        self.url = url
        self.rate = rate
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout_s = timeout_s
        self.method = method
        self._body = body
        self._headers = headers or {}
        self._responses: list[Response] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._slots = threading.Semaphore(concurrency)
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> TrafficGenerator:
        if self._thread is not None:
            raise RuntimeError("a TrafficGenerator runs once; make a new one")
        self._client = httpx.Client(
            timeout=self.timeout_s,
            limits=httpx.Limits(max_connections=self.concurrency,
                                max_keepalive_connections=self.concurrency),
        )
        self._thread = threading.Thread(target=self._dispatch, name="traffic", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the bounds are reached and every request answered; True when done."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Stop sending, wait for requests in flight (at most ``timeout_s``), close."""
        self._stopping.set()
        self.join(self.timeout_s + 5)

    def run(self) -> list[Response]:
        """Start, wait for the bounds, and return every response (a blocking sample)."""
        self.start()
        self.join()
        return self.responses()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> TrafficGenerator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- results ---------------------------------------------------------------------

    def responses(self, since: int = 0) -> list[Response]:
        """Responses recorded so far (in the order they finished), from index ``since`` on."""
        with self._lock:
            return self._responses[since:]

    def mark(self) -> int:
        """The number of responses recorded so far: pass it to ``responses(since=...)``."""
        with self._lock:
            return len(self._responses)

    @staticmethod
    def pods(responses: Iterable[Response]) -> Counter[str | None]:
        return Counter(r.pod for r in responses)

    @staticmethod
    def statuses(responses: Iterable[Response]) -> Counter[int | None]:
        return Counter(r.status for r in responses)

    # -- the thread ------------------------------------------------------------------

    def _payload(self, n: int) -> Any:
        return self._body(n) if callable(self._body) else self._body

    def _dispatch(self) -> None:
        assert self._client is not None
        period = 1.0 / self.rate
        started = time.monotonic()
        deadline = started + self.max_seconds
        next_at = started
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="traffic") as pool:
            for n in range(self.max_requests):
                wait = next_at - time.monotonic()
                if wait > 0 and self._stopping.wait(wait):
                    break
                if not self._take_slot(deadline):
                    break
                pool.submit(self._send, n)
                next_at = max(next_at + period, time.monotonic())
        self._client.close()

    def _take_slot(self, deadline: float) -> bool:
        """Wait for a free slot; False when stopped or past the deadline instead."""
        while not self._slots.acquire(timeout=0.1):
            if self._stopping.is_set() or time.monotonic() >= deadline:
                return False
        if self._stopping.is_set() or time.monotonic() >= deadline:
            self._slots.release()
            return False
        return True

    def _send(self, n: int) -> None:
        assert self._client is not None
        began = time.monotonic()
        status: int | None = None
        pod: str | None = None
        error: str | None = None
        try:
            payload = self._payload(n)
            response = self._client.request(
                self.method, self.url, headers=self._headers,
                json=payload if payload is not None else None,
            )
            status = response.status_code
            pod = response.headers.get(POD_HEADER)
            if status >= 400:
                error = response.text[:200]
        except Exception as exc:  # no answer (transport, timeout) or a bad body factory
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._slots.release()
        with self._lock:
            self._responses.append(
                Response(n, began, time.monotonic() - began, status, pod, error)
            )

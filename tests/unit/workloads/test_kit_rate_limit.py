"""modelkit's rate limit per client (RATE_LIMIT_PER_MINUTE): over real HTTP against a real kit
app, each API key (else each client address) has its own budget; beyond it a 429 with
Retry-After, counted as rejected; probes and scrapes are never limited; the bucket table
stays bounded. Time is a clock the test moves, never a sleep."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from modelkit import ConfigurationError, ServiceSettings, create_app, parse_settings
from modelkit.ratelimit import Client, ClientRateLimiter, client_of
from modelkit.testing import scrape, serve_app, wait_for
from pydantic import BaseModel
from starlette.datastructures import Headers


class Work(BaseModel):
    name: str


@dataclass
class FakeClock:
    """Monotonic seconds that move only when the test says."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Demo:
    """A kit app with one model route, ``POST /work``, that notes what it served."""

    url: str
    clock: FakeClock
    served: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def post(self, name: str, *, key: str | None = None, address: str = "127.0.0.1",
             headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:  # fmt: skip
        """POST /work from ``address`` (any 127.0.0.0/8 address is this host's loopback)."""
        sent = {**({"X-API-Key": key} if key else {}), **(headers or {})}
        kwargs.setdefault("json", {"name": name})
        transport = httpx.HTTPTransport(local_address=address)
        with httpx.Client(transport=transport, timeout=10) as client:
            return client.post(self.url + "/work", headers=sent, **kwargs)


@contextmanager
def serving(*, hold: bool = False, **settings: Any) -> Iterator[Demo]:
    """A demo app under ``settings`` whose rate limiter reads a clock the test moves; with
    ``hold``, the route runs until ``demo.release`` is set."""
    clock = FakeClock()
    holder: dict[str, Demo] = {}
    app: FastAPI = create_app(ServiceSettings(**settings), service="demo", models=["demo-model"])
    app.state.rate_limiter.clock = clock

    @app.post("/work")
    async def work(body: Work) -> dict[str, str]:
        demo = holder["demo"]
        demo.served.append(body.name)
        while hold and not demo.release.is_set():  # the fake's own wait, until the test says
            await asyncio.sleep(0.01)
        return {"done": body.name}

    with serve_app(app) as url:
        holder["demo"] = Demo(url, clock)
        try:
            yield holder["demo"]
        finally:
            holder["demo"].release.set()


def _assert_rate_limited(response: httpx.Response, *, retry_after_s: int) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) == retry_after_s
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "RATE_LIMIT_PER_MINUTE" in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]


def test_two_api_keys_have_independent_budgets() -> None:
    with serving(rate_limit_per_minute=2) as demo:
        alice = [demo.post(f"alice-{i}", key="key-alice") for i in range(3)]
        bob = [demo.post(f"bob-{i}", key="key-bob") for i in range(2)]
        # The same key sent the way the openai SDK sends one shares its budget.
        alice_as_bearer = demo.post("alice-bearer", headers={"Authorization": "Bearer key-alice"})

    assert [r.status_code for r in alice] == [200, 200, 429]
    assert [r.status_code for r in bob] == [200, 200]
    _assert_rate_limited(alice_as_bearer, retry_after_s=30)
    assert demo.served == ["alice-0", "alice-1", "bob-0", "bob-1"]


def test_a_client_over_its_limit_gets_a_429_with_retry_after_counted_as_rejected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with serving(rate_limit_per_minute=2) as demo:
        allowed = [demo.post(f"req-{i}", key="sk-secret-key-1") for i in range(2)]
        refused = demo.post("req-2", key="sk-secret-key-1")
        metrics = scrape(demo.url)

    assert [r.status_code for r in allowed] == [200, 200]
    # Two tokens a minute: the next one is back in 30 s.
    _assert_rate_limited(refused, retry_after_s=30)
    assert "sk-secret-key-1" not in refused.text
    assert "sk-secret-key-1" not in caplog.text
    assert demo.served == ["req-0", "req-1"]
    assert metrics.value("model_requests_total", route="/work", outcome="rejected") == 1
    assert metrics.value("model_requests_total", route="/work", outcome="success") == 2


def test_a_limited_client_is_refused_before_its_body_is_read() -> None:
    with serving(rate_limit_per_minute=1, max_request_bytes=64) as demo:
        assert demo.post("first").status_code == 200
        # Over MAX_REQUEST_BYTES too: the rate limit answers first, the body is never read.
        refused = demo.post("second", content=b"x" * 1024,
                            headers={"Content-Type": "application/json"})  # fmt: skip

    _assert_rate_limited(refused, retry_after_s=60)


def test_a_limited_client_is_refused_before_taking_a_concurrency_place() -> None:
    settings = {"rate_limit_per_minute": 1, "max_concurrent_requests": 1, "max_queued_requests": 0}
    with ThreadPoolExecutor(1) as pool, serving(hold=True, **settings) as demo:
        held = pool.submit(demo.post, "held", key="key-busy")
        wait_for(lambda: demo.served == ["held"], timeout_s=10, what="the first request to run")
        # The service is at capacity, but this client's own budget is what refuses it.
        refused = demo.post("over", key="key-busy")
        other = demo.post("other", key="key-other")
        demo.release.set()

        assert held.result().status_code == 200
    _assert_rate_limited(refused, retry_after_s=60)
    assert (other.status_code, other.json()["error"]["code"]) == (429, "capacity_exceeded")


def test_health_metrics_and_preflight_are_never_limited_nor_spend_a_budget() -> None:
    with serving(rate_limit_per_minute=1) as demo:
        unlimited = []
        for _ in range(3):
            unlimited.append(httpx.get(demo.url + "/health", timeout=10))
            unlimited.append(httpx.get(demo.url + "/metrics", timeout=10))
            unlimited.append(httpx.options(demo.url + "/work", timeout=10,
                                           headers={"Origin": "http://ui.example",
                                                    "Access-Control-Request-Method": "POST"}))  # fmt: skip
        first = demo.post("first")
        over = demo.post("over")
        after = [httpx.get(demo.url + path, timeout=10) for path in ("/health", "/metrics")]

    assert all(r.status_code != 429 for r in unlimited)
    assert first.status_code == 200
    _assert_rate_limited(over, retry_after_s=60)
    assert [r.status_code for r in after] == [200, 200]


def test_without_a_key_each_client_address_has_its_own_budget_whatever_x_forwarded_for_says() -> None:
    with serving(rate_limit_per_minute=1) as demo:
        # From 127.0.0.2, not the server's trusted proxy address (uvicorn's
        # FORWARDED_ALLOW_IPS, 127.0.0.1), as a client reaching the pod over the network.
        first = demo.post("a-1", address="127.0.0.2")
        second = demo.post("a-2", address="127.0.0.2")
        spoofed = demo.post("a-3", address="127.0.0.2", headers={"X-Forwarded-For": "10.9.8.7"})
        elsewhere = demo.post("b-1", address="127.0.0.3")

    assert first.status_code == 200
    _assert_rate_limited(second, retry_after_s=60)
    _assert_rate_limited(spoofed, retry_after_s=60)
    assert elsewhere.status_code == 200
    assert demo.served == ["a-1", "b-1"]


def test_the_budget_refills_as_the_clock_moves_on() -> None:
    with serving(rate_limit_per_minute=2) as demo:
        spent = [demo.post(f"early-{i}", key="key-refill") for i in range(2)]
        refused = demo.post("too-soon", key="key-refill")
        demo.clock.advance(29.5)
        still_refused = demo.post("still-too-soon", key="key-refill")
        demo.clock.advance(0.5)
        refilled = demo.post("refilled", key="key-refill")
        empty_again = demo.post("empty-again", key="key-refill")

    assert [r.status_code for r in spent] == [200, 200]
    _assert_rate_limited(refused, retry_after_s=30)
    _assert_rate_limited(still_refused, retry_after_s=1)  # half a second is rounded up
    assert refilled.status_code == 200
    _assert_rate_limited(empty_again, retry_after_s=30)


def test_with_the_default_there_is_no_limit() -> None:
    with serving() as demo:
        responses = [demo.post(f"req-{i}", key="key-default") for i in range(12)]

    assert [r.status_code for r in responses] == [200] * 12


def _client(name: str) -> Client:
    return Client(bucket=f"address:{name}", described="this client address")


@pytest.mark.parametrize(
    ("per_minute", "advance_s", "allowed_after"),
    [
        pytest.param(3, 0.0, 0, id="an empty bucket refuses at once"),
        pytest.param(3, 19.0, 0, id="less than one token's time refills nothing"),
        pytest.param(3, 20.0, 1, id="one token's time refills one"),
        pytest.param(3, 45.0, 2, id="refill is continuous"),
        pytest.param(3, 600.0, 3, id="refill stops at the bucket's capacity"),
    ],
)  # fmt: skip
def test_a_bucket_refills_continuously_up_to_its_capacity(
    per_minute: int, advance_s: float, allowed_after: int
) -> None:
    clock = FakeClock()
    limiter = ClientRateLimiter(per_minute, clock=clock)
    client = _client("10.0.0.1")
    assert [limiter.take(client) is None for _ in range(per_minute + 1)] == [True] * per_minute + [False]

    clock.advance(advance_s)
    outcomes = [limiter.take(client) is None for _ in range(per_minute + 1)]

    assert outcomes == [True] * allowed_after + [False] * (per_minute + 1 - allowed_after)


def test_the_bucket_table_stays_bounded_and_drops_idle_clients() -> None:
    clock = FakeClock()
    limiter = ClientRateLimiter(1, max_clients=100, clock=clock)
    for i in range(1000):  # a flood of distinct addresses
        assert limiter.take(_client(f"10.0.{i // 256}.{i % 256}")) is None
    assert limiter.clients == 100
    # The most recent are still remembered (and refused); the oldest were dropped first.
    assert limiter.take(_client("10.0.3.231")) is not None
    assert limiter.take(_client("10.0.0.0")) is None

    clock.advance(60.0)  # a minute idle: every bucket is full again, and none is kept
    assert limiter.take(_client("10.0.0.1")) is None
    assert limiter.clients == 1


def test_a_key_is_kept_only_as_a_hash_and_is_the_same_client_however_it_is_sent() -> None:
    scope = {"type": "http", "client": ("10.0.0.1", 5000)}
    by_header = client_of(scope, Headers({"x-api-key": "sk-secret-key-2"}))
    by_bearer = client_of(scope, Headers({"authorization": "Bearer sk-secret-key-2"}))
    other_key = client_of(scope, Headers({"x-api-key": "sk-secret-key-3"}))
    no_key = client_of(scope, Headers({"authorization": "Basic dXNlcjpwYXNz"}))

    assert by_header == by_bearer != other_key
    assert "sk-secret-key-2" not in by_header.bucket
    assert no_key.bucket == "address:10.0.0.1"


def test_a_negative_rate_limit_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "-1")
    with pytest.raises(ConfigurationError, match="RATE_LIMIT_PER_MINUTE"):
        parse_settings(ServiceSettings)


def test_a_service_started_with_a_negative_rate_limit_exits_naming_it_before_binding() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fakeupstream"],
        env={**os.environ, "HOST": "127.0.0.1", "PORT": "1", "RATE_LIMIT_PER_MINUTE": "-1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "RATE_LIMIT_PER_MINUTE" in result.stderr
    assert "Uvicorn running" not in result.stderr

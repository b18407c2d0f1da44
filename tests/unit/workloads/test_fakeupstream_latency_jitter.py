"""The fake upstream's latency jitter: each answer waits ``latency_s`` x (1 +- up to
``latency_jitter``), spread evenly and deterministically (a Weyl sequence over the request
index); driven through its /admin API and plain HTTP."""

from __future__ import annotations

import time

import httpx
from fakeupstream import FakeUpstreamClient
from fakeupstream.faults import Fault, FaultBook, jittered_latency

MODEL = "gpt-4o-mini"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}


def test_jittered_delays_spread_over_the_whole_range_deterministically() -> None:
    fault = Fault(latency_s=1.0, latency_jitter=0.5)
    delays = [jittered_latency(n, fault) for n in range(1, 201)]
    assert all(0.5 <= d < 1.5 for d in delays)
    # Evenly spread: each fifth of the range holds a fifth of the delays, give or take a few.
    fifths = [sum(1 for d in delays if 0.5 + 0.2 * k <= d < 0.7 + 0.2 * k) for k in range(5)]
    assert all(35 <= count <= 45 for count in fifths), fifths
    assert delays == [jittered_latency(n, fault) for n in range(1, 201)]
    # No jitter: every delay is latency_s.
    assert {jittered_latency(n, Fault(latency_s=0.3)) for n in range(1, 50)} == {0.3}


def test_decisions_carry_the_jittered_delay_and_errors_are_delayed_too() -> None:
    book = FaultBook()
    book.set("m", Fault(latency_s=2.0, latency_jitter=0.25, error_rate=0.5))
    decisions = [book.decision("m") for _ in range(4)]
    assert [d.action for d in decisions] == ["ok", "error", "ok", "error"]
    fault = Fault(latency_s=2.0, latency_jitter=0.25)
    assert [d.latency_s for d in decisions] == [jittered_latency(n, fault) for n in range(1, 5)]
    book.set("m", Fault(timeout_rate=1.0, latency_s=2.0, latency_jitter=0.25))
    assert book.decision("m").latency_s == 0.0  # a hang waits hang_s, not the latency
    assert book.decision("unfaulted").latency_s == 0.0


def test_answers_are_delayed_by_the_jittered_latency_over_http(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    fake_upstream.set_fault(MODEL, latency_s=0.4, latency_jitter=0.5)
    assert fake_upstream.faults()[MODEL]["latency_jitter"] == 0.5
    expected = [jittered_latency(n, Fault(latency_s=0.4, latency_jitter=0.5)) for n in range(1, 7)]
    elapsed: list[float] = []
    with httpx.Client(timeout=10) as client:
        for _ in expected:
            started = time.monotonic()
            response = client.post(fake_upstream_url + "/chat/completions", json=CHAT)
            elapsed.append(time.monotonic() - started)
            assert response.status_code == 200
    # Each answer waits at least its delay, and not much more (a loaded machine adds some).
    for took, delay in zip(elapsed, expected, strict=True):
        assert delay <= took < delay + 0.5, (elapsed, expected)
    assert min(expected) < 0.3 < max(expected)  # both halves of 0.2..0.6 s were seen
    # A 429 burst with jitter: every answer refused with Retry-After, after its delay.
    fake_upstream.set_fault(MODEL, latency_s=0.2, latency_jitter=0.5, error_rate=1.0,
                            status_code=429, retry_after_s=7)  # fmt: skip
    started = time.monotonic()
    refused = httpx.post(fake_upstream_url + "/chat/completions", json=CHAT, timeout=10)
    assert time.monotonic() - started >= jittered_latency(1, Fault(latency_s=0.2, latency_jitter=0.5))
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "7"

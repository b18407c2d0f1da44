"""modelkit's upstream helpers against the real fake upstream through the openai SDK."""

from __future__ import annotations

import asyncio

import openai
import pytest
from fakeupstream import FakeUpstreamClient
from modelkit import ServiceError, ServiceMetrics, upstream_error
from modelkit.testing import parse_metrics
from prometheus_client import generate_latest

MODEL = "gpt-4o-mini"


def _call(url: str, metrics: ServiceMetrics, timeout_s: float = 0.5) -> None:
    async def call() -> None:
        client = openai.AsyncOpenAI(base_url=url, api_key="test", timeout=timeout_s, max_retries=0)
        async with client:
            with metrics.upstream_call(MODEL):
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hello"}]
                )

    asyncio.run(call())


@pytest.mark.parametrize(
    ("fault", "status", "error_type", "outcome", "upstream_outcome"),
    [
        pytest.param({"timeout_rate": 1.0, "hang_s": 5.0}, 504, "timeout_error", "timeout",
                     "timeout", id="an upstream that hangs past the timeout is a 504 timeout"),
        pytest.param({"error_rate": 1.0, "status_code": 500}, 502, "upstream_error", "error",
                     "error", id="an upstream 500 is a 502 upstream error"),
        pytest.param({"error_rate": 1.0, "status_code": 503}, 502, "upstream_error", "error",
                     "error", id="an upstream 503 is a 502 upstream error"),
        pytest.param({"error_rate": 1.0, "status_code": 429}, 429, "rate_limit_error", "error",
                     "error", id="an upstream 429 is a 429 with Retry-After counted as error"),
        pytest.param({"error_rate": 1.0, "status_code": 400}, 400, "invalid_request_error",
                     "rejected", "error", id="an upstream 400 is the caller's fault"),
        pytest.param({"error_rate": 1.0, "status_code": 401}, 502, "upstream_error", "error",
                     "error", id="an upstream 401 is the service's misconfiguration"),
    ],
)  # fmt: skip
def test_upstream_failures_map_to_openai_errors_and_outcomes(
    fake_upstream: FakeUpstreamClient,
    fake_upstream_url: str,
    fault: dict[str, float],
    status: int,
    error_type: str,
    outcome: str,
    upstream_outcome: str,
) -> None:
    fake_upstream.set_fault(MODEL, **fault)  # type: ignore[arg-type]
    metrics = ServiceMetrics()
    with pytest.raises(ServiceError) as raised:
        _call(fake_upstream_url, metrics)
    error = raised.value
    assert (error.status, error.error_type, error.outcome) == (status, error_type, outcome)
    assert MODEL in error.message or "refused" in error.message
    if status == 429:
        assert error.headers["Retry-After"] == "1"
    samples = parse_metrics(generate_latest(metrics.registry).decode())
    assert samples.value("model_upstream_requests_total", model=MODEL, outcome=upstream_outcome) == 1


def test_unreachable_upstream_is_a_502_upstream_error() -> None:
    metrics = ServiceMetrics()
    with pytest.raises(ServiceError) as raised:
        _call("http://127.0.0.1:9/v1", metrics)
    assert (raised.value.status, raised.value.error_type) == (502, "upstream_error")
    assert raised.value.code == "upstream_unreachable"


def test_successful_call_is_counted_and_resets_consecutive_failures(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    metrics = ServiceMetrics()
    metrics.upstream_health.degraded_after = 2
    fake_upstream.set_fault(MODEL, error_rate=1.0)
    for _ in range(2):
        with pytest.raises(ServiceError):
            _call(fake_upstream_url, metrics)
    assert metrics.upstream_health.check().status == "degraded"
    fake_upstream.reset()
    _call(fake_upstream_url, metrics)
    assert metrics.upstream_health.check().status == "ok"
    samples = parse_metrics(generate_latest(metrics.registry).decode())
    assert samples.value("model_upstream_requests_total", model=MODEL, outcome="success") == 1
    assert samples.value("model_upstream_requests_total", model=MODEL, outcome="error") == 2


def test_a_service_error_raised_inside_the_call_is_counted_as_its_outcome() -> None:
    metrics = ServiceMetrics()
    with pytest.raises(ServiceError), metrics.upstream_call(MODEL):
        raise upstream_error("the model answered something that is not JSON")
    samples = parse_metrics(generate_latest(metrics.registry).decode())
    assert samples.value("model_upstream_requests_total", model=MODEL, outcome="error") == 1

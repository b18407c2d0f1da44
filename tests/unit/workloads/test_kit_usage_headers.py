"""modelkit's per-request usage headers over real HTTP: X-Model-Tokens and X-Model-Cost-USD
sum what the request's ServiceMetrics recorded, and only that request's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from modelkit import (
    COST_HEADER,
    TOKENS_HEADER,
    ServiceSettings,
    cost_usd,
    create_app,
    metrics_of,
    upstream_client,
    upstream_error,
)
from modelkit.testing import serve_app
from modelkit.usage import RequestUsage, format_usd

PRICED = "gpt-4o-mini"
PRICED_TOO = "gpt-4o"
UNPRICED = "mystery-model-7"


def _usd(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    usd = cost_usd(model, input_tokens, output_tokens)
    assert usd is not None
    return Decimal(format_usd(usd))


def build_usage_app(settings: ServiceSettings, upstream_url: str | None = None) -> FastAPI:
    app = create_app(settings, service="usage-demo", models=[PRICED, PRICED_TOO, UNPRICED],
                     upstream_check=False)  # fmt: skip

    @app.post("/one-call")
    async def one_call(request: Request) -> dict[str, Any]:
        metrics_of(request).record_usage(PRICED, 1200, 300)
        return {"ok": True}

    @app.post("/two-calls")
    async def two_calls(request: Request) -> dict[str, Any]:
        metrics = metrics_of(request)
        metrics.record_usage(PRICED, 1000, 200)
        metrics.record_usage(PRICED_TOO, 50, 7)
        return {"ok": True}

    @app.post("/fan-out")
    async def fan_out(request: Request) -> dict[str, Any]:
        # Tasks and threads copy the context: they add to the same request's usage.
        metrics = metrics_of(request)

        async def call(tokens: int) -> None:
            await asyncio.sleep(0.01)
            metrics.record_usage(PRICED, tokens, 1)

        await asyncio.gather(call(10), call(20), call(30))
        await asyncio.to_thread(metrics.record_usage, PRICED, 40, 1)
        return {"ok": True}

    @app.post("/unpriced")
    async def unpriced(request: Request) -> dict[str, Any]:
        metrics_of(request).record_usage(UNPRICED, 10, 5)
        return {"ok": True}

    @app.post("/zero-tokens")
    async def zero_tokens(request: Request) -> dict[str, Any]:
        metrics_of(request).record_usage(PRICED, 0, 0)
        return {"ok": True}

    @app.post("/per-image")
    async def per_image(request: Request) -> dict[str, Any]:
        metrics_of(request).record_cost(PRICED_TOO, 0.04)
        return {"ok": True}

    @app.post("/local")
    async def local(request: Request) -> dict[str, Any]:
        metrics = metrics_of(request)
        metrics.record_tokens(PRICED, 3, 200)
        metrics.record_cost(PRICED, 0.0)
        return {"ok": True}

    @app.post("/cache-hit")
    async def cache_hit(request: Request) -> dict[str, Any]:
        metrics_of(request).record_cache(True)
        return {"cached": True}

    @app.post("/cache-miss-unpriced")
    async def cache_miss_unpriced(request: Request) -> dict[str, Any]:
        metrics = metrics_of(request)
        metrics.record_cache(False)
        metrics.record_usage(UNPRICED, 4, 4)
        return {"cached": False}

    @app.post("/nothing")
    async def nothing() -> dict[str, Any]:
        return {"ok": True}

    @app.post("/spent-then-failed")
    async def spent_then_failed(request: Request) -> dict[str, Any]:
        metrics_of(request).record_usage(PRICED, 100, 100)
        raise upstream_error("the model's answer was not usable", code="invalid_model_output")

    @app.post("/stream")
    async def stream(request: Request) -> StreamingResponse:
        metrics = metrics_of(request)
        metrics.record_usage(PRICED, 10, 0)

        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: one\n\n"
            metrics.record_usage(PRICED, 0, 10)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.post("/slow/{tokens}")
    async def slow(tokens: int, request: Request) -> dict[str, Any]:
        metrics = metrics_of(request)
        metrics.record_usage(PRICED, tokens, 0)
        await asyncio.sleep(0.05)  # every other request runs in between
        metrics.record_usage(PRICED, 0, tokens)
        return {"tokens": tokens}

    if upstream_url is not None:
        client = upstream_client(base_url=upstream_url, api_key="test", timeout_s=5)

        @app.post("/upstream-twice")
        async def upstream_twice(request: Request) -> dict[str, Any]:
            metrics = metrics_of(request)
            totals = []
            for model, text in ((PRICED, "first question"), (PRICED_TOO, "a second, longer one")):
                async with metrics.upstream_call_within(model, 5):
                    completion = await client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": text}]
                    )
                assert completion.usage is not None
                usage = completion.usage
                metrics.record_usage(model, usage.prompt_tokens, usage.completion_tokens)
                totals.append((model, usage.prompt_tokens, usage.completion_tokens))
            return {"calls": totals}

    return app


@pytest.fixture(params=[0, 16], ids=["route run inline", "route run in a task by the limiter"])
def usage_url(request: pytest.FixtureRequest, fake_upstream_url: str) -> Iterator[str]:
    settings = ServiceSettings(max_concurrent_requests=request.param, max_queued_requests=64)
    with serve_app(build_usage_app(settings, fake_upstream_url)) as url:
        yield url


def _post(url: str, path: str) -> httpx.Response:
    return httpx.post(url + path, json={}, timeout=10)


@pytest.mark.parametrize(
    ("path", "tokens", "cost"),
    [
        pytest.param("/one-call", "1500", _usd(PRICED, 1200, 300),
                     id="one priced call gives its tokens and cost"),
        pytest.param("/two-calls", "1257", _usd(PRICED, 1000, 200) + _usd(PRICED_TOO, 50, 7),
                     id="two calls in one request are summed"),
        pytest.param("/fan-out", "104", _usd(PRICED, 100, 4),
                     id="calls made in tasks and threads of the request are summed"),
        pytest.param("/unpriced", "15", None,
                     id="a model with no known price gives tokens and no cost"),
        pytest.param("/zero-tokens", "0", Decimal(0), id="a call reporting 0 tokens gives 0"),
        pytest.param("/per-image", None, Decimal("0.04"), id="a per-image price gives cost only"),
        pytest.param("/local", "203", Decimal(0), id="a local model's tokens at a known 0 cost"),
        pytest.param("/cache-hit", "0", Decimal(0), id="a cache hit costs nothing, known for sure"),
        pytest.param("/cache-miss-unpriced", "8", None, id="a cache miss adds nothing of its own"),
        pytest.param("/nothing", None, None, id="a request that recorded nothing gets no header"),
        pytest.param("/spent-then-failed", "200", _usd(PRICED, 100, 100),
                     id="an error after an upstream call still says what it spent"),
    ],
)  # fmt: skip
def test_usage_headers_sum_what_the_request_recorded(
    usage_url: str, path: str, tokens: str | None, cost: Decimal | None
) -> None:
    response = _post(usage_url, path)

    assert response.headers.get(TOKENS_HEADER) == tokens
    if cost is None:
        assert COST_HEADER not in response.headers
    else:
        value = response.headers[COST_HEADER]
        assert "e" not in value.lower(), "a plain decimal, never an exponent"
        assert Decimal(value) == cost
    assert response.headers["X-Request-ID"]


def test_two_upstream_calls_in_one_request_are_summed(usage_url: str) -> None:
    response = _post(usage_url, "/upstream-twice")

    assert response.status_code == 200, response.text
    calls = response.json()["calls"]
    assert len(calls) == 2
    assert int(response.headers[TOKENS_HEADER]) == sum(i + o for _, i, o in calls)
    expected = sum((_usd(model, i, o) for model, i, o in calls), Decimal(0))
    assert Decimal(response.headers[COST_HEADER]) == pytest.approx(expected, abs=Decimal("1e-12"))


def test_a_streamed_answer_carries_no_usage_headers(usage_url: str) -> None:
    # Its headers are sent before the stream's usage is known.
    response = _post(usage_url, "/stream")

    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    assert TOKENS_HEADER not in response.headers and COST_HEADER not in response.headers


def test_probes_and_scrapes_carry_no_usage_headers(usage_url: str) -> None:
    _post(usage_url, "/one-call")
    for path in ("/health", "/metrics"):
        response = httpx.get(usage_url + path, timeout=5)
        assert TOKENS_HEADER not in response.headers and COST_HEADER not in response.headers


def test_concurrent_requests_do_not_mix_their_sums(usage_url: str) -> None:
    sizes = list(range(1, 41))
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda n: _post(usage_url, f"/slow/{n}"), sizes))

    for n, response in zip(sizes, responses, strict=True):
        assert response.status_code == 200, response.text
        assert response.headers[TOKENS_HEADER] == str(2 * n)
        assert Decimal(response.headers[COST_HEADER]) == _usd(PRICED, n, n)


@pytest.mark.parametrize(
    ("usd", "shown"),
    [
        pytest.param(0.0, "0", id="nothing is 0"),
        pytest.param(0.000123, "0.000123", id="a small cost is a plain decimal"),
        pytest.param(1.5e-07, "0.00000015", id="one cheap token is no exponent either"),
        pytest.param(0.1 + 0.2, "0.3", id="float noise past 12 decimals is dropped"),
        pytest.param(12.5, "12.5", id="dollars keep their cents"),
    ],
)
def test_cost_is_written_as_a_plain_decimal(usd: float, shown: str) -> None:
    assert format_usd(usd) == shown


def test_usage_ignores_negative_and_non_finite_costs() -> None:
    usage = RequestUsage()
    usage.add_cost(-1.0)
    usage.add_cost(float("nan"))
    usage.add_tokens(-5)
    assert usage.headers() == {TOKENS_HEADER: "0", COST_HEADER: "0"}

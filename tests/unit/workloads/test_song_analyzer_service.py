"""song-analyzer as a real process against the fake upstream: results, metrics, errors, health."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fakeupstream import FakeUpstreamClient
from fakeupstream.app import song_score
from modelkit import cost_usd
from modelkit.testing import ServiceProcess, running_module, scrape
from song_analyzer.scoring import SYSTEM_PROMPT, user_message

API_KEY = "song-key"
MODEL = "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v1"
HEADERS = {"X-API-Key": API_KEY}
LYRICS = "Under the neon rain\nI call your name again\n" * 8


@pytest.fixture(scope="module")
def service(fake_upstream_url: str) -> Iterator[ServiceProcess]:
    env = {
        "LLM_API_BASE_URL": fake_upstream_url,
        "LLM_MODEL": MODEL,
        "LLM_TIMEOUT": "1",
        "API_KEY": API_KEY,
        "APP_VERSION": "1.4.0",
        "CACHE_MAX_ENTRIES": "100",
        # One try per request: these tests map one upstream failure to one answer; the
        # retries are test_song_analyzer_upstream.py's.
        "UPSTREAM_MAX_RETRIES": "0",
    }
    with running_module("song_analyzer", env) as process:
        yield process


def analyze(service: ServiceProcess, **song: Any) -> httpx.Response:
    return httpx.post(service.base_url + "/analyze", json=song, headers=HEADERS, timeout=10)


def test_analysis_is_scored_by_the_model_then_cached(
    service: ServiceProcess, fake_upstream: FakeUpstreamClient
) -> None:
    song = {"artist": "Nova", "title": "Neon Rain", "lyrics": LYRICS}
    before = scrape(service.base_url)
    first = analyze(service, **song)
    second = analyze(service, **song)
    after = scrape(service.base_url)

    assert first.status_code == 200, first.text
    expected_score = song_score(user_message("Nova", "Neon Rain", LYRICS.strip()))["score"]
    assert first.json()["score"] == expected_score
    assert first.json()["model"] == MODEL and first.json()["cached"] is False
    assert first.json()["verdict"]
    assert second.json() == {**first.json(), "cached": True}

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("model_requests_total", route="/analyze", outcome="success") == 2
    assert delta("model_upstream_requests_total", model=MODEL, outcome="success") == 1
    assert delta("model_cache_requests_total", result="miss") == 1
    assert delta("model_cache_requests_total", result="hit") == 1
    input_tokens = delta("model_tokens_total", model=MODEL, direction="input")
    output_tokens = delta("model_tokens_total", model=MODEL, direction="output")
    assert input_tokens == math.ceil(len(SYSTEM_PROMPT) / 4) + math.ceil(
        len(user_message("Nova", "Neon Rain", LYRICS.strip())) / 4
    )
    assert output_tokens > 0
    expected_cost = cost_usd(MODEL, int(input_tokens), int(output_tokens))
    assert expected_cost is not None
    assert delta("model_cost_usd_total", model=MODEL) == pytest.approx(expected_cost)
    # The same usage, per request, in the answer's headers; a cache hit cost nothing.
    assert first.headers["X-Model-Tokens"] == str(int(input_tokens + output_tokens))
    assert float(first.headers["X-Model-Cost-USD"]) == pytest.approx(expected_cost, abs=1e-12)
    assert second.headers["X-Model-Tokens"] == "0"
    assert second.headers["X-Model-Cost-USD"] == "0"
    assert after.value("model_info", model=MODEL, version="1.4.0") == 1


def test_same_lyrics_under_another_title_is_not_a_cache_hit(service: ServiceProcess) -> None:
    first = analyze(service, artist="Nova", title="Cache A", lyrics=LYRICS)
    second = analyze(service, artist="Nova", title="Cache B", lyrics=LYRICS)
    assert first.json()["cached"] is False and second.json()["cached"] is False


@pytest.mark.parametrize(
    ("fault", "status", "error_type", "code", "outcome"),
    [
        pytest.param({"timeout_rate": 1.0, "hang_s": 5.0}, 504, "timeout_error",
                     "upstream_timeout", "timeout",
                     id="an upstream slower than LLM_TIMEOUT is a 504 counted as timeout"),
        pytest.param({"error_rate": 1.0, "status_code": 500}, 502, "upstream_error",
                     "upstream_status_500", "error",
                     id="an upstream 500 is a 502 counted as error"),
        pytest.param({"malformed_rate": 1.0}, 502, "upstream_error", "invalid_model_output",
                     "error", id="an answer that is not JSON is a 502 counted as error"),
        pytest.param({"error_rate": 1.0, "status_code": 429}, 429, "rate_limit_error",
                     "upstream_rate_limited", "error",
                     id="an upstream rate limit is a 429 with Retry-After counted as error"),
    ],
)  # fmt: skip
def test_upstream_failure_is_a_clear_error_and_the_service_recovers(
    service: ServiceProcess,
    fake_upstream: FakeUpstreamClient,
    fault: dict[str, float],
    status: int,
    error_type: str,
    code: str,
    outcome: str,
) -> None:
    song = {"artist": "Fault", "title": f"{code} song", "lyrics": LYRICS}
    before = scrape(service.base_url)
    fake_upstream.set_fault(MODEL, **fault)  # type: ignore[arg-type]
    failed = analyze(service, **song)
    assert failed.status_code == status, failed.text
    error = failed.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code)
    assert MODEL in error["message"]
    if status == 429:
        assert int(failed.headers["Retry-After"]) >= 1

    health = httpx.get(service.base_url + "/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "healthy"

    fake_upstream.reset()
    recovered = analyze(service, **song)
    assert recovered.status_code == 200 and recovered.json()["cached"] is False
    after = scrape(service.base_url)
    upstream_outcome = "timeout" if outcome == "timeout" else "error"
    assert after.value("model_requests_total", route="/analyze", outcome=outcome) - before.value(
        "model_requests_total", route="/analyze", outcome=outcome
    ) == 1
    assert after.value(
        "model_upstream_requests_total", model=MODEL, outcome=upstream_outcome
    ) - before.value("model_upstream_requests_total", model=MODEL, outcome=upstream_outcome) == 1


GOOD = {"artist": "Nova", "title": "Good", "lyrics": "la la la"}

BAD_REQUESTS = [
    pytest.param({"json": {"title": "t", "lyrics": "l"}}, 400, "invalid_request_error", "artist",
                 id="a missing artist is a 400 naming artist"),
    pytest.param({"json": {"artist": "a", "title": "t"}}, 400, "invalid_request_error",
                 "lyrics: field required", id="missing lyrics reads lyrics field required"),
    pytest.param({"json": {"artist": "a", "lyrics": "l"}}, 400, "invalid_request_error", "title",
                 id="a missing title is a 400 naming title"),
    pytest.param({"json": {}}, 400, "invalid_request_error", "artist",
                 id="an empty object is a 400 naming the fields"),
    pytest.param({"json": {**GOOD, "lyrics": "   \n "}}, 400, "invalid_request_error", "lyrics",
                 id="blank lyrics are a 400 naming lyrics"),
    pytest.param({"json": {**GOOD, "lyrics": "x" * 20_001}}, 400, "invalid_request_error",
                 "lyrics", id="lyrics over 20000 characters are a 400 naming lyrics"),
    pytest.param({"json": {**GOOD, "artist": "a" * 201}}, 400, "invalid_request_error", "artist",
                 id="an artist over 200 characters is a 400 naming artist"),
    pytest.param({"json": {**GOOD, "artist": 42}}, 400, "invalid_request_error", "artist",
                 id="an artist that is a number is a 400 naming artist"),
    pytest.param({"json": {**GOOD, "title": None}}, 400, "invalid_request_error", "title",
                 id="a null title is a 400 naming title"),
    pytest.param({"json": {**GOOD, "lyrics": ["la", "la"]}}, 400, "invalid_request_error",
                 "lyrics", id="lyrics as a list are a 400 naming lyrics"),
    pytest.param({"json": {**GOOD, "genre": "pop"}}, 400, "invalid_request_error", "genre",
                 id="an unknown field is a 400 naming it"),
    pytest.param({"content": b"artist=a", "headers": {"content-type": "application/json"}},
                 400, "invalid_request_error", "JSON", id="a body that is not JSON is a 400"),
    pytest.param({"json": [GOOD]}, 400, "invalid_request_error", "request body",
                 id="a JSON array is a 400"),
    pytest.param({"json": {**GOOD, "lyrics": "x" * 200_000}}, 413, "invalid_request_error",
                 "MAX_REQUEST_BYTES", id="a body over the size limit is a 413 naming the limit"),
    pytest.param({"json": GOOD, "headers": {"X-API-Key": "wrong"}}, 401, "authentication_error",
                 "X-API-Key", id="a wrong API key is a 401"),
    pytest.param({"json": GOOD, "headers": {"X-API-Key": None}}, 401, "authentication_error",
                 "X-API-Key", id="a missing API key is a 401"),
    pytest.param({"json": GOOD, "path": "/analyse"}, 404, "not_found_error", "/analyse",
                 id="an unknown route is a 404 naming the path"),
    pytest.param({"method": "GET"}, 405, "invalid_request_error", "POST",
                 id="GET on /analyze is a 405 naming POST"),
    pytest.param({"method": "DELETE"}, 405, "invalid_request_error", "POST",
                 id="DELETE on /analyze is a 405 naming POST"),
]  # fmt: skip


@pytest.mark.parametrize(("request_kwargs", "status", "error_type", "named"), BAD_REQUESTS)
def test_bad_request_gets_an_openai_shaped_4xx_and_no_upstream_call(
    service: ServiceProcess,
    request_kwargs: dict[str, Any],
    status: int,
    error_type: str,
    named: str,
) -> None:
    kwargs = dict(request_kwargs)
    method = kwargs.pop("method", "POST")
    path = kwargs.pop("path", "/analyze")
    headers = {k: v for k, v in {**HEADERS, **kwargs.pop("headers", {})}.items() if v is not None}
    before = scrape(service.base_url)
    response = httpx.request(
        method, service.base_url + path, headers=headers, timeout=10, **kwargs
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert named in error["message"]
    after = scrape(service.base_url)
    assert after.value("model_requests_total", outcome="rejected") - before.value(
        "model_requests_total", outcome="rejected"
    ) == 1
    assert after.value("model_upstream_requests_total") == before.value(
        "model_upstream_requests_total"
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("LLM_TEMPERATURE", "hot", id="a temperature that is not a number"),
        pytest.param("LLM_TIMEOUT", "0", id="a zero timeout"),
        pytest.param("LLM_MAX_TOKENS", "-5", id="negative max tokens"),
        pytest.param("CACHE_MAX_ENTRIES", "lots", id="a cache size that is not a number"),
    ],
)
def test_bad_env_var_stops_the_service_naming_the_variable(variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "song_analyzer"],
        env={**os.environ, "HOST": "127.0.0.1", "PORT": "1", variable: value},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert variable in result.stderr

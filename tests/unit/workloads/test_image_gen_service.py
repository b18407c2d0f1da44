"""image-gen as a real process against the fake upstream: images, metrics, errors, limits."""

from __future__ import annotations

import base64
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fakeupstream import FakeUpstreamClient
from modelkit import cost_usd
from modelkit.testing import ServiceProcess, running_module, scrape, wait_for

API_KEY = "image-key"
HEADERS = {"X-API-Key": API_KEY}
MODEL = "gpt-image-1"


@pytest.fixture(scope="module")
def service(fake_upstream_url: str) -> Iterator[ServiceProcess]:
    env = {
        "OPENAI_BASE_URL": fake_upstream_url,
        "IMAGE_MODEL": MODEL,
        "IMAGE_TIMEOUT_S": "2",
        "IMAGE_MAX_CONCURRENCY": "1",
        "API_KEY": API_KEY,
        "APP_VERSION": "2.0.0",
    }
    with running_module("image_gen", env) as process:
        yield process


@pytest.fixture(scope="module")
def dalle_service(fake_upstream_url: str) -> Iterator[ServiceProcess]:
    env = {"OPENAI_BASE_URL": fake_upstream_url, "IMAGE_MODEL": "dall-e-3"}
    with running_module("image_gen", env) as process:
        yield process


def submit(service: ServiceProcess, **body: Any) -> httpx.Response:
    return httpx.post(service.base_url + "/submit", json=body, headers=HEADERS, timeout=10)


def test_submit_returns_an_image_and_counts_tokens_and_cost(
    service: ServiceProcess, fake_upstream: FakeUpstreamClient
) -> None:
    prompt = "a lighthouse in a storm, oil painting"
    before = scrape(service.base_url)
    first = submit(service, prompt=prompt, size="1024x1024", quality="low")
    second = submit(service, prompt=prompt)
    after = scrape(service.base_url)

    assert first.status_code == 200, first.text
    body = first.json()
    assert body["model"] == MODEL
    assert base64.b64decode(body["image"]["b64_json"]).startswith(b"\x89PNG")
    assert second.status_code == 200

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("model_requests_total", route="/submit", outcome="success") == 2
    assert delta("model_upstream_requests_total", model=MODEL, outcome="success") == 2
    input_tokens = 2 * math.ceil(len(prompt) / 4)
    output_tokens = 272 + 1056  # low, then the model's default (auto ~ medium)
    assert delta("model_tokens_total", model=MODEL, direction="input") == input_tokens
    assert delta("model_tokens_total", model=MODEL, direction="output") == output_tokens
    expected_cost = cost_usd(MODEL, input_tokens, output_tokens)
    assert delta("model_cost_usd_total", model=MODEL) == pytest.approx(expected_cost)
    assert after.value("model_info", model=MODEL, version="2.0.0") == 1


def test_dall_e_3_is_priced_per_image_and_returns_the_revised_prompt(
    dalle_service: ServiceProcess,
) -> None:
    before = scrape(dalle_service.base_url)
    response = submit(dalle_service, prompt="a fox", size="1792x1024", quality="hd")
    assert response.status_code == 200, response.text
    assert response.json()["revised_prompt"] and response.json()["image"]["b64_json"]
    after = scrape(dalle_service.base_url)
    cost = after.value("model_cost_usd_total", model="dall-e-3") - before.value(
        "model_cost_usd_total", model="dall-e-3"
    )
    assert cost == pytest.approx(0.12)


@pytest.mark.parametrize(
    ("fault", "status", "error_type", "outcome"),
    [
        pytest.param({"timeout_rate": 1.0, "hang_s": 10.0}, 504, "timeout_error", "timeout",
                     id="an upstream slower than IMAGE_TIMEOUT_S is a 504 counted as timeout"),
        pytest.param({"error_rate": 1.0, "status_code": 500}, 502, "upstream_error", "error",
                     id="an upstream 500 is a 502 counted as error"),
        pytest.param({"error_rate": 1.0, "status_code": 503}, 502, "upstream_error", "error",
                     id="an upstream 503 is a 502 counted as error"),
    ],
)  # fmt: skip
def test_upstream_failure_is_a_clear_error_and_the_service_recovers(
    service: ServiceProcess,
    fake_upstream: FakeUpstreamClient,
    fault: dict[str, float],
    status: int,
    error_type: str,
    outcome: str,
) -> None:
    before = scrape(service.base_url)
    fake_upstream.set_fault(MODEL, **fault)  # type: ignore[arg-type]
    failed = submit(service, prompt="a storm")
    assert failed.status_code == status, failed.text
    assert failed.json()["error"]["type"] == error_type
    assert MODEL in failed.json()["error"]["message"]

    health = httpx.get(service.base_url + "/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    fake_upstream.reset()
    assert submit(service, prompt="a calm sea").status_code == 200

    after = scrape(service.base_url)
    assert after.value("model_requests_total", route="/submit", outcome=outcome) - before.value(
        "model_requests_total", route="/submit", outcome=outcome
    ) == 1
    assert after.value("model_upstream_requests_total", model=MODEL, outcome=outcome) - (
        before.value("model_upstream_requests_total", model=MODEL, outcome=outcome)
    ) == 1


def test_over_the_concurrency_limit_is_a_429_with_retry_after(
    service: ServiceProcess, fake_upstream: FakeUpstreamClient
) -> None:
    fake_upstream.set_fault(MODEL, latency_s=1.5)
    results: list[httpx.Response] = []
    first = threading.Thread(target=lambda: results.append(submit(service, prompt="slow one")))
    first.start()
    try:

        def first_in_flight() -> bool:
            health = httpx.get(service.base_url + "/health", timeout=5).json()
            return bool(health["checks"]["capacity"]["detail"].startswith("1 of 1 places taken"))

        wait_for(first_in_flight, timeout_s=5, what="the first generation to be in flight")
        before = scrape(service.base_url)
        second = submit(service, prompt="one too many")
    finally:
        first.join(10)
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "rate_limit_error"
    assert "MAX_CONCURRENT_REQUESTS" in second.json()["error"]["message"]
    assert int(second.headers["Retry-After"]) >= 1
    assert results and results[0].status_code == 200
    after = scrape(service.base_url)
    assert after.value("model_requests_total", route="/submit", outcome="rejected") - before.value(
        "model_requests_total", route="/submit", outcome="rejected"
    ) == 1


BAD_REQUESTS = [
    pytest.param({"json": {}}, 400, "invalid_request_error", "prompt: field required",
                 id="a missing prompt reads prompt field required"),
    pytest.param({"json": {"prompt": ""}}, 400, "invalid_request_error", "prompt",
                 id="an empty prompt is a 400 naming prompt"),
    pytest.param({"json": {"prompt": "  \n"}}, 400, "invalid_request_error", "prompt",
                 id="a blank prompt is a 400 naming prompt"),
    pytest.param({"json": {"prompt": "x" * 4001}}, 400, "invalid_request_error", "prompt",
                 id="a prompt over 4000 characters is a 400 naming prompt"),
    pytest.param({"json": {"prompt": 7}}, 400, "invalid_request_error", "prompt",
                 id="a prompt that is a number is a 400 naming prompt"),
    pytest.param({"json": {"prompt": "a cat", "size": "1792x1024"}}, 400,
                 "invalid_request_error", "1536x1024",
                 id="a size the model does not accept is a 400 listing the sizes it does"),
    pytest.param({"json": {"prompt": "a cat", "size": 1024}}, 400, "invalid_request_error",
                 "size", id="a size that is a number is a 400 naming size"),
    pytest.param({"json": {"prompt": "a cat", "quality": "ultra"}}, 400,
                 "invalid_request_error", "quality", id="an unknown quality is a 400 naming it"),
    pytest.param({"json": {"prompt": "a cat", "quality": "hd"}}, 400, "invalid_request_error",
                 "quality", id="a quality the model does not accept is a 400 naming quality"),
    pytest.param({"json": {"prompt": "a cat", "n": 3}}, 400, "invalid_request_error", "n",
                 id="an unknown field is a 400 naming it"),
    pytest.param({"content": b"prompt=a cat", "headers": {"content-type": "application/json"}},
                 400, "invalid_request_error", "JSON", id="a body that is not JSON is a 400"),
    pytest.param({"json": ["a cat"]}, 400, "invalid_request_error", "request body",
                 id="a JSON array is a 400"),
    pytest.param({"json": {"prompt": "x" * 100_000}}, 413, "invalid_request_error",
                 "MAX_REQUEST_BYTES", id="a body over the size limit is a 413 naming the limit"),
    pytest.param({"json": {"prompt": "a cat"}, "headers": {"X-API-Key": "wrong"}}, 401,
                 "authentication_error", "X-API-Key", id="a wrong API key is a 401"),
    pytest.param({"json": {"prompt": "a cat"}, "headers": {"X-API-Key": None}}, 401,
                 "authentication_error", "X-API-Key", id="a missing API key is a 401"),
    pytest.param({"json": {"prompt": "a cat"}, "path": "/generate"}, 404, "not_found_error",
                 "/generate", id="an unknown route is a 404 naming the path"),
    pytest.param({"method": "GET"}, 405, "invalid_request_error", "POST",
                 id="GET on /submit is a 405 naming POST"),
    pytest.param({"method": "PUT", "json": {"prompt": "a cat"}}, 405, "invalid_request_error",
                 "POST", id="PUT on /submit is a 405 naming POST"),
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
    path = kwargs.pop("path", "/submit")
    headers = {k: v for k, v in {**HEADERS, **kwargs.pop("headers", {})}.items() if v is not None}
    before = scrape(service.base_url)
    response = httpx.request(method, service.base_url + path, headers=headers, timeout=10, **kwargs)
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
        pytest.param("IMAGE_TIMEOUT_S", "soon", id="a timeout that is not a number"),
        pytest.param("IMAGE_TIMEOUT_S", "-1", id="a negative timeout"),
        pytest.param("MAX_CONCURRENT_REQUESTS", "0", id="a concurrency limit of zero"),
        pytest.param("IMAGE_MAX_CONCURRENCY", "0",
                     id="a concurrency limit of zero under the variable's earlier name"),
        pytest.param("IMAGE_MODEL", "", id="an empty model id"),
    ],
)
def test_bad_env_var_stops_the_service_naming_the_variable(variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "image_gen"],
        env={**os.environ, "HOST": "127.0.0.1", "PORT": "1", variable: value},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert variable in result.stderr

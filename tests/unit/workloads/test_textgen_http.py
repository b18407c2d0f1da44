"""textgen over real HTTP: `python -m textgen` in its own process, as the kubelet runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from modelkit.testing import ServiceProcess, free_port, running_module, scrape

API_KEY = "test-key-123"
MAX_CHARS = 200
MAX_REQUEST_BYTES = 4096
VERSION = "test-1.2.3"
AUTH = {"X-API-Key": API_KEY}
MODEL = "textgen-chargpt"


@pytest.fixture(scope="module")
def server() -> Iterator[ServiceProcess]:
    env = {
        "API_KEY": API_KEY,
        "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "TEXTGEN_MAX_CHARS": str(MAX_CHARS),
        "TEXTGEN_DEVICE": "cpu",
        "APP_VERSION": VERSION,
        "PYTHONWARNINGS": "ignore",
    }
    # Importing torch and loading the weights takes seconds on a busy machine.
    with running_module("textgen", env, timeout_s=90) as service:
        yield service


def post_generate(server: ServiceProcess, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/generate", json=body, headers=AUTH, timeout=60)


# --- good requests --------------------------------------------------------------------------


def test_a_good_request_returns_the_generated_text(server: ServiceProcess) -> None:
    response = post_generate(server, {"seed": 7, "temperature": 0.8, "num_chars": 12})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "text": body["text"],
        "num_chars": 12,
        "seed": 7,
        "device": "cpu",
        "model": MODEL,
    }
    assert isinstance(body["text"], str)
    assert len(body["text"]) == 12


def test_the_same_seed_gives_the_same_text_over_http(server: ServiceProcess) -> None:
    request = {"seed": 123, "temperature": 1.0, "num_chars": 20, "prompt": "The keeper "}
    first = post_generate(server, request).json()["text"]
    second = post_generate(server, request).json()["text"]
    assert first == second


def test_different_seeds_give_different_text_over_http(server: ServiceProcess) -> None:
    texts = {
        post_generate(server, {"seed": seed, "temperature": 1.0, "num_chars": 20}).json()["text"]
        for seed in (1, 2, 3)
    }
    assert len(texts) == 3


def test_an_integer_temperature_is_accepted(server: ServiceProcess) -> None:
    response = post_generate(server, {"seed": 1, "temperature": 1, "num_chars": 3})
    assert response.status_code == 200, response.text


def test_concurrent_requests_each_get_their_own_deterministic_text(server: ServiceProcess) -> None:
    requests = [{"seed": seed, "temperature": 1.0, "num_chars": 15} for seed in range(10, 16)]
    sequential = [post_generate(server, request).json()["text"] for request in requests]
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        concurrent = [r.json()["text"] for r in pool.map(lambda b: post_generate(server, b), requests)]
    assert concurrent == sequential


def test_metrics_count_a_generation(server: ServiceProcess) -> None:
    before = scrape(server.base_url)
    prompt = "Once "
    response = post_generate(server, {"seed": 5, "temperature": 0.7, "num_chars": 9, "prompt": prompt})
    assert response.status_code == 200
    after = scrape(server.base_url)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("model_requests_total", route="/generate", outcome="success") == 1
    assert delta("model_request_duration_seconds_count", route="/generate") == 1
    assert delta("model_tokens_total", model=MODEL, direction="output") == 9
    assert delta("model_tokens_total", model=MODEL, direction="input") == len(prompt)
    assert delta("model_upstream_requests_total", model=MODEL, outcome="success") == 1
    assert after.has("model_cost_usd_total", model=MODEL)
    assert after.value("model_cost_usd_total", model=MODEL) == 0
    assert after.value("model_info", model=MODEL, version=VERSION) == 1


def test_a_rejected_request_is_counted_as_rejected_not_error(server: ServiceProcess) -> None:
    before = scrape(server.base_url)
    assert post_generate(server, {"seed": 1, "temperature": 0, "num_chars": 3}).status_code == 400
    after = scrape(server.base_url)

    def delta(outcome: str) -> float:
        labels = {"route": "/generate", "outcome": outcome}
        return after.value("model_requests_total", **labels) - before.value("model_requests_total", **labels)

    assert (delta("rejected"), delta("error")) == (1, 0)


def test_health_is_healthy_without_an_api_key(server: ServiceProcess) -> None:
    response = httpx.get(f"{server.base_url}/health", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["checks"]["model"]["status"] == "ok"
    assert "cpu" in body["checks"]["model"]["detail"]


# --- bad requests ---------------------------------------------------------------------------

GOOD = {"seed": 1, "temperature": 1.0, "num_chars": 5}
FIELDS = {"seed", "temperature", "num_chars", "prompt", "num_char"}


@dataclass(frozen=True)
class BadRequest:
    method: str = "POST"
    path: str = "/generate"
    json_body: Any = None
    raw_body: bytes | None = None
    headers: dict[str, str] | None = None
    status: int = 400
    error_type: str = "invalid_request_error"
    names: str = ""  # what the message must mention (usually the field)


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def without(field: str) -> dict[str, Any]:
    return {key: val for key, val in GOOD.items() if key != field}


BAD_REQUESTS = [
    pytest.param(BadRequest(json_body=without("seed"), names="seed"), id="a missing seed is named"),
    pytest.param(BadRequest(json_body=with_(seed="1"), names="seed"), id="a string seed is refused"),
    pytest.param(BadRequest(json_body=with_(seed=1.5), names="seed"), id="a fractional seed is refused"),
    pytest.param(BadRequest(json_body=with_(seed=True), names="seed"), id="a boolean seed is refused"),
    pytest.param(BadRequest(json_body=with_(seed=-1), names="seed"), id="a negative seed is refused"),
    pytest.param(BadRequest(json_body=with_(seed=2**64), names="seed"), id="a seed above int64 is refused"),
    pytest.param(
        BadRequest(json_body=without("num_chars"), names="num_chars"), id="a missing num_chars is named"
    ),
    pytest.param(BadRequest(json_body=with_(num_chars=0), names="num_chars"), id="zero num_chars is refused"),
    pytest.param(
        BadRequest(json_body=with_(num_chars=MAX_CHARS + 1), names="TEXTGEN_MAX_CHARS"),
        id="num_chars above the limit names the limit",
    ),
    pytest.param(
        BadRequest(json_body=with_(num_chars=10**12), names="num_chars"), id="a huge num_chars is refused"
    ),
    pytest.param(
        BadRequest(json_body=with_(num_chars="10"), names="num_chars"), id="a string num_chars is refused"
    ),
    pytest.param(
        BadRequest(json_body=without("temperature"), names="temperature"), id="a missing temperature is named"
    ),
    pytest.param(
        BadRequest(json_body=with_(temperature=0), names="temperature"), id="zero temperature is refused"
    ),
    pytest.param(
        BadRequest(json_body=with_(temperature=-0.5), names="temperature"),
        id="a negative temperature is refused",
    ),
    pytest.param(
        BadRequest(json_body=with_(temperature=50), names="temperature"), id="a huge temperature is refused"
    ),
    pytest.param(
        BadRequest(json_body=with_(temperature="hot"), names="temperature"),
        id="a string temperature is refused",
    ),
    pytest.param(
        BadRequest(raw_body=b'{"seed": 1, "temperature": NaN, "num_chars": 5}', names="temperature"),
        id="a NaN temperature is refused",
    ),
    pytest.param(
        BadRequest(json_body=with_(prompt="caf\u00e9"), names="prompt"),
        id="unknown prompt characters are named",
    ),
    pytest.param(BadRequest(json_body=with_(prompt=42), names="prompt"), id="a non-string prompt is refused"),
    pytest.param(
        BadRequest(json_body=with_(prompt="a" * (MAX_CHARS + 1)), names="prompt"),
        id="an over-long prompt is refused",
    ),
    pytest.param(BadRequest(json_body=with_(num_char=5), names="num_char"), id="a misspelt field is named"),
    pytest.param(BadRequest(json_body=[1, 2, 3], names="object"), id="a JSON array body is refused"),
    pytest.param(BadRequest(raw_body=b"seed=1&num_chars=5", names="JSON"), id="a non-JSON body is refused"),
    pytest.param(BadRequest(raw_body=b"", names="body"), id="an empty body is refused"),
    pytest.param(
        BadRequest(json_body=with_(prompt="a" * MAX_REQUEST_BYTES), status=413, names="MAX_REQUEST_BYTES"),
        id="an oversize body is refused with 413",
    ),
    pytest.param(
        BadRequest(
            json_body=GOOD,
            headers={"X-API-Key": "wrong"},
            status=401,
            error_type="authentication_error",
            names="X-API-Key",
        ),
        id="a wrong API key is refused with 401",
    ),
    pytest.param(
        BadRequest(
            json_body=GOOD, headers={}, status=401, error_type="authentication_error", names="X-API-Key"
        ),
        id="a missing API key is refused with 401",
    ),
    pytest.param(
        BadRequest(
            path="/generat", json_body=GOOD, status=404, error_type="not_found_error", names="/generat"
        ),
        id="an unknown route is a 404",
    ),
    pytest.param(BadRequest(method="GET", status=405, names="GET"), id="GET on /generate is a 405"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_get_a_4xx_in_the_openai_shape_naming_the_problem(
    server: ServiceProcess, case: BadRequest
) -> None:
    headers = {**AUTH} if case.headers is None else dict(case.headers)
    content: bytes | None = case.raw_body
    if case.json_body is not None:
        content = json.dumps(case.json_body).encode()
    if content is not None:
        headers["Content-Type"] = "application/json"
    response = httpx.request(
        case.method, f"{server.base_url}{case.path}", content=content, headers=headers, timeout=30
    )
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code", "param"}
    assert error["type"] == case.error_type
    assert case.names.lower() in error["message"].lower(), error["message"]
    if case.names in FIELDS:
        assert error["param"] == case.names
    assert "Traceback" not in response.text


# --- bad configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"TEXTGEN_MAX_CHARS": "lots"}, "TEXTGEN_MAX_CHARS", id="a non-numeric limit"),
        pytest.param({"TEXTGEN_DEVICE": "tpu"}, "TEXTGEN_DEVICE", id="an unknown device"),
        pytest.param({"TEXTGEN_WEIGHTS": "CORRUPT"}, "TEXTGEN_WEIGHTS", id="a corrupt weights file"),
    ],
)
def test_a_bad_environment_stops_the_service_before_it_binds_naming_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    if env.get("TEXTGEN_WEIGHTS") == "CORRUPT":
        corrupt = tmp_path / "weights.safetensors"
        corrupt.write_bytes(b"\x00" * 64)
        env = {"TEXTGEN_WEIGHTS": str(corrupt)}
    result = subprocess.run(
        [sys.executable, "-m", "textgen"],
        env={**os.environ, "PORT": str(free_port()), "HOST": "127.0.0.1", "PYTHONWARNINGS": "ignore", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "configuration error" in result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr

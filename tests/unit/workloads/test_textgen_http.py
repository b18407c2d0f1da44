"""textgen over real HTTP: `python -m textgen` in its own process, as the kubelet runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from modelkit.testing import ServiceProcess, free_port, running_module, scrape, wait_for

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
        pytest.param(
            {"TEXTGEN_REQUEST_TIMEOUT_S": "0"}, "TEXTGEN_REQUEST_TIMEOUT_S", id="a time limit of zero"
        ),
        pytest.param({"TEXTGEN_WEIGHTS": "CORRUPT"}, "TEXTGEN_WEIGHTS", id="a corrupt weights file"),
        pytest.param({"MAX_CONCURRENT_REQUESTS": "4"}, "TEXTGEN_MAX_BATCH_SIZE",
                     id="a concurrency other than the batch size"),
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


# --- the request time limit -----------------------------------------------------------------

LIMIT_S = 10.0  # generous: a normal request must finish well within it on a busy CI machine
# Tens of seconds at least on any device: always past the limit, so the test needs no timing.
LONG_CHARS = 100_000


@pytest.fixture(scope="module")
def limited_server() -> Iterator[ServiceProcess]:
    env = {
        "API_KEY": API_KEY,
        "TEXTGEN_DEVICE": "cpu",
        "TEXTGEN_MAX_CHARS": str(LONG_CHARS),
        "TEXTGEN_REQUEST_TIMEOUT_S": str(LIMIT_S),
        "PYTHONWARNINGS": "ignore",
    }
    with running_module("textgen", env, timeout_s=90) as service:
        yield service


def stopped_generations(server: ServiceProcess, request_id: str) -> list[dict[str, Any]]:
    """The worker's "generation stopped" log lines for one request."""
    records = []
    for line in server.output().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") == "generation stopped" and record.get("request_id") == request_id:
            records.append(record)
    return records


def long_request(server: ServiceProcess, request_id: str, timeout: httpx.Timeout) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/generate",
        json={"seed": 3, "temperature": 1.0, "num_chars": LONG_CHARS},
        headers={**AUTH, "X-Request-ID": request_id},
        timeout=timeout,
    )


def test_a_generation_past_the_time_limit_is_stopped_and_answered_504(limited_server: ServiceProcess) -> None:
    request_id = f"too-long-{uuid.uuid4().hex}"
    before = scrape(limited_server.base_url)
    response = long_request(limited_server, request_id, httpx.Timeout(120))
    after = scrape(limited_server.base_url)

    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("timeout_error", "request_timeout")
    assert "TEXTGEN_REQUEST_TIMEOUT_S" in error["message"]

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    outcomes = ("success", "error", "timeout", "rejected")
    assert [delta("model_requests_total", route="/generate", outcome=o) for o in outcomes] == [0, 0, 1, 0]
    assert delta("model_upstream_requests_total", model=MODEL, outcome="timeout") == 1
    assert delta("model_tokens_total", model=MODEL, direction="output") == 0

    # The worker stopped part-way instead of computing the rest for nobody...
    wait_for(
        lambda: bool(stopped_generations(limited_server, request_id)),
        timeout_s=60,
        what="the worker to log that it stopped the generation",
    )
    [stopped] = stopped_generations(limited_server, request_id)
    assert stopped["reason"] == "deadline"
    assert 0 <= stopped["generated_chars"] < LONG_CHARS
    # ...so it is free: a normal request is served, where it would otherwise have waited
    # behind the long generation and timed out in turn.
    response = post_generate(limited_server, {"seed": 1, "temperature": 1.0, "num_chars": 2})
    assert response.status_code == 200, response.text
    assert len(response.json()["text"]) == 2


def test_a_generation_whose_client_leaves_is_stopped(limited_server: ServiceProcess) -> None:
    request_id = f"gone-{uuid.uuid4().hex}"
    before = scrape(limited_server.base_url)
    # The client gives up reading long before the service's limit: it closes the connection.
    with pytest.raises(httpx.ReadTimeout):
        long_request(limited_server, request_id, httpx.Timeout(60, read=LIMIT_S / 10))
    wait_for(
        lambda: bool(stopped_generations(limited_server, request_id)),
        timeout_s=60,
        what="the worker to log that it stopped the generation",
    )
    [stopped] = stopped_generations(limited_server, request_id)
    assert stopped["reason"] == "client left"
    assert stopped["generated_chars"] < LONG_CHARS

    def rejected() -> float:
        labels = {"route": "/generate", "outcome": "rejected"}
        return scrape(limited_server.base_url).value("model_requests_total", **labels) - before.value(
            "model_requests_total", **labels
        )

    # Nginx's 499, counted as rejected: nobody was there to be failed.
    wait_for(lambda: rejected() == 1, timeout_s=30, what="the request to be counted as rejected")
    response = post_generate(limited_server, {"seed": 1, "temperature": 1.0, "num_chars": 2})
    assert response.status_code == 200, response.text


# --- batching -------------------------------------------------------------------------------

BATCH = [
    {"seed": 101, "temperature": 0.7, "num_chars": 200, "prompt": "The keeper "},
    {"seed": 102, "temperature": 1.0, "num_chars": 30},
    {"seed": 103, "temperature": 1.5, "num_chars": 150, "prompt": "a" * 130},
    {"seed": 104, "temperature": 0.3, "num_chars": 5},
    {"seed": 105, "temperature": 2.0, "num_chars": 180, "prompt": "Once upon"},
    {"seed": 106, "temperature": 0.9, "num_chars": 64},
    {"seed": 107, "temperature": 1.2, "num_chars": 129, "prompt": "x" * 127},
    {"seed": 108, "temperature": 0.5, "num_chars": 100, "prompt": "\n"},
]


def test_eight_concurrent_requests_get_the_text_each_gets_alone(server: ServiceProcess) -> None:
    """Batched together (different seeds, temperatures, lengths, prompts), each request's text
    is the one it gets when it runs alone: batching never changes a text."""
    alone = [post_generate(server, body).json()["text"] for body in BATCH]
    with ThreadPoolExecutor(max_workers=len(BATCH)) as pool:
        responses = list(pool.map(lambda body: post_generate(server, body), BATCH))
    assert [r.status_code for r in responses] == [200] * len(BATCH), [r.text for r in responses]
    together = [r.json()["text"] for r in responses]
    assert [len(text) for text in together] == [body["num_chars"] for body in BATCH]
    assert together == alone

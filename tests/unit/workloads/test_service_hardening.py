"""Every model service against hostile callers and a faulty upstream (each service in-process
under uvicorn, the upstream a real HTTP server that misbehaves on purpose):

- no body whatever makes a service answer 500 (infinities and huge numbers included);
- a provider's error text never reaches the caller: a fixed message per class of failure and
  the request id; the text is in the log, redacted, under that id;
- an upstream that trickles its answer is cut at the deadline (504), one that answers
  something that is not the API (text/html, a null token count, a lone surrogate) is a 502;
- each service holds to its capacity (429 with Retry-After beyond it), and textgen drops
  the generations whose clients left.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from chat_proxy.app import ChatProxySettings
from chat_proxy.app import build_app as build_chat_proxy
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hazards import (
    LEAKED_KEY,
    LEAKY_MESSAGE,
    HostileUpstream,
    RawNumber,
    encode,
    json_values,
    near_valid,
    running_hostile_upstream,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_gen.app import build_app as build_image_gen
from image_gen.config import ImageGenSettings
from modelkit import upstream_message
from modelkit.logs import JsonFormatter
from modelkit.settings import parse_settings
from modelkit.testing import free_port, scrape, serve_app, wait_for
from orchestrator.app import build_app as build_orchestrator
from orchestrator.config import OrchestratorSettings
from song_analyzer.app import build_app as build_song_analyzer
from song_analyzer.config import SongAnalyzerSettings
from textgen.service import StopSignal, TextgenSettings
from textgen.service import build_app as build_textgen
from textgen.weights import LoadedModel, load_weights, packaged_weights_path

Builder = Callable[[str, float, Path, dict[str, Any]], FastAPI]


@functools.cache
def textgen_weights() -> LoadedModel:
    import torch

    return load_weights(packaged_weights_path(), device=torch.device("cpu"))


def textgen_capacity(overrides: dict[str, Any]) -> dict[str, Any]:
    """textgen runs as many requests as its batch holds: its MAX_CONCURRENT_REQUESTS is
    TEXTGEN_MAX_BATCH_SIZE, so a capacity asked of every service is given as that."""
    settings = dict(overrides)
    if "max_concurrent_requests" in settings:
        settings["textgen_max_batch_size"] = settings.pop("max_concurrent_requests")
    return settings


@dataclass(frozen=True)
class Service:
    name: str
    route: str
    body: dict[str, Any]
    model: str  # the model the body makes the service call
    build: Builder  # (upstream base URL, upstream timeout s, data dir, setting overrides)
    fields: dict[str, st.SearchStrategy[Any]]  # plausible values of its body's fields

    def hazards(self) -> list[Any]:
        """Its own body with each field in turn made hostile: the fuzz's fixed examples."""
        return [{**self.body, name: value} for name in [*self.body, "extra"]
                for value in (math.inf, RawNumber("1" + "0" * 5000), "\ud800", [{"x": -math.inf}])]


texts = st.text(max_size=12)
SERVICES = {
    "chat-proxy": Service(
        "chat-proxy", "/api/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
         "tools": [{"type": "function", "function": {"name": "f"}}]}, "gpt-4o-mini",
        lambda url, t, _, o: build_chat_proxy(parse_settings(
            ChatProxySettings, upstream_base_url=url, upstream_timeout_s=t, **o)),
        {"model": st.just("gpt-4o-mini"),
         "messages": st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": texts}),
                              min_size=1, max_size=2),
         # Free-form objects, forwarded as they are.
         "tools": st.lists(st.dictionaries(texts, json_values, max_size=3), max_size=2),
         "response_format": st.dictionaries(texts, json_values, max_size=3)},
    ),
    "song-analyzer": Service(
        "song-analyzer", "/analyze", {"artist": "A", "title": "T", "lyrics": "la la"},
        "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v1",
        lambda url, t, _, o: build_song_analyzer(parse_settings(
            SongAnalyzerSettings, llm_api_base_url=url, llm_timeout=t, **o)),
        {"artist": texts, "title": texts, "lyrics": texts},
    ),
    "image-gen": Service(
        "image-gen", "/submit", {"prompt": "a lighthouse"}, "gpt-image-1",
        lambda url, t, _, o: build_image_gen(parse_settings(
            ImageGenSettings, openai_base_url=url, image_timeout_s=t, **o)),
        {"prompt": texts, "size": st.sampled_from(["1024x1024", "auto", "1x1", "x"]),
         "quality": st.sampled_from(["low", "hd", "best"])},
    ),
    "orchestrator": Service(
        "orchestrator", "/query", {"prompt": "opening hours?"}, "gpt-4o-mini",
        lambda url, t, data, o: build_orchestrator(parse_settings(
            OrchestratorSettings, openai_base_url=url, orch_timeout_s=t,
            orch_models=o.pop("orch_models", "gpt-4o-mini"), orch_data_dir=data, **o)),
        {"prompt": texts, "models": st.lists(st.sampled_from(["gpt-4o-mini", "nope"]), max_size=2),
         "temperature": st.floats(0, 2), "max_tokens": st.integers(0, 20_000)},
    ),
    "textgen": Service(
        "textgen", "/generate", {"seed": 1, "temperature": 0.8, "num_chars": 4}, "textgen-chargpt",
        lambda _, __, ___, o: build_textgen(parse_settings(
            TextgenSettings, textgen_device="cpu", textgen_max_chars=8,
            **textgen_capacity(o)), textgen_weights()),
        {"seed": st.integers(-1, 2**64), "temperature": st.floats(-1, 3),
         "num_chars": st.integers(-1, 20), "prompt": texts},
    ),
}  # fmt: skip
UPSTREAM_SERVICES = [SERVICES[name] for name in ("chat-proxy", "song-analyzer", "image-gen",
                                                  "orchestrator")]  # fmt: skip


def ids(services: list[Service]) -> list[str]:
    return [service.name for service in services]


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[HostileUpstream, str]]:
    with running_hostile_upstream() as running:
        yield running


@pytest.fixture(autouse=True)
def well_behaved(hostile: tuple[HostileUpstream, str]) -> Iterator[None]:
    hostile[0].behaviours = {"*": "ok"}
    yield
    hostile[0].behaviours = {"*": "ok"}


class LogLines(logging.Handler):
    """The kit's JSON log lines, formatted as they are emitted (inside the request, so each
    carries its request id)."""

    def __init__(self) -> None:
        super().__init__()
        self.formatter_ = JsonFormatter("test")
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.formatter_.format(record)))


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    handler = LogLines()
    for name in ("modelkit", "song_analyzer"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("modelkit").setLevel(logging.INFO)
    yield handler
    for name in ("modelkit", "song_analyzer"):
        logging.getLogger(name).removeHandler(handler)


def post(url: str, service: Service, body: dict[str, Any] | None = None,
         **kwargs: Any) -> httpx.Response:  # fmt: skip
    return httpx.post(url + service.route, json=service.body if body is None else body,
                      timeout=30, **kwargs)  # fmt: skip


# --- input alone never makes a 500 ---------------------------------------------------------


@pytest.mark.parametrize("service", list(SERVICES.values()), ids=list(SERVICES))
def test_no_body_makes_a_service_answer_500(service: Service, tmp_path: Path) -> None:
    # The upstream is a closed port: a body that passes gets a quick 502 (textgen answers).
    app = service.build(f"http://127.0.0.1:{free_port()}/v1", 2.0, tmp_path, {})
    with TestClient(app) as client:

        def check(body: Any) -> None:
            response = client.post(service.route, content=encode(body),
                                   headers={"Content-Type": "application/json"})
            assert response.status_code < 500 or response.status_code == 502, (body, response.text)
            assert "error" in response.json() or response.status_code == 200

        for body in service.hazards():
            check(body)
        settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])(
            given(body=near_valid(service.fields))(check))()  # fmt: skip


# --- the provider's words stay in the log ---------------------------------------------------


@pytest.mark.parametrize("service", UPSTREAM_SERVICES, ids=ids(UPSTREAM_SERVICES))
def test_a_providers_error_text_reaches_the_log_redacted_never_the_caller(
    service: Service, hostile: tuple[HostileUpstream, str], tmp_path: Path, log_lines: LogLines
) -> None:
    upstream, url = hostile
    upstream.behaviours = {"*": "leaky_401"}
    with serve_app(service.build(url, 5.0, tmp_path, {})) as base:
        response = post(base, service, headers={"X-Request-ID": "req-leak-1"})

    assert response.status_code == 502, response.text
    assert LEAKED_KEY not in response.text and "Incorrect API key" not in response.text
    error = response.json()["error"]
    assert error["request_id"] == response.headers["X-Request-ID"] == "req-leak-1"
    if service.name != "orchestrator":  # which names each model's failure in its own 502
        assert error["message"] == upstream_message("misconfigured", service.model)
    logged = [line for line in log_lines.lines
              if line.get("request_id") == "req-leak-1" and "provider_message" in line]
    assert logged, log_lines.lines
    assert logged[0]["provider_message"].startswith("Incorrect API key provided: [redacted]")
    assert LEAKED_KEY not in json.dumps(log_lines.lines)
    assert LEAKY_MESSAGE not in json.dumps(log_lines.lines)


def test_the_orchestrator_never_answers_or_caches_a_providers_error_text(
    hostile: tuple[HostileUpstream, str], tmp_path: Path
) -> None:
    upstream, url = hostile
    upstream.behaviours = {"*": "ok", "gpt-4o": "leaky_401"}
    app = SERVICES["orchestrator"].build(url, 5.0, tmp_path, {"orch_models": "gpt-4o-mini,gpt-4o"})
    with serve_app(app) as base:
        first = post(base, SERVICES["orchestrator"])
        again = post(base, SERVICES["orchestrator"])

    for response in (first, again):
        assert response.status_code == 200, response.text
        assert LEAKED_KEY not in response.text and "Incorrect API key" not in response.text
        failed = {r["model"]: r for r in response.json()["results"]}["gpt-4o"]
        assert failed["outcome"] == "error"
        assert failed["error"] == upstream_message("misconfigured", "gpt-4o")
    assert (first.json()["cached"], again.json()["cached"]) == (False, True)


# --- a faulty upstream is a 502 or a 504, never a 500 ----------------------------------------


@pytest.mark.parametrize("behaviour", ["html", "null_usage", "lone_surrogate"])
@pytest.mark.parametrize("service", UPSTREAM_SERVICES, ids=ids(UPSTREAM_SERVICES))
def test_an_answer_that_is_not_the_apis_is_a_502_counted_as_an_upstream_error(
    service: Service, behaviour: str, hostile: tuple[HostileUpstream, str], tmp_path: Path
) -> None:
    upstream, url = hostile
    upstream.behaviours = {"*": behaviour}
    with serve_app(service.build(url, 5.0, tmp_path, {})) as base:
        response = post(base, service)
        metrics = scrape(base)

    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"] == "upstream_error"
    assert metrics.value("model_requests_total", route=service.route, outcome="error") == 1
    assert metrics.value("model_upstream_requests_total", model=service.model, outcome="error") == 1


def test_chat_proxy_answers_502_for_an_answer_it_could_not_pass_on(
    hostile: tuple[HostileUpstream, str], tmp_path: Path
) -> None:
    # A logprob of -1e999 fits the API's schema (a float) but no JSON the proxy can write.
    upstream, url = hostile
    upstream.behaviours = {"*": "infinite_logprob"}
    service = SERVICES["chat-proxy"]
    with serve_app(service.build(url, 5.0, tmp_path, {})) as base:
        response = post(base, service)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "invalid_upstream_answer"


@pytest.mark.parametrize("service", UPSTREAM_SERVICES, ids=ids(UPSTREAM_SERVICES))
def test_an_upstream_trickling_its_answer_is_cut_at_the_deadline(
    service: Service, hostile: tuple[HostileUpstream, str], tmp_path: Path
) -> None:
    upstream, url = hostile
    upstream.behaviours = {"*": "trickle"}  # a byte every 0.2 s for 8 s, then a good answer
    with serve_app(service.build(url, 1.0, tmp_path, {})) as base:
        response = post(base, service)
        metrics = scrape(base)

    assert response.status_code == 504, response.text
    assert response.json()["error"]["type"] == "timeout_error"
    assert metrics.value("model_requests_total", route=service.route, outcome="timeout") == 1
    assert metrics.value("model_upstream_requests_total", model=service.model,
                         outcome="timeout") == 1  # fmt: skip


# --- capacity ----------------------------------------------------------------------------------


def stalled_upload(base: str, service: Service) -> socket.socket:
    """A client that sends its headers and half its body, then nothing: it holds a place."""
    body = json.dumps(service.body).encode()
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall((f"POST {service.route} HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                  f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                 + body[: len(body) // 2])  # fmt: skip
    return sock


def capacity(base: str) -> str:
    return str(httpx.get(base + "/health", timeout=5).json()["checks"]["capacity"]["detail"])


@pytest.mark.parametrize("service", list(SERVICES.values()), ids=list(SERVICES))
def test_each_service_answers_429_with_retry_after_beyond_its_capacity(
    service: Service, hostile: tuple[HostileUpstream, str], tmp_path: Path
) -> None:
    overrides = {"max_concurrent_requests": 1, "max_queued_requests": 0}
    with serve_app(service.build(hostile[1], 5.0, tmp_path, overrides)) as base:
        holder = stalled_upload(base, service)
        wait_for(lambda: capacity(base).startswith("1 of 1 places taken"), timeout_s=10,
                 what="the stalled upload to hold the only place")  # fmt: skip
        refused = post(base, service)
        holder.close()
        wait_for(lambda: capacity(base).startswith("0 of 1"), timeout_s=10,
                 what="the place to be free again")  # fmt: skip
        served = post(base, service)
        metrics = scrape(base)

    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert served.status_code == 200, served.text
    assert metrics.value("model_requests_total", route=service.route, outcome="rejected") >= 1


def test_textgen_never_runs_a_generation_whose_client_left(tmp_path: Path) -> None:
    service = SERVICES["textgen"]
    app = service.build("", 0, tmp_path, {"max_concurrent_requests": 1, "max_queued_requests": 1})
    # The batcher's one lane is busy with a long generation until the test stops it.
    busy = StopSignal(limit_s=300)
    generator = app.state.generator
    generator._batcher.submit(generator.loaded.tokenizer.encode(""), 1_000_000, seed=0,
                              temperature=1.0, stop=busy)
    limiter = app.state.limiter
    try:
        with serve_app(app) as base:
            body = json.dumps(service.body).encode()
            head = (f"POST {service.route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
            running = socket.create_connection(base.removeprefix("http://").split(":"), 10)
            running.sendall(head + body)
            wait_for(lambda: limiter.running == 1, timeout_s=10, what="the first to run")
            queued = socket.create_connection(base.removeprefix("http://").split(":"), 10)
            queued.sendall(head + body)
            wait_for(lambda: limiter.waiting == 1, timeout_s=10, what="the second to queue")
            refused = post(base, service)  # the queue is full: not one more
            queued.close()
            running.close()
            wait_for(lambda: limiter.admitted == 0, timeout_s=10, what="both to be dropped")
            busy.stop("released by the test")
            served = post(base, service)
            metrics = scrape(base)
    finally:
        busy.stop("released by the test")

    assert refused.status_code == 429, refused.text
    assert served.status_code == 200, served.text
    # Only the last request generated: the two whose clients left never ran.
    assert metrics.value("model_upstream_requests_total", outcome="success") == 1
    assert metrics.value("model_tokens_total", direction="output") == service.body["num_chars"]

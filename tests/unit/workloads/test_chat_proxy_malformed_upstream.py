"""chat-proxy (`python -m chat_proxy`, a real process) in front of a fake upstream answering 200
with a body that is not a chat completion (its ``malformed_body_rate`` fault): each shape is a
502 in the OpenAI error shape naming what was wrong, counted where the error-rate gate reads
it, and the proxy keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from chat_proxy.answers import completion_problem, not_a_completion_message
from chat_proxy.app import ChatProxySettings, build_app
from fakeupstream import FakeUpstreamClient
from hazards import running_hostile_upstream
from modelkit.settings import parse_settings
from modelkit.testing import MetricSamples, running_module, scrape, serve_app

ROUTE = "/api/v1/chat/completions"
MODEL = "gpt-4o-mini"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}
# The fault's shapes in the order it answers them, with the problem the proxy names.
SHAPES = [
    ("truncated_json", "not valid JSON (cut short or garbled)"),
    ("no_choices", "no choices"),
    ("empty_choices", "choices is empty"),
    ("html_error_page", "content type text/html, not JSON"),
]


@dataclass
class Proxy:
    url: str
    upstream: FakeUpstreamClient
    upstream_url: str

    def chat(self) -> httpx.Response:
        return httpx.post(self.url + ROUTE, json=CHAT, timeout=10)

    def metrics(self) -> MetricSamples:
        return scrape(self.url)


@pytest.fixture(scope="module")
def proxy(fake_upstream_url: str) -> Iterator[Proxy]:
    with FakeUpstreamClient(fake_upstream_url) as upstream:
        env = {
            "UPSTREAM_BASE_URL": fake_upstream_url,
            "UPSTREAM_TIMEOUT_S": "5",
            "OPENAI_API_KEY": "placeholder",
            "LOG_LEVEL": "WARNING",
        }
        with running_module("chat_proxy", env) as service:
            yield Proxy(service.base_url, upstream, fake_upstream_url)


@pytest.fixture(autouse=True)
def no_faults(proxy: Proxy) -> Iterator[None]:
    proxy.upstream.reset()
    yield
    proxy.upstream.reset()


def delta(before: MetricSamples, after: MetricSamples, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def assert_not_a_completion(response: httpx.Response, problem: str) -> None:
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"] == not_a_completion_message(problem, MODEL)
    assert error["message"].startswith(f"upstream answered a body that is not a chat completion: {problem}")
    assert (error["type"], error["code"]) == ("upstream_error", "invalid_upstream_answer")
    assert error["param"] is None
    assert response.headers["x-request-id"] == error["request_id"]


@pytest.mark.parametrize(("position", "problem"), [(i, problem) for i, (_, problem) in enumerate(SHAPES)],
                         ids=[shape for shape, _ in SHAPES])  # fmt: skip
def test_each_malformed_body_is_a_502_naming_it_and_counted_as_an_error(
    proxy: Proxy, position: int, problem: str
) -> None:
    proxy.upstream.set_fault(MODEL, malformed_body_rate=1.0)
    for _ in range(position):  # the fault's earlier shapes go to the upstream directly
        httpx.post(proxy.upstream_url + "/chat/completions", json=CHAT, timeout=5)
    before = proxy.metrics()
    response = proxy.chat()
    after = proxy.metrics()

    assert_not_a_completion(response, problem)
    # What the error-rate gate reads (outcome=~"error|timeout" over outcome!="rejected"): the
    # 502 is an error, never a success nor the caller's fault.
    assert delta(before, after, "model_requests_total", route=ROUTE, outcome="error") == 1
    for outcome in ("success", "rejected", "timeout"):
        assert delta(before, after, "model_requests_total", route=ROUTE, outcome=outcome) == 0
    assert delta(before, after, "model_upstream_requests_total", model=MODEL, outcome="error") == 1
    assert delta(before, after, "model_upstream_requests_total", model=MODEL, outcome="success") == 0
    # Nothing usable came back, so no tokens are counted.
    assert delta(before, after, "model_tokens_total", model=MODEL, direction="input") == 0


def test_every_shape_in_a_row_is_a_502_and_the_proxy_then_serves_again(proxy: Proxy) -> None:
    proxy.upstream.set_fault(MODEL, malformed_body_rate=1.0)
    before = proxy.metrics()
    for _, problem in SHAPES:
        assert_not_a_completion(proxy.chat(), problem)
    proxy.upstream.reset()
    healthy = proxy.chat()
    after = proxy.metrics()

    assert healthy.status_code == 200 and healthy.json()["choices"][0]["message"]["content"]
    assert delta(before, after, "model_requests_total", route=ROUTE, outcome="error") == len(SHAPES)
    assert delta(before, after, "model_requests_total", route=ROUTE, outcome="success") == 1
    assert httpx.get(proxy.url + "/health", timeout=5).json()["status"] == "healthy"


def test_a_rate_of_one_half_fails_half_the_requests_and_the_error_rate_shows_it(proxy: Proxy) -> None:
    proxy.upstream.reset_stats()
    proxy.upstream.set_fault(MODEL, malformed_body_rate=0.5)
    before = proxy.metrics()
    statuses = [proxy.chat().status_code for _ in range(8)]
    after = proxy.metrics()

    assert statuses == [200, 502] * 4
    errors = delta(before, after, "model_requests_total", route=ROUTE, outcome="error")
    successes = delta(before, after, "model_requests_total", route=ROUTE, outcome="success")
    assert errors / (errors + successes) == 0.5
    assert proxy.upstream.stats()[MODEL] == {"success": 4, "malformed": 4}


def test_errors_and_malformed_bodies_together_as_the_bad_upstream_of_the_scenario(proxy: Proxy) -> None:
    # test_analysis_bundles_faulty.py's bad endpoint: 15% 503s and 15% malformed bodies.
    proxy.upstream.set_fault(MODEL, error_rate=0.15, status_code=503, malformed_body_rate=0.2)
    before = proxy.metrics()
    answers = [proxy.chat() for _ in range(20)]
    after = proxy.metrics()

    codes = [r.json()["error"]["code"] for r in answers if r.status_code != 200]
    assert sorted(codes) == ["invalid_upstream_answer"] * 3 + ["upstream_status_503"] * 3
    assert all(r.status_code in (200, 502) for r in answers)
    assert delta(before, after, "model_requests_total", route=ROUTE, outcome="error") == 6
    assert delta(before, after, "model_requests_total", route=ROUTE, outcome="success") == 14


def test_an_answer_off_the_schema_names_the_field() -> None:
    # A 200 completion with usage.prompt_tokens null: valid JSON with choices, off the schema.
    with running_hostile_upstream() as (upstream, url):
        upstream.behaviours = {"*": "null_usage"}
        settings = parse_settings(ChatProxySettings, upstream_base_url=url, upstream_timeout_s=5.0)
        with serve_app(build_app(settings)) as base:
            response = httpx.post(base + ROUTE, json=CHAT, timeout=10)
            metrics = scrape(base)

    assert_not_a_completion(response, "usage.prompt_tokens: off the API's schema")
    assert metrics.value("model_requests_total", route=ROUTE, outcome="error") == 1


@pytest.mark.parametrize(
    ("content_type", "body", "problem"),
    [
        pytest.param("application/json", b'{"id": "x", "choi', "not valid JSON (cut short or garbled)",
                     id="truncated JSON"),
        pytest.param(None, b"", "not valid JSON (cut short or garbled)", id="an empty body, no type"),
        pytest.param("text/html; charset=utf-8", b"<html>502</html>", "content type text/html, not JSON",
                     id="an HTML page"),
        pytest.param("text/plain", b"upstream connect error", "content type text/plain, not JSON",
                     id="plain text"),
        pytest.param("x/<script>sk-123", b"<", "content type unknown, not JSON",
                     id="a content type not shown as it is"),
        pytest.param("application/json", b"[1, 2]", "not a JSON object", id="a list"),
        pytest.param("application/json", b'{"object": "chat.completion"}', "no choices", id="no choices"),
        pytest.param("application/json", b'{"choices": {"0": 1}}', "choices is not a list",
                     id="choices not a list"),
        pytest.param("application/json", b'{"choices": []}', "choices is empty", id="choices empty"),
        pytest.param("application/json", b'{"choices": [{}]}', None, id="shaped like one"),
        # The openai SDK reads JSON whatever its content type says; so does the proxy.
        pytest.param("text/plain", b'{"choices": [{}]}', None, id="JSON typed as text"),
    ],
)  # fmt: skip
def test_the_problem_of_a_body_is_named_in_fixed_words(
    content_type: str | None, body: bytes, problem: str | None
) -> None:
    assert completion_problem(content_type, body) == problem

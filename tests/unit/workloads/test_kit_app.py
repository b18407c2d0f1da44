"""modelkit's app factory over real HTTP: errors, limits, auth, request ids, metrics, health."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from modelkit import Check, ServiceSettings, create_app, invalid_request, upstream_timeout
from modelkit.testing import running_module, scrape, serve_app, wait_for
from pydantic import BaseModel, ConfigDict, Field

API_KEY = "test-key"


class EchoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[str] = Field(min_length=1)
    temperature: float = Field(default=1.0, ge=0, le=2)


def build_demo_app(settings: ServiceSettings, health: dict[str, Check]) -> FastAPI:
    app = create_app(settings, service="demo", models=["demo-model"],
                     checks={"dependency": lambda: health["dependency"]})  # fmt: skip

    @app.post("/echo")
    async def echo(body: EchoRequest) -> dict[str, Any]:
        return {"messages": body.messages}

    @app.post("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        if item_id == 0:
            raise invalid_request("item_id: must not be 0", param="item_id")
        return {"item_id": item_id}

    @app.get("/slow-upstream")
    async def slow_upstream() -> dict[str, Any]:
        raise upstream_timeout("the model provider did not answer in time")

    @app.get("/bug")
    async def bug() -> dict[str, Any]:
        raise RuntimeError("database password is hunter2")

    return app


@dataclass
class DemoService:
    url: str
    health: dict[str, Check] = field(default_factory=dict)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-API-Key": API_KEY, **kwargs.pop("headers", {})}
        return httpx.post(self.url + path, headers=headers, timeout=5, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-API-Key": API_KEY, **kwargs.pop("headers", {})}
        return httpx.get(self.url + path, headers=headers, timeout=5, **kwargs)


@pytest.fixture
def demo() -> Iterator[DemoService]:
    health = {"dependency": Check.ok("reachable")}
    settings = ServiceSettings(api_key=API_KEY, max_request_bytes=2048, app_version="1.2.3")
    with serve_app(build_demo_app(settings, health)) as url:
        yield DemoService(url, health)


def _chunked(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 512):
        yield body[start : start + 512]


BAD_REQUESTS = [
    pytest.param("POST", "/echo", {"json": {}}, 400, "invalid_request_error", "messages",
                 id="a missing field is named in a 400"),
    pytest.param("POST", "/echo", {"json": {"messages": "hi"}}, 400, "invalid_request_error",
                 "messages", id="a field of the wrong type is named in a 400"),
    pytest.param("POST", "/echo", {"json": {"messages": []}}, 400, "invalid_request_error",
                 "messages", id="an empty list that must not be empty is a 400"),
    pytest.param("POST", "/echo", {"json": {"messages": ["a"], "temperature": 5}}, 400,
                 "invalid_request_error", "temperature", id="an out of range value is a 400"),
    pytest.param("POST", "/echo", {"json": {"messages": ["a"], "tempo": 1}}, 400,
                 "invalid_request_error", "tempo", id="an unknown field is a 400 naming it"),
    pytest.param("POST", "/echo", {"content": b"{not json",
                                   "headers": {"content-type": "application/json"}},
                 400, "invalid_request_error", "JSON", id="a body that is not JSON is a 400"),
    pytest.param("POST", "/echo", {"json": ["messages"]}, 400, "invalid_request_error",
                 "request body", id="a JSON array instead of an object is a 400"),
    pytest.param("POST", "/echo", {"json": {"messages": ["x" * 4000]}}, 413,
                 "invalid_request_error", "2048 bytes", id="a body over the size limit is a 413"),
    pytest.param("POST", "/echo", {"content": _chunked(b'{"messages": ["' + b"x" * 4000 + b'"]}')},
                 413, "invalid_request_error", "2048 bytes",
                 id="a chunked body over the size limit is a 413"),
    pytest.param("POST", "/echo", {"json": {"messages": ["a"]}, "headers": {"X-API-Key": "no"}},
                 401, "authentication_error", "X-API-Key", id="a wrong API key is a 401"),
    pytest.param("GET", "/nowhere", {}, 404, "not_found_error", "/nowhere",
                 id="an unknown route is a 404 naming the path"),
    pytest.param("GET", "/echo", {}, 405, "invalid_request_error", "POST",
                 id="a wrong method is a 405 naming the allowed one"),
    pytest.param("POST", "/items/abc", {}, 400, "invalid_request_error", "item_id",
                 id="a bad path parameter is a 400 naming it"),
    pytest.param("POST", "/items/0", {}, 400, "invalid_request_error", "item_id",
                 id="a service's own validation error is a 400 naming the field"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "error_type", "named"), BAD_REQUESTS)
def test_bad_requests_get_an_openai_shaped_4xx(
    demo: DemoService,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    error_type: str,
    named: str,
) -> None:
    headers = {"X-API-Key": API_KEY, **kwargs.pop("headers", {})}
    response = httpx.request(method, demo.url + path, headers=headers, timeout=5, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert named in error["message"]
    assert set(error) >= {"message", "type", "code"}
    after = scrape(demo.url)
    assert after.value("model_requests_total", outcome="rejected") == 1


def test_missing_field_message_reads_field_required_with_param(demo: DemoService) -> None:
    error = demo.post("/echo", json={}).json()["error"]
    assert error["message"] == "messages: field required"
    assert error["param"] == "messages"


def test_missing_api_key_is_rejected_but_health_and_metrics_stay_open(demo: DemoService) -> None:
    response = httpx.post(demo.url + "/echo", json={"messages": ["a"]}, timeout=5)
    assert response.status_code == 401
    assert "X-API-Key" in response.json()["error"]["message"]
    assert httpx.get(demo.url + "/health", timeout=5).status_code == 200
    assert httpx.get(demo.url + "/metrics", timeout=5).status_code == 200


def test_unexpected_exception_is_a_500_without_traceback_and_counted_as_error(
    demo: DemoService,
) -> None:
    response = demo.get("/bug")
    assert response.status_code == 500
    body = response.json()
    assert body["error"]["type"] == "server_error"
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert scrape(demo.url).value("model_requests_total", route="/bug", outcome="error") == 1


def test_requests_are_counted_by_route_template_and_outcome(demo: DemoService) -> None:
    assert demo.post("/echo", json={"messages": ["a"]}).status_code == 200
    assert demo.post("/echo", json={"messages": ["b"]}).status_code == 200
    assert demo.post("/items/7").status_code == 200
    assert demo.get("/slow-upstream").status_code == 504
    demo.get("/health")
    metrics = scrape(demo.url)
    assert metrics.value("model_requests_total", route="/echo", outcome="success") == 2
    assert metrics.value("model_requests_total", route="/items/{item_id}", outcome="success") == 1
    assert metrics.value("model_requests_total", route="/slow-upstream", outcome="timeout") == 1
    assert metrics.value("model_request_duration_seconds_count", route="/echo") == 2
    assert not metrics.has("model_requests_total", route="/health")
    assert metrics.value("model_info", model="demo-model", version="1.2.3") == 1


def test_every_outcome_of_every_model_route_is_exported_from_zero(demo: DemoService) -> None:
    """Before any request: a canary's first error must change a series Prometheus already has
    (a series born with it has one sample, and rate() needs two)."""
    metrics = scrape(demo.url)
    for route in ("/echo", "/items/{item_id}", "/slow-upstream", "/bug"):
        for outcome in ("success", "error", "timeout", "rejected"):
            assert metrics.value("model_requests_total", route=route, outcome=outcome) == 0
    assert not metrics.has("model_requests_total", route="/health")
    assert not metrics.has("model_requests_total", route="/metrics")
    assert demo.get("/slow-upstream").status_code == 504
    assert scrape(demo.url).value("model_requests_total", route="/slow-upstream", outcome="timeout") == 1


def test_request_id_is_echoed_when_given_and_generated_when_not(demo: DemoService) -> None:
    given = demo.post("/echo", json={"messages": ["a"]}, headers={"X-Request-ID": "req-42"})
    assert given.headers["X-Request-ID"] == "req-42"
    generated = demo.post("/echo", json={"messages": ["a"]})
    assert len(generated.headers["X-Request-ID"]) >= 16
    error = demo.get("/nowhere", headers={"X-Request-ID": "req-43"})
    assert error.headers["X-Request-ID"] == "req-43"


@pytest.mark.parametrize(
    ("dependency", "status", "overall"),
    [
        pytest.param(Check.ok("fine"), 200, "healthy", id="all checks ok is healthy"),
        pytest.param(Check.degraded("slow"), 200, "degraded", id="a degraded check is degraded"),
        pytest.param(Check.failing("down"), 503, "unhealthy", id="a failing check is a 503"),
    ],
)
def test_health_reports_the_worst_check(
    demo: DemoService, dependency: Check, status: int, overall: str
) -> None:
    demo.health["dependency"] = dependency
    response = httpx.get(demo.url + "/health", timeout=5)
    assert response.status_code == status
    body = response.json()
    assert body["status"] == overall
    assert body["checks"]["dependency"] == {"status": dependency.status, "detail": dependency.detail}
    assert body["checks"]["upstream"]["status"] == "ok"


def test_two_apps_in_one_process_keep_separate_metrics() -> None:
    first = create_app(ServiceSettings(), service="one", models=["m1"])
    second = create_app(ServiceSettings(), service="two", models=["m2"])
    with serve_app(first) as one, serve_app(second) as two:
        assert scrape(one).value("model_info", model="m1") == 1
        assert not scrape(one).has("model_info", model="m2")
        assert scrape(two).value("model_info", model="m2") == 1


def test_each_request_is_one_json_log_line_with_its_request_id() -> None:
    with running_module("fakeupstream", {"LOG_LEVEL": "INFO"}) as service:
        response = httpx.get(
            service.base_url + "/v1/models", headers={"X-Request-ID": "trace-7"}, timeout=5
        )
        assert response.headers["X-Request-ID"] == "trace-7"

        def request_lines() -> list[dict[str, Any]]:
            lines = [json.loads(line) for line in service.output().splitlines() if line.strip()]
            return [line for line in lines if line.get("request_id") == "trace-7"]

        wait_for(lambda: bool(request_lines()), timeout_s=5, what="the request's log line")
        (line,) = request_lines()
        assert line["message"] == "request"
        assert (line["path"], line["status"], line["outcome"]) == ("/v1/models", 200, "success")
        assert line["service"] == "fake-upstream" and line["duration_ms"] >= 0

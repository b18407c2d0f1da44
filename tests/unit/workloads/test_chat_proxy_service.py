"""chat-proxy as a real process (`python -m chat_proxy`) in front of the fake upstream,
driven through the openai SDK: answers, metric values, health, and upstream failures."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from chat_proxy.app import ChatProxySettings, build_app
from fakeupstream import FakeUpstreamClient
from fastapi.testclient import TestClient
from modelkit.settings import parse_settings
from modelkit.testing import MetricSamples, free_port, running_module, scrape

ROUTE = "/api/v1/chat/completions"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
# gpt-4o-mini in the kit's price table, USD per 1M tokens.
INPUT_PRICE, OUTPUT_PRICE = 0.15, 0.60


@dataclass
class Proxy:
    url: str
    upstream: FakeUpstreamClient

    def sdk(self, prefix: str = "/api/v1") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + prefix, api_key="unused", max_retries=0)

    def metrics(self) -> MetricSamples:
        return scrape(self.url)


@pytest.fixture(scope="module")
def proxy(fake_upstream_url: str) -> Iterator[Proxy]:
    upstream_url = fake_upstream_url  # conftest.py: one fake upstream per session
    with FakeUpstreamClient(upstream_url) as upstream:
        env = {
            "UPSTREAM_BASE_URL": upstream_url,
            "UPSTREAM_TIMEOUT_S": "1",
            "METRIC_MODELS": "gpt-4o",
            "OPENAI_API_KEY": "placeholder",
            "HEALTH_CACHE_S": "0",
            "LOG_LEVEL": "WARNING",
            "APP_VERSION": "v-test",
        }
        with running_module("chat_proxy", env) as service:
            yield Proxy(service.base_url, upstream)


@pytest.fixture(autouse=True)
def no_faults(proxy: Proxy) -> Iterator[None]:
    proxy.upstream.reset()
    yield
    proxy.upstream.reset()


def test_a_completion_is_forwarded_and_counted_with_tokens_and_cost(proxy: Proxy) -> None:
    before = proxy.metrics()
    completion = proxy.sdk().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    after = proxy.metrics()

    assert completion.choices[0].message.content == "[gpt-4o-mini] hello there"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("model_requests_total", route=ROUTE, outcome="success") == 1
    assert delta("model_request_duration_seconds_count", route=ROUTE) == 1
    assert delta("model_upstream_requests_total", model="gpt-4o-mini", outcome="success") == 1
    assert delta("model_tokens_total", model="gpt-4o-mini", direction="input") == usage.prompt_tokens
    assert delta("model_tokens_total", model="gpt-4o-mini", direction="output") == usage.completion_tokens
    expected_cost = (usage.prompt_tokens * INPUT_PRICE + usage.completion_tokens * OUTPUT_PRICE) / 1e6
    assert delta("model_cost_usd_total", model="gpt-4o-mini") == pytest.approx(expected_cost)
    assert after.value("model_info", model="gpt-4o-mini", version="v-test") == 1


def test_an_inline_image_reaches_the_upstream(proxy: Proxy) -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    text_only = proxy.sdk().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": [{"type": "text", "text": "what?"}]}]
    )
    with_image = proxy.sdk().chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )
    assert text_only.usage is not None and with_image.usage is not None
    # The fake upstream bills 85 input tokens per image part it received.
    assert with_image.usage.prompt_tokens - text_only.usage.prompt_tokens == 85


def test_a_model_the_proxy_was_not_configured_for_is_forwarded_but_counted_as_other(
    proxy: Proxy,
) -> None:
    # Callers name the model: were it the label, each new name would be a new series.
    names = [f"caller-model-{n}" for n in range(3)]
    before = proxy.metrics()
    for name in names:
        answer = proxy.sdk().chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == f"[{name}] hi"
    after = proxy.metrics()

    assert not any(after.has(metric, model=name) for metric in (
        "model_upstream_requests_total", "model_tokens_total", "model_cost_usd_total")
        for name in names)  # fmt: skip
    counted = after.value("model_upstream_requests_total", model="other", outcome="success")
    assert counted - before.value("model_upstream_requests_total", model="other", outcome="success") == 3
    assert after.value("model_tokens_total", model="other", direction="input") > before.value(
        "model_tokens_total", model="other", direction="input"
    )
    # The configured models keep their own label.
    proxy.sdk().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert proxy.metrics().value("model_upstream_requests_total", model="gpt-4o", outcome="success") > 0


def test_the_v1_alias_serves_the_same_api_and_lists_the_upstream_models(proxy: Proxy) -> None:
    completion = proxy.sdk("/v1").chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=16, temperature=0
    )
    assert completion.choices[0].message.content == "[gpt-4o] hi"
    model_ids = {model.id for model in proxy.sdk().models.list()}
    assert {"gpt-4o-mini", "gpt-4o"} <= model_ids


def test_health_is_healthy_with_the_upstream_listing_its_models(proxy: Proxy) -> None:
    for path in ("/health", "/api/v1/health"):
        response = httpx.get(proxy.url + path, timeout=5)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "healthy", body
        assert body["checks"]["upstream_models"]["status"] == "ok"


@dataclass
class UpstreamFailure:
    fault: dict[str, float | int]
    status: int
    error_type: str
    outcome: str


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            UpstreamFailure({"error_rate": 1.0, "status_code": 503}, 502, "upstream_error", "error"),
            id="an upstream 503 is answered 502 upstream_error and counted as an error",
        ),
        pytest.param(
            UpstreamFailure({"error_rate": 1.0, "status_code": 500}, 502, "upstream_error", "error"),
            id="an upstream 500 is answered 502 upstream_error and counted as an error",
        ),
        pytest.param(
            UpstreamFailure({"timeout_rate": 1.0, "hang_s": 5.0}, 504, "timeout_error", "timeout"),
            id="an upstream that hangs past the timeout is answered 504 and counted as a timeout",
        ),
        pytest.param(
            UpstreamFailure({"error_rate": 1.0, "status_code": 429}, 429, "rate_limit_error", "error"),
            id="an upstream 429 is answered 429 rate_limit_error and counted as an error",
        ),
    ],
)
def test_upstream_failures_are_counted_answered_clearly_and_leave_the_proxy_healthy(
    proxy: Proxy, case: UpstreamFailure
) -> None:
    proxy.upstream.set_fault("gpt-4o", **case.fault)  # type: ignore[arg-type]
    before = proxy.metrics()
    with pytest.raises(openai.APIStatusError) as raised:
        proxy.sdk().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "are you there?"}]
        )
    after = proxy.metrics()

    assert raised.value.status_code == case.status
    body = raised.value.body
    assert isinstance(body, dict)
    error = body.get("error", body)
    assert error["type"] == case.error_type
    assert "gpt-4o" in error["message"]
    assert (
        after.value("model_requests_total", route=ROUTE, outcome=case.outcome)
        - before.value("model_requests_total", route=ROUTE, outcome=case.outcome)
        == 1
    )
    upstream_outcome = "timeout" if case.outcome == "timeout" else "error"
    assert (
        after.value("model_upstream_requests_total", model="gpt-4o", outcome=upstream_outcome)
        - before.value("model_upstream_requests_total", model="gpt-4o", outcome=upstream_outcome)
        == 1
    )

    proxy.upstream.reset()
    health = httpx.get(proxy.url + "/health", timeout=5).json()
    assert health["status"] == "healthy", health
    again = proxy.sdk().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "back?"}]
    )
    assert again.choices[0].message.content == "[gpt-4o] back?"


def test_the_api_key_is_required_on_the_api_but_not_on_probes(fake_upstream_url: str) -> None:
    env = {"UPSTREAM_BASE_URL": fake_upstream_url, "API_KEY": "k3y", "LOG_LEVEL": "WARNING"}
    with running_module("chat_proxy", env) as service:
        keyless = openai.OpenAI(base_url=service.base_url + "/api/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            keyless.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        keyed = openai.OpenAI(
            base_url=service.base_url + "/api/v1",
            api_key="x",
            max_retries=0,
            default_headers={"X-API-Key": "k3y"},
        )
        answer = keyed.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
        assert answer.choices[0].message.content == "[gpt-4o-mini] x"
        assert httpx.get(service.base_url + "/health", timeout=5).status_code == 200
        assert httpx.get(service.base_url + "/metrics", timeout=5).status_code == 200


def test_health_is_degraded_not_unhealthy_when_the_upstream_is_unreachable() -> None:
    settings = parse_settings(
        ChatProxySettings,
        upstream_base_url=f"http://127.0.0.1:{free_port()}/v1",
        health_upstream_timeout_s=0.5,
    )
    with TestClient(build_app(settings)) as client:
        response = client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert "unreachable" in body["checks"]["upstream_models"]["detail"]


def test_a_bad_setting_stops_the_proxy_at_start_naming_the_variable() -> None:
    with (
        pytest.raises(RuntimeError, match="UPSTREAM_TIMEOUT_S"),
        running_module("chat_proxy", {"UPSTREAM_TIMEOUT_S": "soon"}),
    ):
        pass

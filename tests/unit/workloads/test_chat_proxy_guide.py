"""What chat-proxy's deployment guide asks of it, checked on the real process (`python -m
chat_proxy`) in front of the real fake upstream: the fields of `GET /api/v1/health`, the
120 s completion timeout, and one 400 naming every bad image of a multi-image request."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from chat_proxy.app import ChatProxySettings
from fakeupstream import FakeUpstreamClient
from modelkit.settings import parse_settings
from modelkit.testing import free_port, running_module

ROUTE = "/api/v1/chat/completions"
HEALTH = "/api/v1/health"
# Distinctive, so that any trace of them in an answer is found.
CLIENT_KEY = "guide-client-key-Qx7Rv2Lw9Zt4"
UPSTREAM_KEY = "sk-guide-upstream-Hm3Kp8Nc5Yd1"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
TEN_MB = 10 * 1024 * 1024


def png_data_uri(data: bytes = PNG) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def env_for(upstream_url: str, **extra: str) -> dict[str, str]:
    return {
        "UPSTREAM_BASE_URL": upstream_url,
        "HEALTH_CACHE_S": "0",  # each health answer looks at the upstream afresh
        "LOG_LEVEL": "WARNING",
        "OPENAI_API_KEY": "placeholder",
        **extra,
    }


@pytest.fixture(scope="module")
def keyed_proxy(fake_upstream_url: str) -> Iterator[str]:
    """A proxy holding both keys: callers' (API_KEY) and the upstream's (OPENAI_API_KEY)."""
    env = env_for(fake_upstream_url, API_KEY=CLIENT_KEY, OPENAI_API_KEY=UPSTREAM_KEY)
    with running_module("chat_proxy", env) as service:
        yield service.base_url


def get(url: str, key: str | None = CLIENT_KEY) -> httpx.Response:
    return httpx.get(url, headers={"X-API-Key": key} if key else {}, timeout=10)


def assert_no_key_text(text: str) -> None:
    for key in (CLIENT_KEY, UPSTREAM_KEY):
        for fragment in (key, key[:10], key[-10:]):
            assert fragment not in text, f"an answer holds part of an API key: {fragment!r}"


def test_api_health_gives_the_guides_fields_besides_the_kits_checks(
    keyed_proxy: str, fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    before = datetime.now(UTC)
    response = get(keyed_proxy + HEALTH)
    after = datetime.now(UTC)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "healthy", body
    assert {"upstream", "capacity", "upstream_models"} <= set(body["checks"]), "the kit's checks stay"
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.utcoffset() == timedelta(0), "the timestamp is in UTC"
    assert before - timedelta(seconds=1) <= stamp <= after + timedelta(seconds=1), "made now"
    assert body["models_loaded"] is True
    upstream_models = httpx.get(fake_upstream_url + "/models", timeout=5).json()["data"]
    assert type(body["model_count"]) is int and body["model_count"] == len(upstream_models)
    assert type(body["api_keys_configured"]) is int and body["api_keys_configured"] == 2
    assert_no_key_text(response.text)
    assert_no_key_text(str(response.headers))


@pytest.mark.parametrize(
    ("keys", "count"),
    [
        pytest.param({}, 0, id="no key (the kit's placeholder upstream key) is counted 0"),
        pytest.param({"OPENAI_API_KEY": UPSTREAM_KEY}, 1, id="the upstream key alone is counted 1"),
    ],
)
def test_api_keys_configured_counts_the_keys_and_shows_none(
    fake_upstream_url: str, keys: dict[str, str], count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the keys of the case: none inherited from the environment the tests run in.
    for variable in ("API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    env = {k: v for k, v in env_for(fake_upstream_url).items() if k != "OPENAI_API_KEY"}
    with running_module("chat_proxy", {**env, **keys}) as service:
        response = get(service.base_url + HEALTH, key=None)
    assert response.status_code == 200, response.text
    assert response.json()["api_keys_configured"] == count
    assert_no_key_text(response.text)


def test_models_loaded_follows_whether_the_upstream_lists_the_configured_model(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    model = "guide-model-not-yet-served"
    env = env_for(fake_upstream_url, DEFAULT_MODEL=model)
    with running_module("chat_proxy", env) as service:
        missing = get(service.base_url + HEALTH, key=None)
        probe = get(service.base_url + "/health", key=None)
        # The fake upstream lists every model that has a fault set, a harmless one included.
        fake_upstream.set_fault(model)
        served = get(service.base_url + HEALTH, key=None)
        served_probe = get(service.base_url + "/health", key=None)

    body = missing.json()
    assert (missing.status_code, body["status"], body["models_loaded"]) == (200, "degraded", False)
    assert model in body["checks"]["upstream_models"]["detail"], "the detail names the model"
    assert isinstance(body["model_count"], int) and body["model_count"] > 0
    assert (probe.status_code, probe.json()["status"]) == (200, "degraded"), "same as the kit's"
    body = served.json()
    assert (served.status_code, body["status"], body["models_loaded"]) == (200, "healthy", True)
    assert (served_probe.status_code, served_probe.json()["status"]) == (200, "healthy")


def test_api_health_is_degraded_with_no_models_when_the_upstream_cannot_list_them() -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/v1"
    with running_module("chat_proxy", env_for(unreachable, HEALTH_UPSTREAM_TIMEOUT_S="0.5")) as service:
        response = get(service.base_url + HEALTH, key=None)
    body = response.json()
    assert (response.status_code, body["status"]) == (200, "degraded")
    assert (body["models_loaded"], body["model_count"]) == (False, 0)


def test_the_completion_timeout_defaults_to_the_guides_120_s(monkeypatch: pytest.MonkeyPatch) -> None:
    # Observing it over HTTP would take two minutes a run: the setting's default is the fact.
    monkeypatch.delenv("UPSTREAM_TIMEOUT_S", raising=False)
    assert parse_settings(ChatProxySettings).upstream_timeout_s == 120


def chat_with_images(*urls: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "compare these"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": parts}]}


def image_path(part: int) -> str:
    return f"messages[0].content[{part}].image_url.url"


def post_chat(base_url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(base_url + ROUTE, json=body, headers={"X-API-Key": CLIENT_KEY}, timeout=30)


def upstream_chats(upstream: FakeUpstreamClient) -> int:
    return sum(upstream.stats().get("gpt-4o-mini", {}).values())


def test_one_400_names_both_bad_images_of_three_and_not_the_good_one(
    keyed_proxy: str, fake_upstream: FakeUpstreamClient
) -> None:
    before = upstream_chats(fake_upstream)
    response = post_chat(
        keyed_proxy,
        chat_with_images("data:image/png;base64,%%%not-base64%%%", png_data_uri(), "cat.png"),
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", image_path(1))
    message = error["message"]
    assert f"'{image_path(1)}': image data is not valid base64" in message
    assert f"'{image_path(3)}': must be a data URI" in message
    assert image_path(2) not in message, "the good image is not mentioned"
    assert message.count("image_url.url") == 2
    assert upstream_chats(fake_upstream) == before, "nothing was forwarded"


def test_every_reason_an_image_is_refused_is_given_for_each_bad_image(keyed_proxy: str) -> None:
    response = post_chat(
        keyed_proxy,
        chat_with_images(
            "cat.png",
            "data:image/png;base64,%%%",
            png_data_uri(),
            "data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode(),
            png_data_uri(PNG + b"\x00" * TEN_MB),
        ),
    )

    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert message.startswith("4 images are invalid")
    for part, reason in [
        (1, "must be a data URI"),
        (2, "image data is not valid base64"),
        (4, "image type image/svg+xml is not supported"),
        (5, "image is larger than the limit of 10485760 bytes"),
    ]:
        assert f"'{image_path(part)}': {reason}" in message
    assert image_path(3) not in message

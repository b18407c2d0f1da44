"""textgen's CORS over real HTTP: `python -m textgen` in its own process, as the kubelet runs it.

CORS is the outermost middleware (outside the kit's): a preflight is answered without an API
key and never counted as a model request; other answers, errors included, carry the
allow-origin header for an allowed origin only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from modelkit.settings import ConfigurationError, parse_settings
from modelkit.testing import ServiceProcess, running_module, scrape
from textgen.service import TextgenSettings

API_KEY = "test-key-cors"
AUTH = {"X-API-Key": API_KEY}
ALLOWED = "https://a.example"
OTHER = "https://b.example"
GOOD = {"seed": 1, "temperature": 1.0, "num_chars": 3}
BASE_ENV = {
    "API_KEY": API_KEY,
    "TEXTGEN_DEVICE": "cpu",
    "TEXTGEN_MAX_CHARS": "50",
    "PYTHONWARNINGS": "ignore",
}


@pytest.fixture(scope="module")
def open_server() -> Iterator[ServiceProcess]:
    """CORS_ALLOW_ORIGINS left at its default, "*" (any origin), with an API key configured."""
    # Importing torch and loading the weights takes seconds on a busy machine.
    with running_module("textgen", BASE_ENV, timeout_s=90) as service:
        yield service


@pytest.fixture(scope="module")
def one_origin_server() -> Iterator[ServiceProcess]:
    with running_module("textgen", {**BASE_ENV, "CORS_ALLOW_ORIGINS": ALLOWED}, timeout_s=90) as service:
        yield service


def preflight(server: ServiceProcess, origin: str, headers: str = "content-type,x-api-key") -> httpx.Response:
    """What a browser sends before a cross-origin POST with JSON and X-API-Key (no key itself)."""
    return httpx.options(
        f"{server.base_url}/generate",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
        timeout=30,
    )


def post_generate(server: ServiceProcess, origin: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/generate", json=GOOD, headers={"Origin": origin, **headers}, timeout=60
    )


def listed(value: str | None) -> set[str]:
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


def assert_openai_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["type"] == error_type
    return error


# --- any origin (the default) ---------------------------------------------------------------


def test_a_preflight_is_answered_without_an_api_key_allowing_any_origin(open_server: ServiceProcess) -> None:
    response = preflight(open_server, "https://anywhere.example")
    assert response.status_code in (200, 204), response.text
    assert response.headers["access-control-allow-origin"] == "*"
    assert "post" in listed(response.headers["access-control-allow-methods"])
    assert {"x-api-key", "content-type"} <= listed(response.headers["access-control-allow-headers"])


def test_a_preflight_is_not_counted_as_a_model_request(open_server: ServiceProcess) -> None:
    before = scrape(open_server.base_url)
    assert preflight(open_server, "https://anywhere.example").status_code in (200, 204)
    after = scrape(open_server.base_url)
    assert after.value("model_requests_total") == before.value("model_requests_total")
    assert after.value("model_request_duration_seconds_count") == before.value(
        "model_request_duration_seconds_count"
    )


def test_a_401_carries_the_allow_origin_header_so_a_browser_can_read_it(open_server: ServiceProcess) -> None:
    response = post_generate(open_server, "https://anywhere.example", {})
    error = assert_openai_error(response, 401, "authentication_error")
    assert "X-API-Key" in error["message"]
    assert response.headers["access-control-allow-origin"] == "*"
    # The request id is readable by the page, to quote in a report.
    assert "x-request-id" in listed(response.headers["access-control-expose-headers"])


def test_a_generation_carries_the_allow_origin_header(open_server: ServiceProcess) -> None:
    response = post_generate(open_server, "https://anywhere.example", AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    assert len(response.json()["text"]) == GOOD["num_chars"]


def test_a_request_without_an_origin_is_served_as_before(open_server: ServiceProcess) -> None:
    response = httpx.post(f"{open_server.base_url}/generate", json=GOOD, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    assert "access-control-allow-origin" not in response.headers


def test_options_that_is_not_a_preflight_still_needs_the_api_key(open_server: ServiceProcess) -> None:
    # No Access-Control-Request-Method: not a preflight, so the kit answers it as any request.
    response = httpx.options(
        f"{open_server.base_url}/generate", headers={"Origin": "https://anywhere.example"}, timeout=30
    )
    assert_openai_error(response, 401, "authentication_error")


# --- one allowed origin -----------------------------------------------------------------------


def test_a_preflight_from_the_allowed_origin_names_that_origin(one_origin_server: ServiceProcess) -> None:
    response = preflight(one_origin_server, ALLOWED)
    assert response.status_code in (200, 204), response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "origin" in listed(response.headers.get("vary"))


def test_a_preflight_from_another_origin_gets_no_allow_origin_header(
    one_origin_server: ServiceProcess,
) -> None:
    response = preflight(one_origin_server, OTHER)
    assert "access-control-allow-origin" not in response.headers
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert error["code"] == "cors_not_allowed"
    assert "origin" in error["message"]


def test_a_preflight_asking_for_an_unlisted_header_is_refused(one_origin_server: ServiceProcess) -> None:
    response = preflight(one_origin_server, ALLOWED, headers="x-api-key,x-secret-admin")
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert "headers" in error["message"]


def test_an_answer_to_another_origin_has_no_allow_origin_header(one_origin_server: ServiceProcess) -> None:
    # The server still answers (the browser is what withholds it from the page).
    response = post_generate(one_origin_server, OTHER, AUTH)
    assert response.status_code == 200, response.text
    assert "access-control-allow-origin" not in response.headers


def test_a_401_to_the_allowed_origin_carries_the_allow_origin_header(
    one_origin_server: ServiceProcess,
) -> None:
    response = post_generate(one_origin_server, ALLOWED, {"X-API-Key": "wrong"})
    assert_openai_error(response, 401, "authentication_error")
    assert response.headers["access-control-allow-origin"] == ALLOWED


def test_a_preflight_is_not_counted_with_one_origin_either(one_origin_server: ServiceProcess) -> None:
    before = scrape(one_origin_server.base_url)
    preflight(one_origin_server, ALLOWED)
    preflight(one_origin_server, OTHER)
    after = scrape(one_origin_server.base_url)
    assert after.value("model_requests_total") == before.value("model_requests_total")


# --- the setting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        pytest.param("*", ["*"], id="a star allows any origin"),
        pytest.param(
            " https://a.example , HTTPS://B.example:8443,",
            ["https://a.example", "https://b.example:8443"],
            id="a list is trimmed and lowercased as browsers send origins",
        ),
        pytest.param("", [], id="empty turns CORS off"),
    ],
)
def test_cors_allow_origins_is_a_comma_separated_list(value: str, origins: list[str]) -> None:
    assert parse_settings(TextgenSettings, cors_allow_origins=value).cors_origins() == origins


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("https://a.example/", id="a trailing slash would never match"),
        pytest.param("https://a.example/app", id="a path is not part of an origin"),
        pytest.param("a.example", id="an origin needs its scheme"),
    ],
)
def test_a_value_that_is_not_an_origin_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigurationError, match="CORS_ALLOW_ORIGINS"):
        parse_settings(TextgenSettings, cors_allow_origins=value)


def test_the_default_allows_any_origin_as_the_deployment_guide_does() -> None:
    assert TextgenSettings.model_fields["cors_allow_origins"].default == "*"

"""chat-proxy refuses bad requests with the right 4xx in the OpenAI error shape, and no
body whatever (infinities and huge numbers included) makes it answer 500. Driven in-process
through FastAPI's TestClient; the upstream is a closed local port, so nothing valid gets
further than a quick 502."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from chat_proxy.app import ChatProxySettings, build_app
from chat_proxy.validation import InvalidRequest, parse_chat_request
from fastapi.testclient import TestClient
from hazards import edge_strings, encode, json_values
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from modelkit.settings import parse_settings
from modelkit.testing import parse_metrics

API_KEY = "s3cret"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
TEN_MB = 10 * 1024 * 1024


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _client(**overrides: Any) -> Iterator[TestClient]:
    proxy_settings = parse_settings(
        ChatProxySettings,
        upstream_base_url=f"http://127.0.0.1:{closed_port()}/v1",
        upstream_timeout_s=2,
        health_upstream_timeout_s=0.5,
        **overrides,
    )
    with TestClient(build_app(proxy_settings)) as client:
        yield client


@pytest.fixture(scope="module")
def open_proxy() -> Iterator[TestClient]:
    """Default limits, no API key."""
    yield from _client()


@pytest.fixture(scope="module")
def guarded_proxy() -> Iterator[TestClient]:
    """An API key and a 1 MiB request limit."""
    yield from _client(api_key=API_KEY, max_request_bytes=1024 * 1024)


def user(content: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}


def image(url: str) -> dict[str, Any]:
    return user([{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}])


HELLO = user("hello")


@dataclass
class BadRequest:
    body: Any = None
    raw: bytes | None = None
    status: int = 400
    error_type: str = "invalid_request_error"
    param: str | None = None
    says: str = ""
    path: str = "/api/v1/chat/completions"
    method: str = "POST"
    guarded: bool = False
    headers: dict[str, str] = field(default_factory=dict)


BAD_REQUESTS = [
    pytest.param(
        BadRequest(raw=b"{not json", says="not valid JSON"), id="a body that is not JSON is refused"
    ),
    pytest.param(
        BadRequest(
            raw=b'{"messages": [{"role": "user", "content": "x"}], "user": "\\ud800"}',
            param="user",
            says="unpaired UTF-16 surrogate",
        ),
        id="a lone surrogate escape, which cannot be forwarded, is refused",
    ),
    pytest.param(
        BadRequest(raw=b"\xff\xfe{}", says="not valid JSON"),
        id="a body that is not UTF-8 is refused",
    ),
    pytest.param(BadRequest(body=[HELLO], says="JSON object"), id="a JSON array body is refused"),
    pytest.param(
        BadRequest(
            body={"model": "gpt-4o-mini"}, param="messages", says="Missing required parameter: 'messages'"
        ),
        id="missing messages are named",
    ),
    pytest.param(
        BadRequest(body={"messages": []}, param="messages", says="at least 1 item"),
        id="an empty message list is refused",
    ),
    pytest.param(
        BadRequest(body={"messages": "hello"}, param="messages", says="valid list"),
        id="messages that are not a list are refused",
    ),
    pytest.param(
        BadRequest(
            body={"messages": [{"role": "wizard", "content": "x"}]},
            param="messages[0].role",
            says="'system', 'user', 'assistant' or 'tool'",
        ),
        id="an unknown role is refused",
    ),
    pytest.param(
        BadRequest(
            body={"messages": [{"role": "user"}]}, param="messages[0].content", says="content is required"
        ),
        id="a message without content is refused",
    ),
    pytest.param(
        BadRequest(body=user(42), param="messages[0].content", says="string or a non-empty list"),
        id="numeric content is refused",
    ),
    pytest.param(
        BadRequest(body=user([]), param="messages[0].content", says="at least 1 item"),
        id="an empty part list is refused",
    ),
    pytest.param(
        BadRequest(
            body=user([{"type": "audio", "data": "x"}]),
            param="messages[0].content[0]",
            says="type 'text' or 'image_url'",
        ),
        id="an unknown part type is refused",
    ),
    pytest.param(
        BadRequest(
            body=user([{"type": "text"}]),
            param="messages[0].content[0].text",
            says="Missing required parameter",
        ),
        id="a text part without text is refused",
    ),
    pytest.param(
        BadRequest(
            body={"messages": [{"role": "tool", "content": "42"}]},
            param="messages[0].tool_call_id",
            says="tool_call_id",
        ),
        id="a tool message without its call id is refused",
    ),
    pytest.param(
        BadRequest(body={**HELLO, "model": 4}, param="model", says="valid string"),
        id="a model that is not a string is refused",
    ),
    pytest.param(
        BadRequest(body={**HELLO, "model": ""}, param="model", says="at least 1 character"),
        id="an empty model id is refused",
    ),
    pytest.param(
        BadRequest(body={**HELLO, "temperature": 2.5}, param="temperature", says="less than or equal to 2"),
        id="a temperature above 2 is refused",
    ),
    pytest.param(
        BadRequest(body={**HELLO, "temperature": "hot"}, param="temperature", says="valid number"),
        id="a temperature that is a string is refused",
    ),
    pytest.param(
        BadRequest(
            raw=b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
            param="temperature",
            says="NaN is not valid JSON",
        ),
        id="a NaN temperature is refused as invalid JSON naming it",
    ),
    pytest.param(
        BadRequest(raw=b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}',
                   param="temperature", says="out of range"),
        id="an infinite temperature written as 1e999 is refused naming it",
    ),
    pytest.param(
        BadRequest(raw=b'{"messages": [{"role": "user", "content": "x"}], "seed": 1' + b"0" * 5000
                   + b"}", says="not valid JSON"),
        id="an integer of 5000 digits is refused as invalid JSON",
    ),
    pytest.param(
        BadRequest(body={**HELLO, "max_tokens": 0}, param="max_tokens", says="greater than 0"),
        id="zero max_tokens is refused",
    ),
    pytest.param(
        BadRequest(body={**HELLO, "max_tokens": 1.5}, param="max_tokens", says="valid integer"),
        id="fractional max_tokens is refused",
    ),
    pytest.param(
        BadRequest(body={**HELLO, "n": 50}, param="n", says="less than or equal to 8"),
        id="too many choices are refused",
    ),
    pytest.param(
        BadRequest(body={**HELLO, "stream": True}, param="stream", says="streaming is not supported"),
        id="streaming is refused",
    ),
    pytest.param(
        BadRequest(body={**HELLO, "max_token": 5}, param="max_token", says="Unrecognized request argument"),
        id="a misspelt field is refused",
    ),
    pytest.param(
        BadRequest(
            body=image("https://example.com/cat.png"),
            param="messages[0].content[1].image_url.url",
            says="remote image URLs are not accepted",
        ),
        id="an https image URL is refused",
    ),
    pytest.param(
        BadRequest(
            body=image("data:image/png;base64,%%%not-base64%%%"),
            param="messages[0].content[1].image_url.url",
            says="not valid base64",
        ),
        id="an image with bad base64 is refused",
    ),
    pytest.param(
        BadRequest(
            body=image(data_uri("text/plain", b"hello")),
            param="messages[0].content[1].image_url.url",
            says="not an image",
        ),
        id="a data URI of a non-image MIME type is refused",
    ),
    pytest.param(
        BadRequest(
            body=image(data_uri("image/svg+xml", b"<svg/>")),
            param="messages[0].content[1].image_url.url",
            says="not supported",
        ),
        id="an SVG image is refused",
    ),
    pytest.param(
        BadRequest(
            body=image(data_uri("image/png", JPEG)),
            param="messages[0].content[1].image_url.url",
            says="not a PNG",
        ),
        id="JPEG bytes declared as PNG are refused",
    ),
    pytest.param(
        BadRequest(
            body=image("data:image/png,rawbytes"),
            param="messages[0].content[1].image_url.url",
            says="data:image/<png|jpeg|gif|webp>;base64",
        ),
        id="a data URI that is not base64 is refused",
    ),
    pytest.param(
        BadRequest(
            body=image(data_uri("image/png", PNG + b"\x00" * TEN_MB)),
            param="messages[0].content[1].image_url.url",
            says="larger than the limit",
        ),
        id="an image over 10 MB is refused",
    ),
    pytest.param(
        BadRequest(
            body=HELLO,
            guarded=True,
            status=401,
            error_type="authentication_error",
            says="X-API-Key header is missing",
        ),
        id="a request without the API key is refused",
    ),
    pytest.param(
        BadRequest(
            body=HELLO,
            guarded=True,
            headers={"X-API-Key": "guess"},
            status=401,
            error_type="authentication_error",
            says="not the service's API key",
        ),
        id="a wrong API key is refused",
    ),
    pytest.param(
        BadRequest(
            raw=b"x" * (1024 * 1024 + 1),
            guarded=True,
            headers={"X-API-Key": API_KEY},
            status=413,
            says="MAX_REQUEST_BYTES",
        ),
        id="a body over the size limit is refused",
    ),
    pytest.param(
        BadRequest(
            path="/api/v1/completion", body=HELLO, status=404, error_type="not_found_error", says="no route"
        ),
        id="an unknown route is answered 404",
    ),
    pytest.param(
        BadRequest(method="GET", status=405, says="use POST"),
        id="GET on the completions route is answered 405",
    ),
]


INF = float("inf")
# Free-form objects the proxy forwards as they are: a number beyond the float range deep
# inside one reached the SDK's encoder (allow_nan=False) and came back as a 500.
INFINITE_IN_FREE_FORM_FIELDS = [
    pytest.param({**HELLO, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "number", "maximum": INF}}}},
        "response_format.json_schema.schema.maximum", id="in response_format"),
    pytest.param({**HELLO, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {
            "n": {"type": "number", "minimum": -INF}}}}}]},
        "tools[0].function.parameters.properties.n.minimum", id="in tools"),
    pytest.param({**HELLO, "tool_choice": {"type": "function", "function": {"name": "f"},
                                          "weight": INF}},
        "tool_choice.weight", id="in tool_choice"),
    pytest.param({"messages": [
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "f", "arguments": INF}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]},
        "messages[0].tool_calls[0].function.arguments", id="in messages[].tool_calls"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param"), INFINITE_IN_FREE_FORM_FIELDS)
def test_a_number_beyond_the_float_range_anywhere_is_the_callers_400_not_a_500(
    body: dict[str, Any], param: str, open_proxy: TestClient
) -> None:
    def rejected() -> float:
        metrics = parse_metrics(open_proxy.get("/metrics").text)
        return metrics.value("model_requests_total", outcome="rejected")

    before = rejected()
    response = open_proxy.post("/api/v1/chat/completions", content=encode(body),
                               headers={"Content-Type": "application/json"})  # fmt: skip
    assert b"1e999" in encode(body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"].startswith(f"{param}: a number is out of range")
    assert rejected() - before == 1
    errors = parse_metrics(open_proxy.get("/metrics").text)
    assert errors.value("model_requests_total", outcome="error") == 0


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_get_the_right_openai_error(
    case: BadRequest, open_proxy: TestClient, guarded_proxy: TestClient
) -> None:
    client = guarded_proxy if case.guarded else open_proxy
    content = case.raw if case.raw is not None else json.dumps(case.body).encode()
    response = client.request(
        case.method,
        case.path,
        content=None if case.method == "GET" else content,
        headers={"Content-Type": "application/json", **case.headers},
    )
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == case.error_type
    assert error["param"] == case.param
    assert case.says in error["message"]
    if case.param is not None:
        assert case.param in error["message"], "the message names the field"


def test_every_supported_image_type_passes_validation() -> None:
    gif = b"GIF89a" + b"\x00" * 8
    webp = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 8
    for mime, data in [("image/png", PNG), ("image/jpeg", JPEG), ("image/gif", gif), ("image/webp", webp)]:
        parsed = parse_chat_request(image(data_uri(mime, data)))
        assert parsed.messages[0].content is not None


def test_an_image_of_exactly_10_mb_is_accepted() -> None:
    parse_chat_request(image(data_uri("image/png", PNG + b"\x00" * (TEN_MB - len(PNG)))))


def test_defaults_and_pass_through_fields_reach_the_upstream_call() -> None:
    parsed = parse_chat_request(
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "seed": 7}
    )
    assert parsed.upstream_kwargs("gpt-4o-mini") == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.0,
        "seed": 7,
    }


# --- no input makes a 500 ----------------------------------------------------------------

KEYS = ["model", "messages", "temperature", "top_p", "max_tokens", "n", "stream", "stop", "seed"]
# Each field is usually plausible and sometimes arbitrary, so examples reach deep checks.
plausible = {
    "model": st.sampled_from(["gpt-4o-mini", "gpt-4o", ""]),
    "temperature": st.floats(-1, 3) | st.floats(allow_nan=False),
    "top_p": st.floats(-0.5, 1.5),
    "max_tokens": st.integers(-2, 5000),
    "n": st.integers(0, 10),
    "stream": st.booleans(),
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6),
    "seed": st.integers(),
    "user": st.text(max_size=5) | edge_strings,
}
image_urls = st.sampled_from(
    [
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "data:image/png;base64,iVBORw0KGgo",
        "data:image/jpeg;base64," + base64.b64encode(PNG).decode(),
        "data:text/html;base64,PGI+",
        "https://example.com/x.png",
    ]
)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {"url": image_urls},
                optional={"detail": st.sampled_from(["auto", "low", "huge"])},
            ),
        }
    ),
    json_values,
)
messages = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool", "bot"]),
        "content": st.text(max_size=10)
        | edge_strings
        | st.lists(parts, min_size=1, max_size=3)
        | json_values,
    },
    optional={
        "tool_calls": st.lists(st.dictionaries(st.text(max_size=3), json_values), max_size=2),
        "tool_call_id": st.text(max_size=4),
        "name": st.text(max_size=4),
    },
)
near_valid_bodies = st.fixed_dictionaries(
    {"messages": st.lists(messages, min_size=1, max_size=3) | json_values},
    optional=plausible,
)
bodies = near_valid_bodies | json_values | st.dictionaries(st.sampled_from(KEYS), json_values)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
def test_no_json_body_makes_the_validation_raise_anything_but_a_clear_error(body: Any) -> None:
    try:
        decoded = json.loads(encode(body))
    except ValueError:
        return  # not even Python reads it (a 5000-digit number): the HTTP test covers it
    try:
        parse_chat_request(decoded)
    except InvalidRequest as error:
        assert error.message


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
@example(body={"messages": [{"role": "user", "content": "lone \ud800 surrogate"}]})
@example(body={"messages": [{"role": "user", "content": "x"}], "tools": [{"x": float("inf")}]})
def test_any_json_body_gets_a_4xx_or_reaches_the_upstream_never_a_500(
    body: Any, open_proxy: TestClient
) -> None:
    response = open_proxy.post(
        "/api/v1/chat/completions",
        content=encode(body),  # infinities as 1e999; ASCII escapes carry lone surrogates
        headers={"Content-Type": "application/json"},
    )
    # 400 for a bad body; a valid one gets as far as the (closed) upstream: 502.
    assert response.status_code in (400, 502), response.text
    assert response.json()["error"]["type"] in ("invalid_request_error", "upstream_error")

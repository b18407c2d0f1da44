"""The orchestrator refuses bad requests with the right 4xx in the OpenAI error shape.
Driven in-process through FastAPI's TestClient; the upstream is a closed local port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from modelkit.settings import parse_settings
from modelkit.testing import free_port
from orchestrator.app import build_app
from orchestrator.config import OrchestratorSettings

API_KEY = "0rch-key"


def _client(data_dir: Path, **overrides: Any) -> Iterator[TestClient]:
    orchestrator_settings = parse_settings(
        OrchestratorSettings,
        orch_models="fake-a=1/2,fake-b=0.5/1",
        orch_data_dir=str(data_dir),
        openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
        orch_timeout_s=1,
        **overrides,
    )
    with TestClient(build_app(orchestrator_settings)) as client:
        yield client


@pytest.fixture(scope="module")
def open_orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    yield from _client(tmp_path_factory.mktemp("open"))


@pytest.fixture(scope="module")
def guarded_orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    yield from _client(tmp_path_factory.mktemp("guarded"), api_key=API_KEY, max_request_bytes=4096)


@dataclass
class BadRequest:
    body: Any = None
    raw: bytes | None = None
    status: int = 400
    error_type: str = "invalid_request_error"
    param: str | None = None
    says: str = ""
    path: str = "/query"
    method: str = "POST"
    guarded: bool = False
    headers: dict[str, str] = field(default_factory=dict)


BAD_REQUESTS = [
    pytest.param(
        BadRequest(raw=b"prompt=hi", says="not valid JSON"), id="a body that is not JSON is refused"
    ),
    pytest.param(BadRequest(body=["hi"], says="valid dictionary"), id="a JSON array body is refused"),
    pytest.param(
        BadRequest(body={}, param="prompt", says="prompt: field required"), id="a missing prompt is named"
    ),
    pytest.param(
        BadRequest(body={"prompt": ""}, param="prompt", says="at least 1 character"),
        id="an empty prompt is refused",
    ),
    pytest.param(
        BadRequest(body={"prompt": 42}, param="prompt", says="valid string"), id="a numeric prompt is refused"
    ),
    pytest.param(
        BadRequest(body={"prompt": "x" * 32_001}, param="prompt", says="at most 32000"),
        id="an overlong prompt is refused",
    ),
    pytest.param(
        BadRequest(raw=b'{"prompt": "\\ud800"}', param="prompt", says="unpaired UTF-16 surrogate"),
        id="a prompt with a lone surrogate escape is refused",
    ),
    pytest.param(
        BadRequest(body={"prompt": "hi", "models": []}, param="models", says="at least 1 item"),
        id="an empty model list is refused",
    ),
    pytest.param(
        BadRequest(body={"prompt": "hi", "models": "fake-a"}, param="models", says="valid list"),
        id="models that are not a list are refused",
    ),
    pytest.param(
        BadRequest(body={"prompt": "hi", "models": [7]}, param="models.0", says="valid string"),
        id="a numeric model id is refused",
    ),
    pytest.param(
        BadRequest(
            body={"prompt": "hi", "models": ["fake-a", "gpt-5"]},
            param="models[1]",
            says="'gpt-5' is not a registered model; choose from fake-a, fake-b",
        ),
        id="an unregistered model is refused naming the registered ones",
    ),
    pytest.param(
        BadRequest(
            body={"prompt": "hi", "models": ["fake-a", "fake-a"]}, param="models[1]", says="listed twice"
        ),
        id="a model listed twice is refused",
    ),
    pytest.param(
        BadRequest(
            body={"prompt": "hi", "temperature": 9}, param="temperature", says="less than or equal to 2"
        ),
        id="a temperature above 2 is refused",
    ),
    pytest.param(
        BadRequest(body={"prompt": "hi", "temperature": "warm"}, param="temperature", says="valid number"),
        id="a temperature that is a string is refused",
    ),
    pytest.param(
        BadRequest(body={"prompt": "hi", "max_tokens": 0}, param="max_tokens", says="greater than 0"),
        id="zero max_tokens is refused",
    ),
    pytest.param(
        BadRequest(
            body={"prompt": "hi", "max_tokens": 10**6}, param="max_tokens", says="less than or equal to 16384"
        ),
        id="huge max_tokens is refused",
    ),
    pytest.param(
        BadRequest(
            body={"prompt": "hi", "modles": ["fake-a"]}, param="modles", says="extra inputs are not permitted"
        ),
        id="a misspelt field is refused",
    ),
    pytest.param(
        BadRequest(
            body={"prompt": "hi"},
            guarded=True,
            status=401,
            error_type="authentication_error",
            says="X-API-Key header is missing",
        ),
        id="a query without the API key is refused",
    ),
    pytest.param(
        BadRequest(
            body={"prompt": "hi"},
            guarded=True,
            headers={"X-API-Key": "nope"},
            status=401,
            error_type="authentication_error",
            says="not the service's API key",
        ),
        id="a wrong API key is refused",
    ),
    pytest.param(
        BadRequest(
            method="GET",
            path="/stats",
            guarded=True,
            status=401,
            error_type="authentication_error",
            says="X-API-Key",
        ),
        id="stats need the API key too",
    ),
    pytest.param(
        BadRequest(
            body={"prompt": "x" * 5000},
            guarded=True,
            headers={"X-API-Key": API_KEY},
            status=413,
            says="MAX_REQUEST_BYTES",
        ),
        id="a body over the size limit is refused",
    ),
    pytest.param(
        BadRequest(
            path="/ask", body={"prompt": "hi"}, status=404, error_type="not_found_error", says="no route"
        ),
        id="an unknown route is answered 404",
    ),
    pytest.param(
        BadRequest(method="GET", status=405, says="use POST"), id="GET on the query route is answered 405"
    ),
]


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_get_the_right_openai_error(
    case: BadRequest, open_orchestrator: TestClient, guarded_orchestrator: TestClient
) -> None:
    client = guarded_orchestrator if case.guarded else open_orchestrator
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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
query_bodies = json_values | st.fixed_dictionaries(
    {"prompt": st.text(max_size=5) | json_values},
    optional={
        "models": st.lists(st.sampled_from(["fake-a", "fake-b", "other"]), max_size=3) | json_values,
        "temperature": st.floats(-1, 3) | json_values,
        "max_tokens": st.integers(-1, 20_000) | json_values,
        "system": st.text(max_size=5) | json_values,
    },
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=query_bodies)
@example(body=float("inf"))
@example(body={"prompt": "hi", "temperature": float("nan")})
@example(body={"prompt": "hi", "max_tokens": float("-inf")})
def test_any_json_body_gets_a_4xx_or_reaches_the_orchestrators_upstream_never_a_500(
    body: Any, open_orchestrator: TestClient
) -> None:
    # json.dumps, not the client's encoder: it writes NaN and Infinity as Python does, so
    # those (not JSON at all) reach the service too, and must be refused like any bad body.
    response = open_orchestrator.post(
        "/query", content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    # 400 for a bad body; a valid one reaches the (closed) upstream: 502.
    assert response.status_code in (400, 502), response.text
    assert response.json()["error"]["type"] in ("invalid_request_error", "upstream_error")


def test_an_unwritable_data_dir_degrades_health_but_never_fails_start_up(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("in the way")
    for client in _client(not_a_dir / "data"):
        assert client.get("/health").json()["status"] == "healthy"
        client.post("/query", json={"prompt": "hi"})  # the closed upstream fails it; the save runs
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert "cannot write the confidence file" in health["checks"]["data_dir"]["detail"]

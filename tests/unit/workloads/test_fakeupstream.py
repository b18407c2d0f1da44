"""The fake upstream, driven through the openai SDK and its /admin API."""

from __future__ import annotations

import base64
import contextlib
import json
import math

import httpx
import openai
import pytest
from fakeupstream import FakeUpstreamClient
from fakeupstream.faults import Fault, FaultBook
from modelkit.testing import scrape
from song_analyzer.scoring import ModelAnswer


def _client(url: str, timeout_s: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="test", timeout=timeout_s, max_retries=0)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(Fault(error_rate=1.0), ["error"] * 4, id="error rate 1 fails every request"),
        pytest.param(Fault(error_rate=0.5), ["ok", "error", "ok", "error"],
                     id="error rate one half fails every second request"),
        pytest.param(Fault(error_rate=0.25), ["ok", "ok", "ok", "error", "ok", "ok", "ok", "error"],
                     id="error rate one quarter fails every fourth request"),
        pytest.param(Fault(timeout_rate=0.5, error_rate=0.5), ["ok", "timeout", "ok", "timeout"],
                     id="a timeout wins over an error on the same request"),
        pytest.param(Fault(malformed_rate=1.0), ["malformed"] * 2,
                     id="malformed rate 1 garbles every answer"),
        pytest.param(Fault(), ["ok"] * 3, id="an empty fault changes nothing"),
    ],
)  # fmt: skip
def test_fault_schedule_is_deterministic(fault: Fault, expected: list[str]) -> None:
    book = FaultBook()
    book.set("m", fault)
    assert [book.decide("m")[0] for _ in expected] == expected


def test_wildcard_fault_applies_to_models_without_their_own() -> None:
    book = FaultBook()
    book.set("*", Fault(error_rate=1.0))
    book.set("healthy-model", Fault())
    assert book.decide("any-model")[0] == "error"
    assert book.decide("healthy-model")[0] == "ok"


def test_chat_completion_is_deterministic_with_usage(fake_upstream_url: str) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    first = _client(fake_upstream_url).chat.completions.create(model="gpt-4o-mini", messages=messages)
    second = _client(fake_upstream_url).chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert first.choices[0].message.content == "[gpt-4o-mini] hello there"
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage is not None
    assert first.usage.prompt_tokens == math.ceil(len("hello there") / 4)
    assert first.usage.completion_tokens == math.ceil(len("[gpt-4o-mini] hello there") / 4)


def test_streamed_chat_completion_carries_the_same_content(fake_upstream_url: str) -> None:
    stream = _client(fake_upstream_url).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    content = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert content == "[gpt-4o-mini] hi"


def test_song_score_convention_returns_json_song_analyzer_accepts(fake_upstream_url: str) -> None:
    completion = _client(fake_upstream_url).chat.completions.create(
        model="ft:gpt-4o-mini-2024-07-18:acme:songs:v1",
        messages=[
            {"role": "system", "content": "Give the song a score from 0 to 100."},
            {"role": "user", "content": "Title: X\nLyrics:\nla la la"},
        ],
        response_format={"type": "json_object"},
    )
    answer = ModelAnswer.model_validate(json.loads(completion.choices[0].message.content or ""))
    assert 0 <= answer.score <= 100 and answer.verdict


def test_injected_error_answers_the_status_code_in_openai_shape(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    fake_upstream.set_fault("gpt-4o-mini", error_rate=1.0, status_code=503)
    with pytest.raises(openai.InternalServerError) as raised:
        _client(fake_upstream_url).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.status_code == 503
    assert raised.value.code == "injected_fault"
    other = _client(fake_upstream_url).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}]
    )
    assert other.choices[0].message.content == "[gpt-4o] x"


def test_injected_429_carries_retry_after(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    fake_upstream.set_fault("gpt-4o-mini", error_rate=1.0, status_code=429)
    with pytest.raises(openai.RateLimitError) as raised:
        _client(fake_upstream_url).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.response.headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"timeout_rate": 1.0, "hang_s": 10.0}, id="a hang makes the client time out"),
        pytest.param({"latency_s": 3.0}, id="latency past the client timeout makes it time out"),
    ],
)
def test_slow_faults_make_the_client_time_out(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str, fault: dict[str, float]
) -> None:
    # A model of its own: the abandoned request is still answered (and counted) seconds
    # later, when the next test, on the same shared fake upstream, counts its own requests.
    model = "gpt-4o-mini-abandoned"
    fake_upstream.set_fault(model, **fault)  # type: ignore[arg-type]
    with pytest.raises(openai.APITimeoutError):
        _client(fake_upstream_url, timeout_s=0.3).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}]
        )


def test_malformed_fault_returns_content_that_is_not_json(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    fake_upstream.set_fault("gpt-4o-mini", malformed_rate=1.0)
    completion = _client(fake_upstream_url).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_object"},
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(completion.choices[0].message.content or "")


def test_stats_count_requests_by_model_and_outcome(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    fake_upstream.reset_stats()
    fake_upstream.set_fault("gpt-4o-mini", error_rate=0.5)
    for _ in range(4):
        with contextlib.suppress(openai.InternalServerError):
            _client(fake_upstream_url).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
            )
    assert fake_upstream.stats()["gpt-4o-mini"] == {"success": 2, "error": 2}
    assert fake_upstream.faults()["gpt-4o-mini"]["error_rate"] == 0.5


def test_gpt_image_answers_a_png_with_token_usage(fake_upstream_url: str) -> None:
    result = _client(fake_upstream_url).images.generate(
        model="gpt-image-1", prompt="a red fox", quality="low"
    )
    assert result.data and result.data[0].b64_json
    assert base64.b64decode(result.data[0].b64_json).startswith(b"\x89PNG")
    assert result.usage is not None and result.usage.output_tokens == 272


def test_dall_e_3_answers_a_url_and_a_revised_prompt(fake_upstream_url: str) -> None:
    result = _client(fake_upstream_url).images.generate(model="dall-e-3", prompt="a red fox")
    assert result.data and result.data[0].url and result.data[0].revised_prompt


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param({"error_rate": 2}, "error_rate", id="a rate above 1 is refused naming it"),
        pytest.param({"latency_s": -1}, "latency_s", id="a negative latency is refused naming it"),
        pytest.param({"status_code": 200}, "status_code", id="a non-error status is refused"),
        pytest.param({"jitter": 1}, "jitter", id="an unknown fault field is refused naming it"),
    ],
)
def test_bad_fault_is_refused_with_a_400_naming_the_field(
    fake_upstream_url: str, body: dict[str, float], named: str
) -> None:
    root = fake_upstream_url.removesuffix("/v1")
    response = httpx.put(f"{root}/admin/faults/gpt-4o-mini", json=body, timeout=5)
    assert response.status_code == 400
    assert named in response.json()["error"]["message"]


def test_models_health_and_metrics_are_served(fake_upstream_url: str) -> None:
    ids = [model.id for model in _client(fake_upstream_url).models.list()]
    assert "gpt-image-1" in ids
    root = fake_upstream_url.removesuffix("/v1")
    assert httpx.get(root + "/health", timeout=5).json()["status"] == "healthy"
    assert scrape(root).value("model_info", model="fake-upstream") == 1

"""The fake upstream's malformed-body fault: a 200 whose body is not a chat completion, its
shape taking each of truncated JSON, no ``choices``, ``choices: []`` and a gateway's HTML page
in turn; driven through its /admin API and plain HTTP (the openai SDK would refuse to read
most of these bodies, which is the point)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fakeupstream import FakeUpstreamClient
from fakeupstream.faults import Fault, FaultBook

MODEL = "gpt-4o-mini"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}


def chat(url: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(url + "/chat/completions", json=CHAT if body is None else body, timeout=5)


def test_malformed_bodies_take_each_shape_in_turn() -> None:
    book = FaultBook()
    book.set("m", Fault(malformed_body_rate=1.0))
    decisions = [book.decision("m") for _ in range(6)]
    assert [d.action for d in decisions] == ["malformed_body"] * 6
    assert [d.malformed_body for d in decisions] == [
        "truncated_json", "no_choices", "empty_choices", "html_error_page",
        "truncated_json", "no_choices",
    ]  # fmt: skip
    # decide() gives the same schedule, without the shape.
    book.set("m", Fault(malformed_body_rate=0.5))
    assert [book.decide("m")[0] for _ in range(4)] == ["ok", "malformed_body", "ok", "malformed_body"]


def test_setting_a_fault_again_restarts_the_rotation() -> None:
    book = FaultBook()
    book.set("m", Fault(malformed_body_rate=1.0))
    assert book.decision("m").malformed_body == "truncated_json"
    book.set("m", Fault(malformed_body_rate=1.0))
    assert book.decision("m").malformed_body == "truncated_json"


def test_earlier_faults_win_and_unequal_rates_mix_errors_and_malformed_bodies() -> None:
    book = FaultBook()
    book.set("m", Fault(error_rate=0.5, malformed_body_rate=0.5))
    assert [book.decide("m")[0] for _ in range(4)] == ["ok", "error", "ok", "error"]
    # Equal rates overlap entirely; 0.15 and 0.2 overlap on every 20th request only.
    book.set("m", Fault(error_rate=0.15, malformed_body_rate=0.2))
    actions = [book.decide("m")[0] for _ in range(100)]
    assert (actions.count("error"), actions.count("malformed_body")) == (15, 15)


def test_a_malformed_body_fault_answers_each_shape_with_200_and_counts_it_malformed(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    fake_upstream.reset_stats()
    fake_upstream.set_fault(MODEL, malformed_body_rate=1.0)
    truncated, no_choices, empty_choices, html, again = (chat(fake_upstream_url) for _ in range(5))

    assert all(r.status_code == 200 for r in (truncated, no_choices, empty_choices, html, again))
    assert truncated.headers["content-type"] == "application/json"
    assert truncated.text.startswith('{"id"') and "chatcmpl-fake-" in truncated.text
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated.text)
    body = no_choices.json()
    assert body["object"] == "chat.completion" and "choices" not in body and body["usage"]
    body = empty_choices.json()
    assert body["object"] == "chat.completion" and body["choices"] == [] and body["usage"]
    assert html.headers["content-type"].startswith("text/html")
    assert "<h1>502 Bad Gateway</h1>" in html.text
    # The fifth is the first shape again (its "created" may be a second later).
    assert again.headers["content-type"] == "application/json"
    assert len(again.text) == len(truncated.text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(again.text)
    assert fake_upstream.stats()[MODEL] == {"malformed": 5}
    assert fake_upstream.faults()[MODEL]["malformed_body_rate"] == 1.0


def test_a_rate_of_one_half_answers_every_second_request_malformed(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    fake_upstream.reset_stats()
    fake_upstream.set_fault(MODEL, malformed_body_rate=0.5)
    answers = [chat(fake_upstream_url) for _ in range(10)]

    valid = []
    for response in answers:
        try:
            valid.append(bool(response.json()["choices"]))
        except (ValueError, KeyError):
            valid.append(False)
    assert valid == [True, False] * 5
    assert fake_upstream.stats()[MODEL] == {"success": 5, "malformed": 5}


def test_a_streamed_request_gets_the_malformed_body_too(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    fake_upstream.set_fault(MODEL, malformed_body_rate=1.0)
    response = chat(fake_upstream_url, {**CHAT, "stream": True})
    assert response.headers["content-type"] == "application/json"
    assert not response.text.startswith("data:")


def test_image_answers_are_not_touched(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    # Like malformed_rate, the fault garbles chat answers only.
    fake_upstream.set_fault("*", malformed_body_rate=1.0)
    image = httpx.post(fake_upstream_url + "/images/generations",
                       json={"model": "gpt-image-1", "prompt": "a fox"}, timeout=5)  # fmt: skip
    assert image.status_code == 200 and image.json()["data"]


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_a_rate_outside_zero_to_one_is_refused_naming_the_field(
    fake_upstream_url: str, rate: float
) -> None:
    root = fake_upstream_url.removesuffix("/v1")
    response = httpx.put(f"{root}/admin/faults/{MODEL}", json={"malformed_body_rate": rate}, timeout=5)
    assert response.status_code == 400
    assert "malformed_body_rate" in response.json()["error"]["message"]


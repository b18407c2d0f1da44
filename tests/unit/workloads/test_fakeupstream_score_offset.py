"""The fake upstream's song score: a function of the song alone, and the score_offset fault
(a fine-tune that answers valid JSON with wrong scores)."""

from __future__ import annotations

import json

import openai
import pytest
from fakeupstream import FakeUpstreamClient
from fakeupstream.app import song_score, true_song_score
from fakeupstream.faults import Fault, FaultBook
from pydantic import ValidationError
from song_analyzer.scoring import SYSTEM_PROMPT, ModelAnswer, user_message

SONGS_V1 = "ft:gpt-4o-mini-2024-07-18:acme:songs:v1"
SONGS_V2 = "ft:gpt-4o-mini-2024-07-18:acme:songs:v2"
SONG = user_message("The Paper Lanterns", "Harbour Light", "salt on the window\nwe wait")


def _score(url: str, model: str, user_text: str = SONG) -> ModelAnswer:
    client = openai.OpenAI(base_url=url, api_key="test", timeout=5, max_retries=0)
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": SYSTEM_PROMPT},
                  {"role": "user", "content": user_text}],
        response_format={"type": "json_object"},
    )  # fmt: skip
    return ModelAnswer.model_validate(json.loads(completion.choices[0].message.content or ""))


def test_every_model_gives_a_song_the_same_true_score(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    answers = [_score(fake_upstream_url, model) for model in (SONGS_V1, SONGS_V2, "gpt-4o-mini")]

    assert {answer.score for answer in answers} == {true_song_score(SONG)}
    assert answers[0] == answers[1] == answers[2]
    assert answers[0].model_dump() == song_score(SONG)


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        pytest.param(0, lambda s: s, id="no offset is the true score"),
        pytest.param(7, lambda s: min(100, s + 7), id="a positive offset raises it"),
        pytest.param(-7, lambda s: max(0, s - 7), id="a negative offset lowers it"),
        pytest.param(100, lambda s: 100, id="clamped at 100"),
        pytest.param(-100, lambda s: 0, id="clamped at 0"),
    ],
)
def test_song_score_shifts_by_the_offset_within_0_to_100(offset: int, expected: object) -> None:
    for n in range(50):
        text = user_message("Artist", f"Song {n}", f"line {n}")
        answer = song_score(text, score_offset=offset)
        assert answer["score"] == expected(true_song_score(text))  # type: ignore[operator]
        assert 0 <= answer["score"] <= 100


def test_verdict_follows_the_shifted_score() -> None:
    assert song_score(SONG, score_offset=100)["verdict"].startswith("strong")
    assert song_score(SONG, score_offset=-100)["verdict"].startswith("weak")


def test_score_offset_fault_shifts_only_its_models_answers(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    fake_upstream.set_fault(SONGS_V2, score_offset=100)

    broken = _score(fake_upstream_url, SONGS_V2)
    healthy = _score(fake_upstream_url, SONGS_V1)

    assert broken.score == 100 and broken.verdict.startswith("strong")
    assert healthy.score == true_song_score(SONG)
    assert fake_upstream.faults()[SONGS_V2]["score_offset"] == 100
    # A wrong score is a valid 200: counted a success, as the provider would.
    assert fake_upstream.stats()[SONGS_V2].get("success", 0) >= 1
    assert "malformed" not in fake_upstream.stats()[SONGS_V2]


def test_score_offset_applies_through_the_wildcard(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    fake_upstream.set_fault("*", score_offset=-100)
    fake_upstream.set_fault(SONGS_V1, latency_s=0.0)

    assert _score(fake_upstream_url, SONGS_V2).score == 0
    assert _score(fake_upstream_url, SONGS_V1).score == true_song_score(SONG)


def test_score_offset_leaves_other_answers_alone(
    fake_upstream: FakeUpstreamClient, fake_upstream_url: str
) -> None:
    fake_upstream.set_fault("gpt-4o-mini", score_offset=50)
    client = openai.OpenAI(base_url=fake_upstream_url, api_key="test", timeout=5, max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "[gpt-4o-mini] hi"


def test_a_rate_fault_wins_over_the_offset() -> None:
    book = FaultBook()
    book.set("m", Fault(score_offset=20, error_rate=1.0))
    decision = book.decision("m")
    assert decision.action == "error" and decision.fault.score_offset == 20


@pytest.mark.parametrize("offset", [101, -101])
def test_an_offset_beyond_the_scale_is_refused(
    offset: int, fake_upstream: FakeUpstreamClient
) -> None:
    with pytest.raises(ValidationError):
        Fault(score_offset=offset)
    with pytest.raises(ValueError, match="score_offset"):
        fake_upstream.set_fault(SONGS_V1, score_offset=offset)

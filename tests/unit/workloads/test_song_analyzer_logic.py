"""song-analyzer's answer validation and cache, without a server."""

from __future__ import annotations

import json

import pytest
from modelkit import ServiceError
from song_analyzer.app import parse_answer
from song_analyzer.cache import LruCache, cache_key

MODEL = "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v1"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param("this is not JSON {", "is not JSON", id="text that is not JSON"),
        pytest.param(None, "empty answer", id="no content at all (a refusal)"),
        pytest.param("", "empty answer", id="an empty string"),
        pytest.param(json.dumps({"verdict": "ok", "references": []}), "score",
                     id="an answer without a score"),
        pytest.param(json.dumps({"score": 150, "verdict": "ok"}), "score",
                     id="a score above 100"),
        pytest.param(json.dumps({"score": 50, "verdict": ""}), "verdict",
                     id="an empty verdict"),
        pytest.param(json.dumps({"score": 50, "verdict": "ok", "references": "none"}),
                     "references", id="references that are not a list"),
        pytest.param(json.dumps([1, 2]), "scoring schema", id="a JSON array"),
    ],
)  # fmt: skip
def test_invalid_model_answer_is_a_502_upstream_error(content: str | None, problem: str) -> None:
    with pytest.raises(ServiceError) as raised:
        parse_answer(content, MODEL)
    error = raised.value
    assert (error.status, error.error_type, error.code) == (502, "upstream_error",
                                                            "invalid_model_output")  # fmt: skip
    assert error.outcome == "error"
    assert problem in error.message


def test_valid_answer_with_extra_keys_is_accepted() -> None:
    answer = parse_answer(json.dumps({"score": 71, "verdict": "solid", "mood": "sad"}), MODEL)
    assert (answer.score, answer.verdict, answer.references) == (71, "solid", [])


def test_cache_key_includes_the_model_so_a_canary_never_reuses_stable_answers() -> None:
    assert cache_key("a", "t", "l", "model-v1") != cache_key("a", "t", "l", "model-v2")
    assert cache_key("a", "t", "l", "m") == cache_key("a", "t", "l", "m")


def test_cache_evicts_the_least_recently_used_entry() -> None:
    cache: LruCache[int] = LruCache(2)
    one, two, three = (cache_key("a", str(i), "l", "m") for i in range(3))
    cache.put(one, 1)
    cache.put(two, 2)
    assert cache.get(one) == 1  # one is now the most recently used
    cache.put(three, 3)
    assert cache.get(two) is None
    assert (cache.get(one), cache.get(three), len(cache)) == (1, 3, 2)


def test_cache_of_size_zero_stores_nothing() -> None:
    cache: LruCache[int] = LruCache(0)
    cache.put(cache_key("a", "t", "l", "m"), 1)
    assert cache.get(cache_key("a", "t", "l", "m")) is None

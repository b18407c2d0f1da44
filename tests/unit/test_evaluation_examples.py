"""The evaluation case sets in examples/evaluation/: each parses as the operator reads it,
its labels come from the reference model, and the operator's own judgement
(:func:`modeldeploy.analysis.evaluation.case_problem`) passes the services' answers.

The format itself (what parses, what each check means) is tested in
tests/unit/analysis/test_evaluation_judge.py; here it is only applied to the examples.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from modeldeploy.analysis import evaluation as ev

REPO = Path(__file__).resolve().parents[2]
EVALUATION = REPO / "examples" / "evaluation"
EXAMPLES = sorted(EVALUATION.glob("*.yaml"))
SERVICES = {"song-analyzer", "chat-proxy", "textgen"}
TEXTGEN_WEIGHTS = REPO / "workloads" / "textgen" / "textgen" / "data" / "weights.safetensors"


def load(example: Path) -> tuple[dict[str, Any], list[ev.Case], ev.Schema | None]:
    """The ConfigMap, its cases and its schema (None when it has none), parsed by the operator."""
    documents = list(yaml.safe_load_all(example.read_text(encoding="utf-8")))
    assert len(documents) == 1, f"{example.name}: one ConfigMap per file"
    configmap = documents[0]
    data = configmap["data"]
    cases = ev.parse_cases(data["cases.jsonl"], f"{example.name} cases.jsonl")
    schema_text = data.get("schema.json")
    schema = None if schema_text is None else ev.parse_schema(schema_text, f"{example.name} schema.json")
    return configmap, cases, schema


def problem(case: ev.Case, schema: ev.Schema | None, status: int, answer: Any) -> str | None:
    """The operator's judgement of ``answer`` (a JSON value, sent as its text) to ``case``."""
    return ev.case_problem(case, ev.Answer(status, json.dumps(answer)), schema)


def _generator() -> ModuleType:
    path = REPO / "hack" / "evaluation" / "make_song_cases.py"
    spec = importlib.util.spec_from_file_location("make_song_cases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --- every example is one the operator reads -------------------------------------------------


def test_there_is_one_case_set_per_evaluated_service() -> None:
    assert {example.stem for example in EXAMPLES} == SERVICES


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_configmap_whose_cases_and_schema_parse(example: Path) -> None:
    configmap, cases, schema = load(example)  # parse_cases / parse_schema raise CaseError

    assert configmap["apiVersion"] == "v1" and configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["name"] == f"{example.stem}-eval"
    assert set(configmap["data"]) <= {"cases.jsonl", "schema.json"}
    assert all(isinstance(value, str) for value in configmap["data"].values())
    assert len(cases) >= 10
    assert all(isinstance(case.body, dict) for case in cases), "each service takes a JSON object"
    assert schema is not None
    assert schema.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# --- song-analyzer: labels from the reference model ------------------------------------------


def song_cases() -> tuple[list[ev.Case], ev.Schema | None]:
    _, cases, schema = load(EVALUATION / "song-analyzer.yaml")
    return cases, schema


def test_every_song_label_is_the_reference_models_score_within_10() -> None:
    from fakeupstream.app import true_song_score
    from song_analyzer.scoring import user_message

    cases, _ = song_cases()
    assert len(cases) == 50
    for case in cases:
        body = case.body
        assert set(body) == {"artist", "title", "lyrics"}
        # The message song-analyzer sends (its request model strips each field).
        message = user_message(body["artist"].strip(), body["title"].strip(), body["lyrics"].strip())
        score = true_song_score(message)
        assert case.status == 200, case.id
        assert case.fields[0] == ev.FieldCheck(
            "$.score", minimum=max(0, score - 10), maximum=min(100, score + 10)
        ), case.id


def test_the_song_example_is_what_the_generator_writes() -> None:
    generator = _generator()
    assert (EVALUATION / "song-analyzer.yaml").read_text(encoding="utf-8") == generator.render(), (
        "examples/evaluation/song-analyzer.yaml is stale or edited by hand: "
        "run .venv/bin/python hack/evaluation/make_song_cases.py"
    )
    assert generator.main(["--check"]) == 0


def test_the_songs_are_distinct_and_short() -> None:
    cases, _ = song_cases()
    assert len({(c.body["artist"], c.body["title"]) for c in cases}) == 50
    assert len({c.body["lyrics"] for c in cases}) == 50
    assert all(len(c.body["lyrics"]) < 300 for c in cases)


def _song_answer(body: dict[str, str], score_offset: int = 0) -> dict[str, Any]:
    from fakeupstream.app import song_score
    from song_analyzer.scoring import user_message

    message = user_message(body["artist"].strip(), body["title"].strip(), body["lyrics"].strip())
    answer = song_score(message, score_offset=score_offset)
    return {**answer, "model": "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v2", "cached": False}


def test_a_correct_fine_tune_passes_every_song_and_a_shifted_one_fails_most() -> None:
    cases, schema = song_cases()

    assert {c.id: p for c in cases if (p := problem(c, schema, 200, _song_answer(c.body)))} == {}
    shifted = [c.id for c in cases if problem(c, schema, 200, _song_answer(c.body, 30))]
    assert len(shifted) >= 40
    # Within the tolerance, a slightly different fine-tune still passes.
    assert [c.id for c in cases if problem(c, schema, 200, _song_answer(c.body, 10))] == []


# --- chat-proxy and textgen: the shape of their answers -------------------------------------


def test_textgen_pattern_is_the_vocabulary_of_the_packaged_weights() -> None:
    # The alphabet stored with the weights (safetensors metadata), read without torch.
    raw = TEXTGEN_WEIGHTS.read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])
    vocab = json.loads(json.loads(raw[8 : 8 + header_size])["__metadata__"]["vocab"])
    _, cases, schema = load(EVALUATION / "textgen.yaml")
    assert schema is not None
    # The schema's own rule for the text, as the operator applies it.
    text_schema = ev.parse_schema(json.dumps(schema.schema["properties"]["text"]), "text")

    for case in cases:
        pattern = next(c.pattern for c in case.fields if c.path == "$.text" and c.pattern)
        assert pattern is not None and pattern.search(vocab), case.id
        for outsider in ("\t", "é", "\r", "\x00"):
            assert outsider not in vocab and not pattern.search(f"ab{outsider}c"), case.id
    assert text_schema.is_valid(vocab)
    assert not any(text_schema.is_valid(f"ab{outsider}c") for outsider in ("\t", "é", "\r", "\x00"))


def test_textgen_cases_check_the_length_they_ask_for() -> None:
    _, cases, schema = load(EVALUATION / "textgen.yaml")
    assert len({case.body["num_chars"] for case in cases}) == len(cases)
    for case in cases:
        n = case.body["num_chars"]
        assert 1 <= n <= 2000  # examples/textgen.yaml's TEXTGEN_MAX_CHARS
        good = {"text": ("The cat\n" * n)[:n], "num_chars": n, "seed": case.body["seed"],
                "device": "cpu", "model": "textgen-chargpt"}  # fmt: skip
        assert problem(case, schema, 200, good) is None, case.id
        assert problem(case, schema, 200, {**good, "text": good["text"][:-1]}), case.id
        assert problem(case, schema, 200, {**good, "text": "é" * n}), case.id


def test_chat_cases_accept_an_openai_completion_and_refuse_other_shapes() -> None:
    _, cases, schema = load(EVALUATION / "chat-proxy.yaml")
    completion: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": '{"answer": "yes"}'}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }  # fmt: skip
    blank = {
        **completion,
        "choices": [{**completion["choices"][0], "message": {"role": "assistant", "content": " "}}],
    }
    for case in cases:
        assert problem(case, schema, 200, completion) is None, case.id
        assert problem(case, schema, 200, blank), case.id
        assert problem(case, schema, 200, {"object": "list", "data": []}), case.id
        assert problem(case, schema, 502, {"error": {"message": "x"}}), case.id


# --- against the services themselves -------------------------------------------------------


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    from fakeupstream import running_fake_upstream

    with running_fake_upstream() as url:
        yield url


def _run_cases(url: str, cases: list[ev.Case], schema: ev.Schema | None) -> dict[str, str]:
    """Each failing case's id and the operator's reason, for the answers ``url`` gives."""
    failures = {}
    with httpx.Client(timeout=60) as client:
        for case in cases:
            response = client.post(url, json=case.body)
            found = ev.case_problem(case, ev.Answer(response.status_code, response.text), schema)
            if found is not None:
                failures[case.id] = found
    return failures


def test_song_analyzer_with_a_good_model_passes_and_with_shifted_scores_fails(
    upstream_url: str,
) -> None:
    from fakeupstream import FakeUpstreamClient
    from modelkit.testing import running_module

    model = "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v2"
    cases, schema = song_cases()
    env = {"LLM_API_BASE_URL": upstream_url, "LLM_MODEL": model, "CACHE_MAX_ENTRIES": "0",
           "LOG_LEVEL": "WARNING"}  # fmt: skip
    with running_module("song_analyzer", env) as service, FakeUpstreamClient(upstream_url) as fake:
        assert _run_cases(service.base_url + "/analyze", cases, schema) == {}
        fake.set_fault(model, score_offset=30)
        try:
            failed = _run_cases(service.base_url + "/analyze", cases, schema)
        finally:
            fake.clear_fault(model)
    assert len(failed) >= 40
    assert all(reason.startswith("$.score = ") for reason in failed.values()), failed


def test_chat_proxy_answers_pass_their_cases(upstream_url: str) -> None:
    from modelkit.testing import running_module

    _, cases, schema = load(EVALUATION / "chat-proxy.yaml")
    env = {"UPSTREAM_BASE_URL": upstream_url, "OPENAI_API_KEY": "test", "LOG_LEVEL": "WARNING"}
    with running_module("chat_proxy", env) as service:
        assert _run_cases(service.base_url + "/api/v1/chat/completions", cases, schema) == {}


def test_textgen_answers_pass_their_cases() -> None:
    from modelkit.testing import running_module

    _, cases, schema = load(EVALUATION / "textgen.yaml")
    env = {"TEXTGEN_DEVICE": "cpu", "TEXTGEN_MAX_CHARS": "2000", "LOG_LEVEL": "WARNING",
           "PYTHONWARNINGS": "ignore"}  # fmt: skip
    with running_module("textgen", env, timeout_s=90) as service:
        assert _run_cases(service.base_url + "/generate", cases, schema) == {}

"""Judging an evaluation: case files read with errors that name the line and the fix, each
answer checked, and the verdict an SRE can trust (modeldeploy.analysis.evaluation)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from modeldeploy.analysis import evaluation as ev
from modeldeploy.spec import EvaluationStep, Verdict

SCHEMA = json.dumps({
    "type": "object", "required": ["score", "verdict"],
    "properties": {"score": {"type": "integer"}, "verdict": {"type": "string"}},
})


def step(**fields: Any) -> EvaluationStep:
    return EvaluationStep.model_validate(
        {"configMap": "eval", "path": "/analyze", "minScore": 0.8, **fields})


def case_line(case_id: str, low: int, high: int, **extra: Any) -> str:
    return json.dumps({"id": case_id, "body": {"lyrics": case_id}, "expect": {
        "fields": [{"path": "$.score", "min": low, "max": high}], **extra}})


def answer(score: Any, status: int = 200, cost: float = 0.001, **body: Any) -> ev.Answer:
    return ev.Answer(status, json.dumps({"score": score, "verdict": "ok", **body}), tokens=100,
                     cost_usd=cost)


def judge(cases: list[ev.Case], canary: list[ev.Answer], stable: list[ev.Answer] | None = None,
          schema: ev.Schema | None = None, **fields: Any) -> Any:
    return ev.judge(step(**fields), cases, canary, stable, schema, revision="r2", index=0,
                    step_started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:01:00Z")


CASES = ev.parse_cases("\n".join(case_line(f"song-{i}", 40, 60) for i in range(10)), "cases")


@pytest.mark.parametrize(("text", "expected"), [
    ("not json", "cases line 1: not JSON"),
    ('{"id": "a"}', "cases line 1.body: missing"),
    ('{"id": "a", "body": 1}\n{"id": "a", "body": 2}', "cases line 2.id: 'a' is used twice"),
    ('{"id": "a", "body": 1, "expect": {"fields": [{"path": "score", "min": 1}]}}',
     "cases line 1.expect.fields[0].path: 'score' is not a JSON path"),
    ('{"id": "a", "body": 1, "expect": {"fields": [{"path": "$.s"}]}}',
     "cases line 1.expect.fields[0]: checks nothing: add equals, min, max, pattern or length"),
    ('{"id": "a", "body": 1, "expect": {"fields": [{"path": "$.s", "pattern": "("}]}}',
     "cases line 1.expect.fields[0].pattern: not a regular expression"),
    ('{"id": "a", "body": 1, "expect": {"status": 700}}', "cases line 1.expect.status"),
    ('{"id": "a", "body": 1, "expectation": {}}', "unknown key(s) ['expectation']"),
    ("# only a comment\n\n", "cases: holds no case"),
])
def test_a_bad_case_file_is_refused_naming_the_line_and_the_fix(text: str, expected: str) -> None:
    with pytest.raises(ev.CaseError) as raised:
        ev.parse_cases(text, "cases")
    assert expected in str(raised.value)


def test_a_schema_that_is_not_one_is_refused() -> None:
    with pytest.raises(ev.CaseError, match=r"schema\.json: not a valid JSON Schema"):
        ev.parse_schema('{"type": "nonsense"}', "schema.json")


@pytest.mark.parametrize(("check", "value", "problem"), [
    ({"min": 40, "max": 60}, 72, "$.v = 72 is above 60"),
    ({"min": 40, "max": 60}, 12, "$.v = 12 is below 40"),
    ({"min": 40}, "72", "is not a number"),
    ({"equals": "chat.completion"}, "text_completion", "expected 'chat.completion'"),
    ({"pattern": "^[a-z ]*$"}, "Hello", "does not match"),
    ({"length": 5}, "abcd", "$.v has length 4, expected 5"),
    ({"length": 2}, [1, 2], None),
    ({"min": 40, "max": 60}, 50, None),
    ({"equals": {"a": [1]}}, {"a": [1]}, None),
])
def test_each_kind_of_field_check(check: dict[str, Any], value: Any, problem: str | None) -> None:
    case = ev.parse_cases(json.dumps({"id": "c", "body": {}, "expect": {
        "fields": [{"path": "$.v", **check}]}}), "cases")[0]
    found = ev.case_problem(case, ev.Answer(200, json.dumps({"v": value})), None)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_status_schema_and_paths_into_lists() -> None:
    case = ev.parse_cases(json.dumps({"id": "c", "body": {}, "expect": {
        "fields": [{"path": "$.choices[0].message.role", "equals": "assistant"}]}}), "cases")[0]
    good = json.dumps({"choices": [{"message": {"role": "assistant"}}]})
    assert ev.case_problem(case, ev.Answer(200, good), None) is None
    assert "status 502, expected 200" in (ev.case_problem(case, ev.Answer(502, "bad"), None) or "")
    assert "$.choices[0].message.role is missing" in (
        ev.case_problem(case, ev.Answer(200, '{"choices": []}'), None) or "")
    schema = ev.parse_schema(SCHEMA, "schema.json")
    scored = CASES[0]
    assert "schema: $.score: 'high' is not of type 'integer'" in (
        ev.case_problem(scored, answer("high"), schema) or "")
    assert "the body is not JSON" in (ev.case_problem(scored, ev.Answer(200, "{"), schema) or "")


def test_a_revision_whose_scores_are_off_fails_naming_the_first_failing_cases() -> None:
    canary = [answer(50)] * 5 + [answer(85)] * 5
    result = judge(CASES, canary)
    assert result.verdict == Verdict.FAIL
    assert (result.passed, result.cases, result.score) == (5, 10, 0.5)
    assert [f.id for f in result.failures] == ["song-5", "song-6", "song-7", "song-8", "song-9"]
    assert "$.score = 85 is above 60" in result.failures[0].reason
    assert result.message.startswith("5/10 cases passed (score 0.50, minScore 0.8): below minScore")
    assert result.cost_usd == pytest.approx(0.01) and result.tokens == 1000


def test_a_good_revision_passes_at_min_score() -> None:
    result = judge(CASES, [answer(50)] * 8 + [answer(99)] * 2)
    assert result.verdict == Verdict.PASS and result.score == 0.8


def test_too_many_unanswered_cases_are_inconclusive_not_a_failure() -> None:
    timeout = ev.Answer(None, error="no answer within 30s")
    result = judge(CASES, [answer(50)] * 8 + [timeout] * 2, maxUnanswered=0.1)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.unanswered == 2
    assert "2/10 cases got no answer" in result.message
    # Within the limit the unanswered case simply fails.
    assert judge(CASES, [answer(50)] * 9 + [timeout], maxUnanswered=0.1).verdict == Verdict.PASS


def test_compare_to_stable_judges_agreement_within_the_tolerance() -> None:
    compare = {"path": "$.score", "tolerance": 5, "minAgreement": 0.9}
    stable = [answer(50)] * 10
    close = judge(CASES, [answer(54)] * 10, stable, compareToStable=compare)
    assert close.verdict == Verdict.PASS and close.agreement == 1.0
    # Every case within its own range (40-60) yet 10 points from stable on 3 cases in 10.
    drifted = judge(CASES, [answer(50)] * 7 + [answer(60)] * 3, stable, compareToStable=compare)
    assert drifted.verdict == Verdict.FAIL and drifted.agreement == 0.7
    assert "disagrees with stable" in drifted.message
    down = [ev.Answer(None, error="refused")] * 10
    unreachable = judge(CASES, [answer(50)] * 10, down, compareToStable=compare)
    assert unreachable.verdict == Verdict.INCONCLUSIVE
    assert "stable answered too few cases" in unreachable.message


def test_a_sample_is_the_same_for_a_revision_and_differs_between_revisions() -> None:
    cases = ev.parse_cases("\n".join(case_line(f"c{i}", 0, 100) for i in range(200)), "cases")
    first = [c.id for c in ev.sample(cases, 20, "rev-a")]
    assert first == [c.id for c in ev.sample(cases, 20, "rev-a")]
    assert len(first) == 20 and first != [c.id for c in ev.sample(cases, 20, "rev-b")]
    assert ev.sample(cases, None, "rev-a") == cases

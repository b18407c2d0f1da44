"""Judging an evaluation: a fixed set of cases sent to the new revision, its answers checked.

Pure: the shell (:mod:`modeldeploy.evaluation_runner`) reads the ConfigMap, sends the
cases and hands the answers here; this module parses the cases, checks each answer and
gives the engine one :class:`~modeldeploy.spec.EvaluationStatus`.

The case file is JSON lines, one case per line (blank lines and lines starting with ``#``
are skipped)::

    {"id": "song-007", "body": {...the request body...},
     "expect": {"status": 200,
                "fields": [{"path": "$.score", "min": 52, "max": 72},
                           {"path": "$.verdict", "pattern": "\\\\S"}]}}

- ``expect`` is optional; ``status`` defaults to 200. A field check names a JSON path
  (``$``, ``.key``, ``[index]``) and any of ``equals`` (any JSON value), ``min``/``max``
  (numbers, inclusive), ``pattern`` (a regular expression searched in a string) and
  ``length`` (of a string or a list); all it names must hold.
- A JSON Schema (the step's ``schemaKey``) applies to every answer whose expected status is
  2xx: the body must parse as JSON and match it.
- A case passes when its status is the expected one and every check holds. A case with no
  answer at all (timeout, connection refused) fails; beyond ``maxUnanswered`` of them the
  evaluation is Inconclusive instead (the revision could not be judged), as is one whose
  stable side (``compareToStable``) answered fewer than half the cases.
- ``compareToStable``: stable answers the same cases in the same run; a case agrees when
  both answered with a 2xx and the values at ``path`` are numbers within ``tolerance`` of
  each other, or equal. Agreement is over the cases both answered.
- Verdict: Pass when score >= minScore (and agreement >= minAgreement); else Fail.
- Sampling: ``sampleSize`` cases out of the file, chosen by a hash of the revision and each
  case id: the same revision gets the same sample on a rerun, another revision another one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from modeldeploy.spec import (
    JSON_PATH_PATTERN,
    EvaluationFailure,
    EvaluationStatus,
    EvaluationStep,
    Verdict,
)

# A parsed schema.json: what every 2xx answer must match.
Schema: TypeAlias = Draft202012Validator
MAX_CASES = 10_000
MAX_FAILURES_SHOWN = 5
# A failure's reason quotes this much of what was answered.
MAX_QUOTED = 120
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[([0-9]+)\]")
_CHECK_KEYS = {"path", "equals", "min", "max", "pattern", "length"}


class CaseError(ValueError):
    """The case file or schema cannot be used; the message names the line and the fix."""


@dataclass(frozen=True)
class FieldCheck:
    path: str
    equals: Any = None
    has_equals: bool = False
    minimum: float | None = None
    maximum: float | None = None
    pattern: re.Pattern[str] | None = None
    length: int | None = None


@dataclass(frozen=True)
class Case:
    id: str
    body: Any
    status: int = 200
    fields: tuple[FieldCheck, ...] = ()


@dataclass(frozen=True)
class Answer:
    """What one revision answered to one case: ``status`` None when nothing came back."""

    status: int | None
    body: str = ""
    error: str = ""
    tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class _Tally:
    passed: int = 0
    unanswered: int = 0
    failures: list[EvaluationFailure] = field(default_factory=list)


def read_path(document: Any, path: str) -> tuple[bool, Any]:
    """(found, value) at a JSON path of the supported form (``$.a.b[0]``)."""
    node = document
    for key, index in _PATH_PART.findall(path[1:]):
        if key:
            if not isinstance(node, dict) or key not in node:
                return False, None
            node = node[key]
        else:
            if not isinstance(node, list) or int(index) >= len(node):
                return False, None
            node = node[int(index)]
    return True, node


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CaseError(f"{where}: must be a finite number")
    return float(value)


def _field_check(raw: Any, where: str) -> FieldCheck:
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: must be an object like {{\"path\": \"$.score\", \"min\": 0}}")
    unknown = sorted(set(raw) - _CHECK_KEYS)
    if unknown:
        raise CaseError(f"{where}: unknown key(s) {unknown}: a check takes path, equals, min, "
                        "max, pattern, length")
    path = raw.get("path")
    if not isinstance(path, str) or not re.fullmatch(JSON_PATH_PATTERN, path):
        raise CaseError(f"{where}.path: {path!r} is not a JSON path of the form $.key[0].key")
    if len(raw) == 1:
        raise CaseError(f"{where}: checks nothing: add equals, min, max, pattern or length")
    pattern = None
    if "pattern" in raw:
        if not isinstance(raw["pattern"], str):
            raise CaseError(f"{where}.pattern: must be a string (a regular expression)")
        try:
            pattern = re.compile(raw["pattern"])
        except re.error as error:
            raise CaseError(f"{where}.pattern: not a regular expression: {error}") from None
    length = raw.get("length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 0):
        raise CaseError(f"{where}.length: must be a whole number >= 0")
    return FieldCheck(
        path=path,
        equals=raw.get("equals"),
        has_equals="equals" in raw,
        minimum=_number(raw["min"], f"{where}.min") if "min" in raw else None,
        maximum=_number(raw["max"], f"{where}.max") if "max" in raw else None,
        pattern=pattern,
        length=length,
    )


def parse_cases(text: str, source: str) -> list[Case]:
    """The cases of a JSON-lines file; CaseError names ``source``, the line and the fix."""
    cases: list[Case] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as error:
            raise CaseError(f"{where}: not JSON ({error.msg}): each line is one case object") from None
        if not isinstance(raw, dict):
            raise CaseError(f"{where}: must be an object with id, body and optional expect")
        unknown = sorted(set(raw) - {"id", "body", "expect"})
        if unknown:
            raise CaseError(f"{where}: unknown key(s) {unknown}: a case has id, body, expect")
        case_id = raw.get("id")
        if not isinstance(case_id, str) or not case_id or len(case_id) > 256:
            raise CaseError(f"{where}.id: must be a non-empty string of at most 256 characters")
        if case_id in seen:
            raise CaseError(f"{where}.id: {case_id!r} is used twice: ids must be unique")
        seen.add(case_id)
        if "body" not in raw:
            raise CaseError(f"{where}.body: missing: the request body to send (JSON)")
        expect = raw.get("expect") or {}
        if not isinstance(expect, dict) or set(expect) - {"status", "fields"}:
            raise CaseError(f"{where}.expect: must be an object with status and/or fields")
        status = expect.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise CaseError(f"{where}.expect.status: must be an HTTP status (100-599)")
        fields = expect.get("fields") or []
        if not isinstance(fields, list):
            raise CaseError(f"{where}.expect.fields: must be a list of checks")
        checks = tuple(_field_check(check, f"{where}.expect.fields[{i}]")
                       for i, check in enumerate(fields))
        cases.append(Case(case_id, raw["body"], status, checks))
        if len(cases) > MAX_CASES:
            raise CaseError(f"{source}: more than {MAX_CASES} cases: use fewer, or sampleSize")
    if not cases:
        raise CaseError(f"{source}: holds no case: one JSON object per line")
    return cases


def parse_schema(text: str, source: str) -> Schema:
    try:
        schema = json.loads(text)
        Draft202012Validator.check_schema(schema)
    except json.JSONDecodeError as error:
        raise CaseError(f"{source}: not JSON ({error.msg})") from None
    except SchemaError as error:
        raise CaseError(f"{source}: not a valid JSON Schema: {error.message}") from None
    return Draft202012Validator(schema)


def sample(cases: list[Case], size: int | None, revision: str) -> list[Case]:
    """``size`` cases (all when None), the same ones for the same revision, in file order."""
    if size is None or size >= len(cases):
        return cases

    def rank(case: Case) -> bytes:
        return hashlib.sha256(f"{revision}\n{case.id}".encode()).digest()

    chosen = {case.id for case in sorted(cases, key=rank)[:size]}
    return [case for case in cases if case.id in chosen]


def _quote(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "..."


def _field_problem(check: FieldCheck, document: Any) -> str | None:
    found, value = read_path(document, check.path)
    if not found:
        return f"{check.path} is missing"
    if check.has_equals and value != check.equals:
        return f"{check.path} = {_quote(value)}, expected {_quote(check.equals)}"
    if check.minimum is not None or check.maximum is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{check.path} = {_quote(value)} is not a number"
        if check.minimum is not None and value < check.minimum:
            return f"{check.path} = {value:g} is below {check.minimum:g}"
        if check.maximum is not None and value > check.maximum:
            return f"{check.path} = {value:g} is above {check.maximum:g}"
    if check.pattern is not None:
        if not isinstance(value, str):
            return f"{check.path} = {_quote(value)} is not a string"
        if check.pattern.search(value) is None:
            return f"{check.path} = {_quote(value)} does not match {check.pattern.pattern!r}"
    if check.length is not None:
        if not isinstance(value, str | list):
            return f"{check.path} = {_quote(value)} has no length"
        if len(value) != check.length:
            return f"{check.path} has length {len(value)}, expected {check.length}"
    return None


def case_problem(case: Case, answer: Answer, schema: Schema | None) -> str | None:
    """Why the answer fails the case (None: it passes)."""
    if answer.status is None:
        return f"no answer: {answer.error}"
    if answer.status != case.status:
        return f"status {answer.status}, expected {case.status}: {_quote(answer.body)}"
    wants_json = schema is not None or bool(case.fields)
    if not wants_json:
        return None
    try:
        document = json.loads(answer.body)
    except json.JSONDecodeError:
        return f"the body is not JSON: {_quote(answer.body)}"
    if schema is not None and 200 <= case.status < 300:
        error = next(iter(schema.iter_errors(document)), None)
        if error is not None:
            where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
            return f"schema: {where}: {error.message[:MAX_QUOTED]}"
    for check in case.fields:
        problem = _field_problem(check, document)
        if problem is not None:
            return problem
    return None


def agrees(canary: Answer, stable: Answer, path: str, tolerance: float) -> bool | None:
    """Whether the two answers agree at ``path``; None when either gave no 2xx JSON answer
    with that path (not counted)."""
    values = []
    for answer in (canary, stable):
        if answer.status is None or not 200 <= answer.status < 300:
            return None
        try:
            found, value = read_path(json.loads(answer.body), path)
        except json.JSONDecodeError:
            return None
        if not found:
            return None
        values.append(value)
    first, second = values
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numbers:
        return bool(abs(first - second) <= tolerance)
    return bool(first == second)


def judge(
    step: EvaluationStep,
    cases: list[Case],
    canary: list[Answer],
    stable: list[Answer] | None,
    schema: Schema | None,
    *,
    revision: str,
    index: int,
    step_started_at: str,
    finished_at: str,
) -> EvaluationStatus:
    """The evaluation's status from each case's answers (``stable``: with compareToStable)."""
    tally = _Tally()
    for case, answer in zip(cases, canary, strict=True):
        problem = case_problem(case, answer, schema)
        if answer.status is None:
            tally.unanswered += 1
        if problem is None:
            tally.passed += 1
        elif len(tally.failures) < MAX_FAILURES_SHOWN:
            tally.failures.append(EvaluationFailure(id=case.id, reason=problem[:1024]))
    run = len(cases)
    score = tally.passed / run if run else 0.0
    answers = [*canary, *(stable or [])]
    agreement: float | None = None
    compare = step.compare_to_stable
    stable_unanswered = 0
    if compare is not None and stable is not None:
        stable_unanswered = sum(1 for a in stable if a.status is None)
        verdicts = [agrees(c, s, compare.path, compare.tolerance)
                    for c, s in zip(canary, stable, strict=True)]
        counted = [v for v in verdicts if v is not None]
        agreement = sum(counted) / len(counted) if counted else None
    text = f"{tally.passed}/{run} cases passed (score {score:.2f}, minScore {step.min_score:g})"
    if agreement is not None and compare is not None:
        text += f"; agreement with stable on {compare.path} {agreement:.2f} " \
                f"(minAgreement {compare.min_agreement:g})"
    if run and tally.unanswered / run > step.max_unanswered:
        verdict = Verdict.INCONCLUSIVE
        text = (f"{tally.unanswered}/{run} cases got no answer (more than maxUnanswered "
                f"{step.max_unanswered:g}): cannot judge the revision; {text}")
    elif compare is not None and (agreement is None or stable_unanswered * 2 > run):
        verdict = Verdict.INCONCLUSIVE
        text = (f"stable answered too few cases to compare with ({run - stable_unanswered}/{run} "
                f"answered): {text}")
    elif score < step.min_score:
        verdict = Verdict.FAIL
        text = f"{text}: below minScore"
    elif agreement is not None and compare is not None and agreement < compare.min_agreement:
        verdict = Verdict.FAIL
        text = f"{text}: disagrees with stable"
    else:
        verdict = Verdict.PASS
    if tally.failures and verdict != Verdict.PASS:
        first = tally.failures[0]
        text += f"; first failing case {first.id}: {first.reason}"
    cost = sum(a.cost_usd for a in answers)
    return EvaluationStatus(
        revision=revision,
        step=index,
        step_started_at=step_started_at,
        finished_at=finished_at,
        verdict=verdict,
        score=round(score, 4),
        min_score=step.min_score,
        cases=run,
        passed=tally.passed,
        unanswered=tally.unanswered,
        agreement=None if agreement is None else round(agreement, 4),
        tokens=sum(a.tokens for a in answers),
        cost_usd=round(cost, 6),
        failures=tally.failures,
        message=text,
    )


def not_run(
    step: EvaluationStep, problem: str, *, revision: str, index: int, step_started_at: str,
    finished_at: str,
) -> EvaluationStatus:
    """The status of an evaluation that could not run (no ConfigMap, a bad case file, no
    address for the revision): Inconclusive, naming what to fix, since it says nothing of the
    revision; nothing was sent to it. The rollout holds (``modeldeploy resume`` runs it
    again once fixed), or reverts with analysis.onInconclusive rollback."""
    return EvaluationStatus(
        revision=revision, step=index, step_started_at=step_started_at, finished_at=finished_at,
        verdict=Verdict.INCONCLUSIVE, min_score=step.min_score, message=f"not run: {problem}",
    )

"""The orchestrator's performance history (``performance_history.jsonl``), through HTTP.

A real process (`python -m orchestrator`) against the fake upstream: every model call
appends one JSON line; the file survives restarts (and /health, /stats count what it
holds); a partial last line is skipped; the file rotates at ORCH_HISTORY_MAX_BYTES; a
history that cannot be written degrades /health while queries are still answered.

Every query's lines are written before its answer is sent, so the file is read right
after a response; conditions that are not tied to a response are waited for by polling
with a deadline (``wait_for``), never by sleeping.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakeupstream import FakeUpstreamClient
from modelkit.testing import ServiceProcess, running_module, wait_for
from orchestrator.confidence import FILE_NAME as CONFIDENCE_FILE
from orchestrator.confidence import load_confidence_file
from orchestrator.history import FILE_NAME as HISTORY_FILE

MODELS = "fake-a=1/2,fake-b=0.5/1"
MIN_LIMIT = 4096
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
FIELDS = {
    "timestamp", "model", "outcome", "accepted", "latency_s", "cost_usd", "input_tokens",
    "output_tokens", "confidence", "error", "query_id", "request_hash",
}


@pytest.fixture
def fake(fake_upstream: FakeUpstreamClient) -> FakeUpstreamClient:
    fake_upstream.reset_stats()
    return fake_upstream


@dataclass
class Orchestrator:
    service: ServiceProcess
    data_dir: Path

    @property
    def url(self) -> str:
        return self.service.base_url

    def query(self, **body: Any) -> httpx.Response:
        return httpx.post(self.url + "/query", json=body, timeout=10)

    def answered(self, **body: Any) -> dict[str, Any]:
        response = self.query(**body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def stats_models(self) -> dict[str, Any]:
        response = httpx.get(self.url + "/stats", timeout=5)
        response.raise_for_status()
        models: dict[str, Any] = response.json()["models"]
        return models

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.url + "/health", timeout=5).json()
        return body


@contextmanager
def orchestrator(fake_upstream_url: str, data_dir: Path, **env: str) -> Iterator[Orchestrator]:
    full_env = {
        "OPENAI_BASE_URL": fake_upstream_url,
        "OPENAI_API_KEY": "placeholder",
        "ORCH_MODELS": MODELS,
        "ORCH_DATA_DIR": str(data_dir),
        "ORCH_CONFIG_FILE": "",
        "ORCH_TIMEOUT_S": "1",
        "LOG_LEVEL": "INFO",
        **env,
    }
    with running_module("orchestrator", full_env) as service:
        yield Orchestrator(service, data_dir)


def history_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a history file, each parsed (any line that does not parse fails the test)."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "the file ends with a complete line"
    return [json.loads(line) for line in raw.decode().splitlines()]


def parse_time(stamp: str) -> datetime:
    assert RFC3339_UTC.match(stamp), stamp
    return datetime.fromisoformat(stamp)


def history_detail(health: dict[str, Any]) -> str:
    detail: str = health["checks"]["history"]["detail"]
    return detail


def test_each_model_call_appends_one_line_with_outcome_cost_confidence_and_no_prompt(
    fake_upstream_url: str, fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    fake.set_fault("fake-b", error_rate=1.0, status_code=500)
    prompt = "the secret plans of the Orchestrator, part 7"
    before = datetime.now(UTC)
    with orchestrator(fake_upstream_url, tmp_path) as orch:
        first = orch.answered(prompt=prompt)
        lines_after_first = history_lines(tmp_path / HISTORY_FILE)
        cached = orch.answered(prompt=prompt)
        lines_after_cached = history_lines(tmp_path / HISTORY_FILE)
        second = orch.answered(prompt="another question")
        lines = history_lines(tmp_path / HISTORY_FILE)
        models = orch.stats_models()
        health = orch.health()
    after = datetime.now(UTC)

    assert len(lines_after_first) == 2, "one line per model call"
    assert cached["cached"] is True and lines_after_cached == lines_after_first, "a cache hit asks no model"
    assert len(lines) == 4 and lines[:2] == lines_after_first, "later calls are appended"

    for query, recorded in ((first, lines[:2]), (second, lines[2:])):
        results = {result["model"]: result for result in query["results"]}
        assert {line["model"] for line in recorded} == {"fake-a", "fake-b"}
        for line in recorded:
            assert set(line) == FIELDS
            result = results[line["model"]]
            assert before - timedelta(seconds=1) <= parse_time(line["timestamp"]) <= after
            assert line["outcome"] == result["outcome"]
            assert line["accepted"] is (result["outcome"] == "success")
            assert line["cost_usd"] == pytest.approx(result["cost_usd"])
            assert (line["input_tokens"], line["output_tokens"]) == (
                result["input_tokens"], result["output_tokens"])
            assert line["latency_s"] == pytest.approx(result["latency_s"], abs=1e-3)
            assert line["confidence"] == pytest.approx(result["confidence"]), "the score after the call"
            assert line["query_id"] == query["id"]
            assert re.fullmatch(r"[0-9a-f]{64}", line["request_hash"])
        assert len({line["request_hash"] for line in recorded}) == 1
    assert lines[0]["request_hash"] != lines[2]["request_hash"]

    by_model = {line["model"]: line for line in lines[:2]}
    assert by_model["fake-a"]["outcome"] == "success" and by_model["fake-a"]["cost_usd"] > 0
    assert by_model["fake-b"]["outcome"] == "error" and by_model["fake-b"]["accepted"] is False
    assert by_model["fake-b"]["error"], "the kit's fixed message for the failure"
    assert by_model["fake-a"]["confidence"] == pytest.approx(0.6)
    assert by_model["fake-b"]["confidence"] == pytest.approx(0.4)
    assert [line["confidence"] for line in lines[2:]] == pytest.approx([0.68, 0.32])

    text = (tmp_path / HISTORY_FILE).read_text()
    assert prompt not in text and "secret plans" not in text and "another question" not in text

    last = {line["model"]: line["timestamp"] for line in lines}
    for model in ("fake-a", "fake-b"):
        assert models[model]["history_calls"] == 2
        assert models[model]["last_call_at"] == last[model]
    assert health["status"] == "healthy"
    assert health["checks"]["history"]["status"] == "ok"
    assert f"fake-a: 2 calls recorded, last at {last['fake-a']}" in history_detail(health)


def test_a_restart_keeps_the_history_appends_after_it_and_reports_its_counts(
    fake_upstream_url: str, fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    path = tmp_path / HISTORY_FILE
    with orchestrator(fake_upstream_url, tmp_path) as orch:
        for prompt in ("one", "two", "three"):
            orch.answered(prompt=prompt)
        orch.answered(prompt="only a", models=["fake-a"])
        counted = orch.stats_models()
        detail = history_detail(orch.health())
    before_restart = path.read_bytes()
    assert counted["fake-a"]["history_calls"] == 4 and counted["fake-b"]["history_calls"] == 3

    with orchestrator(fake_upstream_url, tmp_path) as orch:
        wait_for(lambda: orch.health()["status"] == "healthy", timeout_s=10, what="a healthy restart")
        assert orch.stats_models() == counted, "counts and last call times read back from the file"
        assert history_detail(orch.health()) == detail
        orch.answered(prompt="four")
        after = orch.stats_models()

    assert path.read_bytes().startswith(before_restart), "the restart kept every line"
    lines = history_lines(path)
    assert len(lines) == 9
    assert {line["model"] for line in lines[7:]} == {"fake-a", "fake-b"}
    assert after["fake-a"]["history_calls"] == 5 and after["fake-b"]["history_calls"] == 4
    assert after["fake-a"]["last_call_at"] == next(
        line["timestamp"] for line in lines[7:] if line["model"] == "fake-a")


def test_a_partial_last_line_left_by_a_crash_is_skipped_with_a_warning(
    fake_upstream_url: str, fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    path = tmp_path / HISTORY_FILE
    with orchestrator(fake_upstream_url, tmp_path) as orch:
        orch.answered(prompt="before the crash")
    complete = path.read_bytes()
    # A writer killed in the middle of a line, after a line that is not a record at all.
    path.write_bytes(complete + b'"just a string"\n' + b'{"timestamp": "2025-01-31T12:0')

    with orchestrator(fake_upstream_url, tmp_path) as orch:
        health = orch.health()
        counted = orch.stats_models()
        orch.answered(prompt="after the crash")
        output = orch.service.output()

    assert health["status"] == "healthy"
    assert counted["fake-a"]["history_calls"] == 1 and counted["fake-b"]["history_calls"] == 1
    assert "skipped 2 unreadable line(s) (line 3, 4)" in output, output
    raw = path.read_bytes().decode()
    lines = raw.splitlines()
    assert raw.endswith("\n") and len(lines) == 6
    assert lines[3] == '{"timestamp": "2025-01-31T12:0', "the partial line was ended, not extended"
    assert {json.loads(line)["model"] for line in lines[4:]} == {"fake-a", "fake-b"}


def test_the_file_is_rotated_to_dot_1_before_it_passes_the_size_limit(
    fake_upstream_url: str, fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    path = tmp_path / HISTORY_FILE
    rotated = tmp_path / f"{HISTORY_FILE}.1"
    query_ids: list[str] = []
    first_rotation: list[dict[str, Any]] | None = None
    with orchestrator(fake_upstream_url, tmp_path, ORCH_HISTORY_MAX_BYTES=str(MIN_LIMIT)) as orch:
        # A line is about 330 bytes: a rotation every six queries or so; stop after the second.
        for number in range(60):
            query_ids.append(orch.answered(prompt=f"question {number}")["id"])
            if rotated.exists() and first_rotation is None:
                first_rotation = history_lines(rotated)
            if first_rotation is not None and history_lines(rotated) != first_rotation:
                break
        else:
            pytest.fail("the history was not rotated twice in 60 queries")
        counted = orch.stats_models()

    assert first_rotation is not None
    assert path.stat().st_size <= MIN_LIMIT and rotated.stat().st_size <= MIN_LIMIT
    assert not list(tmp_path.glob(f"{HISTORY_FILE}.2*")), "one rotated file only"
    older, newer = history_lines(rotated), history_lines(path)
    assert older[0]["query_id"] != first_rotation[0]["query_id"], "the older .1 was replaced"
    assert parse_time(older[-1]["timestamp"]) <= parse_time(newer[0]["timestamp"])
    # Together the two files hold the latest calls, in order, with no gap.
    kept = [line["query_id"] for line in older + newer]
    kept_queries = list(dict.fromkeys(kept))
    assert kept_queries == query_ids[-len(kept_queries):]
    # Whole lines rotate: only the oldest query kept may have lost its first line.
    lines_per_query = Counter(kept)
    assert lines_per_query[kept_queries[0]] in (1, 2)
    assert all(lines_per_query[query] == 2 for query in kept_queries[1:])
    assert {model: entry["history_calls"] for model, entry in counted.items()} == dict(
        Counter(line["model"] for line in older + newer))

    with orchestrator(fake_upstream_url, tmp_path, ORCH_HISTORY_MAX_BYTES=str(MIN_LIMIT)) as orch:
        assert orch.stats_models() == counted, "a restart counts what the two files hold"


def test_a_history_limit_too_small_to_hold_a_few_lines_stops_start_up_naming_it(
    fake_upstream_url: str, tmp_path: Path
) -> None:
    with (
        pytest.raises(RuntimeError, match="ORCH_HISTORY_MAX_BYTES"),
        orchestrator(fake_upstream_url, tmp_path, ORCH_HISTORY_MAX_BYTES="10"),
    ):
        pass


def test_a_history_that_cannot_be_written_degrades_health_while_queries_are_answered(
    fake_upstream_url: str, fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    # In the way of the file: the open fails (as root too, unlike a read-only mode).
    (tmp_path / HISTORY_FILE).mkdir()
    with orchestrator(fake_upstream_url, tmp_path) as orch:
        assert orch.health()["status"] == "healthy"
        first = orch.query(prompt="still answered?")
        degraded = orch.health()
        (tmp_path / HISTORY_FILE).rmdir()
        second = orch.query(prompt="and now?")
        recovered = orch.health()
        output = orch.service.output()

    assert first.status_code == 200, first.text
    assert degraded["status"] == "degraded"
    data_dir = degraded["checks"]["data_dir"]
    assert data_dir["status"] == "degraded"
    assert "cannot write the performance history" in data_dir["detail"]
    assert "Is a directory" in data_dir["detail"], "the reason"
    assert "confidence file" not in data_dir["detail"], "the confidence file was written"
    assert "cannot write the performance history" in output
    confidence = load_confidence_file(tmp_path / CONFIDENCE_FILE)
    assert confidence is not None and confidence.generation == 4
    assert second.status_code == 200 and recovered["status"] == "healthy"
    assert len(history_lines(tmp_path / HISTORY_FILE)) == 2


def test_an_unwritable_data_dir_degrades_health_naming_both_files_and_queries_are_answered(
    fake_upstream_url: str, fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("in the way")
    with orchestrator(fake_upstream_url, blocker / "data") as orch:
        assert orch.health()["status"] == "healthy"
        response = orch.query(prompt="anyone home?")
        health = orch.health()
        models = orch.stats_models()

    assert response.status_code == 200, response.text
    assert health["status"] == "degraded"
    detail = health["checks"]["data_dir"]["detail"]
    assert "cannot write the confidence file" in detail
    assert "cannot write the performance history" in detail
    assert "Not a directory" in detail
    assert models["fake-a"]["history_calls"] == 0, "nothing was recorded"


def test_history_and_confidence_writes_survive_the_data_dir_being_removed_and_recreated(
    fake_upstream_url: str, fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with orchestrator(fake_upstream_url, data_dir) as orch:
        orch.answered(prompt="first")
        shutil.rmtree(data_dir)
        orch.answered(prompt="second")
        health = orch.health()
    assert health["status"] == "healthy"
    assert len(history_lines(data_dir / HISTORY_FILE)) == 2, "a fresh file, with the new calls"

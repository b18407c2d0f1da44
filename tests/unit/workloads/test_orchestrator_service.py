"""The orchestrator as a real process (`python -m orchestrator`) against the fake upstream:
fan-out per feature flags, caching, cost, confidence kept across restarts, failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakeupstream import FakeUpstreamClient
from modelkit.testing import MetricSamples, ServiceProcess, running_module, scrape
from orchestrator.confidence import FILE_NAME, load_confidence_file

MODELS = "fake-a=1/2,fake-b=0.5/1"
PRICES = {"fake-a": (1.0, 2.0), "fake-b": (0.5, 1.0)}


@pytest.fixture(scope="module")
def upstream(fake_upstream_url: str) -> Iterator[tuple[str, FakeUpstreamClient]]:
    """conftest.py's session-wide fake upstream, with a client of this module's own."""
    with FakeUpstreamClient(fake_upstream_url) as client:
        yield fake_upstream_url, client


@pytest.fixture
def fake(upstream: tuple[str, FakeUpstreamClient]) -> Iterator[FakeUpstreamClient]:
    _, client = upstream
    client.reset()
    client.reset_stats()
    yield client
    client.reset()


@dataclass
class Orchestrator:
    service: ServiceProcess

    @property
    def url(self) -> str:
        return self.service.base_url

    def query(self, **body: Any) -> httpx.Response:
        return httpx.post(self.url + "/query", json=body, timeout=10)

    def stats(self) -> dict[str, Any]:
        response = httpx.get(self.url + "/stats", timeout=5)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def metrics(self) -> MetricSamples:
        return scrape(self.url)


@contextmanager
def orchestrator(
    upstream: tuple[str, FakeUpstreamClient], data_dir: Path, **env: str
) -> Iterator[Orchestrator]:
    full_env = {
        "OPENAI_BASE_URL": upstream[0],
        "OPENAI_API_KEY": "placeholder",
        "ORCH_MODELS": MODELS,
        "ORCH_DATA_DIR": str(data_dir),
        "ORCH_TIMEOUT_S": "1",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    with running_module("orchestrator", full_env) as service:
        yield Orchestrator(service)


def asked(fake: FakeUpstreamClient) -> dict[str, int]:
    return {model: sum(counts.values()) for model, counts in fake.stats().items()}


def test_a_query_fans_out_to_every_model_and_accounts_tokens_and_cost(
    upstream: tuple[str, FakeUpstreamClient], fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    with orchestrator(upstream, tmp_path) as orch:
        response = orch.query(prompt="What is the capital of France?")
        assert response.status_code == 200, response.text
        result = response.json()
        metrics = orch.metrics()
        stats = orch.stats()

    assert asked(fake) == {"fake-a": 1, "fake-b": 1}
    assert {r["model"]: r["outcome"] for r in result["results"]} == {
        "fake-a": "success",
        "fake-b": "success",
    }
    # All answers differ and both models start equally trusted: the first model wins.
    assert result["answer"] == "[fake-a] What is the capital of France?"
    assert result["strategy"] == "weighted-vote"
    assert result["cached"] is False

    total_cost = 0.0
    for answer in result["results"]:
        model = answer["model"]
        input_price, output_price = PRICES[model]
        cost = (answer["input_tokens"] * input_price + answer["output_tokens"] * output_price) / 1e6
        assert answer["cost_usd"] == pytest.approx(cost)
        assert metrics.value("model_cost_usd_total", model=model) == pytest.approx(cost)
        assert metrics.value("model_tokens_total", model=model, direction="input") == answer["input_tokens"]
        assert metrics.value("model_tokens_total", model=model, direction="output") == answer["output_tokens"]
        assert metrics.value("model_upstream_requests_total", model=model, outcome="success") == 1
        assert metrics.value("model_info", model=model, version="dev") == 1
        total_cost += cost
    assert result["cost_usd"] == pytest.approx(total_cost)
    assert stats["cost_usd_total"] == pytest.approx(total_cost)
    assert stats["cost_per_hour_usd"] > 0
    assert metrics.value("model_requests_total", route="/query", outcome="success") == 1
    assert metrics.value("model_cache_requests_total", result="miss") == 1


def test_a_repeated_query_is_answered_from_the_cache_without_asking_the_models(
    upstream: tuple[str, FakeUpstreamClient], fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    with orchestrator(upstream, tmp_path) as orch:
        first = orch.query(prompt="cache me").json()
        second = orch.query(prompt="cache me").json()
        other = orch.query(prompt="cache me", temperature=0.5).json()
        metrics = orch.metrics()
        stats = orch.stats()

    assert second["cached"] is True and second["answer"] == first["answer"]
    assert second["cost_usd"] == 0.0 < first["cost_usd"]
    assert other["cached"] is False, "different parameters are a different cache entry"
    assert asked(fake) == {"fake-a": 2, "fake-b": 2}
    assert metrics.value("model_cache_requests_total", result="hit") == 1
    assert metrics.value("model_cache_requests_total", result="miss") == 2
    assert stats["cache"]["hit_rate"] == pytest.approx(1 / 3, abs=1e-3)


def test_a_model_that_times_out_is_counted_and_loses_confidence_while_the_other_answers(
    upstream: tuple[str, FakeUpstreamClient], fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    fake.set_fault("fake-a", timeout_rate=1.0, hang_s=5.0)
    with orchestrator(upstream, tmp_path) as orch:
        response = orch.query(prompt="hello")
        metrics = orch.metrics()
        health = httpx.get(orch.url + "/health", timeout=5).json()

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["model"] == "fake-b"
    assert {r["model"]: r["outcome"] for r in result["results"]} == {
        "fake-a": "timeout",
        "fake-b": "success",
    }
    assert metrics.value("model_upstream_requests_total", model="fake-a", outcome="timeout") == 1
    assert health["status"] == "healthy"
    document = load_confidence_file(tmp_path / FILE_NAME)
    assert document is not None
    assert document.models["fake-a"].confidence < 0.5 < document.models["fake-b"].confidence


@pytest.mark.parametrize(
    ("fault", "status", "error_type", "outcome"),
    [
        pytest.param(
            {"error_rate": 1.0, "status_code": 500},
            502,
            "upstream_error",
            "error",
            id="when every model fails the query is answered 502 upstream_error",
        ),
        pytest.param(
            {"timeout_rate": 1.0, "hang_s": 5.0},
            504,
            "timeout_error",
            "timeout",
            id="when every model times out the query is answered 504 timeout_error",
        ),
    ],
)
def test_a_query_no_model_answers_is_a_clear_error_and_the_service_stays_healthy(
    upstream: tuple[str, FakeUpstreamClient],
    fake: FakeUpstreamClient,
    tmp_path: Path,
    fault: dict[str, Any],
    status: int,
    error_type: str,
    outcome: str,
) -> None:
    fake.set_fault("*", **fault)
    with orchestrator(upstream, tmp_path) as orch:
        response = orch.query(prompt="anyone?")
        metrics = orch.metrics()
        fake.reset()
        health = httpx.get(orch.url + "/health", timeout=5).json()
        recovered = orch.query(prompt="anyone?")

    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == error_type
    assert "fake-a" in error["message"] and "fake-b" in error["message"]
    assert metrics.value("model_requests_total", route="/query", outcome=outcome) == 1
    assert health["status"] == "healthy"
    assert recovered.status_code == 200, "a failed query is not cached"


def test_sequential_execution_without_merging_is_a_fallback_chain(
    upstream: tuple[str, FakeUpstreamClient], fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    flags = {"FF_PARALLEL_EXECUTION": "false", "FF_RESULT_MERGING": "false"}
    with orchestrator(upstream, tmp_path, **flags) as orch:
        first = orch.query(prompt="one").json()
        assert asked(fake) == {"fake-a": 1}, "the second model is not asked when the first answers"
        fake.set_fault("fake-a", error_rate=1.0, status_code=503)
        second = orch.query(prompt="two").json()

    assert first["model"] == "fake-a" and first["strategy"] == "single"
    assert second["model"] == "fake-b"
    assert [r["outcome"] for r in second["results"]] == ["error", "success"]


def test_a_query_may_name_a_subset_of_the_registered_models(
    upstream: tuple[str, FakeUpstreamClient], fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    with orchestrator(upstream, tmp_path) as orch:
        result = orch.query(prompt="just b", models=["fake-b"]).json()
    assert result["model"] == "fake-b"
    assert asked(fake) == {"fake-b": 1}


def test_model_selection_asks_the_models_trusted_most_by_the_confidence_kept_on_disk(
    upstream: tuple[str, FakeUpstreamClient], fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    saved = {
        "format": "orchestrator.confidence/v1",
        "generation": 20,
        "saved_at": 0.0,
        "models": {
            "fake-a": {"confidence": 0.3, "successes": 5, "failures": 5},
            "fake-b": {"confidence": 0.9, "successes": 10, "failures": 0},
        },
    }
    (tmp_path / FILE_NAME).write_text(json.dumps(saved))
    flags = {"FF_MODEL_SELECTION": "true", "ORCH_SELECT_TOP_K": "1"}
    with orchestrator(upstream, tmp_path, **flags) as orch:
        result = orch.query(prompt="pick one").json()
        stats = orch.stats()

    assert asked(fake) == {"fake-b": 1}
    assert result["model"] == "fake-b"
    assert stats["models"]["fake-b"]["successes"] == 11
    assert stats["models"]["fake-a"]["confidence"] == pytest.approx(0.3)


def test_confidence_survives_a_restart_and_a_corrupt_file_means_a_fresh_start(
    upstream: tuple[str, FakeUpstreamClient], fake: FakeUpstreamClient, tmp_path: Path
) -> None:
    fake.set_fault("fake-b", error_rate=1.0)
    with orchestrator(upstream, tmp_path) as orch:
        for prompt in ("a", "b", "c"):
            assert orch.query(prompt=prompt).status_code == 200
        learned = orch.stats()["models"]
    assert learned["fake-b"]["failures"] == 3

    with orchestrator(upstream, tmp_path) as orch:
        assert orch.stats()["models"] == learned

    (tmp_path / FILE_NAME).write_text('{"format": "orchestrator.confidence/v1", "models": {"fa')
    with orchestrator(upstream, tmp_path) as orch:
        fresh = orch.stats()["models"]
        health = httpx.get(orch.url + "/health", timeout=5).json()
        output = orch.service.output()
    assert fresh["fake-b"] == {**learned["fake-b"], "confidence": 0.5, "failures": 0}
    assert health["status"] == "healthy"
    assert "starting fresh" in output
    assert list(tmp_path.glob(f"{FILE_NAME}.corrupt-*"))


def test_a_bad_setting_stops_the_orchestrator_at_start_naming_the_variable(
    upstream: tuple[str, FakeUpstreamClient], tmp_path: Path
) -> None:
    with (
        pytest.raises(RuntimeError, match="ORCH_MODELS"),
        orchestrator(upstream, tmp_path, ORCH_MODELS="unpriced-model"),
    ):
        pass

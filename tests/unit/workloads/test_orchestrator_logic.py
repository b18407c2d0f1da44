"""The orchestrator's decisions and bookkeeping, without a server: configuration,
model selection, validation, merging, the TTL cache and the confidence store."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from modelkit.settings import ConfigurationError, parse_settings
from orchestrator.cache import TTLCache
from orchestrator.confidence import (
    FILE_NAME,
    INITIAL_CONFIDENCE,
    ConfidenceStore,
    CorruptStateError,
    load_confidence_file,
)
from orchestrator.config import OrchestratorSettings
from orchestrator.costs import CostLedger
from orchestrator.registry import ModelSpec, parse_models
from orchestrator.strategy import (
    ModelAnswer,
    merge_answers,
    rejection_reason,
    select_models,
)

# --- configuration -------------------------------------------------------------


def test_builtin_and_inline_prices_are_both_accepted() -> None:
    registry = parse_models("gpt-4o-mini, fake-big=2.5/10")
    assert list(registry) == ["gpt-4o-mini", "fake-big"]
    assert registry["gpt-4o-mini"].cost_usd(1_000_000, 1_000_000) == pytest.approx(0.75)
    assert registry["fake-big"].cost_usd(1000, 500) == pytest.approx(0.0075)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        pytest.param({"orch_models": ""}, "ORCH_MODELS", id="no models registered is refused"),
        pytest.param(
            {"orch_models": "my-finetune"},
            "ORCH_MODELS: .*my-finetune=",
            id="a model with no known price is refused",
        ),
        pytest.param(
            {"orch_models": "a=1"},
            "ORCH_MODELS: .*<input>/<output>",
            id="a price without a slash is refused",
        ),
        pytest.param(
            {"orch_models": "a=x/1"},
            "ORCH_MODELS: .*non-negative",
            id="a non-numeric price is refused",
        ),
        pytest.param(
            {"orch_models": "a=-1/1"},
            "ORCH_MODELS: .*non-negative",
            id="a negative price is refused",
        ),
        pytest.param(
            {"orch_models": "gpt-4o,gpt-4o"},
            "ORCH_MODELS: .*twice",
            id="a model listed twice is refused",
        ),
        pytest.param(
            {"orch_models": "gpt-4o", "ff_validation": "maybe"},
            "FF_VALIDATION",
            id="a flag that is not a boolean is refused",
        ),
        pytest.param(
            {"orch_models": "gpt-4o", "orch_timeout_s": "0"},
            "ORCH_TIMEOUT_S",
            id="a zero timeout is refused",
        ),
        pytest.param(
            {"orch_models": "gpt-4o", "orch_cache_max_entries": "many"},
            "ORCH_CACHE_MAX_ENTRIES",
            id="a non-integer cache size is refused",
        ),
        pytest.param(
            {"orch_models": "gpt-4o", "orch_cache_ttl_s": "nan"},
            "ORCH_CACHE_TTL_S",
            id="a NaN cache TTL is refused",
        ),
    ],
)
def test_bad_configuration_is_refused_naming_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        parse_settings(OrchestratorSettings, **env)


def test_flags_read_true_and_false_in_any_case() -> None:
    settings = parse_settings(
        OrchestratorSettings,
        orch_models="gpt-4o",
        ff_model_selection="TRUE",
        ff_parallel_execution="false",
        ff_result_merging="False",
        ff_validation="true",
    )
    assert settings.flags() == {
        "FF_MODEL_SELECTION": True,
        "FF_PARALLEL_EXECUTION": False,
        "FF_RESULT_MERGING": False,
        "FF_VALIDATION": True,
    }


def test_the_kit_price_table_prices_fine_tunes_of_known_models() -> None:
    registry = parse_models("ft:gpt-4o-mini:acme:songs:abc123")
    assert registry["ft:gpt-4o-mini:acme:songs:abc123"].input_usd_per_million == 0.30


# --- model selection ---------------------------------------------------------------

CHEAP = ModelSpec("cheap", 0.1, 0.4)
MID = ModelSpec("mid", 1.0, 4.0)
DEAR = ModelSpec("dear", 2.5, 10.0)


@dataclass
class SelectionCase:
    confidence: dict[str, float]
    enabled: bool
    expected: list[str]
    top_k: int = 2


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            SelectionCase({"cheap": 0.1, "mid": 0.9, "dear": 0.5}, False, ["cheap", "mid", "dear"]),
            id="with selection off every model is asked in registry order",
        ),
        pytest.param(
            SelectionCase({"cheap": 0.6, "mid": 0.9, "dear": 0.7}, True, ["mid", "dear"]),
            id="selection keeps the most confident models",
        ),
        pytest.param(
            SelectionCase({"cheap": 0.8, "mid": 0.8, "dear": 0.8}, True, ["cheap", "mid"]),
            id="on equal confidence the cheaper model wins",
        ),
        pytest.param(
            SelectionCase({"cheap": 0.9, "mid": 0.1, "dear": 0.1}, True, ["cheap"]),
            id="models below the confidence floor are skipped",
        ),
        pytest.param(
            SelectionCase({"cheap": 0.05, "mid": 0.1, "dear": 0.01}, True, ["mid", "cheap"]),
            id="when every model is below the floor the best are still asked",
        ),
    ],
)
def test_model_selection(case: SelectionCase) -> None:
    chosen = select_models(
        [CHEAP, MID, DEAR],
        case.confidence,
        enabled=case.enabled,
        top_k=case.top_k,
        min_confidence=0.2,
    )
    assert [spec.id for spec in chosen] == case.expected


# --- validation and merging --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "finish_reason", "rejected"),
    [
        pytest.param("Paris.", "stop", False, id="a normal answer is accepted"),
        pytest.param("cut sho", "length", False, id="a truncated answer is still accepted"),
        pytest.param(None, "stop", True, id="an answer without text is rejected"),
        pytest.param("  \n\t", "stop", True, id="a blank answer is rejected"),
        pytest.param("partial", "content_filter", True, id="a content-filtered answer is rejected"),
    ],
)
def test_answer_validation(text: str | None, finish_reason: str, rejected: bool) -> None:
    assert (rejection_reason(text, finish_reason) is not None) is rejected


def _ok(model: str, text: str) -> ModelAnswer:
    return ModelAnswer(model=model, outcome="success", text=text)


@pytest.mark.parametrize(
    ("answers", "confidence", "enabled", "chosen", "strategy"),
    [
        pytest.param(
            [_ok("a", "Paris"), _ok("b", "paris "), _ok("c", "Lyon")],
            {"a": 0.4, "b": 0.4, "c": 0.7},
            True,
            "a",
            "weighted-vote",
            id="two agreeing models outvote one more confident dissenter",
        ),
        pytest.param(
            [_ok("a", "Paris"), _ok("b", "paris"), _ok("c", "Lyon")],
            {"a": 0.2, "b": 0.2, "c": 0.9},
            True,
            "c",
            "weighted-vote",
            id="a confident model beats agreeing models whose confidence adds up to less",
        ),
        pytest.param(
            [_ok("a", "x"), _ok("b", "y")],
            {"a": 0.3, "b": 0.6},
            True,
            "b",
            "weighted-vote",
            id="with all answers different the most confident model wins",
        ),
        pytest.param(
            [_ok("a", "x"), _ok("b", "y")],
            {"a": 0.3, "b": 0.6},
            False,
            "a",
            "first-valid",
            id="with merging off the first accepted answer is returned",
        ),
        pytest.param(
            [ModelAnswer("a", "timeout"), _ok("b", "y")],
            {"a": 0.9, "b": 0.1},
            True,
            "b",
            "single",
            id="failed models take no part in the vote",
        ),
    ],
)
def test_merging(
    answers: list[ModelAnswer],
    confidence: dict[str, float],
    enabled: bool,
    chosen: str,
    strategy: str,
) -> None:
    result = merge_answers(answers, confidence, enabled=enabled)
    assert result is not None
    assert (result.chosen.model, result.strategy) == (chosen, strategy)


def test_merging_gives_nothing_when_no_answer_was_accepted() -> None:
    answers = [ModelAnswer("a", "error"), ModelAnswer("b", "invalid", text="")]
    assert merge_answers(answers, {}, enabled=True) is None


# --- cache ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(ttl_s=10, max_entries=8, clock=clock)
    cache.put("k", "v")
    clock.now += 9.9
    assert cache.get("k") == "v"
    clock.now += 0.1
    assert cache.get("k") is None
    assert len(cache) == 0


def test_cache_evicts_the_least_recently_used_entry_when_full() -> None:
    cache: TTLCache[int] = TTLCache(ttl_s=60, max_entries=2, clock=Clock())
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


def test_a_zero_sized_cache_stores_nothing() -> None:
    cache: TTLCache[int] = TTLCache(ttl_s=60, max_entries=0, clock=Clock())
    cache.put("a", 1)
    assert cache.get("a") is None


# --- confidence store -----------------------------------------------------------------


def test_confidence_rises_with_successes_falls_with_failures_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    store = ConfidenceStore.open(tmp_path, ["a", "b"])
    for _ in range(3):
        store.record("a", success=True)
        store.record("b", success=False)
    store.save()
    assert store.confidence("a") > INITIAL_CONFIDENCE > store.confidence("b")

    reopened = ConfidenceStore.open(tmp_path, ["a", "b", "c"])
    assert reopened.confidence("a") == pytest.approx(store.confidence("a"))
    assert reopened.confidence("b") == pytest.approx(store.confidence("b"))
    assert reopened.confidence("c") == INITIAL_CONFIDENCE
    assert reopened.snapshot().models["a"].successes == 3


def test_an_older_snapshot_never_overwrites_a_newer_file(tmp_path: Path) -> None:
    store = ConfidenceStore.open(tmp_path, ["a"])
    old = store.snapshot()
    store.record("a", success=True)
    assert store.save() is True
    assert store.save(old) is False
    document = load_confidence_file(tmp_path / FILE_NAME)
    assert document is not None and document.generation == 1


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="an empty file"),
        pytest.param(b'{"format": "orchestrator.confidence/v1", "models": {"a": {"conf', id="a torn file"),
        pytest.param(b"\xff\xfe\x00garbage", id="binary garbage"),
        pytest.param(b"[1, 2, 3]", id="JSON that is not a document"),
        pytest.param(
            json.dumps({"format": "orchestrator.confidence/v1", "models": {"a": {"confidence": 7}}}).encode(),
            id="a confidence out of range",
        ),
        pytest.param(json.dumps({"format": "something-else/v9"}).encode(), id="another program's file"),
    ],
)
def test_a_corrupt_file_means_a_fresh_start_with_a_warning(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    with pytest.raises(CorruptStateError):
        load_confidence_file(tmp_path / FILE_NAME)
    with caplog.at_level(logging.WARNING, logger="orchestrator.confidence"):
        store = ConfidenceStore.open(tmp_path, ["a"])
    assert store.confidence("a") == INITIAL_CONFIDENCE
    assert any("starting fresh" in record.getMessage() for record in caplog.records)
    # The bad file is kept aside for inspection, and the next save works.
    assert len(list(tmp_path.glob(f"{FILE_NAME}.corrupt-*"))) == 1
    store.record("a", success=True)
    store.save()
    assert load_confidence_file(tmp_path / FILE_NAME) is not None


def test_a_missing_data_directory_is_created_on_first_save(tmp_path: Path) -> None:
    store = ConfidenceStore.open(tmp_path / "not" / "yet", ["a"])
    store.record("a", success=False)
    store.save()
    assert load_confidence_file(tmp_path / "not" / "yet" / FILE_NAME) is not None


# --- cost ------------------------------------------------------------------------------


def test_cost_per_hour_is_the_spend_of_the_last_hour_over_the_time_it_covers() -> None:
    clock = Clock()
    ledger = CostLedger(clock=clock)
    ledger.add("a", 0.5)
    assert ledger.cost_per_hour_usd() == pytest.approx(30.0), "young: extrapolated from 1 minute"
    clock.now += 1800
    ledger.add("b", 0.5)
    assert ledger.cost_per_hour_usd() == pytest.approx(2.0), "$1 over half an hour"
    clock.now += 1801
    assert ledger.cost_per_hour_usd() == pytest.approx(0.5), "the first spend left the window"
    assert ledger.total_usd == pytest.approx(1.0)
    assert ledger.by_model == {"a": 0.5, "b": 0.5}


def test_the_start_up_sweep_spares_temp_files_of_live_writers(tmp_path: Path) -> None:
    live_writer = os.getppid()  # the process that started this test: certainly alive
    in_flight = tmp_path / f".{FILE_NAME}.{live_writer}.abc.tmp"
    orphan = tmp_path / f".{FILE_NAME}.{2**22 + 12345}.abc.tmp"  # above Linux's pid_max
    in_flight.write_text("{")
    orphan.write_text("{")
    ConfidenceStore.open(tmp_path, ["a"])
    assert in_flight.exists()
    assert not orphan.exists()

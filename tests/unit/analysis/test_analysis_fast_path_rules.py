"""The rules of the checks of rollback indicators between analysis rounds (the fast path),
and when a breach is not the canary's (stable troubled too, at rounds and between them).

The integration scenario (tests/integration/analysis/test_analysis_indicator_fast_path.py)
shows a revert between rounds; these pin the decisions around it: when there is a fast
path at all, when stable's state defers it to the rounds, and when the next check runs.
"""

from __future__ import annotations

import datetime as dt

import pytest
from modeldeploy import spec as s
from modeldeploy.analysis import presets
from modeldeploy.analysis.evaluate import INDICATOR_SUFFIX, evaluate, stable_troubled
from modeldeploy.analysis.report import AnalysisRequest
from modeldeploy.analysis_runner import AnalysisRunner, fast_window
from modeldeploy.measurement import Measurement, NoData

NOW = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)
ERRORS = presets.IndicatorCheck("error-rate", "q", s.ThresholdRange(max=0.05))
SUCCESS = presets.IndicatorCheck("success-rate", "q", s.ThresholdRange(min=0.85))


def builtin(metric: str, bound: s.ThresholdRange) -> presets.IndicatorCheck:
    return presets.IndicatorCheck(metric, presets.BUILTIN_QUERIES[metric], bound)


def analysis(interval: str) -> s.Analysis:
    return s.Analysis.model_validate(
        {"interval": interval, "provider": {"prometheus": {"address": "http://prometheus:9090"}}})


@pytest.mark.parametrize(("scrape_s", "interval", "window_s"), [
    (5, "10s", 10), (15, "1m", 30), (1, "3s", 2), (10, "10s", None), (30, "10s", None),
    (None, "1m", None),
], ids=["scrape 5s, rounds 10s", "15s, 1m", "1s, 3s", "scrape = interval", "slower scrape",
        "scrape unknown"])
def test_a_fast_path_exists_when_the_scrape_is_shorter_than_the_rounds(
    scrape_s: int | None, interval: str, window_s: int | None
) -> None:
    scrape = None if scrape_s is None else dt.timedelta(seconds=scrape_s)
    window = fast_window(analysis(interval), scrape)
    assert window == (None if window_s is None else dt.timedelta(seconds=window_s))


@pytest.mark.parametrize(("indicator", "stable_value", "troubled"), [
    (ERRORS, 0.0, False), (ERRORS, 0.025, False), (ERRORS, 0.03, True), (ERRORS, 0.2, True),
    (SUCCESS, 1.0, False), (SUCCESS, 0.93, False), (SUCCESS, 0.9, True),
], ids=["no errors", "half the bound", "past half", "past the bound", "all succeed",
        "above half-way to 1", "below half-way"])
def test_a_breach_needs_a_stable_that_is_well(
    indicator: presets.IndicatorCheck, stable_value: float, troubled: bool
) -> None:
    assert (stable_troubled(indicator, Measurement(stable_value, NOW)) is not None) is troubled


@pytest.mark.parametrize(("indicator", "upstream_failing", "troubled"), [
    (builtin("error-rate", s.ThresholdRange(max=0.05)), 0.6, True),
    (builtin("uncached-error-rate", s.ThresholdRange(max=0.05)), 0.02, False),
    (builtin("success-rate", s.ThresholdRange(min=0.85)), 0.1, True),
    (builtin("success-rate", s.ThresholdRange(min=0.85)), 0.05, False),
    (builtin("latency-p95", s.ThresholdRange(max=20.0)), 0.9, False),
    (presets.IndicatorCheck("error-rate", "my_own_error_ratio", s.ThresholdRange(max=0.05)), 0.6,
     False),
], ids=["a burst of 429s on stable's calls", "stable's usual retried 500s",
        "success-rate, 10% of calls failing", "5% failing", "latency is not a share",
        "a custom query"])
def test_stable_whose_calls_to_the_provider_fail_excuses_a_share_of_requests(
    indicator: presets.IndicatorCheck, upstream_failing: float, troubled: bool
) -> None:
    """A warm stable's few misses are saved by its retries (no request lost, its error rate
    0) while most of its calls to the provider are refused: its calls show the trouble."""
    healthy = Measurement(1.0 if indicator.metric == "success-rate" else 0.0, NOW)
    reason = stable_troubled(indicator, healthy, Measurement(upstream_failing, NOW))
    assert (reason is not None) is troubled
    if reason is not None:
        assert reason.startswith(f"stable's calls to the model provider fail too ({upstream_failing:g}")


def test_a_stable_without_data_does_not_excuse_a_breach() -> None:
    """Stable measured nothing (e.g. no series yet): nothing says the upstream is troubled."""
    assert stable_troubled(ERRORS, NoData("no series", NOW)) is None


def test_checks_are_timed_just_after_each_scrape_of_the_canary() -> None:
    runner = AnalysisRunner(kube=None)  # type: ignore[arg-type]
    key = ("ml", "songs")
    scrape = dt.timedelta(seconds=15)
    assert runner._next_check(key, scrape) is None  # never checked: now
    runner._indicators_checked[key] = NOW
    assert runner._next_check(key, scrape) == NOW + scrape  # scrape times unknown
    runner._canary_scraped[key] = NOW - dt.timedelta(seconds=4)  # scraped 4 s before the check
    assert runner._next_check(key, scrape) == NOW + dt.timedelta(seconds=11.5)
    runner._canary_scraped[key] = NOW + dt.timedelta(seconds=1)  # a scrape newer than the check
    assert runner._next_check(key, scrape) == NOW + dt.timedelta(seconds=1.5)


@pytest.mark.parametrize(("indicator", "value", "requests", "breach"), [
    (builtin("uncached-error-rate", s.ThresholdRange(max=0.05)), 0.054, 21, False),
    (builtin("uncached-error-rate", s.ThresholdRange(max=0.05)), 0.3, 20, True),
    (builtin("error-rate", s.ThresholdRange(max=0.05)), 0.11, 20, True),
    (builtin("success-rate", s.ThresholdRange(min=0.85)), 0.8, 10, False),
    (builtin("success-rate", s.ThresholdRange(min=0.85)), 0.5, 10, True),
    (builtin("latency-p95", s.ThresholdRange(max=20.0)), 20.5, 5, True),
    (presets.IndicatorCheck("error-rate", "my_own_error_ratio", s.ThresholdRange(max=0.05)),
     0.054, 21, True),
    (builtin("error-rate", s.ThresholdRange(max=0.05)), 0.054, None, True),
], ids=["1 failure in 21 requests", "30% of 20", "2+ of 20", "1 of 10 below the min",
        "half of 10", "not a share of requests", "a custom query", "requests not measured"])
def test_a_breach_one_request_made_is_not_acted_on(
    indicator: presets.IndicatorCheck, value: float, requests: float | None, breach: bool
) -> None:
    """A 10% canary under 15 requests a second holds 15-20 requests in a 10 s window: one
    provider 429 that outlasted its retries is an error rate of 5-7%, on its own."""
    key = indicator.metric + INDICATOR_SUFFIX
    request = AnalysisRequest(revision="canary1", stable_revision="stable1", since=NOW)
    healthy = 1.0 if indicator.metric == "success-rate" else 0.0  # stable is well
    report = evaluate(request, [], [indicator], {key: Measurement(value, NOW)},
                      {key: Measurement(healthy, NOW)}, [], "inconclusive", NOW, requests)
    assert (report.breach is not None) is breach
    if not breach and requests is not None:
        assert report.metrics[0].verdict is s.Verdict.INCONCLUSIVE
        assert f"rests on one of the {requests:.0f} requests in the window" in (
            report.metrics[0].message or "")

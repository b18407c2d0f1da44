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
from modeldeploy.analysis.evaluate import stable_troubled
from modeldeploy.analysis_runner import AnalysisRunner, fast_window
from modeldeploy.measurement import Measurement, NoData

NOW = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)
ERRORS = presets.IndicatorCheck("error-rate", "q", s.ThresholdRange(max=0.05))
SUCCESS = presets.IndicatorCheck("success-rate", "q", s.ThresholdRange(min=0.85))


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

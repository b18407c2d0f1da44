"""One round of analysis: pass, fail or inconclusive, counted in a row."""

from __future__ import annotations

import datetime as dt

import pytest
from modeldeploy import spec as s
from modeldeploy.analysis import presets
from modeldeploy.analysis.evaluate import INDICATOR_SUFFIX, evaluate
from modeldeploy.analysis.report import AnalysisRequest
from modeldeploy.measurement import Measurement, NoData, QueryError, QueryResult

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
REQUEST = AnalysisRequest(revision="canary1", stable_revision="stable1", since=NOW, measurements=3)
ERRORS = presets.MetricCheck("error-rate", "q", s.ThresholdRange(max=0.02), failure_limit=2,
                             inconclusive_limit=3)
P95 = presets.MetricCheck("latency-p95", "q", None, s.RelativeToStable(max_ratio=1.2))
ERROR_INDICATOR = presets.IndicatorCheck("error-rate", "q", s.ThresholdRange(max=0.05))


def value(v: float) -> Measurement:
    return Measurement(v, NOW)


def nodata() -> NoData:
    return NoData("query returned no series", NOW)


def down() -> QueryError:
    return QueryError("Prometheus at http://p:9090 unreachable", NOW)


def run(canary: dict[str, QueryResult], stable: dict[str, QueryResult] | None = None,
        previous: list[s.MetricStatus] | None = None, no_data: str = "inconclusive",
        gates: list[presets.MetricCheck] | None = None):  # type: ignore[no-untyped-def]
    return evaluate(REQUEST, gates or [ERRORS], [ERROR_INDICATOR], canary, stable or {},
                    previous or [], no_data, NOW)


@pytest.mark.parametrize(
    ("canary", "no_data", "verdict"),
    [
        (value(0.01), "inconclusive", s.Verdict.PASS),
        (value(0.03), "inconclusive", s.Verdict.FAIL),
        (nodata(), "inconclusive", s.Verdict.INCONCLUSIVE),
        (nodata(), "fail", s.Verdict.FAIL),
        (down(), "fail", s.Verdict.INCONCLUSIVE),
    ],
    ids=[
        "a value within the range passes",
        "a value above max fails",
        "no data is inconclusive, never a pass",
        "no data counts as a failure when noData is fail",
        "an unreachable Prometheus stays inconclusive even when noData is fail",
    ],
)
def test_one_round_verdict(canary: QueryResult, no_data: str, verdict: s.Verdict) -> None:
    report = run({"error-rate": canary}, no_data=no_data)
    assert report.verdict is verdict
    assert report.metrics[0].verdict is verdict


def _prior(failures: int = 0, unknowns: int = 0, passes: int = 0) -> list[s.MetricStatus]:
    return [s.MetricStatus(name="error-rate", verdict=s.Verdict.PASS, time="t",
                           consecutive_failures=failures, consecutive_inconclusive=unknowns,
                           consecutive_passes=passes)]


def test_failures_within_the_limit_do_not_fail_the_analysis() -> None:
    report = run({"error-rate": value(0.03)}, previous=_prior(failures=1))
    assert report.failed is None and report.metrics[0].consecutive_failures == 2


def test_one_failure_past_the_limit_fails_the_analysis_naming_the_metric() -> None:
    report = run({"error-rate": value(0.03)}, previous=_prior(failures=2))
    assert report.failed is not None and report.failed.metric == "error-rate"
    assert "3 times in a row" in report.failed.message and "0.03" in report.failed.message


def test_a_pass_resets_the_failure_count() -> None:
    report = run({"error-rate": value(0.01)}, previous=_prior(failures=2))
    assert report.metrics[0].consecutive_failures == 0 and report.failed is None


def test_inconclusive_past_the_limit_is_reported_with_the_reason() -> None:
    report = run({"error-rate": down()}, previous=_prior(unknowns=3))
    assert report.inconclusive_exceeded is not None
    assert "unreachable" in report.inconclusive_exceeded.message


def test_passes_in_a_row_are_counted_for_analysis_steps() -> None:
    report = run({"error-rate": value(0.0)}, previous=_prior(passes=2))
    assert report.consecutive_passes == 3
    assert "3/3 rounds in a row" in report.summary


def test_rollback_indicator_breach_names_metric_value_threshold_and_revision() -> None:
    report = run({"error-rate": value(0.3), "error-rate" + INDICATOR_SUFFIX: value(0.3)})
    assert report.breach is not None
    assert report.breach.describe() == (
        "rollback indicator error-rate = 0.3 breached max 0.05 (revision canary1)"
    )


def test_missing_data_never_breaches_a_rollback_indicator() -> None:
    report = run({"error-rate" + INDICATOR_SUFFIX: nodata()})
    assert report.breach is None


@pytest.mark.parametrize(
    ("canary_p95", "stable_p95", "verdict"),
    [(11.0, 10.0, s.Verdict.PASS), (13.0, 10.0, s.Verdict.FAIL), (30.0, 29.0, s.Verdict.PASS)],
    ids=[
        "a canary 10% slower than stable passes a 1.2x check",
        "a canary 30% slower than stable fails it",
        "a slow upstream hurting both tracks does not fail the canary",
    ],
)
def test_relative_to_stable(canary_p95: float, stable_p95: float, verdict: s.Verdict) -> None:
    report = run({"latency-p95": value(canary_p95)}, {"latency-p95": value(stable_p95)}, gates=[P95])
    assert report.verdict is verdict
    assert report.metrics[0].stable_value == stable_p95


def test_relative_check_without_stable_data_is_inconclusive() -> None:
    report = run({"latency-p95": value(3.0)}, {"latency-p95": nodata()}, gates=[P95])
    assert report.verdict is s.Verdict.INCONCLUSIVE


def test_bundles_carry_the_design_thresholds() -> None:
    analysis = s.Analysis.model_validate(
        {"provider": {"prometheus": {"address": "http://p:9090"}}, "presets": ["image-gen"]}
    )
    gates, indicators = presets.resolve(analysis)
    assert {g.name: g.threshold_range.describe() for g in gates if g.threshold_range} == {
        "success-rate": "min 0.95", "timeout-rate": "max 0.02", "mean-latency": "max 150",
    }
    assert {i.metric: i.threshold_range.describe() for i in indicators if i.threshold_range} == {
        "success-rate": "min 0.85", "timeout-rate": "max 0.1",
    }


def test_a_resource_overrides_a_bundle_threshold_by_name() -> None:
    analysis = s.Analysis.model_validate({
        "provider": {"prometheus": {"address": "http://p:9090"}},
        "presets": ["song-analyzer"],
        "metrics": [{"name": "cost-per-request", "thresholdRange": {"max": 0.0009}, "failureLimit": 0}],
        "rollbackIndicators": [{"metric": "error-rate", "thresholdRange": {"max": 0.1}}],
    })
    gates, indicators = presets.resolve(analysis)
    cost = next(g for g in gates if g.name == "cost-per-request")
    assert cost.threshold_range == s.ThresholdRange(max=0.0009) and cost.failure_limit == 0
    assert cost.query == presets.BUILTIN_QUERIES["cost-per-request"]
    errors = next(i for i in indicators if i.metric == "error-rate")
    assert errors.threshold_range == s.ThresholdRange(max=0.1)

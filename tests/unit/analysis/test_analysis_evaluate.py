"""One round of analysis: pass, fail or inconclusive, counted in a row."""

from __future__ import annotations

import datetime as dt

import pytest
from modeldeploy import spec as s
from modeldeploy.analysis import presets
from modeldeploy.analysis.evaluate import INDICATOR_SUFFIX, evaluate
from modeldeploy.analysis.report import AnalysisRequest
from modeldeploy.measurement import Measurement, NoData, QueryError, QueryResult
from modelkit.pricing import cost_usd

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
    # The design's success < 85% and timeouts > 10%, and the image-gen guide's critical
    # thresholds: errors > 10%, memory above 90% of the limit.
    assert {i.metric: i.threshold_range.describe() for i in indicators if i.threshold_range} == {
        "success-rate": "min 0.85", "timeout-rate": "max 0.1", "error-rate": "max 0.1",
        "memory-utilization": "max 0.9",
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


def _resolved(presets_: list[str], metrics: list[dict[str, object]] | None = None,
              ) -> tuple[list[presets.MetricCheck], list[presets.IndicatorCheck]]:
    return presets.resolve(s.Analysis.model_validate({
        "provider": {"prometheus": {"address": "http://p:9090"}}, "presets": presets_,
        "metrics": metrics or [],
    }))


# chat-proxy's bundle: error-rate and availability gates, the traffic guard last.
CHAT_GATES, CHAT_INDICATORS = _resolved(["chat-proxy"])
HEALTHY_BUT_UNUSED = {"error-rate": value(0.0), "availability": value(1.0)}


def _preview_round(traffic: QueryResult | None, no_data: str = "inconclusive",
                   measured: dict[str, QueryResult] | None = None):  # type: ignore[no-untyped-def]
    canary = dict(measured if measured is not None else HEALTHY_BUT_UNUSED)
    if traffic is not None:
        canary[presets.TRAFFIC_GUARD] = traffic
    request = AnalysisRequest(revision="green1", stable_revision="blue1", since=NOW, measurements=3)
    return evaluate(request, CHAT_GATES, CHAT_INDICATORS, canary, {}, [], no_data, NOW)


@pytest.mark.parametrize(
    "traffic",
    [value(0.0), nodata(), None],
    ids=["zero model requests in the window", "no request series at all",
         "model requests not measured"],
)
def test_a_round_without_model_requests_is_inconclusive_however_healthy_its_gates_read(
    traffic: QueryResult | None,
) -> None:
    report = _preview_round(traffic)
    assert report.verdict is s.Verdict.INCONCLUSIVE
    assert report.consecutive_passes == 0
    assert {m.name: m.verdict for m in report.metrics if not m.name.endswith(INDICATOR_SUFFIX)} == {
        "error-rate": s.Verdict.INCONCLUSIVE, "availability": s.Verdict.INCONCLUSIVE,
    }
    assert "no model requests in the window" in report.summary


def test_a_round_with_model_requests_is_judged_on_its_gates() -> None:
    report = _preview_round(value(2.5))
    assert report.verdict is s.Verdict.PASS
    assert presets.TRAFFIC_GUARD not in {m.name for m in report.metrics}, "measured, not listed"


def test_no_model_requests_count_as_a_failure_when_no_data_is_fail() -> None:
    assert _preview_round(value(0.0), no_data="fail").verdict is s.Verdict.FAIL


def test_an_unreachable_prometheus_for_the_traffic_guard_stays_inconclusive() -> None:
    report = _preview_round(down(), no_data="fail")
    assert report.verdict is s.Verdict.INCONCLUSIVE
    assert "unreachable" in report.summary


def test_an_idle_round_still_reverts_on_a_real_indicator_breach() -> None:
    measured = {**HEALTHY_BUT_UNUSED, "error-rate" + INDICATOR_SUFFIX: value(0.5)}
    report = _preview_round(value(0.0), measured=measured)
    assert report.breach is not None and report.breach.metric == "error-rate"


def test_presets_add_the_traffic_guard_and_custom_only_analyses_do_not() -> None:
    gates, _ = _resolved(["success-rate"])
    assert [g.name for g in gates if g.traffic_guard] == [presets.TRAFFIC_GUARD]
    custom = s.Analysis.model_validate({
        "provider": {"prometheus": {"address": "http://p:9090"}},
        "metrics": [{"name": "queue-depth", "query": "sum(q)", "thresholdRange": {"max": 5}}],
    })
    assert not any(g.traffic_guard for g in presets.resolve(custom)[0])


def test_no_bundle_reverts_a_new_revision_for_the_cache_it_has_not_filled_yet() -> None:
    # A new revision's cache starts empty: low hit rates in its first rounds are expected,
    # so cache hits are judged by a gate (failureLimit lets the cache warm), never by an
    # at-once rollback indicator.
    for bundle in presets.BUNDLES:
        _, indicators = _resolved([bundle])
        assert "cache-hit-rate" not in {i.metric for i in indicators}, bundle
    orchestrator, _ = _resolved(["orchestrator"])
    cache = next(g for g in orchestrator if g.name == "cache-hit-rate")
    assert cache.threshold_range == s.ThresholdRange(min=0.5) and cache.failure_limit == 2


def test_the_song_cost_gate_passes_a_typical_song_on_the_fine_tuned_price() -> None:
    # A typical song is 2,300 input and 300 output tokens, priced by the services' table.
    typical_song_usd = cost_usd("ft:gpt-4o-mini-2024-07-18:acme:songs:v3", 2_300, 300)
    pricier_model_usd = cost_usd("ft:gpt-4o-2024-08-06:acme:songs:v3", 2_300, 300)
    assert typical_song_usd is not None and pricier_model_usd is not None
    gates, _ = _resolved(["song-analyzer"])
    cost = next(g for g in gates if g.name == "cost-per-request")
    assert cost.threshold_range is not None and cost.threshold_range.max is not None
    assert cost.threshold_range.max >= 1.5 * typical_song_usd
    assert pricier_model_usd > cost.threshold_range.max


AT_FULL_WEIGHT = AnalysisRequest(revision="canary1", stable_revision="stable1", since=NOW,
                                 stable_serves_traffic=False)


def _round_at_full_weight(indicator: QueryResult,
                          previous: list[s.MetricStatus]):  # type: ignore[no-untyped-def]
    return evaluate(AT_FULL_WEIGHT, [ERRORS], [ERROR_INDICATOR],
                    {"error-rate": value(0.0), "error-rate" + INDICATOR_SUFFIX: indicator}, {},
                    previous, "inconclusive", NOW)


def test_without_stable_to_compare_an_indicator_reverts_on_the_third_breach_in_a_row() -> None:
    # At 100% (the bake) a provider's 10 s burst of 429s looks like a canary's fault in one
    # window: only a breach that lasts three rounds reverts.
    previous: list[s.MetricStatus] = []
    for n in (1, 2):
        report = _round_at_full_weight(value(0.3), previous)
        indicator = report.metrics[-1]
        assert report.breach is None, f"breach {n} reverted"
        assert indicator.verdict is s.Verdict.INCONCLUSIVE and indicator.consecutive_failures == n
        assert "stable serves no traffic to compare with" in (indicator.message or "")
        message = indicator.message or ""
        assert f"breached {n} time" in message and "reverts at 3" in message
        previous = list(report.metrics)
    report = _round_at_full_weight(value(0.3), previous)
    assert report.breach is not None and report.metrics[-1].verdict is s.Verdict.FAIL
    assert report.breach.describe() == (
        "rollback indicator error-rate = 0.3 breached max 0.05 3 rounds in a row while stable "
        "serves no traffic (revision canary1)"
    )


def test_without_stable_a_round_within_the_bound_restarts_the_count() -> None:
    first = _round_at_full_weight(value(0.3), [])
    second = _round_at_full_weight(value(0.01), list(first.metrics))
    third = _round_at_full_weight(value(0.3), list(second.metrics))
    assert [r.metrics[-1].consecutive_failures for r in (first, second, third)] == [1, 0, 1]
    assert third.breach is None


def test_while_stable_serves_traffic_one_breach_still_reverts() -> None:
    report = run({"error-rate": value(0.0), "error-rate" + INDICATOR_SUFFIX: value(0.3)},
                 stable={"error-rate" + INDICATOR_SUFFIX: value(0.0)})
    assert report.breach is not None and report.metrics[-1].consecutive_failures == 1

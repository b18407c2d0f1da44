"""Judge one round of measurements: pass, fail or inconclusive, never two outcomes only.

Pure: the shell ran the queries (canary, and stable for relative checks, in the same
window) and hands the results in; this module decides.

Counting, as Argo Rollouts' consecutive counters and Flagger's failed checks do it:
- a gate that fails ``failureLimit + 1`` measurements IN A ROW fails the analysis
  (a pass in between resets the count, so one noisy sample never reverts a canary);
- a gate inconclusive ``inconclusiveLimit + 1`` times in a row exceeds the
  inconclusive limit (the engine pauses, or reverts if the spec asks);
- a step needing N measurements needs every gate to pass N times in a row;
- no data (no series, NaN, ±Inf) and provider errors are inconclusive, never a pass;
  with ``noData: fail``, no data counts as a failure (provider errors stay inconclusive:
  an unreachable Prometheus says nothing about the canary);
- a rollback indicator breaches only on a real value out of range: missing data never
  reverts anything; nor does one while stable, measured in the same window (while it
  serves traffic), is troubled too (:func:`stable_troubled`: past half of the bound): a
  provider's burst of 429s or an outage is not the canary's fault. Such a round is
  inconclusive for the indicator, and the gates still count it (a fault that lasts fails
  them failureLimit + 1 times);
- while stable serves no traffic (100%: the full step, the bake, after a blue-green
  switch) there is nothing to tell a canary's fault from a provider's burst in the same
  window but how long it lasts: an indicator reverts after ``BREACHES_WITHOUT_STABLE``
  (3) breaching rounds in a row, as a gate with the default failureLimit would, and each
  breach before that is inconclusive for the indicator;
- a round whose traffic guard (presets.TRAFFIC_GUARD: the revision's model requests in
  the window) reads zero or nothing is no data for every gate, whatever the gates read:
  a blue-green preview that only probes reached, or a canary the router starves, shows
  an availability of 1 and a cost of 0 without serving anyone, and that is no evidence.
  Indicators are judged as measured (a real breach still reverts).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from modeldeploy import spec as s
from modeldeploy.analysis.presets import TRAFFIC_GUARD, IndicatorCheck, MetricCheck
from modeldeploy.analysis.report import AnalysisFailure, AnalysisReport, AnalysisRequest, Breach
from modeldeploy.measurement import Measurement, NoData, QueryError, QueryResult

INDICATOR_SUFFIX = " (rollback indicator)"
# Breaches in a row that revert when stable serves no traffic (100%: the full step, the
# bake, after a blue-green switch): a gate's default failureLimit (2) + 1. Nothing in the
# window tells a canary's fault from a provider's burst then, only how long it lasts.
BREACHES_WITHOUT_STABLE = 3


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_bounds(
    threshold: s.ThresholdRange | None, relative: s.RelativeToStable | None
) -> str:
    parts = [threshold.describe()] if threshold else []
    if relative:
        if relative.max_ratio is not None:
            parts.append(f"<= {relative.max_ratio:g}x stable")
        if relative.max_increase is not None:
            parts.append(f"<= stable + {relative.max_increase:g}")
        if relative.min_ratio is not None:
            parts.append(f">= {relative.min_ratio:g}x stable")
        if relative.max_decrease is not None:
            parts.append(f">= stable - {relative.max_decrease:g}")
    return ", ".join(parts)


def within(
    value: float,
    stable: float | None,
    threshold: s.ThresholdRange | None,
    relative: s.RelativeToStable | None,
) -> bool:
    if threshold is not None:
        if threshold.min is not None and value < threshold.min:
            return False
        if threshold.max is not None and value > threshold.max:
            return False
    if relative is not None and stable is not None:
        if relative.max_ratio is not None and value > relative.max_ratio * stable:
            return False
        if relative.max_increase is not None and value > stable + relative.max_increase:
            return False
        if relative.min_ratio is not None and value < relative.min_ratio * stable:
            return False
        if relative.max_decrease is not None and value < stable - relative.max_decrease:
            return False
    return True


def _judge(
    result: QueryResult | None,
    stable: QueryResult | None,
    threshold: s.ThresholdRange | None,
    relative: s.RelativeToStable | None,
    no_data: str,
) -> tuple[s.Verdict, float | None, float | None, str]:
    """Verdict, canary value, stable value and a one-line reason for one check."""
    if result is None:
        return s.Verdict.INCONCLUSIVE, None, None, "not measured"
    if not isinstance(result, Measurement):
        verdict = s.Verdict.FAIL if isinstance(result, NoData) and no_data == "fail" else (
            s.Verdict.INCONCLUSIVE)
        return verdict, None, None, result.reason
    stable_value: float | None = None
    if relative is not None:
        if not isinstance(stable, Measurement):
            reason = stable.reason if stable is not None else "stable not measured"
            return s.Verdict.INCONCLUSIVE, result.value, None, f"stable track: {reason}"
        stable_value = stable.value
    ok = within(result.value, stable_value, threshold, relative)
    verdict = s.Verdict.PASS if ok else s.Verdict.FAIL
    against = f" vs stable {stable_value:.4g}" if stable_value is not None else ""
    reason = f"{result.value:.4g}{against} ({describe_bounds(threshold, relative)})"
    return verdict, result.value, stable_value, reason


def _without_traffic(guard: QueryResult | None, now: dt.datetime) -> QueryResult | None:
    """What every gate reads instead when the traffic guard found no model requests.

    None when the window held model requests (the gates are judged as measured).
    """
    if isinstance(guard, Measurement) and guard.value > 0:
        return None
    if isinstance(guard, QueryError):
        return QueryError(f"model requests not measured: {guard.reason}", guard.time)
    return NoData(
        "no model requests in the window (probes and scrapes are not model requests): "
        "nothing to judge", guard.time if guard is not None else now,
    )


def stable_troubled(indicator: IndicatorCheck, stable: QueryResult | None) -> str | None:
    """Why a breach is not the canary's, or None: stable, measured in the same window, is
    past half of the indicator's absolute bound (max: above half of it; a min within 0..1,
    a rate: below half-way from it to 1).

    A provider's burst of 429s or an outage hits both tracks; it fails a canary with a cold
    cache more often than a stable whose cache answers most requests without the provider,
    so stable is troubled without being out of the bound itself. Reverting the canary would
    not be the fix: the gates judge such rounds (a fault that lasts fails them)."""
    bound = indicator.threshold_range
    if bound is None or not isinstance(stable, Measurement):
        return None
    value = stable.value
    past_max = bound.max is not None and bound.max >= 0 and value > bound.max / 2
    past_min = bound.min is not None and 0 <= bound.min <= 1 and value < (1 + bound.min) / 2
    if not (past_max or past_min):
        return None
    return (f"stable is troubled too ({value:.4g}, past half of the bound): the upstream's "
            "trouble, not the canary's; not a breach")


def evaluate(
    request: AnalysisRequest,
    gates: Sequence[MetricCheck],
    indicators: Sequence[IndicatorCheck],
    canary: Mapping[str, QueryResult],
    stable: Mapping[str, QueryResult],
    previous: Sequence[s.MetricStatus],
    no_data: str,
    now: dt.datetime,
) -> AnalysisReport:
    """One round's report. ``previous`` is status.analysis (cleared when a step starts)."""
    before = {m.name: m for m in previous}
    statuses: list[s.MetricStatus] = []
    failed: AnalysisFailure | None = None
    inconclusive: AnalysisFailure | None = None
    idle = (_without_traffic(canary.get(TRAFFIC_GUARD), now)
            if any(g.traffic_guard for g in gates) else None)
    gates = [g for g in gates if not g.traffic_guard]
    if request.metrics is not None:
        gates = [g for g in gates if g.name in request.metrics]
    for gate in gates:
        verdict, value, stable_value, reason = _judge(
            idle if idle is not None else canary.get(gate.name), stable.get(gate.name),
            gate.threshold_range,
            gate.relative_to_stable, no_data,
        )
        last = before.get(gate.name)
        failures = (last.consecutive_failures + 1 if last else 1) if verdict is s.Verdict.FAIL else 0
        unknowns = (
            (last.consecutive_inconclusive + 1 if last else 1)
            if verdict is s.Verdict.INCONCLUSIVE else 0
        )
        passes = (last.consecutive_passes + 1 if last else 1) if verdict is s.Verdict.PASS else 0
        if failures > gate.failure_limit and failed is None:
            failed = AnalysisFailure(
                gate.name, f"{reason}; failed {failures} times in a row (failureLimit {gate.failure_limit})"
            )
        if unknowns > gate.inconclusive_limit and inconclusive is None:
            inconclusive = AnalysisFailure(
                gate.name,
                f"inconclusive {unknowns} times in a row (inconclusiveLimit {gate.inconclusive_limit}): "
                f"{reason}",
            )
        statuses.append(s.MetricStatus(
            name=gate.name, value=value, stable_value=stable_value,
            threshold=describe_bounds(gate.threshold_range, gate.relative_to_stable),
            verdict=verdict, message=reason, time=_stamp(now),
            consecutive_failures=failures, consecutive_inconclusive=unknowns,
            consecutive_passes=passes,
        ))
    breach: Breach | None = None
    for indicator in indicators:
        key = indicator.metric + INDICATOR_SUFFIX
        verdict, value, stable_value, reason = _judge(
            canary.get(key), stable.get(key), indicator.threshold_range,
            indicator.relative_to_stable, "inconclusive",
        )
        shared = stable_troubled(indicator, stable.get(key)) if verdict is s.Verdict.FAIL else None
        if shared is not None:
            verdict, reason = s.Verdict.INCONCLUSIVE, f"{reason}; {shared}"
        last = before.get(key)
        breaches = (last.consecutive_failures + 1 if last else 1) if verdict is s.Verdict.FAIL else 0
        if verdict is s.Verdict.FAIL and not request.stable_serves_traffic and (
            breaches < BREACHES_WITHOUT_STABLE
        ):
            verdict, reason = s.Verdict.INCONCLUSIVE, (
                f"{reason}; stable serves no traffic to compare with, so a provider's trouble "
                f"would look the same: breached {breaches} time{'s' if breaches > 1 else ''} in "
                f"a row, reverts at {BREACHES_WITHOUT_STABLE}"
            )
        lasted = (f"{breaches} rounds in a row while stable serves no traffic"
                  if not request.stable_serves_traffic else None)
        if verdict is s.Verdict.FAIL and lasted is not None:
            reason = f"{reason}; {lasted}"
        if verdict is s.Verdict.FAIL and breach is None:
            breach = Breach(
                indicator.metric, value,
                describe_bounds(indicator.threshold_range, indicator.relative_to_stable),
                request.revision, window=lasted,
            )
        statuses.append(s.MetricStatus(
            name=key, value=value, stable_value=stable_value,
            threshold=describe_bounds(indicator.threshold_range, indicator.relative_to_stable),
            verdict=verdict, message=reason, time=_stamp(now), consecutive_failures=breaches,
        ))
    gate_statuses = statuses[: len(gates)]
    if any(m.verdict is s.Verdict.FAIL for m in gate_statuses):
        overall = s.Verdict.FAIL
    elif any(m.verdict is s.Verdict.INCONCLUSIVE for m in gate_statuses):
        overall = s.Verdict.INCONCLUSIVE
    else:
        overall = s.Verdict.PASS
    in_a_row = min((m.consecutive_passes for m in gate_statuses), default=0)
    passed = sum(1 for m in gate_statuses if m.verdict is s.Verdict.PASS)
    summary = f"analysis {passed}/{len(gate_statuses)} metrics passed"
    if request.measurements:
        summary += f", {min(in_a_row, request.measurements)}/{request.measurements} rounds in a row"
    worst = next((m for m in gate_statuses if m.verdict is not s.Verdict.PASS), None)
    if worst is not None:
        summary += f"; {worst.name} {worst.message}"
    return AnalysisReport(
        revision=request.revision,
        measured_at=now,
        verdict=overall,
        consecutive_passes=in_a_row,
        metrics=tuple(statuses),
        breach=breach,
        failed=failed,
        inconclusive_exceeded=inconclusive,
        summary=summary,
    )

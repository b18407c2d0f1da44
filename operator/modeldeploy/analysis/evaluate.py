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
- a breach of a share of requests (error rate, success rate...) that one request fewer
  on the wrong side would undo is not acted on (:func:`rests_on_one_request`): in a short
  window of a small canary one unlucky answer is several percent;
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
from modeldeploy.analysis.presets import (
    STABLE_UPSTREAM,
    TRAFFIC_GUARD,
    IndicatorCheck,
    MetricCheck,
    is_request_share,
)
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


def rests_on_one_request(
    indicator: IndicatorCheck, value: float | None, requests: float | None
) -> str | None:
    """Why a breach is not acted on, or None: the indicator is a share of requests
    (:data:`~modeldeploy.analysis.presets.REQUEST_SHARES`) and would be within its absolute
    bound with one request fewer on the wrong side, so a single unlucky answer made it.

    ``requests`` is the revision's answered model requests in the window; one request
    moves a share of them by 1/requests (more for ``uncached-error-rate``, whose
    denominator is smaller, so this is the least a request can weigh). At 10% of 15
    requests a second over a 10 s window, one failed answer is an error rate of 7%."""
    bound = indicator.threshold_range
    if bound is None or value is None or not requests or not is_request_share(indicator):
        return None
    one = 1 / requests
    above = bound.max is not None and value > bound.max and value - one <= bound.max
    below = bound.min is not None and value < bound.min and value + one >= bound.min
    if not (above or below):
        return None
    return (f"rests on one of the {requests:.0f} requests in the window (each weighs "
            f"{one:.3g} or more): not a breach")


def stable_troubled(
    indicator: IndicatorCheck, stable: QueryResult | None, stable_upstream: QueryResult | None = None
) -> str | None:
    """Why a breach is not the canary's, or None: stable, measured in the same window, is
    past half of the indicator's absolute bound (max: above half of it; a min within 0..1,
    a rate: below half-way from it to 1); or, for a share of requests
    (:data:`~modeldeploy.analysis.presets.REQUEST_SHARES`), stable's own calls to the model
    provider fail past half of it (``stable_upstream``: its ``upstream-error-rate``).

    A provider's burst of 429s or an outage hits both tracks; it fails a canary with a cold
    cache more often than a stable whose cache answers most requests without the provider,
    so stable is troubled without being out of the bound itself. A warm stable may even
    lose no request at all in a short window (few misses, each saved by its retries) while
    every one of its calls to the provider is refused: its calls say what its requests do
    not. Reverting the canary would not be the fix: the gates judge such rounds (a fault
    that lasts fails them)."""
    bound = indicator.threshold_range
    if bound is None:
        return None

    def past_half(value: float) -> bool:
        assert bound is not None
        return (bound.max is not None and bound.max >= 0 and value > bound.max / 2) or (
            bound.min is not None and 0 <= bound.min <= 1 and value < (1 + bound.min) / 2)

    if isinstance(stable, Measurement) and past_half(stable.value):
        return (f"stable is troubled too ({stable.value:.4g}, past half of the bound): the "
                "upstream's trouble, not the canary's; not a breach")
    if isinstance(stable_upstream, Measurement) and is_request_share(indicator):
        failed = stable_upstream.value
        # The same bound, read as a share that fails: a min of 0.85 succeeding is 0.15 failing.
        as_failing = failed if bound.max is not None else 1 - failed
        if past_half(as_failing):
            return (f"stable's calls to the model provider fail too ({failed:.4g} of them, past "
                    "half of the bound): the provider's trouble, not the canary's; not a breach")
    return None


def evaluate(
    request: AnalysisRequest,
    gates: Sequence[MetricCheck],
    indicators: Sequence[IndicatorCheck],
    canary: Mapping[str, QueryResult],
    stable: Mapping[str, QueryResult],
    previous: Sequence[s.MetricStatus],
    no_data: str,
    now: dt.datetime,
    requests: float | None = None,
) -> AnalysisReport:
    """One round's report. ``previous`` is status.analysis (cleared when a step starts);
    ``requests``: the canary's answered model requests in the window, when measured."""
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
        shared = None if verdict is not s.Verdict.FAIL else (
            rests_on_one_request(indicator, value, requests)
            or stable_troubled(indicator, stable.get(key), stable.get(STABLE_UPSTREAM)))
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

"""Built-in metrics over the model services' metric contract, and a bundle per service.

Every built-in query selects ONE revision of one ModelDeployment (``{{revision}}``), so
the same query measures the canary and, with the stable revision substituted, the
stable track in the same window: that is how ``relativeToStable`` checks work.
``rejected`` requests (the caller's fault, 4xx) are left out of every rate.

Bundles carry the thresholds each model service was run with (gate metrics count
toward failureLimit; rollback indicators revert at once), chosen so that a healthy new
revision passes under its service's real traffic: nothing a new revision is born with
(an empty cache, a small traffic share) may fail it. A resource overrides any of them by
listing a metric (or indicator) of the same name in its own spec.

An analysis that uses any preset measures a service of the metric contract, so each of
its rounds also measures the revision's model requests (:data:`TRAFFIC_GUARD`): a round
with none in its window is no data for every gate, never a pass. Probes and scrapes are
not model requests (the services do not count them), so a blue-green preview nobody sends
real traffic to stays inconclusive however healthy its probes are.

``uncached-error-rate`` is what the two services with a cache (song-analyzer, orchestrator)
revert on at once: failed requests over the answered ones the cache did not answer
(``model_cache_requests_total{result="hit"}``), i.e. over those that reached the model. A
new revision starts with an empty cache, so a provider's trouble (a burst of 429s, an
outage) fails a larger share of its requests than of a warm stable's; over its uncached
requests both fail alike, so the trouble shows on stable too and is not taken for the
canary's (:func:`modeldeploy.analysis.evaluate.stable_troubled`), while a canary that fails
on its own shows the same or higher than its plain error rate. The gates keep the plain
``error-rate``: what users saw, judged over rounds.

``memory-utilization`` is the one built-in metric not of the metric contract: the
highest working set / memory limit over the revision's containers, from the standard
series a cluster's monitoring already has. The working set is cAdvisor's
``container_memory_working_set_bytes`` (the kubelet's ``/metrics/cadvisor``, scraped by
kube-prometheus-stack's ``kubelet`` job; the sandbox's kubelet exports it too). The limit
is cAdvisor's ``container_spec_memory_limit_bytes`` where it is scraped (a plain
cAdvisor job, the sandbox) or else kube-state-metrics'
``kube_pod_container_resource_limits{resource="memory"}``: kube-prometheus-stack drops
every ``container_spec_*`` series from its cAdvisor job by default, as overlapping with
kube-state-metrics, which it installs and which exports the limits by default. All of
these carry ``namespace``, ``pod`` and ``container`` but none of the pod's labels, so the
revision's pods are chosen by name: the operator names a revision's Deployment
``<name>-<revision>`` (kube/objects.py) and a Deployment's pods are
``<deployment>-<pod-template-hash>-<suffix>``, hence
``pod=~"{{name}}-{{revision}}-[a-z0-9]+(-[a-z0-9]+)?"`` (one segment after the revision
where the API server cut a long generated name, see below; never three, which would be a
pod of a ModelDeployment named ``<name>-<revision>``). That works on any cluster with
the stack's defaults; the alternative, a join with kube-state-metrics'
``kube_pod_labels``, needs ``--metric-labels-allowlist`` set for the modeldeploy labels
(kube-state-metrics v2 exports no pod labels by default). Limits of the choice: a ``.``
in the name matches any character (no other pod of the namespace is named like a
revision's, so nothing else matches), and the API server cuts a generated pod name's
prefix at 58 characters (the pod-template-hash runs into the random suffix), so a
ModelDeployment name longer than 46 characters would lose its revision from pod names
and measure nothing (no data: inconclusive, never a revert).

The pod-level (``container=""``) and pause (``container="POD"``) series are left out,
and so is a container without a limit (cAdvisor's limit 0, or no kube-state-metrics
series: dividing by 0 would give +Inf); a revision none of whose containers has a limit
has no data. Each series is reduced ``max by (namespace, pod, container)`` first: the
same container can have two (the kubelet's ``/metrics/resource``, where it is scraped,
exports ``container_memory_working_set_bytes`` too; a restarted container's old cgroup
lingers a scrape or two; kube-state-metrics' series also carry ``uid`` and ``node``).
The working set is the peak over the window, so a spike between two measurements (say,
just before an OOM kill) still counts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from modeldeploy import spec as s

_SEL = (
    'namespace="{{namespace}}",modeldeploy_name="{{name}}",'
    'modeldeploy_revision="{{revision}}"'
)


def _requests(outcome: str) -> str:
    return f"sum(rate(model_requests_total{{{_SEL},{outcome}}}[{{{{interval}}}}]))"


_ANSWERED = _requests('outcome!="rejected"')
_SUCCEEDED = _requests('outcome="success"')
_FAILED = _requests('outcome=~"error|timeout"')
_TIMED_OUT = _requests('outcome="timeout"')
_UPSTREAM_CALLS = f"sum(rate(model_upstream_requests_total{{{_SEL}}}[{{{{interval}}}}]))"
_UPSTREAM_FAILED = (
    f'sum(rate(model_upstream_requests_total{{{_SEL},outcome=~"error|timeout"}}[{{{{interval}}}}]))'
)
_CACHE_HITS = f'sum(rate(model_cache_requests_total{{{_SEL},result="hit"}}[{{{{interval}}}}]))'
# Every revision of this ModelDeployment: the whole service's answered traffic.
_ANSWERED_ALL_REVISIONS = (
    'sum(rate(model_requests_total{namespace="{{namespace}}",modeldeploy_name="{{name}}",'
    'outcome!="rejected"}[{{interval}}]))'
)
_COST = f"sum(rate(model_cost_usd_total{{{_SEL}}}[{{{{interval}}}}]))"
# A mirror step's figures, over the step so far ({{interval}}: since it started): the
# requests the canary answered and what they cost upstream.
MIRROR_REQUESTS = f'sum(increase(model_requests_total{{{_SEL},outcome!="rejected"}}[{{{{interval}}}}]))'
MIRROR_COST = f"sum(increase(model_cost_usd_total{{{_SEL}}}[{{{{interval}}}}]))"
# cAdvisor's (and kube-state-metrics') series of the revision's containers (see the
# module docstring).
_REVISION_CONTAINERS = (
    'namespace="{{namespace}}",pod=~"{{name}}-{{revision}}-[a-z0-9]+(-[a-z0-9]+)?",'
    'container!="",container!="POD"'
)
_PEAK_WORKING_SET = (
    "max by (namespace, pod, container) (max_over_time("
    f"container_memory_working_set_bytes{{{_REVISION_CONTAINERS}}}[{{{{interval}}}}]))"
)
# cAdvisor's limit where it is scraped, else kube-state-metrics' ("or" keeps the left
# side's series where both have one). "> 0" drops containers without a limit (cAdvisor
# reports 0 for "unlimited").
_MEMORY_LIMIT = (
    "(max by (namespace, pod, container) ("
    f"container_spec_memory_limit_bytes{{{_REVISION_CONTAINERS}}} > 0) or "
    "max by (namespace, pod, container) ("
    f'kube_pod_container_resource_limits{{{_REVISION_CONTAINERS},resource="memory"}} > 0))'
)


def _or_zero(numerator: str) -> str:
    # A counter's series exists only once its label set was first counted: a canary that
    # has failed nothing yet has no outcome="error" series, and a ratio over it would be
    # no data (inconclusive) forever. So a ratio's numerator defaults to 0 while its
    # denominator does not: "no errors" is 0, "no traffic" stays no data.
    return f"({numerator} or vector(0))"


BUILTIN_QUERIES: dict[str, str] = {
    "success-rate": f"{_or_zero(_SUCCEEDED)} / {_ANSWERED}",
    "error-rate": f"{_or_zero(_FAILED)} / {_ANSWERED}",
    "timeout-rate": f"{_or_zero(_TIMED_OUT)} / {_ANSWERED}",
    # The share of the revision's calls to the model provider that failed, every try of a
    # retried request counted: a provider's burst of 429s shows here even when the
    # retries save the requests.
    "upstream-error-rate": f"{_or_zero(_UPSTREAM_FAILED)} / {_UPSTREAM_CALLS}",
    # The error rate of the requests the service's cache did not answer (see the module
    # docstring): a revision's failures on the same footing whatever its cache holds. Where
    # the service has no cache (no hit series) it is the error rate.
    "uncached-error-rate": f"{_or_zero(_FAILED)} / ({_ANSWERED} - {_or_zero(_CACHE_HITS)})",
    "latency-p95": (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate(model_request_duration_seconds_bucket{{{_SEL}}}[{{{{interval}}}}])))"
    ),
    "mean-latency": (
        f"sum(rate(model_request_duration_seconds_sum{{{_SEL}}}[{{{{interval}}}}])) / "
        f"sum(rate(model_request_duration_seconds_count{{{_SEL}}}[{{{{interval}}}}]))"
    ),
    "cost-per-request": f"{_COST} / {_SUCCEEDED}",
    # What the service would cost per hour if this revision served all of its current
    # traffic: the revision's spend scaled by its share of answered requests. A raw
    # per-revision spend shrinks and grows with the canary's weight (a 5% canary spends a
    # twentieth), so no one threshold could hold at every step; this one compares alike
    # at 5%, 50% and 100%, and canary with stable.
    "cost-per-hour": f"{_COST} * 3600 * ({_ANSWERED_ALL_REVISIONS} / {_ANSWERED})",
    "cache-hit-rate": (
        _or_zero(_CACHE_HITS) + " / "
        f"sum(rate(model_cache_requests_total{{{_SEL}}}[{{{{interval}}}}]))"
    ),
    # The revision's fullest container: its peak working set over its memory limit.
    "memory-utilization": f"max({_PEAK_WORKING_SET} / {_MEMORY_LIMIT})",
    # Not a preset name of its own: the chat-proxy bundle's "health = healthy" gate.
    "availability": f"min(up{{{_SEL}}})",
}

# Stable's upstream-error-rate, measured with the indicators that are a share of requests:
# a provider's trouble seen on stable's own calls (evaluate.stable_troubled).
STABLE_UPSTREAM = "(stable's calls to the provider)"

# Built-in metrics that are a share of the revision's answered model requests (or of the
# uncached ones): one request moves them by at least 1 / requests in the window.
REQUEST_SHARES = frozenset({"success-rate", "error-rate", "uncached-error-rate", "timeout-rate"})


def is_request_share(check: IndicatorCheck) -> bool:
    """Whether an indicator is a built-in share of requests (its own query, not a custom one)."""
    return check.metric in REQUEST_SHARES and check.query == BUILTIN_QUERIES[check.metric]


# Thresholds a built-in metric gets when listed in `presets` on its own.
GENERIC_THRESHOLDS: dict[str, s.ThresholdRange | None] = {
    "success-rate": s.ThresholdRange(min=0.95),
    "error-rate": s.ThresholdRange(max=0.05),
    "timeout-rate": s.ThresholdRange(max=0.05),
    "uncached-error-rate": s.ThresholdRange(max=0.05),
    "upstream-error-rate": s.ThresholdRange(max=0.05),
    "latency-p95": s.ThresholdRange(max=10.0),
    "mean-latency": s.ThresholdRange(max=5.0),
    "cost-per-request": None,  # no sensible default: set thresholdRange or relativeToStable
    "cost-per-hour": None,
    "cache-hit-rate": s.ThresholdRange(min=0.5),
    "memory-utilization": s.ThresholdRange(max=0.9),
}


@dataclass(frozen=True)
class MetricCheck:
    """A gate: measured each interval; failures in a row count toward failureLimit."""

    name: str
    query: str
    threshold_range: s.ThresholdRange | None = None
    relative_to_stable: s.RelativeToStable | None = None
    failure_limit: int = 2
    inconclusive_limit: int = 3
    # The round's traffic guard (TRAFFIC_GUARD), measured like a gate and judged by none.
    traffic_guard: bool = False


# The traffic guard's name: not a name a resource can give a metric ([a-z0-9-]).
TRAFFIC_GUARD = "(model requests)"
# The revision's answered model requests per second in the window: zero, or no series at
# all, means nothing in the window says how the revision serves real requests.
TRAFFIC_GUARD_CHECK = MetricCheck(TRAFFIC_GUARD, _ANSWERED, traffic_guard=True)
# When Prometheus last scraped the revision's pods (Unix seconds: the newest sample): checks
# of the indicators between rounds are timed just after the next scrape lands.
LAST_SCRAPE = "(last scrape)"
LAST_SCRAPE_CHECK = MetricCheck(
    LAST_SCRAPE, f"max(timestamp(model_requests_total{{{_SEL}}}))", traffic_guard=True
)


@dataclass(frozen=True)
class IndicatorCheck:
    """A rollback indicator: one breach reverts at once."""

    metric: str
    query: str
    threshold_range: s.ThresholdRange | None = None
    relative_to_stable: s.RelativeToStable | None = None


def _gate(name: str, rng: s.ThresholdRange | None = None,
          relative: s.RelativeToStable | None = None) -> MetricCheck:
    return MetricCheck(name, BUILTIN_QUERIES[name], rng, relative)


def _indicator(name: str, rng: s.ThresholdRange) -> IndicatorCheck:
    return IndicatorCheck(name, BUILTIN_QUERIES[name], rng)


R = s.ThresholdRange
BUNDLES: dict[str, tuple[list[MetricCheck], list[IndicatorCheck]]] = {
    "image-gen": (
        [_gate("success-rate", R(min=0.95)), _gate("timeout-rate", R(max=0.02)),
         _gate("mean-latency", R(max=150.0))],
        # The guide's critical thresholds: errors (error or timeout) above 10%, or a container
        # above 90% of its memory limit (the next allocation may be an OOM kill).
        [_indicator("success-rate", R(min=0.85)), _indicator("timeout-rate", R(max=0.10)),
         _indicator("error-rate", R(max=0.10)), _indicator("memory-utilization", R(max=0.90))],
    ),
    "song-analyzer": (
        [_gate("error-rate", R(max=0.02)), _gate("latency-p95", R(max=10.0)),
         # A typical song (2,300 input + 300 output tokens) costs $0.00105 on a gpt-4o-mini
         # fine-tune ($0.30/$1.20 per 1M): gate at 1.5x that, so a healthy revision passes
         # with room for long songs while a pricier model (a gpt-4o fine-tune costs 12.5x,
         # a gpt-4.1-mini fine-tune 2.7x) is caught.
         _gate("cost-per-request", R(max=0.0016))],
        [_indicator("uncached-error-rate", R(max=0.05)), _indicator("latency-p95", R(max=20.0))],
    ),
    "chat-proxy": (
        [_gate("error-rate", R(max=0.05)), _gate("availability", R(min=1.0))],
        [_indicator("error-rate", R(max=0.10))],
    ),
    "orchestrator": (
        # Every new revision starts with an empty cache, so its first rounds miss more than
        # a warm stable does: cache hits are a gate (failureLimit lets the cache warm for
        # two rounds) and never an at-once rollback indicator, which would revert every
        # healthy canary in its first round. A cache that stays cold still fails the gate.
        [_gate("error-rate", R(max=0.05)), _gate("latency-p95", R(max=5.0)),
         _gate("cache-hit-rate", R(min=0.5)), _gate("cost-per-hour", R(max=10.0))],
        [_indicator("uncached-error-rate", R(max=0.10)), _indicator("latency-p95", R(max=10.0)),
         _indicator("cost-per-hour", R(max=50.0))],
    ),
    "textgen": (
        [_gate("error-rate", R(max=0.01)),
         _gate("latency-p95", relative=s.RelativeToStable(max_ratio=1.2))],
        [_indicator("error-rate", R(max=0.05))],
    ),
}


def resolve(analysis: s.Analysis) -> tuple[list[MetricCheck], list[IndicatorCheck]]:
    """The metrics and indicators a resource's analysis runs, presets expanded.

    Order of precedence: a bundle's defaults, then built-in presets listed on their
    own, then the resource's `metrics` and `rollbackIndicators` by name. With any preset,
    the gates end with :data:`TRAFFIC_GUARD_CHECK` (see the module docstring).
    """
    gates: dict[str, MetricCheck] = {}
    indicators: dict[str, IndicatorCheck] = {}
    for preset in analysis.presets:
        if preset.value in BUNDLES:
            bundle_gates, bundle_indicators = BUNDLES[preset.value]
            gates.update({g.name: g for g in bundle_gates})
            indicators.update({i.metric: i for i in bundle_indicators})
        elif preset.value not in gates:
            gates[preset.value] = _gate(preset.value, GENERIC_THRESHOLDS[preset.value])
    for metric in analysis.metrics:
        base = gates.get(metric.name) or MetricCheck(metric.name, BUILTIN_QUERIES.get(metric.name, ""))
        gates[metric.name] = replace(
            base,
            query=metric.query or base.query,
            threshold_range=metric.threshold_range if (
                metric.threshold_range or metric.relative_to_stable) else base.threshold_range,
            relative_to_stable=metric.relative_to_stable if (
                metric.threshold_range or metric.relative_to_stable) else base.relative_to_stable,
            failure_limit=base.failure_limit if metric.failure_limit is None else metric.failure_limit,
            inconclusive_limit=(base.inconclusive_limit if metric.inconclusive_limit is None
                                else metric.inconclusive_limit),
        )
    for indicator in analysis.rollback_indicators:
        query = gates[indicator.metric].query if indicator.metric in gates else BUILTIN_QUERIES[
            indicator.metric]
        indicators[indicator.metric] = IndicatorCheck(
            indicator.metric, query, indicator.threshold_range, indicator.relative_to_stable
        )
    unjudged = [g.name for g in gates.values() if g.threshold_range is None and g.relative_to_stable is None]
    for name in unjudged:
        del gates[name]  # listed without a threshold: nothing to judge it by
    checks = list(gates.values())
    if analysis.presets and checks:
        checks.append(TRAFFIC_GUARD_CHECK)
    return checks, list(indicators.values())

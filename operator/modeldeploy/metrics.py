"""The operator's own metrics (prometheus-client), served on MODELDEPLOY_METRICS_PORT.

The chart's alerts and dashboard are written against these names:
- modeldeploy_rollouts_total{namespace,name,result}: finished rollouts (Promoted, RolledBack, Aborted)
- modeldeploy_rollbacks_total{namespace,name,reason}: automatic and manual reverts, by reason
  (rollback-indicator, failure-limit, inconclusive-limit, evaluation, abort, progress-deadline)
- modeldeploy_analysis_measurements_total{namespace,name,metric,verdict}
- modeldeploy_analysis_query_seconds: provider query latency (histogram)
- modeldeploy_canary_weight{namespace,name}: the effective canary weight now
- modeldeploy_phase{namespace,name,phase}: 1 for the current phase, 0 for the others
- modeldeploy_notifications_total{namespace,name,webhook,result}: webhook notifications by
  result (delivered, failed: every try failed or the URL could not be read, dropped: the
  webhook's queue was full); ``webhook`` is the webhook's name, never its URL
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from modeldeploy import spec as s

REGISTRY = CollectorRegistry()

ROLLOUTS = Counter(
    "modeldeploy_rollouts_total", "Finished rollouts by result.", ["namespace", "name", "result"],
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "modeldeploy_rollbacks_total", "Reverts to the stable revision by reason.",
    ["namespace", "name", "reason"], registry=REGISTRY,
)
MEASUREMENTS = Counter(
    "modeldeploy_analysis_measurements_total", "Analysis measurements by verdict.",
    ["namespace", "name", "metric", "verdict"], registry=REGISTRY,
)
QUERY_SECONDS = Histogram(
    "modeldeploy_analysis_query_seconds", "Time to answer one metric query.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY,
)
CANARY_WEIGHT = Gauge(
    "modeldeploy_canary_weight", "Effective canary weight in percent.", ["namespace", "name"],
    registry=REGISTRY,
)
PHASE = Gauge(
    "modeldeploy_phase", "1 for the ModelDeployment's current phase.", ["namespace", "name", "phase"],
    registry=REGISTRY,
)

NOTIFICATIONS = Counter(
    "modeldeploy_notifications_total", "Webhook notifications by result (delivered, failed, dropped).",
    ["namespace", "name", "webhook", "result"], registry=REGISTRY,
)


def record_status(namespace: str, name: str, status: s.ModelDeploymentStatus) -> None:
    CANARY_WEIGHT.labels(namespace, name).set(status.canary_weight or 0)
    for phase in s.Phase:
        PHASE.labels(namespace, name, phase.value).set(1 if status.phase == phase else 0)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted resource's gauges so dashboards don't show ghosts."""
    for gauge, extra in ((CANARY_WEIGHT, [()]), (PHASE, [(p.value,) for p in s.Phase])):
        for labels in extra:
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name, *labels)


def forget_all() -> None:
    """Drop every resource's gauges (a replica that does not hold the Lease)."""
    CANARY_WEIGHT.clear()
    PHASE.clear()


def serve(port: int) -> None:
    start_http_server(port, addr="0.0.0.0", registry=REGISTRY)

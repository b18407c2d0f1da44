"""song-analyzer: a revision whose fine-tune answers 30% of requests with unusable output (not the
JSON asked for, a 502 each: never retried, unlike a provider's 5xx) is reverted by the
uncached-error-rate indicator (the error rate of the requests its cache did not answer)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from analysis_support import (
    SONG_V1,
    SONG_V2,
    apply,
    condition,
    events_of,
    metric_status,
    operator_metric,
    report_detection,
    revisions_served,
    song_analyzer,
    wait_canary,
    wait_stable,
    wait_status,
)
from fakeupstream import FakeUpstreamClient
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from mdsandbox.traffic import TrafficGenerator, song_request
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration
NAME = "songs"


def test_a_canary_whose_model_fails_30_percent_is_rolled_back_by_the_error_rate_indicator(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    def manifest(model: str, tag: str) -> dict[str, Any]:
        return song_analyzer(NAME, namespace, sandbox, model=model, tag=tag)

    apply(manifest(SONG_V1, "1.0.0"), sandbox)
    stable = wait_stable(kube, namespace, NAME)
    upstream.set_fault(SONG_V2, malformed_rate=0.3)
    url = sandbox.service_url(namespace, NAME) + "/analyze"
    rollbacks_before = operator_metric(operator.metrics_port, "modeldeploy_rollbacks_total",
                                       namespace=namespace, name=NAME)
    measurements_before = operator_metric(
        operator.metrics_port, "modeldeploy_analysis_measurements_total", namespace=namespace,
        name=NAME,
    )

    with TrafficGenerator(url, body=song_request, rate=12, max_seconds=180, timeout_s=15):
        applied = dt.datetime.now(dt.UTC)
        apply(manifest(SONG_V2, "1.1.0"), sandbox)
        canary = wait_canary(kube, namespace, NAME, stable)
        status = wait_status(kube, namespace, NAME, lambda s: s.get("phase") == "RolledBack",
                             what="phase RolledBack", timeout=120)

    # The status names the metric, its value, the threshold and the reverted revision.
    assert status["stableRevision"] == stable
    assert not status.get("canaryRevision")
    report_detection("song-analyzer", applied, status)
    message = status["message"]
    assert message.startswith("rollback indicator uncached-error-rate = "), message
    value = message.removeprefix("rollback indicator uncached-error-rate = ").split()[0]
    assert float(value) > 0.05
    assert "breached max 0.05" in message and f"(revision {canary})" in message
    for type_ in ("RolledBack", "Degraded"):
        assert condition(status, type_)["status"] == "True"
        assert condition(status, type_)["reason"] == "RollbackIndicatorBreached"
    assert status["history"][0]["revision"] == canary
    assert status["history"][0]["outcome"] == "RolledBack"
    event = wait_until(
        lambda: next((e for e in events_of(kube, namespace, NAME)
                      if e["reason"] == "RollbackIndicatorBreached"), None),
        timeout=30, what="the RollbackIndicatorBreached event",
    )
    assert event["type"] == "Warning"
    assert message in event["message"]  # metric, value, threshold and revision

    # status.analysis holds each metric's last value, threshold, verdict and time.
    indicator = metric_status(status, "uncached-error-rate (rollback indicator)")
    assert indicator["verdict"] == "Fail" and indicator["threshold"] == "max 0.05"
    assert f"{indicator['value']:g}" == value and indicator["time"]
    for gate in ("error-rate", "latency-p95", "cost-per-request"):
        entry = metric_status(status, gate)
        assert entry["threshold"] and entry["verdict"] in ("Pass", "Fail", "Inconclusive")
        assert entry["time"]

    # The operator's own metrics counted the revert and the measurements behind it.
    assert operator_metric(operator.metrics_port, "modeldeploy_rollbacks_total",
                           namespace=namespace, name=NAME) == rollbacks_before + 1
    assert operator_metric(operator.metrics_port, "modeldeploy_rollbacks_total",
                           namespace=namespace, name=NAME, reason="rollback-indicator") == 1
    measurements = operator_metric(operator.metrics_port, "modeldeploy_analysis_measurements_total",
                                   namespace=namespace, name=NAME)
    assert measurements > measurements_before
    assert operator_metric(operator.metrics_port, "modeldeploy_analysis_measurements_total",
                           namespace=namespace, name=NAME, metric="uncached-error-rate (rollback indicator)",
                           verdict="Fail") >= 1
    assert operator_metric(operator.metrics_port, "modeldeploy_rollouts_total",
                           namespace=namespace, name=NAME, result="RolledBack") == 1
    # The bad canary keeps serving until stable's pods are ready again (a reverse canary);
    # once the revert is done the weight gauge follows it to 0.
    wait_status(kube, namespace, NAME, lambda s: not s.get("revertingFrom"),
                what="the revert to finish")
    wait_until(lambda: operator_metric(operator.metrics_port, "modeldeploy_canary_weight",
                                       namespace=namespace, name=NAME) == 0,
               timeout=30, what="the canary weight gauge to follow the revert to 0")
    assert operator_metric(operator.metrics_port, "modeldeploy_phase", namespace=namespace,
                           name=NAME, phase="RolledBack") == 1
    assert operator_metric(operator.metrics_port, "modeldeploy_analysis_query_seconds_count") > 0

    # Afterwards the previous revision serves all traffic.
    def canary_pods_gone() -> bool:
        pods = kube.list("Pod", namespace, f"modeldeploy.io/revision={canary}")
        return not pods

    wait_until(canary_pods_gone, timeout=60, what="the canary's pods to go")
    sample = TrafficGenerator(url, body=lambda n: song_request(10_000 + n), rate=20,
                              max_requests=30, timeout_s=15).run()
    assert len(sample) == 30 and all(r.ok for r in sample), TrafficGenerator.statuses(sample)
    assert revisions_served(sample, NAME) == {stable}

"""image-gen: a slower but healthy model passes the gate; one that times out is reverted."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from analysis_support import (
    apply,
    image_gen,
    metric_status,
    report_detection,
    revisions_served,
    wait_canary,
    wait_stable,
    wait_status,
)
from fakeupstream import FakeUpstreamClient
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from mdsandbox.traffic import TrafficGenerator, image_request
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration
NAME = "images"
# This resource's own mean-latency gate, overriding the bundle's 150 s by name.
MEAN_LATENCY_GATE = [{"name": "mean-latency", "thresholdRange": {"max": 2.0}}]


def test_a_healthy_model_twice_as_slow_stays_within_the_gate_and_is_promoted(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    def manifest(model: str, tag: str) -> dict[str, Any]:
        return image_gen(NAME, namespace, sandbox, model=model, tag=tag, timeout_s=5,
                         metrics=MEAN_LATENCY_GATE)

    upstream.set_fault("dall-e-3", latency_s=0.2)
    upstream.set_fault("gpt-image-1", latency_s=0.4)
    apply(manifest("dall-e-3", "2.0.0"), sandbox)
    stable = wait_stable(kube, namespace, NAME)
    url = sandbox.service_url(namespace, NAME) + "/submit"

    with TrafficGenerator(url, body=image_request, rate=8, max_seconds=180, timeout_s=10) as traffic:
        apply(manifest("gpt-image-1", "2.1.0"), sandbox)
        canary = wait_canary(kube, namespace, NAME, stable)
        analysed = wait_status(
            kube, namespace, NAME,
            lambda s: s.get("canaryRevision") == canary and s.get("currentStep") == 1
            and any(m["name"] == "mean-latency" and m["verdict"] == "Pass"
                    for m in s.get("analysis") or []),
            what="a passing mean-latency measurement of the canary", timeout=90,
        )
        promoted = wait_status(
            kube, namespace, NAME,
            lambda s: s.get("stableRevision") == canary or s.get("phase") == "RolledBack",
            what="the canary promoted", timeout=120,
        )
        responses = traffic.responses()

    assert promoted["stableRevision"] == canary, promoted.get("message")
    assert promoted["history"][0]["outcome"] == "Promoted"
    mean = metric_status(analysed, "mean-latency")
    assert mean["threshold"] == "max 2"  # the resource's override, not the bundle's 150 s
    assert 0.4 <= mean["value"] < 2.0
    for gate in ("success-rate", "timeout-rate"):
        assert metric_status(analysed, gate)["verdict"] == "Pass"
    assert {stable, canary} <= revisions_served(responses, NAME)
    assert all(r.ok for r in responses), TrafficGenerator.statuses(responses)


def test_a_model_that_times_out_beyond_the_indicator_is_rolled_back(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    def manifest(model: str, tag: str, timeout_s: float) -> dict[str, Any]:
        return image_gen(NAME, namespace, sandbox, model=model, tag=tag,
                         timeout_s=timeout_s)

    upstream.set_fault("gpt-image-1", timeout_rate=0.5, hang_s=5)
    apply(manifest("dall-e-3", "2.0.0", 5), sandbox)
    stable = wait_stable(kube, namespace, NAME)
    url = sandbox.service_url(namespace, NAME) + "/submit"

    with TrafficGenerator(url, body=image_request, rate=8, max_seconds=180, timeout_s=10):
        applied = dt.datetime.now(dt.UTC)
        apply(manifest("gpt-image-1", "2.1.0", 1), sandbox)
        canary = wait_canary(kube, namespace, NAME, stable)
        status = wait_status(kube, namespace, NAME,
                             lambda s: s.get("phase") in ("RolledBack", "Succeeded"),
                             what="phase RolledBack", timeout=120)

    assert status["phase"] == "RolledBack", status.get("message")
    assert status["stableRevision"] == stable
    report_detection("image-gen", applied, status)
    # Half the calls time out: the timeout-rate indicator (max 10%) breached, and so did
    # error-rate (max 10%, timeouts included) and success-rate (min 85%), measured in the same
    # round; the message names the first.
    message = status["message"]
    assert message.startswith("rollback indicator ") and f"(revision {canary})" in message, message
    timeouts = metric_status(status, "timeout-rate (rollback indicator)")
    assert timeouts["verdict"] == "Fail" and timeouts["threshold"] == "max 0.1"
    assert timeouts["value"] > 0.1
    assert status["history"][0] == {**status["history"][0], "revision": canary,
                                    "outcome": "RolledBack"}

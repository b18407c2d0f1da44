"""image-gen: a canary above 90% of its memory limit is reverted by the memory indicator.

The new revision changes one thing: its memory limit drops from a generous 1Gi to 48Mi,
less than an idle image-gen process holds once started (~65-75 MiB resident). Its
container's working set (the kubelet's cAdvisor series, scraped by the sandbox's
Prometheus) grows as the process starts and passes 90% of the limit within seconds,
while it serves every request well: the image-gen bundle's memory-utilization rollback
indicator reverts it at once, and nothing else does (the sandbox enforces no limit, so
the process is not OOM-killed first, as it would be on a node).
"""

from __future__ import annotations

from typing import Any

import pytest
from analysis_support import apply, image_gen, metric_status, wait_canary, wait_stable, wait_status
from fakeupstream import FakeUpstreamClient
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from mdsandbox.traffic import TrafficGenerator, image_request
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration
NAME = "images"
MEMORY_INDICATOR = "memory-utilization (rollback indicator)"
# The bundle's other rollback indicators: the canary serves well, so none may breach.
HEALTH_INDICATORS = ("success-rate", "timeout-rate", "error-rate")


def with_memory_limit(manifest: dict[str, Any], limit: str) -> dict[str, Any]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"limits": {"memory": limit}}
    return manifest


def test_a_canary_above_90_percent_of_its_memory_limit_is_rolled_back_by_the_memory_indicator(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    def manifest(limit: str) -> dict[str, Any]:
        return with_memory_limit(
            image_gen(NAME, namespace, sandbox, model="gpt-image-1", tag="2.1.0", timeout_s=5), limit)

    upstream.set_fault("gpt-image-1", latency_s=0.1)
    apply(manifest("1Gi"), sandbox)
    stable = wait_stable(kube, namespace, NAME)
    url = sandbox.service_url(namespace, NAME) + "/submit"

    with TrafficGenerator(url, body=image_request, rate=4, max_seconds=120, timeout_s=10) as traffic:
        apply(manifest("48Mi"), sandbox)
        canary = wait_canary(kube, namespace, NAME, stable)
        status = wait_status(kube, namespace, NAME,
                             lambda s: s.get("phase") in ("RolledBack", "Succeeded"),
                             what="phase RolledBack", timeout=90)
        responses = traffic.responses()

    assert status["phase"] == "RolledBack", status.get("message")
    assert status["stableRevision"] == stable
    message = status["message"]
    assert message.startswith("rollback indicator memory-utilization "), message
    assert f"(revision {canary})" in message, message
    memory = metric_status(status, MEMORY_INDICATOR)
    assert memory["verdict"] == "Fail" and memory["threshold"] == "max 0.9"
    assert memory["value"] > 0.9
    for indicator in HEALTH_INDICATORS:
        assert metric_status(status, f"{indicator} (rollback indicator)")["verdict"] != "Fail"
    assert status["history"][0] == {**status["history"][0], "revision": canary,
                                    "outcome": "RolledBack"}
    # The revert kept the service answering: requests were served throughout.
    assert sum(r.ok for r in responses) >= 0.95 * len(responses) > 0, \
        TrafficGenerator.statuses(responses)

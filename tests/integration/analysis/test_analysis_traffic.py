"""The traffic generator the scenarios, the demo and hack/bench rollback share."""

from __future__ import annotations

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, deployment, service, wait_deployment_ready, wait_until
from mdsandbox.traffic import TrafficGenerator

pytestmark = pytest.mark.integration


def test_the_traffic_generator_stops_at_its_bound_and_records_each_answer_and_its_pod(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    kube.create(deployment("echo", namespace, replicas=2))
    kube.create(service("echo", namespace, {"app": "echo"}))
    pods = {f"{namespace}/{p['metadata']['name']}"
            for p in wait_deployment_ready(kube, namespace, "echo", 2)}
    url = sandbox.service_url(namespace, "echo")

    answered = TrafficGenerator(url + "/health", method="GET", rate=50, max_requests=20).run()
    refused = TrafficGenerator(url + "/no-such-route", rate=50, max_requests=4).run()

    assert sorted(r.index for r in answered) == list(range(20))
    assert all(r.ok and r.status == 200 and r.error is None for r in answered)
    assert TrafficGenerator.pods(answered) == {pod: 10 for pod in pods}  # round-robin over both
    assert TrafficGenerator.statuses(refused) == {404: 4}
    assert all(not r.ok and r.error and r.pod in pods for r in refused)


def test_the_traffic_generator_stops_on_request_with_nothing_left_in_flight(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    kube.create(deployment("echo", namespace, replicas=1))
    kube.create(service("echo", namespace, {"app": "echo"}))
    wait_deployment_ready(kube, namespace, "echo", 1)
    traffic = TrafficGenerator(sandbox.service_url(namespace, "echo") + "/health", method="GET",
                               rate=20, max_seconds=120)
    with traffic:
        wait_until(lambda: traffic.mark() >= 5, timeout=30, what="5 answers")
    assert not traffic.running
    settled = traffic.responses()
    # Every request sent was answered and recorded before stop() returned; none after.
    assert sorted(r.index for r in settled) == list(range(len(settled)))
    assert all(r.ok for r in settled)
    assert traffic.responses() == settled

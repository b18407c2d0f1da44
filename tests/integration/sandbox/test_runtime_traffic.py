"""The sandbox's data plane splits traffic the way the operator's routers expect.

With the replicas router, the share of a Deployment is its share of the ready pods
behind the Service; with the Gateway API router, the HTTPRoute's backendRef weights.
The data plane uses round-robin, so the shares are exact to within a request per
pod; the tests allow 2 percentage points.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from mdsandbox.dataplane import POD_HEADER
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, deployment, service, wait_deployment_ready

pytestmark = pytest.mark.integration
REQUESTS = 1000
TOLERANCE = 0.02


def shares_by_deployment(url: str, deployments: list[str]) -> dict[str, float]:
    """Send REQUESTS GETs to ``url``; the share each Deployment's pods answered."""
    counts: Counter[str] = Counter()
    with httpx.Client(timeout=30) as client:
        for _ in range(REQUESTS):
            resp = client.get(f"{url}/health")
            assert resp.status_code == 200, resp.text
            pod = resp.headers[POD_HEADER].split("/", 1)[1]
            owner = next(d for d in deployments if pod.startswith(f"{d}-"))
            counts[owner] += 1
    return {d: counts[d] / REQUESTS for d in deployments}


def test_a_service_splits_requests_by_the_ready_replicas_of_two_deployments(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    shared = {"modeldeploy.io/name": "web"}
    kube.create(deployment("stable", namespace, replicas=3, labels=shared))
    kube.create(deployment("canary", namespace, replicas=1, labels=shared))
    kube.create(service("web", namespace, shared))
    wait_deployment_ready(kube, namespace, "stable", 3)
    wait_deployment_ready(kube, namespace, "canary", 1)

    shares = shares_by_deployment(sandbox.service_url(namespace, "web"), ["stable", "canary"])

    assert shares["canary"] == pytest.approx(0.25, abs=TOLERANCE)
    assert shares["stable"] == pytest.approx(0.75, abs=TOLERANCE)


def test_an_httproute_splits_requests_by_its_backend_weights(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    for track in ("stable", "canary"):
        kube.create(deployment(track, namespace, replicas=1))
        kube.create(service(f"web-{track}", namespace, {"app": track}))
    kube.create({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [{"backendRefs": [
                {"name": "web-stable", "port": 80, "weight": 80},
                {"name": "web-canary", "port": 80, "weight": 20},
            ]}],
        },
    })
    wait_deployment_ready(kube, namespace, "stable", 1)
    wait_deployment_ready(kube, namespace, "canary", 1)

    shares = shares_by_deployment(sandbox.route_url(namespace, "web"), ["stable", "canary"])

    assert shares["canary"] == pytest.approx(0.20, abs=TOLERANCE)
    assert shares["stable"] == pytest.approx(0.80, abs=TOLERANCE)
    route = kube.get("HTTPRoute", namespace, "web") or {}
    conditions = route.get("status", {}).get("parents", [{}])[0].get("conditions", [])
    assert {c["type"]: c["status"] for c in conditions} == {"Accepted": "True", "ResolvedRefs": "True"}


def test_a_service_without_ready_pods_answers_503(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    kube.create(service("nobody", namespace, {"app": "nobody"}))

    resp = httpx.get(f"{sandbox.service_url(namespace, 'nobody')}/health", timeout=10)

    assert resp.status_code == 503
    assert "no ready pods" in resp.json()["error"]["message"]

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
    kube.create({  # the route's parent: the sandbox's data plane accepts routes naming it
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gateway", "namespace": namespace},
        "spec": {"gatewayClassName": "sandbox",
                 "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
    })
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


def test_the_api_servers_service_proxy_reaches_the_pods_as_on_a_cluster(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    """``/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/<path>``, which tools (and the
    e2e tier) use to reach a Service from outside, forwards method, path, query and body."""
    kube.create(deployment("proxied", namespace, replicas=1, labels={"app": "proxied"}))
    kube.create(service("proxied", namespace, {"app": "proxied"}))
    wait_deployment_ready(kube, namespace, "proxied", 1)
    base = f"/api/v1/namespaces/{namespace}/services"

    health = kube.http.get(f"{base}/proxied:80/proxy/health")
    assert health.status_code == 200, health.text
    assert health.headers[POD_HEADER].startswith(f"{namespace}/proxied-")
    for ref in ("proxied", "http:proxied:80"):  # name alone, or scheme:name:port
        assert kube.http.get(f"{base}/{ref}/proxy/health").status_code == 200
    chat = kube.http.post(f"{base}/proxied:80/proxy/v1/chat/completions", json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]})
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"]

    missing = kube.http.get(f"{base}/nothing-here:80/proxy/health")
    assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"

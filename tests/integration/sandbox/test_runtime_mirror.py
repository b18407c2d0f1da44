"""The sandbox's data plane mirrors as a Gateway does (HTTPRoute ``RequestMirror`` filter):
users are answered by the rule's backendRefs alone, and a copy of exactly the filter's
share of their requests reaches the mirror Service's pods, fire and forget.

The pods run the fake upstream, whose own counters (``/admin/stats``,
``/admin/concurrency``) say how many requests each pod got and how many hang now.
"""

from __future__ import annotations

import httpx
import pytest
from fakeupstream import FakeUpstreamClient
from mdsandbox.dataplane import POD_HEADER
from mdsandbox.kubelet import PORT_ANNOTATION
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import JSON, KubeAPI, deployment, service, wait_deployment_ready, wait_until

pytestmark = pytest.mark.integration
MODEL = "gpt-4o-mini"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}


def mirror_filter(service_name: str, **share: object) -> JSON:
    return {"type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": service_name, "port": 80}, **share}}


def route_with(namespace: str, *filters: JSON) -> JSON:
    """A Gateway's route: everything to web-primary, with ``filters``."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [{"backendRefs": [{"name": "web-primary", "port": 80, "weight": 100}],
                       "filters": list(filters)}],
        },
    }


def start(kube: KubeAPI, namespace: str, replicas: dict[str, int], *filters: JSON) -> list[JSON]:
    """Deployments (fake upstream) and Services ``web-<name>``, the Gateway and the route;
    returns the pods of each, once ready."""
    kube.create({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gateway", "namespace": namespace},
        "spec": {"gatewayClassName": "sandbox",
                 "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
    })
    for name, count in replicas.items():
        kube.create(deployment(name, namespace, replicas=count))
        kube.create(service(f"web-{name}", namespace, {"app": name}))
    kube.create(route_with(namespace, *filters))
    return [pod for name, count in replicas.items()
            for pod in wait_deployment_ready(kube, namespace, name, count)]


def parent_conditions(kube: KubeAPI, namespace: str) -> dict[str, JSON] | None:
    route = kube.get("HTTPRoute", namespace, "web") or {}
    parents = (route.get("status") or {}).get("parents") or []
    if not parents:
        return None
    return {c["type"]: c for c in parents[0]["conditions"]}


def wait_accepted(kube: KubeAPI, namespace: str) -> dict[str, JSON]:
    def accepted() -> dict[str, JSON] | None:
        conditions = parent_conditions(kube, namespace)
        return conditions if conditions and conditions["Accepted"]["status"] == "True" else None

    return wait_until(accepted, timeout=30, what="the route to be accepted")


def upstream(pod: JSON) -> FakeUpstreamClient:
    """The pod's own fake upstream, reached at its port (not through the data plane)."""
    return FakeUpstreamClient(f"http://127.0.0.1:{pod['metadata']['annotations'][PORT_ANNOTATION]}")


def answered(pods: list[JSON]) -> int:
    """Requests to MODEL the pods have answered, by their own counters."""
    total = 0
    for pod in pods:
        with upstream(pod) as client:
            total += sum(client.stats().get(MODEL, {}).values())
    return total


def in_flight(pods: list[JSON]) -> int:
    total = 0
    for pod in pods:
        with upstream(pod) as client:
            total += client.concurrency(MODEL)[0]
    return total


def send_chats(url: str, count: int) -> list[str]:
    """``count`` chat requests through the route, each answered 200; the pods that answered."""
    answering = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            resp = client.post(f"{url}/v1/chat/completions", json=CHAT)
            assert resp.status_code == 200, resp.text
            answering.append(resp.headers[POD_HEADER].split("/", 1)[1])
    return answering


def pod_names(pods: list[JSON], app: str) -> set[str]:
    return {p["metadata"]["name"] for p in pods if p["metadata"]["labels"]["app"] == app}


def test_users_are_answered_by_the_backend_and_half_their_requests_are_copied_to_the_mirror(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    requests = 200
    pods = start(kube, namespace, {"primary": 2, "shadow": 2}, mirror_filter("web-shadow", percent=50))
    primary, shadow = pod_names(pods, "primary"), pod_names(pods, "shadow")
    conditions = wait_accepted(kube, namespace)
    assert conditions["ResolvedRefs"]["status"] == "True"

    answering = send_chats(sandbox.route_url(namespace, "web"), requests)

    assert set(answering) == primary  # both primary pods, never a mirror pod
    shadow_pods = [p for p in pods if p["metadata"]["name"] in shadow]
    primary_pods = [p for p in pods if p["metadata"]["name"] in primary]
    assert answered(primary_pods) == requests
    # The copies are fire and forget: wait for them to land, then for none to be pending.
    wait_until(lambda: answered(shadow_pods) >= requests // 2, timeout=30,
               what=f"{requests // 2} mirrored copies to reach the shadow pods")
    wait_until(lambda: in_flight(shadow_pods) == 0, timeout=30, what="no copy in flight")
    per_pod = [answered([p]) for p in shadow_pods]
    assert sum(per_pod) == requests // 2, per_pod  # exactly half: 50 of every 100
    assert min(per_pod) > 0, per_pod  # the mirror Service's round-robin spreads them


def test_a_hanging_mirror_pod_neither_delays_nor_fails_a_users_request(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    requests = 20
    pods = start(kube, namespace, {"primary": 1, "shadow": 1}, mirror_filter("web-shadow"))  # 100%
    shadow_pods = [p for p in pods if p["metadata"]["labels"]["app"] == "shadow"]
    with upstream(shadow_pods[0]) as client:
        client.set_fault("*", timeout_rate=1.0, hang_s=300)  # every request hangs 5 minutes
    wait_accepted(kube, namespace)

    answering = send_chats(sandbox.route_url(namespace, "web"), requests)

    assert set(answering) == pod_names(pods, "primary")
    # Every answer is back while every copy still hangs on the mirror pod.
    wait_until(lambda: in_flight(shadow_pods) == requests, timeout=30,
               what=f"{requests} copies hanging on the mirror pod")


def test_a_mirror_backend_that_is_down_or_missing_fails_no_users_request(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    """No ready pod behind one mirror Service, no Service at all for the other: users are
    served as usual, and ResolvedRefs names the missing one, as a Gateway does."""
    kube.create(service("web-down", namespace, {"app": "nothing-runs-here"}))
    pods = start(kube, namespace, {"primary": 1},
                 mirror_filter("web-down"), mirror_filter("web-ghost", fraction={"numerator": 1}))

    def backend_not_found() -> JSON | None:
        conditions = parent_conditions(kube, namespace) or {}
        resolved = conditions.get("ResolvedRefs") or {}
        return resolved if resolved.get("reason") == "BackendNotFound" else None

    resolved = wait_until(backend_not_found, timeout=30, what="ResolvedRefs BackendNotFound")
    assert resolved["status"] == "False"
    assert resolved["message"] == f"Service {namespace}/web-ghost not found"
    wait_accepted(kube, namespace)

    answering = send_chats(sandbox.route_url(namespace, "web"), 10)

    assert set(answering) == pod_names(pods, "primary")

"""Helpers for tests against a sandbox: a thin synchronous REST client and polling.

Tests talk to the sandbox's API server over real HTTP, as kubectl would; waiting is
always polling a condition against a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

JSON = dict[str, Any]
T = TypeVar("T")

PLURAL_PATHS = {
    "Namespace": "/api/v1/namespaces",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "Service": "/api/v1/namespaces/{ns}/services",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "Event": "/api/v1/namespaces/{ns}/events",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "ReplicaSet": "/apis/apps/v1/namespaces/{ns}/replicasets",
    "HTTPRoute": "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes",
    "Gateway": "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/gateways",
}
FAULTS_PATH = "/mdsandbox/faults"  # the API server's fault injection (apiserver/faults.py)


def wait_until(
    condition: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``condition`` until it returns something truthy; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class KubeAPI:
    """create/get/list/patch/delete by kind, over HTTP, raising on unexpected answers."""

    def __init__(self, api_url: str) -> None:
        self.http = httpx.Client(base_url=api_url, timeout=30)

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def path(kind: str, namespace: str = "", name: str | None = None) -> str:
        base = PLURAL_PATHS[kind].format(ns=namespace)
        return f"{base}/{name}" if name else base

    def create(self, obj: JSON) -> JSON:
        namespace = obj.get("metadata", {}).get("namespace", "")
        resp = self.http.post(self.path(obj["kind"], namespace), json=obj)
        resp.raise_for_status()
        return resp.json()  # type: ignore[no-any-return]

    def get(self, kind: str, namespace: str, name: str) -> JSON | None:
        resp = self.http.get(self.path(kind, namespace, name))
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.json()  # type: ignore[no-any-return]

    def list(self, kind: str, namespace: str, selector: str | None = None) -> list[JSON]:
        params = {"labelSelector": selector} if selector else None
        resp = self.http.get(self.path(kind, namespace), params=params)
        resp.raise_for_status()
        return resp.json()["items"]  # type: ignore[no-any-return]

    def merge_patch(self, kind: str, namespace: str, name: str, patch: JSON, sub: str = "") -> JSON:
        resp = self.http.patch(
            self.path(kind, namespace, name) + sub,
            json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        resp.raise_for_status()
        return resp.json()  # type: ignore[no-any-return]

    def delete(self, kind: str, namespace: str, name: str) -> None:
        resp = self.http.delete(self.path(kind, namespace, name))
        if resp.status_code != 404:
            resp.raise_for_status()

    # -- fault injection (the rule's fields: hack/mdsandbox/README.md, "Fault injection")

    def inject_fault(self, **rule: Any) -> str:
        """Set a fault rule, e.g. ``inject_fault(verbs=["patch"], status=409)``; its id.

        A rule the server refuses raises ValueError with the server's reason.
        """
        resp = self.http.post(FAULTS_PATH, json=rule)
        if resp.status_code == 400:
            raise ValueError(f"fault rule {rule!r} refused: {resp.json()['message']}")
        resp.raise_for_status()
        return str(resp.json()["id"])

    def clear_fault(self, fault_id: str) -> None:
        """Remove one rule; KeyError when there is no such rule."""
        resp = self.http.delete(f"{FAULTS_PATH}/{fault_id}")
        if resp.status_code == 404:
            raise KeyError(f"no fault rule {fault_id!r}")
        resp.raise_for_status()

    def clear_faults(self) -> None:
        self.http.delete(FAULTS_PATH).raise_for_status()

    def fault_hits(self, fault_id: str) -> int:
        """How many requests (or, for dropWatchAfter, streams) the rule has faulted."""
        resp = self.http.get(f"{FAULTS_PATH}/{fault_id}")
        if resp.status_code == 404:
            raise KeyError(f"no fault rule {fault_id!r}")
        resp.raise_for_status()
        return int(resp.json()["hits"])

    @contextlib.contextmanager
    def faults(self, **rule: Any) -> Iterator[str]:
        """``inject_fault(**rule)`` for the ``with`` block (yields the id), cleared after."""
        fault_id = self.inject_fault(**rule)
        try:
            yield fault_id
        finally:
            with contextlib.suppress(KeyError):  # the block may have cleared it already
                self.clear_fault(fault_id)


def deployment(
    name: str,
    namespace: str,
    *,
    replicas: int = 1,
    image: str = "modeldeploy/fake-upstream:test",
    labels: dict[str, str] | None = None,
    container: JSON | None = None,
    **spec: Any,
) -> JSON:
    """A Deployment manifest whose pods carry ``app: <name>`` plus ``labels``."""
    pod_labels = {"app": name, **(labels or {})}
    main: JSON = {
        "name": "app",
        "image": image,
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 2},
        **(container or {}),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": pod_labels}, "spec": {"containers": [main]}},
            **spec,
        },
    }


def service(name: str, namespace: str, selector: dict[str, str]) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def container_pid(pod: JSON) -> int:
    """The pid of a pod's first container, from its containerID (``process://PID``)."""
    container_id = str(pod["status"]["containerStatuses"][0]["containerID"])
    if not container_id.startswith("process://"):
        raise ValueError(f"containerID {container_id!r} is not a sandbox process://PID")
    return int(container_id.removeprefix("process://"))


def is_ready(pod: JSON) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", []) or []
    )


def wait_deployment_ready(
    kube: KubeAPI, namespace: str, name: str, count: int, timeout: float = 60
) -> list[JSON]:
    """Wait until Deployment ``name`` reports ``count`` ready replicas and that many
    pods labelled ``app=<name>`` are Ready; returns those pods."""

    def ready() -> list[JSON] | None:
        got = kube.get("Deployment", namespace, name) or {}
        pods = [p for p in kube.list("Pod", namespace, f"app={name}") if is_ready(p)]
        if got.get("status", {}).get("readyReplicas", 0) == count and len(pods) == count:
            return pods
        return None

    return wait_until(ready, timeout=timeout, what=f"{count} ready pods of Deployment {name}")


def wait_pod_count(
    kube: KubeAPI, namespace: str, selector: str, count: int, *, what: str, timeout: float = 30
) -> list[JSON]:
    """Wait until exactly ``count`` pods match ``selector``; returns them."""

    def matching() -> list[JSON] | None:
        pods = kube.list("Pod", namespace, selector)
        return pods if len(pods) == count else None

    return wait_until(matching, timeout=timeout, what=what)

"""What the rollout scenarios share: manifests, reading a ModelDeployment, the traffic split.

Manifests are what a user would ``kubectl apply``: the cheapest workload
(``modeldeploy/fake-upstream``, ready in about a second, with ``/health``), where a new
``MARK`` env value makes a new revision. Reading goes through the sandbox's API server
(the ModelDeployment, its Events, its Deployments and pods); steering and applying go
through the real ``kubectl`` and ``modeldeploy`` CLI, as a user would. The traffic
split is measured through the Service's data-plane port: every answer names the pod
that served it (``X-Sandbox-Pod``), and a pod's name starts with its Deployment's,
``<name>-<revision>``.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, container_pid, is_ready, wait_until
from operator_process import kubectl_apply, run

JSON = dict[str, Any]
MD_PATH = "/apis/modeldeploy.io/v1alpha1/namespaces/{ns}/modeldeployments/{name}"
IMAGE = "modeldeploy/fake-upstream:v1"
# How long a scenario waits for one thing the operator (ticking every second) does.
WAIT = 60.0


def template(
    mark: str,
    *,
    image: str = IMAGE,
    resources: JSON | None = None,
    initial_delay: int | None = None,
) -> JSON:
    """A pod template; ``mark`` (an env value) makes a distinct revision."""
    probe: JSON = {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1}
    if initial_delay is not None:
        probe["initialDelaySeconds"] = initial_delay
    container: JSON = {
        "name": "app",
        "image": image,
        "env": [{"name": "MARK", "value": mark}],
        "readinessProbe": probe,
    }
    if resources is not None:
        container["resources"] = resources
    return {"spec": {"containers": [container]}}


def model_deployment(
    name: str,
    namespace: str,
    pod_template: JSON,
    *,
    replicas: int = 2,
    steps: list[JSON] | None = None,
    bake_time: str = "2s",
    **spec: Any,
) -> JSON:
    """A canary ModelDeployment (``steps``), or any strategy given in ``spec``."""
    body: JSON = {
        "replicas": replicas,
        "template": pod_template,
        "rollback": {"bakeTime": bake_time},
    }
    if steps is not None:
        body["strategy"] = {"canary": {"steps": steps}}
    body.update(copy.deepcopy(spec))
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


# ----------------------------------------------------------------------------- reading


def md_get(kube: KubeAPI, namespace: str, name: str) -> JSON:
    response = kube.http.get(MD_PATH.format(ns=namespace, name=name))
    response.raise_for_status()
    body: JSON = response.json()
    return body


def md_status(kube: KubeAPI, namespace: str, name: str) -> JSON:
    status: JSON = md_get(kube, namespace, name).get("status") or {}
    return status


def wait_status(
    kube: KubeAPI,
    namespace: str,
    name: str,
    check: Callable[[JSON], bool],
    what: str,
    timeout: float = WAIT,
) -> JSON:
    """Poll the ModelDeployment's status until ``check`` holds; returns that status."""

    last: list[JSON] = [{}]

    def current() -> JSON | None:
        last[0] = md_status(kube, namespace, name)
        return last[0] if check(last[0]) else None

    try:
        return wait_until(current, timeout=timeout, what=f"{namespace}/{name}: {what}")
    except AssertionError as error:
        raise AssertionError(f"{error}\nlast status: {last[0]}") from None


def wait_phase(
    kube: KubeAPI,
    namespace: str,
    name: str,
    phase: str,
    *,
    step: int | None = None,
    timeout: float = WAIT,
) -> JSON:
    """Wait for ``phase`` (and status.currentStep ``step``, when given)."""
    return wait_status(
        kube, namespace, name,
        lambda s: s.get("phase") == phase and (step is None or s.get("currentStep") == step),
        f"phase {phase}" + (f" at step index {step}" if step is not None else ""),
        timeout,
    )


def condition(status: JSON, type_: str) -> JSON:
    found: list[JSON] = [c for c in status.get("conditions") or [] if c.get("type") == type_]
    assert found, f"no {type_} condition in {status.get('conditions')}"
    return found[0]


def entry_of(status: JSON, revision: str) -> JSON:
    """The newest history entry of ``revision``."""
    history: list[JSON] = status.get("history") or []
    for entry in history:
        if entry["revision"] == revision:
            return entry
    raise AssertionError(f"no history entry for {revision} in {status.get('history')}")


def md_events(kube: KubeAPI, namespace: str, name: str) -> list[JSON]:
    """The Events the operator posted on the ModelDeployment, oldest first."""
    events = [
        e for e in kube.list("Event", namespace)
        if (e.get("involvedObject") or {}).get("kind") == "ModelDeployment"
        and e["involvedObject"].get("name") == name
    ]
    events.sort(key=lambda e: e.get("firstTimestamp") or e.get("eventTime") or "")
    return events


def wait_event(
    kube: KubeAPI, namespace: str, name: str, reason: str, contains: str = "",
    timeout: float = WAIT,
) -> JSON:
    def found() -> JSON | None:
        for event in md_events(kube, namespace, name):
            if event.get("reason") == reason and contains in event.get("message", ""):
                return event
        return None

    return wait_until(
        found, timeout=timeout, what=f"a {reason} event on {name} mentioning {contains!r}"
    )


def deployment(kube: KubeAPI, namespace: str, name: str, revision: str) -> JSON:
    found = kube.get("Deployment", namespace, f"{name}-{revision}")
    assert found is not None, f"no Deployment {name}-{revision}"
    return found


def revision_pods(kube: KubeAPI, namespace: str, name: str, revision: str) -> list[JSON]:
    return kube.list(
        "Pod", namespace, f"modeldeploy.io/name={name},modeldeploy.io/revision={revision}"
    )


def pod_pids(kube: KubeAPI, namespace: str, name: str, revision: str) -> dict[str, int]:
    """Each ready pod of ``revision`` and its process id (restarted or replaced: changed)."""
    return {
        p["metadata"]["name"]: container_pid(p)
        for p in revision_pods(kube, namespace, name, revision)
        if is_ready(p)
    }


# ----------------------------------------------------------------------------- acting


class User:
    """kubectl and the ``modeldeploy`` CLI, run as a user runs them, in one namespace."""

    def __init__(self, sandbox: Sandbox, namespace: str) -> None:
        self.kubeconfig = Path(sandbox.kubeconfig)
        self.namespace = namespace

    def apply(self, manifest: JSON) -> str:
        return kubectl_apply(manifest, self.kubeconfig)

    def modeldeploy(self, *args: str) -> str:
        return run(["modeldeploy", "-n", self.namespace, *args], self.kubeconfig)


def deploy_first(
    user: User, kube: KubeAPI, manifest: JSON, timeout: float = WAIT
) -> str:
    """Apply a first ModelDeployment and wait until it is stable; its revision."""
    user.apply(manifest)
    meta = manifest["metadata"]
    status = wait_status(
        kube, meta["namespace"], meta["name"],
        lambda s: s.get("phase") == "Succeeded" and bool(s.get("stableRevision")),
        "the first deployment to succeed", timeout,
    )
    revision: str = status["stableRevision"]
    return revision


def start_rollout(user: User, kube: KubeAPI, manifest: JSON) -> str:
    """Apply a changed template; the canary revision the operator starts rolling out."""
    meta = manifest["metadata"]
    before = md_status(kube, meta["namespace"], meta["name"])
    user.apply(manifest)
    status = wait_status(
        kube, meta["namespace"], meta["name"],
        lambda s: bool(s.get("canaryRevision"))
        and s.get("canaryRevision") != before.get("canaryRevision")
        and s.get("canaryRevision") != s.get("stableRevision"),
        "a rollout of the new template to start",
    )
    revision: str = status["canaryRevision"]
    return revision


# ----------------------------------------------------------------------------- traffic


def sample(url: str, requests: int) -> Counter[str]:
    """How many of ``requests`` GET /health each pod served (by pod name)."""
    served: Counter[str] = Counter()
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(requests):
            response = client.get("/health")
            assert response.status_code == 200, f"{url}/health answered {response.status_code}"
            served[response.headers["X-Sandbox-Pod"].split("/", 1)[1]] += 1
    return served


def by_revision(served: Counter[str], name: str, revisions: list[str]) -> Counter[str]:
    """Requests per revision; a pod of no listed revision fails the test."""
    counts: Counter[str] = Counter()
    for pod, count in served.items():
        owners = [r for r in revisions if pod.startswith(f"{name}-{r}-")]
        assert owners, f"pod {pod} belongs to none of the revisions {revisions}"
        counts[owners[0]] += count
    return counts


def wait_served_by(
    url: str, name: str, revisions: list[str], what: str, requests: int = 20
) -> Counter[str]:
    """Wait until a run of ``requests`` is served by ``revisions`` alone, each taking some;
    requests per revision. (The data plane follows the API through a watch, so it lags a
    Service or route change by a moment.)"""

    def split() -> Counter[str] | None:
        served = sample(url, requests)
        counts: Counter[str] = Counter()
        for pod, count in served.items():
            owner = next((r for r in revisions if pod.startswith(f"{name}-{r}-")), None)
            if owner is None:
                return None
            counts[owner] += count
        return counts if all(counts[r] > 0 for r in revisions) else None

    return wait_until(split, timeout=30, what=what, interval=0.2)

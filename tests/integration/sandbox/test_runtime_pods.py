"""The sandbox runs Deployments as real local processes, as a cluster runs them as pods.

What users of the sandbox rely on: a Deployment's pods become live processes that
report Ready, Prometheus scrapes them with the modeldeploy labels, scaling and
deletion stop processes, crashes are restarted and counted, and pods the sandbox
cannot run stay Pending with the reason a real cluster gives.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from mdsandbox.controllers import HASH_LABEL
from mdsandbox.kubelet import PORT_ANNOTATION
from mdsandbox.sandbox import Sandbox
from mdsandbox.state import pid_alive
from mdsandbox.testing import (
    KubeAPI,
    container_pid,
    deployment,
    service,
    wait_deployment_ready,
    wait_pod_count,
    wait_until,
)

pytestmark = pytest.mark.integration
needs_prometheus = pytest.mark.skipif(
    not Path("/usr/bin/prometheus").exists(),
    reason="Debian's prometheus package is not installed (/usr/bin/prometheus): "
    "apt-get install -y prometheus",
)
JSON = dict[str, Any]


@needs_prometheus
def test_a_deployment_of_three_becomes_three_ready_processes_that_prometheus_scrapes(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    labels = {
        "modeldeploy.io/name": "web",
        "modeldeploy.io/revision": f"rev-{namespace}",
        "modeldeploy.io/track": "stable",
    }
    kube.create(deployment("web", namespace, replicas=3, labels=labels))

    pods = wait_deployment_ready(kube, namespace, "web", 3)

    assert all(pid_alive(container_pid(pod)) for pod in pods)
    assert all(pod["status"]["podIP"] == "127.0.0.1" for pod in pods)
    assert all(pod["metadata"]["annotations"][PORT_ANNOTATION].isdigit() for pod in pods)
    status = kube.get("Deployment", namespace, "web")["status"]  # type: ignore[index]
    assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == (3, 3, 3)
    available = next(c for c in status["conditions"] if c["type"] == "Available")
    assert (available["status"], available["reason"]) == ("True", "MinimumReplicasAvailable")

    query = f'up{{modeldeploy_revision="rev-{namespace}"}} == 1'

    def scraped() -> list[JSON] | None:
        resp = httpx.get(f"{sandbox.prometheus_url}/api/v1/query", params={"query": query})
        result: list[JSON] = resp.json()["data"]["result"]
        return result if len(result) == 3 else None

    series = wait_until(scraped, timeout=30, what="Prometheus to scrape the 3 pods")
    assert {s["metric"]["pod"] for s in series} == {p["metadata"]["name"] for p in pods}
    for s in series:
        assert s["metric"]["namespace"] == namespace
        assert s["metric"]["modeldeploy_name"] == "web"
        assert s["metric"]["modeldeploy_track"] == "stable"


def test_scaling_down_stops_the_processes_of_the_removed_pods(
    kube: KubeAPI, namespace: str
) -> None:
    kube.create(deployment("web", namespace, replicas=3))
    pods = wait_deployment_ready(kube, namespace, "web", 3)
    before = {p["metadata"]["name"]: container_pid(p) for p in pods}

    kube.merge_patch("Deployment", namespace, "web", {"spec": {"replicas": 1}}, sub="/scale")

    remaining = wait_pod_count(kube, namespace, "app=web", 1, what="the scale-down to one pod")
    survivor = remaining[0]["metadata"]["name"]
    gone = [pid for name, pid in before.items() if name != survivor]
    wait_until(
        lambda: not any(pid_alive(pid) for pid in gone), timeout=30, what="removed pods' processes to stop"
    )
    assert pid_alive(before[survivor])
    messages = [e["message"] for e in kube.list("Event", namespace) if e["reason"] == "ScalingReplicaSet"]
    assert any(m.startswith("Scaled down replica set web-") and m.endswith("to 1 from 3") for m in messages)


def test_a_killed_process_is_restarted_and_its_restart_counted(
    kube: KubeAPI, namespace: str
) -> None:
    kube.create(deployment("web", namespace, replicas=1))
    pod = wait_deployment_ready(kube, namespace, "web", 1)[0]
    name, first_pid = pod["metadata"]["name"], container_pid(pod)

    os.kill(first_pid, signal.SIGKILL)

    def restarted() -> JSON | None:
        current = kube.get("Pod", namespace, name) or {}
        statuses = current.get("status", {}).get("containerStatuses") or [{}]
        running = "running" in statuses[0].get("state", {})
        return current if statuses[0].get("restartCount") == 1 and running else None

    current = wait_until(restarted, timeout=30, what="the killed container to be restarted")
    status = current["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert container_pid(current) != first_pid
    assert pid_alive(container_pid(current))
    wait_deployment_ready(kube, namespace, "web", 1)


def test_a_container_whose_port_was_taken_restarts_on_a_new_one(kube: KubeAPI, namespace: str) -> None:
    """A port picked free can be taken before the process listens (another process's
    connection may get it as its source port): the container must not crash-loop on
    "address already in use" for as long as that lasts, as a pod's own IP never would."""
    kube.create(deployment("web", namespace, replicas=1))
    pod = wait_deployment_ready(kube, namespace, "web", 1)[0]
    name, port = pod["metadata"]["name"], int(pod["metadata"]["annotations"][PORT_ANNOTATION])

    os.kill(container_pid(pod), signal.SIGKILL)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the probes' TIME_WAIT
    deadline = time.monotonic() + 10
    while True:  # take the port the moment the killed process lets it go
        try:
            squatter.bind(("127.0.0.1", port))
            break
        except OSError:
            assert time.monotonic() < deadline, f"port {port} never freed"
            time.sleep(0.005)  # polling a condition with a deadline
    squatter.listen()
    try:
        def ready_elsewhere() -> JSON | None:
            current = kube.get("Pod", namespace, name) or {}
            moved = current.get("metadata", {}).get("annotations", {}).get(PORT_ANNOTATION) != str(port)
            statuses = current.get("status", {}).get("containerStatuses") or [{}]
            if not (moved and statuses[0].get("ready") and pid_alive(container_pid(current))):
                return None  # (a status written before the move may still say ready)
            try:
                answered = httpx.get(f"http://127.0.0.1:{current['metadata']['annotations'][PORT_ANNOTATION]}"
                                     "/health", timeout=2)
            except httpx.HTTPError:
                return None
            return current if answered.status_code == 200 else None

        current = wait_until(ready_elsewhere, timeout=60, what="the container ready on a new port")
    finally:
        squatter.close()
    assert process_env(current)["PORT"] == current["metadata"]["annotations"][PORT_ANNOTATION]
    assert current["status"]["containerStatuses"][0]["restartCount"] >= 1


def test_a_pod_needing_a_gpu_stays_pending_unschedulable_and_the_deadline_passes(
    kube: KubeAPI, namespace: str
) -> None:
    kube.create(deployment(
        "gpu", namespace, replicas=1, progressDeadlineSeconds=2,
        container={"resources": {"limits": {"nvidia.com/gpu": 1}}},
    ))

    def unschedulable() -> JSON | None:
        pods = kube.list("Pod", namespace, "app=gpu")
        conditions = pods[0].get("status", {}).get("conditions", []) if pods else []
        return next(
            (c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"), None
        )

    scheduled = wait_until(unschedulable, timeout=30, what="the GPU pod to be found unschedulable")
    assert scheduled["reason"] == "Unschedulable"
    assert scheduled["message"].startswith("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    assert kube.list("Pod", namespace, "app=gpu")[0]["status"]["phase"] == "Pending"

    def deadline_exceeded() -> JSON | None:
        status = (kube.get("Deployment", namespace, "gpu") or {}).get("status", {})
        progressing = [c for c in status.get("conditions", []) if c["type"] == "Progressing"]
        return progressing[0] if progressing and progressing[0]["status"] == "False" else None

    progressing = wait_until(deadline_exceeded, timeout=30, what="ProgressDeadlineExceeded")
    assert progressing["reason"] == "ProgressDeadlineExceeded"
    events = [(e["reason"], e["source"]["component"]) for e in kube.list("Event", namespace)]
    assert ("FailedScheduling", "default-scheduler") in events


def test_an_image_the_sandbox_cannot_run_leaves_the_pod_pending_with_an_image_pull_error(
    kube: KubeAPI, namespace: str
) -> None:
    kube.create(deployment("web", namespace, replicas=1, image="nginx:1.25"))

    def waiting() -> JSON | None:
        pods = kube.list("Pod", namespace, "app=web")
        statuses = pods[0].get("status", {}).get("containerStatuses") if pods else None
        return statuses[0]["state"].get("waiting") if statuses else None

    state = wait_until(waiting, timeout=30, what="the pod's waiting state")
    assert state["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert "nginx:1.25" in state["message"]
    assert kube.list("Pod", namespace, "app=web")[0]["status"]["phase"] == "Pending"


def test_a_pod_whose_readiness_probe_fails_runs_but_is_never_ready(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    probe = {"httpGet": {"path": "/no-such-page", "port": 8080}, "periodSeconds": 1}
    kube.create(deployment("web", namespace, replicas=1, container={"readinessProbe": probe}))
    kube.create(service("web", namespace, {"app": "web"}))

    def running() -> JSON | None:
        pods = kube.list("Pod", namespace, "app=web")
        statuses = pods[0].get("status", {}).get("containerStatuses") if pods else None
        return pods[0] if statuses and "running" in statuses[0]["state"] else None

    pod = wait_until(running, timeout=30, what="the pod's process to run")
    name = pod["metadata"]["name"]
    log_file = sandbox.workdir / "logs" / "pods" / f"{namespace}_{name}_app.log"

    def probes_answered() -> int:
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        return text.count("/no-such-page")

    # The process answers the probe (404) at least failureThreshold times: it ran and failed.
    wait_until(lambda: probes_answered() >= 3, timeout=30, what="three failed readiness probes")
    current = kube.get("Pod", namespace, name) or {}
    conditions = {c["type"]: c for c in current["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["ContainersReady"]["reason"] == "ContainersNotReady"
    assert httpx.get(f"{sandbox.service_url(namespace, 'web')}/health", timeout=10).status_code == 503


ENV_SOURCES = [
    pytest.param({"env": [{"name": "LLM_MODEL", "value": "gpt-image-1"}]}, id="a literal value is passed"),
    pytest.param(
        {"env": [{"name": "LLM_MODEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "model"}}}]},
        id="a ConfigMap key is passed",
    ),
    pytest.param(
        {"env": [{"name": "LLM_MODEL", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "model"}}}]},
        id="a Secret key is passed decoded",
    ),
    pytest.param({"envFrom": [{"configMapRef": {"name": "cfg"}}]}, id="a whole ConfigMap is passed"),
    pytest.param({"envFrom": [{"secretRef": {"name": "sec"}}]}, id="a whole Secret is passed"),
]


def process_env(pod: JSON) -> dict[str, str]:
    raw = Path(f"/proc/{container_pid(pod)}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.mark.parametrize("env_source", ENV_SOURCES)
def test_the_process_gets_the_container_env_and_the_sandbox_port(
    kube: KubeAPI, namespace: str, env_source: JSON
) -> None:
    kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "cfg", "namespace": namespace},
                 "data": {"model": "gpt-image-1", "LLM_MODEL": "gpt-image-1"}})
    encoded = base64.b64encode(b"gpt-image-1").decode()
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": namespace},
                 "data": {"model": encoded, "LLM_MODEL": encoded}})
    kube.create(deployment("web", namespace, replicas=1, container=env_source))

    pod = wait_deployment_ready(kube, namespace, "web", 1)[0]

    env = process_env(pod)
    assert env["LLM_MODEL"] == "gpt-image-1"
    assert env["PORT"] == pod["metadata"]["annotations"][PORT_ANNOTATION]
    assert (env["HOST"], env["APP_VERSION"]) == ("127.0.0.1", "test")


def test_services_reach_a_container_as_service_link_variables_as_on_a_cluster(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    """``$(UPSTREAM_SERVICE_HOST):$(UPSTREAM_SERVICE_PORT)`` reaches the Service, as on a cluster."""
    kube.create(deployment("upstream", namespace, replicas=1))
    kube.create(service("upstream", namespace, {"app": "upstream"}))
    wait_deployment_ready(kube, namespace, "upstream", 1)
    upstream_url = sandbox.service_url(namespace, "upstream")  # waits for the data plane
    url = "http://$(UPSTREAM_SERVICE_HOST):$(UPSTREAM_SERVICE_PORT)/v1"
    kube.create(deployment("client", namespace, replicas=1,
                           container={"env": [{"name": "BASE_URL", "value": url}]}))
    unlinked_manifest = deployment("unlinked", namespace, replicas=1)
    unlinked_manifest["spec"]["template"]["spec"]["enableServiceLinks"] = False
    kube.create(unlinked_manifest)

    linked = process_env(wait_deployment_ready(kube, namespace, "client", 1)[0])
    assert linked["UPSTREAM_SERVICE_HOST"] == "127.0.0.1"
    assert linked["BASE_URL"] == f"{upstream_url}/v1"
    assert httpx.get(f"{upstream_url}/health", timeout=5).status_code == 200
    unlinked = process_env(wait_deployment_ready(kube, namespace, "unlinked", 1)[0])
    assert "UPSTREAM_SERVICE_HOST" not in unlinked


def test_a_new_template_rolls_out_a_new_replicaset_and_scales_the_old_one_to_zero(
    kube: KubeAPI, namespace: str
) -> None:
    kube.create(deployment("web", namespace, replicas=2))
    wait_deployment_ready(kube, namespace, "web", 2)

    kube.merge_patch("Deployment", namespace, "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "modeldeploy/fake-upstream:v2",
         "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 2}}
    ]}}}})

    def rolled_out() -> JSON | None:
        got = kube.get("Deployment", namespace, "web") or {}
        status = got.get("status", {})
        progressing = [c for c in status.get("conditions", []) if c["type"] == "Progressing"]
        done = (
            status.get("observedGeneration") == got["metadata"]["generation"]
            and status.get("updatedReplicas") == 2 and status.get("replicas") == 2
            and status.get("availableReplicas") == 2
            and progressing and progressing[0]["reason"] == "NewReplicaSetAvailable"
        )
        return got if done else None

    rolled = wait_until(rolled_out, timeout=60, what="the rollout to complete")
    assert rolled["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    replicasets = {rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs
                   for rs in kube.list("ReplicaSet", namespace, "app=web")}
    assert replicasets["1"]["spec"]["replicas"] == 0
    assert replicasets["2"]["spec"]["replicas"] == 2
    new_hash = replicasets["2"]["metadata"]["labels"][HASH_LABEL]
    assert replicasets["2"]["metadata"]["name"] == f"web-{new_hash}"
    pods = wait_pod_count(kube, namespace, "app=web", 2, what="the old pods to go")
    assert {p["metadata"]["labels"][HASH_LABEL] for p in pods} == {new_hash}
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"modeldeploy/fake-upstream:v2"}

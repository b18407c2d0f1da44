"""Pods of the pause image: Running and Ready with no process, so a benchmark can hold
thousands of them.

What a benchmark relies on: a Deployment of pause pods becomes ready as one of real
processes does (the same status fields), nothing is started for it (no log, no pid, no
port), its probes are not run, and a Service over it counts the pods as endpoints.
"""

from __future__ import annotations

import httpx
import pytest
from mdsandbox.kubelet import PORT_ANNOTATION, is_pause_image
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, deployment, service, wait_deployment_ready, wait_until

pytestmark = pytest.mark.integration

PAUSE = "registry.k8s.io/pause:3.9"


@pytest.mark.parametrize(
    ("image", "pause"),
    [
        ("registry.k8s.io/pause:3.9", True),
        ("registry.k8s.io/pause", True),
        ("k8s.gcr.io/pause:3.2", True),
        ("pause", True),
        ("pause:latest", True),
        ("registry.k8s.io/pause@sha256:" + "a" * 64, True),
        ("example.com/pause:3.9", False),
        ("registry.k8s.io/pause-amd64x:3.9", False),
        ("modeldeploy/textgen:1.0", False),
        ("", False),
    ],
)
def test_which_images_are_the_pause_image(image: str, pause: bool) -> None:
    assert is_pause_image(image) is pause


def test_a_deployment_of_pause_pods_becomes_ready_without_a_process(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    # A probe no process could pass: ignored, since a pause container has nothing to probe.
    failing_probe = {"httpGet": {"path": "/never", "port": 8080}, "periodSeconds": 1}
    kube.create(deployment(
        "idle", namespace, replicas=3, image=PAUSE,
        labels={"modeldeploy.io/name": "idle"},
        container={"readinessProbe": failing_probe, "livenessProbe": failing_probe},
    ))
    kube.create(service("idle", namespace, {"app": "idle"}))

    pods = wait_deployment_ready(kube, namespace, "idle", 3)

    for pod in pods:
        status = pod["status"]
        assert status["phase"] == "Running"
        assert (status["podIP"], status["hostIP"]) == ("127.0.0.1", "127.0.0.1")
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "Initialized": "True", "Ready": "True", "ContainersReady": "True",
            "PodScheduled": "True",
        }
        (container,) = status["containerStatuses"]
        assert (container["name"], container["image"]) == ("app", PAUSE)
        assert (container["ready"], container["started"], container["restartCount"]) == (
            True, True, 0)
        assert "startedAt" in container["state"]["running"]
        # No process: no pid in the container ID, no port to reach it, no log written.
        assert container["containerID"].startswith("pause://")
        assert PORT_ANNOTATION not in (pod["metadata"].get("annotations") or {})
        name = pod["metadata"]["name"]
        assert not (sandbox.workdir / "logs" / "pods" / f"{namespace}_{name}_app.log").exists()
    status = kube.get("Deployment", namespace, "idle")["status"]  # type: ignore[index]
    assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == (3, 3, 3)

    # The Service has a data-plane port, and its endpoints are the ready pause pods:
    # a request is sent to one of them, which refuses it (nothing listens), as on a cluster.
    url = sandbox.service_url(namespace, "idle")
    names = {p["metadata"]["name"] for p in pods}
    answers = [httpx.get(f"{url}/", timeout=10) for _ in range(3)]
    assert {a.status_code for a in answers} == {502}
    assert {a.headers["X-Sandbox-Pod"] for a in answers} == {f"{namespace}/{n}" for n in names}


def test_scaling_pause_pods_down_removes_them(kube: KubeAPI, namespace: str) -> None:
    kube.create(deployment("idle", namespace, replicas=2, image="pause"))
    wait_deployment_ready(kube, namespace, "idle", 2)

    kube.merge_patch("Deployment", namespace, "idle", {"spec": {"replicas": 0}})

    wait_until(lambda: kube.list("Pod", namespace, "app=idle") == [], timeout=30,
               what="the pause pods to be deleted")

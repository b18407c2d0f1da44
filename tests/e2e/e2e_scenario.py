"""What the e2e scenarios share: the image they run, the cheapest workload (the fake upstream,
whose API key names its revision, so that who answers is known), reading a ModelDeployment's status, and the
`modeldeploy` CLI as a user runs it. The integration tier's tests/integration/rollout/scenario.py
plays this part against the sandbox.

Environment: E2E_IMAGE_TAG (default `dev`, what hack/kind-up.sh builds); E2E_FAKEUPSTREAM_IMAGE
(default the song-analyzer image, run as `python -m fakeupstream`: the workload images install
the whole repository, hack/ included).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e_cluster import Body, Cluster

TAG = os.environ.get("E2E_IMAGE_TAG", "dev")
SERVICE_IMAGE = f"modeldeploy/song-analyzer:{TAG}"
UPSTREAM_IMAGE = os.environ.get("E2E_FAKEUPSTREAM_IMAGE", SERVICE_IMAGE)


def phase(obj: Body) -> str | None:
    status: dict[str, Any] = obj.get("status") or {}
    return status.get("phase")


def settled(obj: Body) -> bool:
    """The operator has seen the current spec and finished with it."""
    status: dict[str, Any] = obj.get("status") or {}
    return status.get("observedGeneration") == obj["metadata"].get("generation") and phase(obj) in {
        "Succeeded",
        "RolledBack",
        "Failed",
        "Degraded",
    }


def modeldeploy(cluster: Cluster, namespace: str, *args: str) -> str:
    """The `modeldeploy` CLI, as a user runs it against the cluster."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "modeldeploy"), "-n", namespace, *args],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout


def marked_template(version: str) -> Body:
    """A pod template of the fake upstream; ``version``, its API_KEY, makes a distinct revision
    and tells which revision answers (Cluster.answers_with_key). Not APP_VERSION: the sandbox's
    kubelet sets that to the image tag, as an image build would."""
    return {"spec": {"containers": [{
        "name": "app",
        "image": UPSTREAM_IMAGE,
        "command": ["python", "-m", "fakeupstream"],
        "env": [{"name": "PORT", "value": "8080"}, {"name": "API_KEY", "value": version}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
    }]}}


def model_deployment(
    name: str, namespace: str, version: str, *, strategy: Body, bake_time: str, replicas: int = 2
) -> Body:
    """A ModelDeployment of the fake upstream, without analysis: only the steps decide."""
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "template": marked_template(version),
            "strategy": copy.deepcopy(strategy),
            "rollback": {"bakeTime": bake_time},
        },
    }


def deploy_first(cluster: Cluster, body: Body) -> str:
    """Create a first ModelDeployment and wait until it is stable; its revision."""
    meta = body["metadata"]
    cluster.create_model_deployment(body)
    first = cluster.wait_for_model_deployment(
        meta["namespace"], meta["name"],
        lambda o: settled(o) and bool((o.get("status") or {}).get("stableRevision")),
    )
    assert phase(first) == "Succeeded", first.get("status")
    revision: str = first["status"]["stableRevision"]
    return revision


def start_rollout(cluster: Cluster, namespace: str, name: str, version: str) -> str:
    """Apply a new template; the canary revision the operator starts rolling out."""
    before = cluster.get_model_deployment(namespace, name)
    spec = copy.deepcopy(before["spec"])
    spec["template"] = marked_template(version)
    cluster.replace_model_deployment_spec(namespace, name, spec)
    previous = (before.get("status") or {}).get("canaryRevision")

    def started(obj: Body) -> bool:
        status: dict[str, Any] = obj.get("status") or {}
        canary = status.get("canaryRevision")
        return bool(canary) and canary != previous and canary != status.get("stableRevision")

    revision: str = cluster.wait_for_model_deployment(namespace, name, started)["status"]["canaryRevision"]
    return revision


def wait_status(
    cluster: Cluster, namespace: str, name: str, holds: Callable[[Body], bool]
) -> Body:
    """Wait until ``holds(status)``; the status."""
    found = cluster.wait_for_model_deployment(namespace, name, lambda o: holds(o.get("status") or {}))
    status: Body = found["status"]
    return status


def wait_paused_at(cluster: Cluster, namespace: str, name: str, step: int) -> Body:
    return wait_status(
        cluster, namespace, name, lambda s: s.get("phase") == "Paused" and s.get("currentStep") == step
    )


def entry_of(status: Body, revision: str) -> Body:
    """The one status.history entry of ``revision``."""
    entries = [e for e in status.get("history") or [] if e.get("revision") == revision]
    assert len(entries) == 1, f"revision {revision}: {len(entries)} history entries: {status.get('history')}"
    entry: Body = entries[0]
    return entry

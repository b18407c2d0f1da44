"""The operator acts only on objects its ModelDeployment controls (ownerReference UID).

An object that merely carries the ``modeldeploy.io/name`` label, or merely has the name a
rollout wants, is someone else's: the operator leaves it exactly as it was and names it
in the status (condition ObjectConflict) and in one Warning Event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from operator_process import OperatorProcess, kubectl_apply
from scenario import condition, md_events, model_deployment, template, wait_phase, wait_status

pytestmark = pytest.mark.integration

PAUSE = "registry.k8s.io/pause:3.9"
SOMEONE_ELSES_REVISION = "0123456789"


def foreign_deployment(namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A Deployment a user created by hand: no ownerReference at all."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": PAUSE}]},
            },
        },
    }


def has_conflict(status: dict[str, Any], text: str) -> bool:
    return any(c.get("type") == "ObjectConflict" and c.get("status") == "True"
               and text in c.get("message", "") for c in status.get("conditions") or [])


def test_an_unowned_deployment_named_like_a_revision_is_reported_and_never_deleted(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    intruder = f"app-{SOMEONE_ELSES_REVISION}"
    created = kube.create(foreign_deployment(namespace, intruder, {
        "modeldeploy.io/name": "app", "modeldeploy.io/revision": SOMEONE_ELSES_REVISION,
    }))
    kubectl_apply(model_deployment("app", namespace, template("1"), replicas=1),
                  Path(sandbox.kubeconfig))

    wait_phase(kube, namespace, "app", "Succeeded")
    status = wait_status(kube, namespace, "app", lambda s: has_conflict(s, intruder),
                         f"an ObjectConflict condition naming {intruder}")
    assert "controlled by nobody" in condition(status, "ObjectConflict")["message"]
    wait_until(lambda: any(e.get("reason") == "ObjectConflict" and intruder in e.get("message", "")
                           for e in md_events(kube, namespace, "app")),
               timeout=30, what="a Warning ObjectConflict event")

    # The operator reconciles on every change of its own objects; by now it has had every
    # chance to delete or scale the intruder. It is the very same object, untouched.
    kept = kube.get("Deployment", namespace, intruder)
    assert kept is not None, "the operator deleted a Deployment it does not own"
    assert kept["metadata"]["uid"] == created["metadata"]["uid"]
    assert kept["spec"]["replicas"] == 1
    assert kept["metadata"]["labels"] == created["metadata"]["labels"]
    assert sum(1 for e in md_events(kube, namespace, "app")
               if e.get("reason") == "ObjectConflict") == 1, "one Event per cause, not per tick"


def test_an_unowned_service_with_the_model_deployments_name_is_left_as_it_was(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    theirs = kube.create({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "app", "namespace": namespace, "labels": {"team": "theirs"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80, "targetPort": 9090}]},
    })
    kubectl_apply(model_deployment("app", namespace, template("1"), replicas=1),
                  Path(sandbox.kubeconfig))

    status = wait_status(kube, namespace, "app", lambda s: has_conflict(s, "Service app"),
                         "an ObjectConflict condition naming Service app")
    assert "controlled by nobody" in condition(status, "ObjectConflict")["message"]
    # (The sandbox's data plane writes its status, as a load-balancer controller would.)
    service = kube.get("Service", namespace, "app")
    assert service is not None
    assert service["metadata"] == {**theirs["metadata"],
                                   "resourceVersion": service["metadata"]["resourceVersion"]}, (
        "the operator patched a Service it does not own"
    )
    assert service["spec"] == theirs["spec"]

    # Once the user removes it, the operator creates its own, and the conflict clears.
    kube.delete("Service", namespace, "app")
    status = wait_status(
        kube, namespace, "app",
        lambda s: any(c.get("type") == "ObjectConflict" and c.get("status") == "False"
                      for c in s.get("conditions") or []),
        "the ObjectConflict condition to clear",
    )
    ours = kube.get("Service", namespace, "app")
    assert ours is not None
    assert [r["uid"] for r in ours["metadata"]["ownerReferences"]] == [
        kube.http.get(f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments/app")
        .json()["metadata"]["uid"]
    ]

"""A first deployment goes straight to 100%: nothing to compare a canary against."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from operator_process import OperatorProcess, kubectl_apply
from operator_process import model_deployment as shared_model_deployment

pytestmark = pytest.mark.integration


def model_deployment(name: str, namespace: str, mark: str) -> dict[str, Any]:
    return shared_model_deployment(
        name, namespace, env={"MARK": mark},
        strategy={"canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]}},
    )


def test_first_deployment_is_promoted_without_steps(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    kubectl_apply(model_deployment("first", namespace, "1"), Path(sandbox.kubeconfig))

    def succeeded() -> dict[str, Any] | None:
        response = kube.http.get(
            f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments/first"
        )
        status: dict[str, Any] = response.json().get("status") or {}
        return status if status.get("phase") == "Succeeded" else None

    status = wait_until(succeeded, timeout=60, what="the first deployment to succeed")
    assert status["history"][0]["reason"] == "first deployment"
    deployment = kube.get("Deployment", namespace, f"first-{status['stableRevision']}")
    assert deployment is not None and deployment["status"]["readyReplicas"] == 2


def test_deleting_a_model_deployment_removes_everything_it_owns_without_a_finalizer(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    kubectl_apply(model_deployment("doomed", namespace, "1"), Path(sandbox.kubeconfig))
    path = f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments/doomed"
    wait_until(lambda: (kube.http.get(path).json().get("status") or {}).get("phase") == "Succeeded",
               timeout=60, what="the deployment to succeed")
    assert not kube.http.get(path).json()["metadata"].get("finalizers")
    selector = "modeldeploy.io/name=doomed"
    assert kube.list("Deployment", namespace, selector) and kube.list("Service", namespace, selector)

    assert kube.http.delete(path).status_code == 200
    wait_until(
        lambda: not kube.list("Deployment", namespace, selector)
        and not kube.list("Service", namespace, selector)
        and not kube.list("Pod", namespace, selector),
        timeout=60, what="the owned Deployments, Services and pods to be garbage-collected",
    )
    assert kube.http.get(path).status_code == 404


def test_deleting_the_namespace_of_a_model_deployment_raises_no_error_in_the_operator(
    sandbox: Sandbox, kube: KubeAPI, operator: OperatorProcess
) -> None:
    """While a namespace terminates, the API server refuses new objects (403); the operator
    must not fight that by recreating what the namespace's deletion removes, nor log errors."""
    doomed = f"gone-{uuid.uuid4().hex[:8]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": doomed}})
    kubectl_apply(model_deployment("app", doomed, "1"), Path(sandbox.kubeconfig))
    path = f"/apis/modeldeploy.io/v1alpha1/namespaces/{doomed}/modeldeployments/app"
    wait_until(lambda: (kube.http.get(path).json().get("status") or {}).get("phase") == "Succeeded",
               timeout=60, what="the deployment to succeed")

    kube.delete("Namespace", "", doomed)
    wait_until(lambda: kube.http.get(f"/api/v1/namespaces/{doomed}").status_code == 404,
               timeout=60, what=f"namespace {doomed} to be gone")
    log = operator.log_path.read_text()
    assert f"tick of {doomed}/app failed" not in log, operator.log_tail()

"""An invalid ModelDeployment never touches what runs, and says what is wrong.

Two gates: the API server refuses what the CRD schema can express (kubectl apply fails
with 422 naming the field, nothing is stored); the operator refuses the rest (rules
the schema cannot express), reports it in status and an Event, and applies nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from operator_process import OperatorProcess, run
from scenario import (
    JSON,
    MD_PATH,
    User,
    condition,
    deploy_first,
    deployment,
    md_get,
    md_status,
    model_deployment,
    pod_pids,
    template,
    wait_event,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "invalid"
STEPS: list[JSON] = [{"setWeight": 50}]
PROMETHEUS = {"prometheus": {"address": "http://127.0.0.1:9"}}


def manifest(namespace: str, mark: str, **spec: Any) -> JSON:
    return model_deployment(NAME, namespace, template(mark), replicas=2, steps=STEPS, **spec)


def running_state(kube: KubeAPI, namespace: str, revision: str) -> JSON:
    """What must not move: the Deployment's version, generation and size, its pods' pids."""
    found = deployment(kube, namespace, NAME, revision)
    return {
        "resourceVersion": found["metadata"]["resourceVersion"],
        "generation": found["metadata"]["generation"],
        "replicas": found["spec"]["replicas"],
        "pids": pod_pids(kube, namespace, NAME, revision),
    }


def observed(generation: int) -> Callable[[JSON], bool]:
    return lambda status: status.get("observedGeneration") == generation


def test_a_spec_only_the_operator_can_refuse_is_reported_in_status_and_touches_nothing(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    stable = deploy_first(user, kube, manifest(namespace, "v1"))
    before = running_state(kube, namespace, stable)
    assert len(before["pids"]) == 2

    cases = [
        (
            {"metrics": [{
                "name": "cost", "query": "sum(rate(model_cost_usd_total{pod=~'{{pod}}'}[1m]))",
                "thresholdRange": {"max": 1},
            }]},
            "spec.analysis.metrics[0].query: unknown placeholder {{pod}}",
        ),
        (
            {"rollbackIndicators": [{"metric": "no-such-metric", "thresholdRange": {"min": 1}}]},
            "spec.analysis: rollbackIndicators[0].metric 'no-such-metric' is neither a built-in metric "
            "nor listed in analysis.metrics",
        ),
    ]
    manifests = [(manifest(namespace, "v2", analysis={"provider": PROMETHEUS, **broken}), why)
                 for broken, why in cases]
    # A mirror step the spec's router (replicas) cannot carry out.
    mirrored = manifest(namespace, "v2", analysis={"provider": PROMETHEUS})
    mirrored["spec"]["strategy"]["canary"]["steps"] = [
        {"mirror": {"percent": 20, "duration": "1m"}}, {"setWeight": 50}]
    manifests.append((mirrored, "spec.strategy.canary.steps[0].mirror: the replicas router "
                                "cannot copy requests"))
    for broken_manifest, explanation in manifests:
        # A new template too: had the operator acted on the spec, a rollout would start.
        user.apply(broken_manifest)
        generation = md_get(kube, namespace, NAME)["metadata"]["generation"]
        status = wait_status(
            kube, namespace, NAME, observed(generation), f"generation {generation} to be observed"
        )
        ready = condition(status, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert explanation in ready["message"]
        assert status["message"].startswith("spec is invalid, nothing was changed: ")
        assert explanation in status["message"]
        event = wait_event(kube, namespace, NAME, "InvalidSpec", explanation)
        assert event["type"] == "Warning"
        # Nothing started, nothing running moved.
        assert status["phase"] == "Succeeded" and "canaryRevision" not in status
        assert status["stableRevision"] == stable
        assert running_state(kube, namespace, stable) == before
        assert [d["metadata"]["name"] for d in kube.list("Deployment", namespace)] == [
            f"{NAME}-{stable}"
        ]

    # Still the same operator process (no crash loop), and a valid change works.
    assert operator.process is not None and operator.process.poll() is None
    assert operator.starts == 1
    user.apply(manifest(namespace, "v3"))
    done = wait_status(
        kube, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") not in (None, stable),
        "the next valid template to be rolled out",
    )
    assert condition(done, "Ready")["reason"] == "RolloutCompleted"


def test_a_spec_the_schema_refuses_is_rejected_by_the_api_server_and_touches_nothing(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    stable = deploy_first(user, kube, manifest(namespace, "v1"))
    before = running_state(kube, namespace, stable)
    stored = md_get(kube, namespace, NAME)

    for step, field in [
        ({"setWeight": 150}, "spec.strategy.canary.steps[0].setWeight"),
        ({"evaluation": {"configMap": "eval", "path": "/analyze", "minScore": 2}},
         "spec.strategy.canary.steps[0].evaluation.minScore"),
        ({"mirror": {"percent": 0, "duration": "1m"}}, "spec.strategy.canary.steps[0].mirror.percent"),
    ]:
        broken = manifest(namespace, "v2")
        broken["spec"]["strategy"]["canary"]["steps"] = [step]
        # -v=6 makes kubectl log each request's status code.
        refused = run(
            ["kubectl", "apply", "-v=6", "-f", "-"], user.kubeconfig, check=False,
            stdin=yaml.safe_dump(broken),
        )
        assert "422 Unprocessable Entity" in refused
        assert f'The ModelDeployment "{NAME}" is invalid' in refused
        assert field in refused, refused

    # The same change over plain HTTP: 422 Unprocessable Entity, the field in the causes.
    response = kube.http.patch(
        MD_PATH.format(ns=namespace, name=NAME),
        json={"spec": {"strategy": {"canary": {"steps": [{"setWeight": 150}]}}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 422
    body = response.json()
    assert (body["kind"], body["reason"]) == ("Status", "Invalid")
    fields = [cause.get("field") for cause in body["details"]["causes"]]
    assert "spec.strategy.canary.steps[0].setWeight" in fields

    # Nothing was stored, so nothing changed: same object, same running pods.
    after = md_get(kube, namespace, NAME)
    assert after["metadata"]["generation"] == stored["metadata"]["generation"]
    assert after["spec"] == stored["spec"]
    assert md_status(kube, namespace, NAME)["phase"] == "Succeeded"
    assert running_state(kube, namespace, stable) == before
    assert operator.process is not None and operator.process.poll() is None


def test_a_pod_template_the_policy_refuses_is_reported_and_touches_nothing(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, crds_installed: None, tmp_path: Path
) -> None:
    """With the chart's podTemplatePolicy (restricted), a template that would run as
    another ServiceAccount with the node's filesystem is refused like an invalid spec."""
    operator = OperatorProcess(Path(sandbox.kubeconfig), tmp_path,
                               extra_env={"MODELDEPLOY_POD_TEMPLATE_POLICY": "restricted"})
    operator.start()
    try:
        user = User(sandbox, namespace)
        stable = deploy_first(user, kube, manifest(namespace, "v1"))
        before = running_state(kube, namespace, stable)

        escaping = manifest(namespace, "v2")
        pod_spec = escaping["spec"]["template"]["spec"]
        pod_spec["serviceAccountName"] = "deployer"
        pod_spec["volumes"] = [{"name": "node", "hostPath": {"path": "/"}}]
        user.apply(escaping)
        generation = md_get(kube, namespace, NAME)["metadata"]["generation"]
        status = wait_status(
            kube, namespace, NAME, observed(generation), f"generation {generation} to be observed"
        )
        ready = condition(status, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        for field in ("spec.template.spec.serviceAccountName: ServiceAccount 'deployer' is not allowed",
                      "spec.template.spec.volumes[0].hostPath: hostPath volumes are not allowed"):
            assert field in status["message"], status["message"]
        wait_event(kube, namespace, NAME, "InvalidSpec", "spec.template.spec.volumes[0].hostPath")
        assert status["stableRevision"] == stable and "canaryRevision" not in status
        assert running_state(kube, namespace, stable) == before
        assert [d["metadata"]["name"] for d in kube.list("Deployment", namespace)] == [
            f"{NAME}-{stable}"
        ]
    finally:
        operator.stop()

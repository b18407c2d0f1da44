"""A write the API server refuses reaches the status, and the rollout does not hang on it.

An admission webhook (or a quota) that refuses the canary's Deployment is played by the
sandbox's fault injection: the operator's creates of Deployments in the namespace are
answered 403 with a webhook's message, as kube-apiserver answers them. The status
must say so (condition ActionFailed with the server's message, one Warning Event),
progressDeadline must keep counting and abort the rollout with that reason, stable must
serve throughout, and once the webhook lets the write through, `modeldeploy retry` rolls
the revision out.
"""

from __future__ import annotations

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from operator_process import OperatorProcess
from scenario import (
    JSON,
    User,
    condition,
    deploy_first,
    deployment,
    md_events,
    model_deployment,
    pod_pids,
    start_rollout,
    template,
    wait_phase,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "refused"
STEPS: list[JSON] = [{"setWeight": 50}, {"pause": {}}]
# Long enough for the retried canary to start on a busy machine (it applies after the retry too).
DEADLINE = "20s"
WEBHOOK_MESSAGE = ('admission webhook "images.policy.example.com" denied the request: '
                   "image modeldeploy/fake-upstream:v1 is not from registry.example.com")


def manifest(namespace: str, mark: str, deadline: str) -> JSON:
    return model_deployment(NAME, namespace, template(mark), strategy={"canary": {"steps": STEPS}},
                            progressDeadline=deadline)


def test_a_refused_canary_deployment_is_reported_and_aborted_at_the_progress_deadline(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    stable = deploy_first(user, kube, manifest(namespace, "v1", "60s"))
    stable_pids = pod_pids(kube, namespace, NAME, stable)

    refusal = kube.inject_fault(
        verbs=["create"], resources=["deployments"], namespace=namespace,
        userAgent="modeldeploy-operator", status=403, reason="Forbidden", message=WEBHOOK_MESSAGE,
    )
    canary = start_rollout(user, kube, manifest(namespace, "v2", DEADLINE))

    refused = wait_status(
        kube, namespace, NAME,
        lambda s: any(c["type"] == "ActionFailed" and c["status"] == "True"
                      for c in s.get("conditions") or []),
        "the refusal to reach the status",
    )
    failed = condition(refused, "ActionFailed")
    assert failed["reason"] == "Forbidden"
    assert failed["message"] == (
        f"creating or updating Deployment {NAME}-{canary} (canary, 1 replicas): the API server "
        f"answered 403 Forbidden: {WEBHOOK_MESSAGE}"
    )

    # The deadline counts while the write is refused, and its message says why.
    degraded = wait_phase(kube, namespace, NAME, "Degraded")
    assert condition(degraded, "Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert degraded["message"].startswith(
        f"revision {canary} not ready within progressDeadline {DEADLINE}")
    assert WEBHOOK_MESSAGE in degraded["message"], degraded["message"]
    assert kube.fault_hits(refusal) >= 2, "the refused create is retried"
    warnings = [e for e in md_events(kube, namespace, NAME) if e["reason"] == "ActionFailed"]
    assert len(warnings) == 1, [e["message"] for e in warnings]
    assert warnings[0]["type"] == "Warning" and WEBHOOK_MESSAGE in warnings[0]["message"]

    # Stable was never touched.
    assert kube.get("Deployment", namespace, f"{NAME}-{canary}") is None
    assert deployment(kube, namespace, NAME, stable)["spec"]["replicas"] == 2
    assert pod_pids(kube, namespace, NAME, stable) == stable_pids

    # The webhook lets it through: a retry rolls the revision out, and the condition clears.
    kube.clear_fault(refusal)
    user.modeldeploy("retry", NAME)
    resumed = wait_status(
        kube, namespace, NAME,
        lambda s: s.get("canaryRevision") == canary and s.get("phase") == "Paused"
        and s.get("canaryWeight") == 50,
        "the retried canary to reach its pause at 50%",
    )
    cleared = condition(resumed, "ActionFailed")
    assert (cleared["status"], cleared["reason"]) == ("False", "ActionsApplied")

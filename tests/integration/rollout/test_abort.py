"""`modeldeploy abort` puts all traffic back on stable at once and holds until told otherwise."""

from __future__ import annotations

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from operator_process import OperatorProcess
from scenario import (
    JSON,
    User,
    by_revision,
    condition,
    deploy_first,
    deployment,
    entry_of,
    md_status,
    model_deployment,
    sample,
    start_rollout,
    template,
    wait_event,
    wait_phase,
    wait_served_by,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "abort"
STEPS: list[JSON] = [{"setWeight": 50}, {"pause": {}}]


def manifest(namespace: str, mark: str) -> JSON:
    return model_deployment(NAME, namespace, template(mark), replicas=2, steps=STEPS)


def canary_held_at_half(
    user: User, kube: KubeAPI, sandbox: Sandbox, namespace: str, mark: str
) -> tuple[str, str]:
    """Stable ``v1`` and a canary of ``mark`` paused at 50%, both taking traffic."""
    stable = deploy_first(user, kube, manifest(namespace, "v1"))
    canary = start_rollout(user, kube, manifest(namespace, mark))
    wait_phase(kube, namespace, NAME, "Paused", step=1)
    served = by_revision(sample(sandbox.service_url(namespace, NAME), 20), NAME, [stable, canary])
    assert served[canary] > 0 and served[stable] > 0, served
    return stable, canary


def abort(user: User, kube: KubeAPI, namespace: str, stable: str, canary: str) -> JSON:
    """Abort; check what one reconcile did by the time its status is written."""
    user.modeldeploy("abort", NAME)
    status = wait_phase(kube, namespace, NAME, "Degraded")
    # The tick that wrote Degraded already narrowed the Service to stable and scaled the
    # canary to zero (actions are applied before the status write).
    service = kube.get("Service", namespace, NAME)
    assert service is not None
    assert service["spec"]["selector"]["modeldeploy.io/revision"] == stable
    assert deployment(kube, namespace, NAME, canary)["spec"]["replicas"] == 0
    assert status["canaryWeight"] == 0 and status["stableRevision"] == stable
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutAborted")
    assert entry_of(status, canary)["outcome"] == "Aborted"
    return status


def test_abort_puts_all_traffic_on_stable_and_holds_until_retry(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    stable, canary = canary_held_at_half(user, kube, sandbox, namespace, "v2")

    aborted = abort(user, kube, namespace, stable, canary)
    url = sandbox.service_url(namespace, NAME)
    wait_served_by(url, NAME, [stable], "the Service to serve stable alone")
    served = by_revision(sample(url, 100), NAME, [stable, canary])
    assert served == {stable: 100}

    # It stays aborted: a promote is refused (the operator says so), nothing restarts.
    user.modeldeploy("promote", NAME)
    wait_event(kube, namespace, NAME, "ControlIgnored", "`modeldeploy retry` restarts it")
    still = wait_status(kube, namespace, NAME, lambda s: "control" not in s, "promote consumed")
    assert still["phase"] == "Degraded" and still["message"] == aborted["message"]
    assert "canaryRevision" not in still

    # retry starts the same revision again from its first step.
    user.modeldeploy("retry", NAME)
    retried = wait_phase(kube, namespace, NAME, "Paused", step=1)
    assert retried["canaryRevision"] == canary
    history = retried["history"]
    assert (history[0]["revision"], history[0]["outcome"]) == (canary, "InProgress")
    assert history[0]["reason"] == "retry requested by user"
    assert history[0]["steps"] == ["setWeight 50"]
    assert deployment(kube, namespace, NAME, canary)["spec"]["replicas"] == 1


def test_a_new_spec_after_an_abort_starts_a_new_rollout(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    stable, canary = canary_held_at_half(user, kube, sandbox, namespace, "v2")
    abort(user, kube, namespace, stable, canary)

    newer = start_rollout(user, kube, manifest(namespace, "v3"))
    assert newer != canary
    status = wait_phase(kube, namespace, NAME, "Paused", step=1)
    assert status["canaryRevision"] == newer and status["stableRevision"] == stable
    assert (status["history"][0]["revision"], status["history"][0]["reason"]) == (newer, "new revision")
    assert condition(status, "Degraded")["status"] == "False"
    wait_served_by(
        sandbox.service_url(namespace, NAME), NAME, [stable, newer],
        "stable and the new canary to share the traffic",
    )
    assert md_status(kube, namespace, NAME)["phase"] == "Paused"

"""`modeldeploy abort` puts all traffic back on stable and holds until told otherwise.

Back on stable as fast as stable pods are ready, and never faster: the aborted revision
keeps serving until they are, so the Service always has ready endpoints.
"""

from __future__ import annotations

import time

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, is_ready
from mdsandbox.traffic import TrafficGenerator
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
    """Abort; wait until stable serves alone (the canary served until stable was ready)."""
    user.modeldeploy("abort", NAME)
    wait_phase(kube, namespace, NAME, "Degraded")
    status = wait_status(kube, namespace, NAME, lambda s: s.get("phase") == "Degraded"
                         and "revertingFrom" not in s, "the revert done")
    # The tick that ended the revert already narrowed the Service to stable and scaled
    # the canary to zero (actions are applied before the status write).
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


STARTUP_S = 4  # readiness after 4 s, as a model server loading its weights (scaled down)


def ready_behind_service(kube: KubeAPI, namespace: str) -> int:
    """Ready pods the Service's selector picks: its ready endpoints now."""
    service = kube.get("Service", namespace, NAME)
    assert service is not None
    selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
    return sum(1 for pod in kube.list("Pod", namespace, selector) if is_ready(pod))


def test_an_abort_during_a_bake_without_warm_stable_pods_never_leaves_the_service_empty(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    def slow(mark: str) -> JSON:
        return model_deployment(
            NAME, namespace, template(mark, initial_delay=STARTUP_S), replicas=2,
            strategy={"canary": {"steps": [{"setWeight": 50}], "dynamicStableScale": True}},
            bake_time="10m",
        )

    user = User(sandbox, namespace)
    stable = deploy_first(user, kube, slow("v1"))
    canary = start_rollout(user, kube, slow("v2"))
    baking = wait_status(kube, namespace, NAME,
                         lambda s: s.get("phase") == "Promoting" and bool(s.get("bakeUntil")),
                         "the canary baking at 100%")
    # dynamicStableScale: the previous revision is not kept warm, and the status says so.
    assert deployment(kube, namespace, NAME, stable)["spec"]["replicas"] == 0
    assert f"previous revision {stable} is NOT kept warm" in baking["message"]

    url = sandbox.service_url(namespace, NAME) + "/health"
    with TrafficGenerator(url, method="GET", rate=20, max_seconds=120, timeout_s=10) as traffic:
        user.modeldeploy("abort", NAME)
        endpoints: list[int] = []
        deadline = time.monotonic() + 90
        while True:
            endpoints.append(ready_behind_service(kube, namespace))
            status = md_status(kube, namespace, NAME)
            if (status.get("phase") == "Degraded" and "revertingFrom" not in status
                    and deployment(kube, namespace, NAME, stable)["status"].get(
                        "readyReplicas") == 2):
                break
            assert time.monotonic() < deadline, f"revert not done: {status.get('message')}"
        responses = traffic.responses()

    assert min(endpoints) >= 1, endpoints
    assert responses and all(r.ok for r in responses), TrafficGenerator.statuses(responses)
    assert by_revision(sample(sandbox.service_url(namespace, NAME), 20), NAME,
                       [stable, canary]) == {stable: 20}
    assert deployment(kube, namespace, NAME, canary)["spec"]["replicas"] == 0
    assert entry_of(status, canary)["outcome"] == "Aborted"

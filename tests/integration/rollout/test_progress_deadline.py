"""A canary that never becomes ready is aborted at spec.progressDeadline, saying why."""

from __future__ import annotations

from typing import Any

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
    model_deployment,
    pod_pids,
    sample,
    start_rollout,
    template,
    wait_event,
    wait_phase,
    wait_served_by,
)

pytestmark = pytest.mark.integration

NAME = "deadline"
DEADLINE = "8s"
STEPS: list[JSON] = [{"setWeight": 50}, {"pause": {}}]

CASES = [
    pytest.param(
        # The sandbox node has no GPU. dynamicStableScale (on by default for GPU templates)
        # would give up a stable pod to make room; off, stable keeps every pod.
        {"resources": {"limits": {"nvidia.com/gpu": 1}}},
        {"dynamicStableScale": False},
        "Unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu",
        id="a pod asking for a GPU the cluster lacks",
    ),
    pytest.param(
        # ErrImagePull, then ImagePullBackOff: either way the message names the image.
        {"image": "registry.invalid/no-such-model:1"},
        {},
        'failed to pull image "registry.invalid/no-such-model:1"',
        id="an image that cannot be pulled",
    ),
]


@pytest.mark.parametrize(("broken", "canary_options", "cluster_reason"), CASES)
def test_a_canary_never_ready_is_aborted_at_the_progress_deadline_with_the_cluster_reason(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    broken: dict[str, Any], canary_options: dict[str, Any], cluster_reason: str,
) -> None:
    user = User(sandbox, namespace)

    def manifest(pod_template: dict[str, Any], deadline: str) -> dict[str, Any]:
        strategy = {"canary": {"steps": STEPS, **canary_options}}
        return model_deployment(
            NAME, namespace, pod_template, strategy=strategy, progressDeadline=deadline
        )

    # The first revision gets the default deadline: on a busy machine its pods may take
    # longer than DEADLINE to start, which is not what this test is about.
    stable = deploy_first(user, kube, manifest(template("v1"), "10m"))
    stable_pids = pod_pids(kube, namespace, NAME, stable)
    assert len(stable_pids) == 2

    canary = start_rollout(user, kube, manifest(template("v2", **broken), DEADLINE))
    status = wait_phase(kube, namespace, NAME, "Degraded")

    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert condition(status, "Ready")["reason"] == "ProgressDeadlineExceeded"
    message = status["message"]
    assert message.startswith(f"revision {canary} not ready within progressDeadline {DEADLINE}")
    assert cluster_reason in message
    assert degraded["message"] == message
    assert entry_of(status, canary)["outcome"] == "Aborted"
    event = wait_event(kube, namespace, NAME, "ProgressDeadlineExceeded", cluster_reason)
    assert event["type"] == "Warning"

    # Stable served throughout with the very same pods, and now serves alone.
    assert status["stableRevision"] == stable and status["canaryWeight"] == 0
    assert deployment(kube, namespace, NAME, canary)["spec"]["replicas"] == 0
    assert deployment(kube, namespace, NAME, stable)["spec"]["replicas"] == 2
    assert pod_pids(kube, namespace, NAME, stable) == stable_pids
    url = sandbox.service_url(namespace, NAME)
    wait_served_by(url, NAME, [stable], "stable to serve alone")
    assert by_revision(sample(url, 50), NAME, [stable]) == {stable: 50}

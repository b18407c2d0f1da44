"""A template change is canaried step by step, held for a person, and promoted with the CLI."""

from __future__ import annotations

import getpass

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from operator_process import OperatorProcess
from scenario import (
    JSON,
    User,
    by_revision,
    deploy_first,
    deployment,
    entry_of,
    md_events,
    model_deployment,
    revision_pods,
    sample,
    start_rollout,
    template,
    wait_phase,
    wait_served_by,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "canary"
REPLICAS = 4
STEPS: list[JSON] = [
    {"setWeight": 10},
    {"pause": {"duration": "2s"}},
    {"setWeight": 50},
    {"pause": {}},
    {"setWeight": 100},
]
# Strict round-robin over ready pods: the split is exact to within one request per pod.
SPLIT_TOLERANCE = 5  # percentage points
SAMPLE = 200


def test_a_template_change_is_canaried_paused_for_promotion_then_promoted_with_the_cli(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    stable = deploy_first(
        user, kube, model_deployment(NAME, namespace, template("v1"), replicas=REPLICAS, steps=STEPS)
    )
    canary = start_rollout(
        user, kube, model_deployment(NAME, namespace, template("v2"), replicas=REPLICAS, steps=STEPS)
    )

    # The first pause holds at 10% (one canary pod beside four stable: 20% served).
    paused = wait_phase(kube, namespace, NAME, "Paused", step=1)
    assert paused["canaryWeight"] == 20
    assert paused["message"].startswith("step 2/6 pause 2s")

    # Then 50%, held until a person promotes.
    held = wait_phase(kube, namespace, NAME, "Paused", step=3)
    assert held["canaryWeight"] == 50
    assert held["message"] == "step 4/6 pause: paused until `modeldeploy promote`"
    assert "paused until `modeldeploy promote`" in user.modeldeploy("status", NAME)

    # The Service's port splits traffic as status.canaryWeight says.
    served = by_revision(sample(sandbox.service_url(namespace, NAME), SAMPLE), NAME, [stable, canary])
    share = 100 * served[canary] / SAMPLE
    assert abs(share - held["canaryWeight"]) <= SPLIT_TOLERANCE, served

    user.modeldeploy("promote", NAME)
    done = wait_status(
        kube, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == canary,
        "the promoted canary to become stable",
    )

    who = getpass.getuser()
    assert entry_of(done, canary)["outcome"] == "Promoted"
    assert entry_of(done, canary)["steps"] == [
        "setWeight 10", "pause 2s", "setWeight 50", f"promoted by {who}", "setWeight 100",
        "full 100%", "bake 2s", "baked 2s",
    ]
    completed = [e["message"] for e in md_events(kube, namespace, NAME) if e["reason"] == "StepCompleted"]
    assert completed == [
        "step 1/6 setWeight 10 done",
        "step 2/6 pause 2s done",
        "step 3/6 setWeight 50 done",
        f"step 4/6 pause: promoted by {who}",
        "step 5/6 setWeight 100 done",
        "step 6/6 full 100% done",
    ]
    assert "RolloutCompleted" in [e["reason"] for e in md_events(kube, namespace, NAME)]

    # 100% on the new revision; the old one scaled to zero (kept for a quick way back).
    assert done["canaryWeight"] == 0 and "canaryRevision" not in done
    assert deployment(kube, namespace, NAME, stable)["spec"]["replicas"] == 0
    wait_until(
        lambda: not revision_pods(kube, namespace, NAME, stable),
        timeout=30, what="the old revision's pods to be gone",
    )
    wait_served_by(
        sandbox.service_url(namespace, NAME), NAME, [canary], "the new revision to serve everything"
    )


def test_seven_replicas_at_10_percent_get_past_the_step_their_pods_serve(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    """One canary pod beside seven stable ones serves 1/8 = 12.5% of requests: the step is
    verified in pods (1 canary + 7 stable ready behind the Service), not as two percentages
    rounded two ways (13 planned, 12 read back), which held it until progressDeadline."""
    user = User(sandbox, namespace)
    steps: list[JSON] = [{"setWeight": 10}]
    pause_image = "registry.k8s.io/pause:3.9"  # ready at once, no process: a fast rollout

    def manifest(mark: str) -> JSON:
        return model_deployment(NAME, namespace, template(mark, image=pause_image), replicas=7,
                                steps=steps, bake_time="0s")

    deploy_first(user, kube, manifest("v1"))
    canary = start_rollout(user, kube, manifest("v2"))
    done = wait_status(
        kube, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == canary,
        "the canary to pass setWeight 10 and be promoted",
    )
    assert entry_of(done, canary)["steps"] == ["setWeight 10", "full 100%", "promoted"]

"""Re-applying a template that was stable before (a `git revert`) rolls out without pauses."""

from __future__ import annotations

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from operator_process import OperatorProcess
from scenario import (
    JSON,
    User,
    deploy_first,
    entry_of,
    md_events,
    model_deployment,
    start_rollout,
    template,
    wait_phase,
    wait_served_by,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "revert"
# Without promote, the pause below would hold a rollout for ever.
STEPS: list[JSON] = [{"setWeight": 50}, {"pause": {}}]


def manifest(namespace: str, mark: str) -> JSON:
    return model_deployment(NAME, namespace, template(mark), replicas=2, steps=STEPS, bake_time="2s")


def test_reapplying_a_previously_stable_template_is_rolled_out_as_known_good_without_pauses(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    old = deploy_first(user, kube, manifest(namespace, "v1"))
    new = start_rollout(user, kube, manifest(namespace, "v2"))
    wait_phase(kube, namespace, NAME, "Paused", step=1)
    user.modeldeploy("promote", NAME)
    wait_status(
        kube, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == new,
        "v2 to be promoted",
    )

    # git revert: v1's manifest comes back (a fast rollout may finish between two polls,
    # so this waits for its end; its history entry shows it ran).
    user.apply(manifest(namespace, "v1"))
    done = wait_status(
        kube, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == old,
        "the known-good revision to be rolled out with no promote",
    )

    entry = entry_of(done, old)
    assert entry["outcome"] == "Promoted"
    assert entry["steps"] == [
        "setWeight 50", "skipped pause", "full 100%", "known-good revision promoted without bake"]
    events = md_events(kube, namespace, NAME)
    started = [e["message"] for e in events if e["reason"] == "RolloutStarted"]
    assert started[-1] == (
        f"rolling out revision {old} (stable: {new}): "
        "new revision; known-good revision: pauses and analysis skipped"
    )
    # Only v2's rollout ever paused.
    assert [e["reason"] for e in events].count("RolloutPaused") == 1
    wait_served_by(sandbox.service_url(namespace, NAME), NAME, [old], "v1 to serve everything")

"""An operator killed at any moment of a rollout resumes it: no step skipped, none done twice.

A ModelDeployment is rolled out uninterrupted (the reference), and, in one test per
phase, with the operator SIGKILLed in that phase (no clean-up at all, as when its node
dies) and a fresh process started. Every rollout must record the reference's steps in
status.history, in the same order.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from operator_process import OperatorProcess
from scenario import (
    JSON,
    User,
    deploy_first,
    entry_of,
    md_status,
    model_deployment,
    start_rollout,
    template,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "restart"
STEPS: list[JSON] = [{"setWeight": 50}, {"pause": {"duration": "2s"}}, {"pause": {}}]


@dataclass(frozen=True)
class Phase:
    """A moment of a rollout, recognised in its status."""

    name: str
    holds: Callable[[JSON, str], bool]


SET_WEIGHT_WAIT = Phase(
    "waiting for the canary at setWeight 50",
    lambda s, rev: s.get("canaryRevision") == rev and s.get("currentStep") == 0
    and "waiting for canary" in s.get("message", ""),
)
TIMED_PAUSE = Phase(
    "in the timed pause",
    lambda s, rev: s.get("canaryRevision") == rev and s.get("currentStep") == 1
    and s.get("phase") == "Paused",
)
UNTIL_PROMOTE = Phase(
    "paused until promote",
    lambda s, rev: s.get("canaryRevision") == rev and s.get("currentStep") == 2
    and s.get("phase") == "Paused",
)
BAKE = Phase(
    "baking",
    lambda s, rev: s.get("canaryRevision") == rev and bool(s.get("bakeUntil")),
)


def manifest(namespace: str, mark: str) -> JSON:
    # A 2 s readiness delay keeps every setWeight step waiting long enough to be caught.
    return model_deployment(
        NAME, namespace, template(mark, initial_delay=2), replicas=2, steps=STEPS, bake_time="2s"
    )


def roll_out(
    user: User, kube: KubeAPI, operator: OperatorProcess, namespace: str, mark: str,
    kill_in: Phase | None,
) -> list[str]:
    """Roll a new template out to the end, killing the operator once in ``kill_in``;
    the steps its history entry records."""
    revision = start_rollout(user, kube, manifest(namespace, mark))

    def checkpoint(phase: Phase) -> None:
        wait_status(kube, namespace, NAME, lambda s: phase.holds(s, revision), phase.name)
        if phase is not kill_in:
            return
        operator.kill()
        assert phase.holds(md_status(kube, namespace, NAME), revision), (
            f"the rollout left {phase.name} before the kill; the scenario missed its moment"
        )
        if phase is UNTIL_PROMOTE:
            # Asked while no operator runs: the next one acts on it, once.
            user.modeldeploy("promote", NAME)
        operator.start()

    checkpoint(SET_WEIGHT_WAIT)
    checkpoint(TIMED_PAUSE)
    checkpoint(UNTIL_PROMOTE)
    if kill_in is not UNTIL_PROMOTE:
        user.modeldeploy("promote", NAME)
    checkpoint(BAKE)
    status = wait_status(
        kube, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == revision,
        f"revision {revision} to be promoted",
    )
    entry = entry_of(status, revision)
    assert entry["outcome"] == "Promoted", entry
    steps: list[str] = entry["steps"]
    return steps


# What an uninterrupted rollout of STEPS records (test_an_uninterrupted_rollout_... checks it).
REFERENCE_STEPS = [
    "setWeight 50", "pause 2s", f"promoted by {getpass.getuser()}", "full 100%", "bake 2s",
    "baked 2s",
]


def test_an_uninterrupted_rollout_records_the_reference_steps(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    deploy_first(user, kube, manifest(namespace, "v0"))
    assert roll_out(user, kube, operator, namespace, "reference", kill_in=None) == REFERENCE_STEPS
    assert operator.starts == 1


# One test per phase (not one loop) so that pytest-xdist runs them side by side.
@pytest.mark.parametrize("phase", [SET_WEIGHT_WAIT, TIMED_PAUSE, UNTIL_PROMOTE, BAKE],
                         ids=lambda phase: phase.name)
def test_a_rollout_interrupted_in_a_phase_completes_with_the_steps_of_an_uninterrupted_one(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess, phase: Phase
) -> None:
    user = User(sandbox, namespace)
    deploy_first(user, kube, manifest(namespace, "v0"))
    steps = roll_out(user, kube, operator, namespace, "killed", kill_in=phase)
    assert steps == REFERENCE_STEPS, f"killed {phase.name}: {steps} != {REFERENCE_STEPS}"
    assert operator.starts == 2

"""An operator restarted mid-rollout resumes where it was, on a real cluster: its pod is killed
(deleted with no grace period, as when its node dies) in the timed pause, while paused until
promote (with `modeldeploy promote` asked as it goes) and in the bake; each time the chart's
Deployment starts a new pod, and the rollout ends with every step recorded once, in order
(tests/integration/rollout/test_restart_safety.py's scenario, where the operator is a local
process SIGKILLed and started again).

Needs the operator running in the cluster (hack/kind-up.sh's chart release; E2E_OPERATOR_NAMESPACE
and E2E_OPERATOR_SELECTOR find another); skipped where it runs outside (hack/e2e-on-sandbox).
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from e2e_cluster import OPERATOR_NAMESPACE, OPERATOR_SELECTOR, Body, Cluster
from e2e_scenario import deploy_first, entry_of, model_deployment, modeldeploy, start_rollout, wait_status

pytestmark = pytest.mark.e2e

NAME = "restart"
# Long enough that the rollout is still in the pause, or the bake, when the kill lands.
PAUSE, BAKE_TIME = "30s", "30s"
STEPS: list[Body] = [{"setWeight": 50}, {"pause": {"duration": PAUSE}}, {"pause": {}}]


@dataclass(frozen=True)
class Phase:
    """A moment of a rollout, recognised in its status."""

    name: str
    holds: Callable[[Body, str], bool]


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
BAKE = Phase("baking", lambda s, rev: s.get("canaryRevision") == rev and bool(s.get("bakeUntil")))


@pytest.fixture
def operator_in_cluster(cluster: Cluster) -> None:
    if not cluster.operator_pods():
        pytest.skip(f"no operator pod in {OPERATOR_NAMESPACE} matches {OPERATOR_SELECTOR}: the "
                    "operator runs outside the cluster (hack/e2e-on-sandbox), nothing to restart")


def test_an_operator_restarted_mid_rollout_resumes_it_with_no_step_skipped_or_repeated(
    cluster: Cluster, namespace: str, operator_in_cluster: None
) -> None:
    deploy_first(cluster, model_deployment(
        NAME, namespace, "v0", strategy={"canary": {"steps": STEPS}}, bake_time=BAKE_TIME
    ))
    revision = start_rollout(cluster, namespace, NAME, "v1")
    restarts: list[str] = []
    for phase in (TIMED_PAUSE, UNTIL_PROMOTE, BAKE):
        wait_status(cluster, namespace, NAME, lambda s, phase=phase: phase.holds(s, revision))
        killed = cluster.kill_operator()
        status = cluster.get_model_deployment(namespace, NAME).get("status") or {}
        assert phase.holds(status, revision), (
            f"the rollout left {phase.name} before the kill; the scenario missed its moment"
        )
        if phase is UNTIL_PROMOTE:
            # Asked while the operator is down or starting: the new one acts on it, once.
            modeldeploy(cluster, namespace, "promote", NAME)
        restarts.append(cluster.wait_for_new_operator(killed))

    done = wait_status(
        cluster, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == revision,
    )
    entry = entry_of(done, revision)
    assert entry["outcome"] == "Promoted", entry
    assert entry["steps"] == [
        "setWeight 50", f"pause {PAUSE}", f"promoted by {getpass.getuser()}", "full 100%",
        f"bake {BAKE_TIME}", f"baked {BAKE_TIME}",
    ]
    assert len(set(restarts)) == 3, f"three new operator pods, one per kill: {restarts}"

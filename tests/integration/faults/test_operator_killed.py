"""The operator SIGKILLed during an analysis step, and during a revert, resumes from status.

A fresh process is started after each kill (``OperatorProcess.kill()`` then ``start()``:
no clean-up at all, as when its node dies), as in
tests/integration/rollout/test_restart_safety.py:

- **during an analysis step**, after at least one measured round: the rollout completes
  with the steps an uninterrupted one records (``ANALYSIS_REFERENCE``, holds aside), and the analysis
  counters go on from status (README, "Analysis"): each gate's passes in a row continue
  where the killed process left them, neither reset nor counted twice, and the first
  round after the restart waits for its interval from the last one recorded (the
  runner's ``round_due``), so no round is measured early either;
- **during a revert** (`modeldeploy abort` during a bake with dynamicStableScale: stable
  has no pod, the canary serves alone and gives up one of its two pods so that a stable
  pod can start), killed while ``status.revertingFrom`` is set and that stable pod is
  still starting, the canary's last pod serving alone: the revert completes with the
  steps of an uninterrupted abort, and the Service always has ready endpoints: traffic
  sent through it the whole time, kill included, never fails.

The reference steps are what an uninterrupted rollout of the same spec records (the
step texts of modeldeploy.engine.steps, "bake", "baked" and the abort's message, as in
test_restart_safety's uninterrupted run).
"""

from __future__ import annotations

import getpass

import pytest
from analysis.analysis_support import (
    INTERVAL,
    JSON,
    SONG_ANALYZER_GATES,
    SONG_V1,
    SONG_V2,
    StatusTrail,
    apply,
    assert_passes_counted_in_a_row,
    parse_stamp,
    song_analyzer,
    status_of,
    wait_canary,
    wait_first_pass,
    wait_stable,
)
from analysis.analysis_support import wait_status as wait_analysis_status
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, is_ready, wait_until
from mdsandbox.traffic import TrafficGenerator, song_request
from operator_process import OperatorProcess
from rollout.scenario import (
    User,
    deploy_first,
    deployment,
    entry_of,
    md_events,
    md_status,
    model_deployment,
    start_rollout,
    template,
    wait_status,
)

pytestmark = pytest.mark.integration

MEASUREMENTS = 3
ANALYSIS_STEPS: list[JSON] = [
    {"setWeight": 50}, {"analysis": {"measurements": MEASUREMENTS}}, {"setWeight": 100},
]
ANALYSIS_REFERENCE = [
    "setWeight 50", f"analysis {MEASUREMENTS}/{MEASUREMENTS} passed", "setWeight 100",
    "full 100%", "bake 1s", "baked 1s",
]

# Holds on inconclusive analysis are recorded beside the steps. A canary pod that starts
# slowly (a loaded machine) has no model requests in its first rounds, and four such
# rounds hold the rollout until it has some, killed or not: not a step.
HOLDS = ("analysis inconclusive: ", "analysis conclusive again: resumed")


def steps_only(records: list[str]) -> list[str]:
    return [record for record in records if not record.startswith(HOLDS)]


def test_an_operator_killed_during_an_analysis_step_goes_on_counting_from_status(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
) -> None:
    if sandbox.prometheus_url is None:
        pytest.skip("analysis needs Prometheus: Debian's prometheus package (hack/setup installs it)")
    name = "killed-analysing"

    def manifest(model: str, tag: str) -> JSON:
        body = song_analyzer(name, namespace, sandbox, model=model, tag=tag, steps=ANALYSIS_STEPS)
        body["spec"]["replicas"] = 1  # canary and stable one pod each at 50%, canary alone at 100%
        return body

    apply(manifest(SONG_V1, "1.0.0"), sandbox)
    stable = wait_stable(kube, namespace, name)
    trail = StatusTrail()
    url = sandbox.service_url(namespace, name) + "/analyze"
    with TrafficGenerator(url, body=song_request, rate=12, max_seconds=240, timeout_s=15):
        apply(manifest(SONG_V2, "1.1.0"), sandbox)
        canary = wait_canary(kube, namespace, name, stable)
        wait_first_pass(kube, namespace, name)
        operator.kill()
        at_kill = status_of(kube, namespace, name)
        operator.start()
        done = wait_analysis_status(
            kube, namespace, name, trail.seeing(
                lambda s: s.get("stableRevision") == canary or s.get("phase") == "RolledBack"),
            what="the canary promoted by the restarted operator", timeout=120,
        )

    # Killed where the scenario meant to: in the step, with passes to carry over.
    assert at_kill["currentStep"] == 1 and at_kill["canaryRevision"] == canary, at_kill.get("message")
    kept = {m["name"]: m for m in at_kill["analysis"]}
    assert all(1 <= kept[gate].get("consecutivePasses", 0) < MEASUREMENTS
               for gate in SONG_ANALYZER_GATES), (
        f"killed with no pass to carry over, or none left to count: {at_kill['analysis']}")
    trail.statuses.insert(0, at_kill)
    interval = float(INTERVAL.removesuffix("s"))
    for gate in SONG_ANALYZER_GATES:
        rounds = trail.rounds(gate)
        last = next(i for i, r in enumerate(rounds) if r["time"] == kept[gate]["time"])
        assert last + 1 < len(rounds), f"{gate}: no round measured after the restart: {rounds}"
        first = rounds[last + 1]
        gap = (parse_stamp(first["time"]) - parse_stamp(kept[gate]["time"])).total_seconds()
        assert gap >= interval, f"{gate}: measured {gap:g}s after the last round: {first}"
        if first["step"] == 1:  # the step went on: the count goes on from the killed one's
            passes = kept[gate]["consecutivePasses"] + 1 if first["verdict"] == "Pass" else 0
            assert first.get("consecutivePasses", 0) == passes, (kept[gate], first)
        else:  # this round completed the step (its counts started afresh for the next)
            assert kept[gate]["consecutivePasses"] + 1 == MEASUREMENTS, (kept[gate], first)
        assert_passes_counted_in_a_row([r for r in rounds if r["step"] == 1])

    assert done["stableRevision"] == canary, done.get("message")
    entry = entry_of(done, canary)
    assert entry["outcome"] == "Promoted", entry
    assert steps_only(entry["steps"]) == ANALYSIS_REFERENCE, entry["steps"]
    assert operator.starts == 2


REVERT_NAME = "killed-reverting"
REPLICAS = 2
# A stable pod is ready 10 s after it starts (a model server loading its weights), longer
# than the operator takes to start again, so the restarted operator acts while the
# canary's last pod serves alone. (The canary's pods are quick, to keep the test short.)
STABLE_STARTUP_S = 10


def revert_manifest(namespace: str, mark: str, startup_s: int | None = None) -> JSON:
    return model_deployment(
        REVERT_NAME, namespace, template(mark, initial_delay=startup_s), replicas=REPLICAS,
        strategy={"canary": {"steps": [{"setWeight": 50}], "dynamicStableScale": True}},
        bake_time="10m",
    )


def ready_endpoints(kube: KubeAPI, namespace: str) -> int:
    """Ready pods among those the Service selects: its ready endpoints now."""
    service = kube.get("Service", namespace, REVERT_NAME)
    assert service is not None
    selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
    return sum(1 for pod in kube.list("Pod", namespace, selector) if is_ready(pod))


def test_an_operator_killed_during_a_revert_completes_it_and_the_service_keeps_serving(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
) -> None:
    user = User(sandbox, namespace)
    stable = deploy_first(user, kube, revert_manifest(namespace, "v1", STABLE_STARTUP_S))
    canary = start_rollout(user, kube, revert_manifest(namespace, "v2"))
    wait_status(kube, namespace, REVERT_NAME,
                lambda s: s.get("phase") == "Promoting" and bool(s.get("bakeUntil")),
                "the canary baking at 100%", timeout=90)
    assert deployment(kube, namespace, REVERT_NAME, stable)["spec"]["replicas"] == 0

    endpoints: list[int] = []

    def reverse_canary_scaling() -> JSON | None:
        endpoints.append(ready_endpoints(kube, namespace))
        status = md_status(kube, namespace, REVERT_NAME)
        return status if (status.get("revertingFrom") == canary
                          and f"stable 0/{REPLICAS} pods ready" in status.get("message", "")
                          and "keeps serving on 1 pod until stable takes over" in status["message"]
                          ) else None

    def revert_done() -> JSON | None:
        endpoints.append(ready_endpoints(kube, namespace))
        status = md_status(kube, namespace, REVERT_NAME)
        return status if status.get("phase") == "Degraded" and "revertingFrom" not in status else None

    url = sandbox.service_url(namespace, REVERT_NAME) + "/health"
    with TrafficGenerator(url, method="GET", rate=20, max_seconds=120, timeout_s=10) as traffic:
        user.modeldeploy("abort", REVERT_NAME)
        wait_until(reverse_canary_scaling, timeout=60, interval=0.1,
                   what="the revert under way: the canary down to 1 pod, a stable pod starting")
        operator.kill()
        at_kill = md_status(kube, namespace, REVERT_NAME)
        operator.start()
        done = wait_until(revert_done, timeout=90, interval=0.1,
                          what="the restarted operator to complete the revert")
        responses = traffic.responses()

    assert at_kill.get("revertingFrom") == canary, (
        f"the revert ended before the kill; the scenario missed its moment: {at_kill.get('message')}")
    assert min(endpoints) >= 1, endpoints
    assert responses and all(r.ok for r in responses), TrafficGenerator.statuses(responses)
    assert deployment(kube, namespace, REVERT_NAME, canary)["spec"]["replicas"] == 0
    entry = entry_of(done, canary)
    assert entry["outcome"] == "Aborted", entry
    assert entry["steps"] == [
        "setWeight 50", "full 100%", "bake 10m",
        f"aborted by {getpass.getuser()}: all traffic back to stable revision {stable}",
    ], entry["steps"]
    completed = [e for e in md_events(kube, namespace, REVERT_NAME) if e["reason"] == "RevertCompleted"]
    assert len(completed) == 1, completed
    assert operator.starts == 2


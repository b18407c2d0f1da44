"""Evaluation and mirror steps in the engine: when an evaluation is asked for, what its
result does to the rollout, and what a mirror step plans and waits for."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from modeldeploy.engine import (
    EnsureTrackServices,
    SetTrafficWeight,
    evaluation_request,
    mirror_refusals,
    revision_of,
)
from modeldeploy.spec import EvaluationStatus, ModelDeploymentSpec, Phase, Verdict
from rollout_world import World, replicas_of, rolling, spec_of

EVALUATION: dict[str, Any] = {
    "configMap": "songs-eval", "path": "/analyze", "minScore": 0.9, "sampleSize": 50,
}
STEPS: list[dict[str, Any]] = [{"evaluation": EVALUATION}, {"setWeight": 50}, {"setWeight": 100}]
V1, V2 = spec_of("v1", steps=STEPS), spec_of("v2", steps=STEPS)
R1, R2 = revision_of(V1), revision_of(V2)


def result(world: World, verdict: Verdict, passed: int = 50, **changes: Any) -> EvaluationStatus:
    """What the shell's evaluation of the current step would report."""
    status = world.status
    assert status.step_started_at is not None
    fields: dict[str, Any] = {
        "revision": status.canary_revision, "step": status.current_step,
        "step_started_at": status.step_started_at, "finished_at": "2026-01-01T12:05:00Z",
        "verdict": verdict, "score": passed / 50, "min_score": 0.9, "cases": 50,
        "passed": passed, "cost_usd": 0.0123, "message": f"{passed}/50 cases passed",
        **changes,
    }
    return EvaluationStatus.model_validate(fields)


def at_evaluation(old: ModelDeploymentSpec = V1, new: ModelDeploymentSpec = V2) -> World:
    world = rolling(old, new)
    world.ticks(2)  # the canary's pod comes up, then its readiness is seen
    assert world.status.current_step == 0 and world.status.not_ready_since is None, \
        world.status.message
    return world


def test_an_evaluation_before_any_traffic_gets_one_canary_pod_that_serves_no_user() -> None:
    world = at_evaluation()
    assert world.last is not None
    assert replicas_of(world.last) == {R1: 4, R2: 1}
    # The Service is narrowed to stable: the canary's pod gets no user request.
    assert world.cluster.service_selects == R1
    assert world.cluster.served() is not None
    assert EnsureTrackServices(R1, R2) in world.last.actions
    request = evaluation_request(world.spec, world.status)
    assert request is not None
    assert (request.revision, request.stable_revision, request.step) == (R2, R1, 0)
    assert request.evaluation.config_map == "songs-eval"
    assert world.status.phase == Phase.PROGRESSING
    assert "sending the cases of ConfigMap songs-eval" in (world.status.message or "")


def test_no_evaluation_is_asked_for_before_the_canary_is_ready() -> None:
    world = rolling(V1, V2)
    world.tick()
    assert world.status.not_ready_since is not None
    assert evaluation_request(world.spec, world.status) is None


def test_a_passing_evaluation_completes_the_step_and_is_kept_in_status() -> None:
    world = at_evaluation()
    world.tick(evaluation=result(world, Verdict.PASS, passed=48))
    assert world.status.current_step == 1, world.status.message
    assert world.status.evaluation is not None and world.status.evaluation.passed == 48
    assert "evaluation 48/50 passed (score 0.96, $0.0123)" in world.history_steps()
    # Done: not asked for again.
    assert evaluation_request(world.spec, world.status) is None


def test_a_failing_evaluation_rolls_back_with_its_reason() -> None:
    world = at_evaluation()
    failing = result(world, Verdict.FAIL, passed=30,
                     message="30/50 cases passed: below minScore; first failing case song-007: "
                             "$.score = 91 is above 72")
    world.tick(evaluation=failing)
    assert world.status.phase == Phase.ROLLED_BACK
    assert world.condition("Degraded") == ("True", "EvaluationFailed")
    assert "song-007" in (world.status.message or "")
    assert world.status.evaluation == failing  # what the SRE reads at 3 a.m.


def test_a_failing_evaluation_is_held_when_automatic_rollback_is_off() -> None:
    manual = spec_of("v2", steps=STEPS, rollback={"automatic": False})
    world = at_evaluation(new=manual)
    world.tick(evaluation=result(world, Verdict.FAIL, passed=10))
    assert world.status.phase == Phase.PAUSED
    assert world.status.pause_cause == "analysisFailed"


def test_an_inconclusive_evaluation_holds_and_resume_runs_it_again() -> None:
    world = at_evaluation()
    first = evaluation_request(world.spec, world.status)
    world.tick(evaluation=result(world, Verdict.INCONCLUSIVE, passed=0,
                                 message="not run: ConfigMap default/songs-eval not found"))
    assert world.status.phase == Phase.PAUSED
    assert world.status.pause_cause == "evaluationInconclusive"
    assert "resume" in (world.status.pause_reason or "")
    assert evaluation_request(world.spec, world.status) is None  # held: nothing runs
    world.tick(control="resume")
    world.tick()
    again = evaluation_request(world.spec, world.status)
    assert first is not None and again is not None
    assert again.step_started_at != first.step_started_at


def test_an_inconclusive_evaluation_reverts_with_on_inconclusive_rollback() -> None:
    strict = spec_of("v2", steps=STEPS, analysis=True)
    strict.analysis.on_inconclusive = "rollback"  # type: ignore[union-attr]
    world = at_evaluation(old=spec_of("v1", steps=STEPS, analysis=True), new=strict)
    world.tick(evaluation=result(world, Verdict.INCONCLUSIVE, passed=0))
    assert world.status.phase == Phase.ROLLED_BACK
    assert world.condition("Degraded") == ("True", "EvaluationInconclusive")


def test_a_result_for_an_earlier_start_of_the_step_is_ignored() -> None:
    world = at_evaluation()
    stale = result(world, Verdict.FAIL, step_started_at="2026-01-01T11:00:00Z")
    world.tick(evaluation=stale)
    assert world.status.phase == Phase.PROGRESSING
    assert world.status.current_step == 0 and world.status.evaluation is None


def test_a_known_good_revision_skips_the_evaluation() -> None:
    world = rolling(V1, V2)
    world.change(V1)  # back to v1, the first deployment: known-good
    world.ticks(2)
    world.change(V2)
    world.ticks(2)
    world.tick(evaluation=result(world, Verdict.PASS))
    for _ in range(10):  # 50%, 100%, then promoted (bakeTime 0s)
        world.tick()
    assert world.status.stable_revision == R2, world.status.message
    world.change(V1)  # v1 was promoted before: its rollout skips the evaluation
    world.tick()
    assert "skipped evaluation" in world.history_steps(), world.history_steps()
    assert evaluation_request(world.spec, world.status) is None


def test_blue_green_evaluates_green_before_its_analysis_and_the_switch() -> None:
    strategy = {"blueGreen": {"prePromotionEvaluation": EVALUATION, "autoPromotionSeconds": 0}}
    old, new = (spec_of(image, strategy=strategy) for image in ("v1", "v2"))
    world = rolling(old, new)
    world.ticks(3)
    assert world.status.current_step == 1, world.status.message
    request = evaluation_request(world.spec, world.status)
    assert request is not None and request.blue_green
    world.tick(evaluation=result(world, Verdict.PASS))
    assert world.status.current_step == 2, world.status.message


# ---------------------------------------------------------------------------- mirror

MIRROR_STEPS: list[dict[str, Any]] = [
    {"mirror": {"percent": 50, "duration": "2m"}}, {"setWeight": 100},
]
GATEWAY = {"gatewayAPI": {"httpRoute": "songs"}}


def mirror_spec(image: str, routing: dict[str, Any] = GATEWAY) -> ModelDeploymentSpec:
    return spec_of(image, steps=MIRROR_STEPS, analysis=True, strategy={"canary": {
        "steps": MIRROR_STEPS, "trafficRouting": routing}})


def test_a_mirror_step_copies_requests_to_a_canary_that_serves_no_user() -> None:
    world = rolling(mirror_spec("v1"), mirror_spec("v2"))
    world.ticks(2)
    assert world.last is not None
    weights = [a for a in world.last.actions if isinstance(a, SetTrafficWeight)]
    assert [(w.weight, w.mirror_percent) for w in weights] == [(0, 50)]
    # Pods for half of the traffic, mirrored; stable keeps every pod.
    assert replicas_of(world.last) == {revision_of(mirror_spec("v1")): 4,
                                       revision_of(mirror_spec("v2")): 2}
    assert "mirroring 50% of requests to the canary" in (world.status.message or "")
    world.tick(timedelta(minutes=2))
    assert world.status.current_step == 1, world.status.message
    assert "mirror 50% for 2m" in world.history_steps()
    world.tick()
    assert world.last is not None
    assert [a.mirror_percent for a in world.last.actions if isinstance(a, SetTrafficWeight)] == [0]


def test_a_mirror_step_waits_until_the_route_mirrors() -> None:
    world = rolling(mirror_spec("v1"), mirror_spec("v2"))
    world.cluster.mirror_follows = False  # the route's update lags
    world.ticks(3)
    assert world.status.current_step == 0
    assert "waiting for the HTTPRoute to mirror 50% of requests to the canary" in (
        world.status.message or "")
    world.tick(timedelta(minutes=3))
    assert world.status.current_step == 0  # the step's time counts from when it is served
    world.cluster.mirror_follows = True
    world.ticks(2)
    world.tick(timedelta(minutes=2))
    assert world.status.current_step == 1, world.status.message


def test_the_replicas_router_refuses_a_mirror_step_naming_the_field() -> None:
    spec = mirror_spec("v1", routing={"replicas": {}})
    refusals = mirror_refusals(spec)
    assert len(refusals) == 1
    assert refusals[0].startswith("spec.strategy.canary.steps[0].mirror: the replicas router")
    assert "gatewayAPI" in refusals[0]
    assert mirror_refusals(mirror_spec("v1")) == []

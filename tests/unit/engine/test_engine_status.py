"""Status as users read it: every phase transition, conditions, events, invalid specs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from modeldeploy.engine import EmitEvent, invalid_spec_status, revision_of
from modeldeploy.spec import ModelDeploymentStatus, Phase
from rollout_world import World, deployed, report, rolling, spec_of

STEPS: list[dict[str, Any]] = [
    {"setWeight": 10}, {"pause": {}}, {"analysis": {"measurements": 1}}, {"setWeight": 100}
]
V1 = spec_of("v1", steps=STEPS, analysis=True, rollback={"bakeTime": "5m"})
V2 = spec_of("v2", steps=STEPS, analysis=True, rollback={"bakeTime": "5m"})
V3 = spec_of("v3", steps=STEPS, analysis=True, rollback={"bakeTime": "5m"})


def step(
    world: World,
    *,
    seconds: int = 10,
    control: str | None = None,
    analysis: dict[str, Any] | None = None,
) -> World:
    """One tick, ``seconds`` later, with a control and/or an analysis outcome measured in it."""
    after = timedelta(seconds=seconds)
    measured = report(world.spec, world.now + after, **analysis) if analysis is not None else None
    world.tick(after, analysis=measured, control=control)
    return world


def pending() -> World:
    return step(World(V1))


def failed() -> World:
    world = World(V1)
    world.cluster.broken[revision_of(V1)] = "CrashLoopBackOff"
    step(world)
    return step(world, seconds=600)


def succeeded() -> World:
    return deployed(V1)


def progressing() -> World:
    return step(rolling(V1, V2))


def paused() -> World:
    return step(progressing())


def promoting() -> World:
    world = step(paused(), control="promote")
    step(world, analysis={"passes": 1})
    step(world)
    step(world)
    step(world)  # the Service narrowed to the ready canary at 100%, then the bake
    assert world.status.phase == Phase.PROMOTING, world.status.message
    return world


def rolled_back() -> World:
    return step(paused(), analysis={"breach": True})


def degraded() -> World:
    return step(paused(), control="abort")


def spec_changed_to(spec_image: str) -> Callable[[World], World]:
    spec = {"v1": V1, "v2": V2, "v3": V3}[spec_image]

    def change(world: World) -> World:
        world.change(spec)
        return step(world)

    return change


def tick(
    *, seconds: int = 10, control: str | None = None, analysis: dict[str, Any] | None = None
) -> Callable[[World], World]:
    return lambda world: step(world, seconds=seconds, control=control, analysis=analysis)


def broken_pending() -> World:
    world = World(V1)
    world.cluster.broken[revision_of(V1)] = "CrashLoopBackOff"
    return step(world)


def broken_canary() -> World:
    world = rolling(V1, V2)
    world.cluster.broken[revision_of(V2)] = "CrashLoopBackOff"
    return step(world)


TRANSITIONS: list[tuple[str, Callable[[], World], Callable[[World], World], Phase, Phase]] = [
    ("Pending to Succeeded when the first pods are ready",
     pending, tick(), Phase.PENDING, Phase.SUCCEEDED),
    ("Pending to Failed when the first pods miss progressDeadline",
     broken_pending, tick(seconds=600),
     Phase.PENDING, Phase.FAILED),
    ("Failed to Pending on retry", failed, tick(control="retry"), Phase.FAILED, Phase.PENDING),
    ("Failed to Pending when the spec changes", failed, spec_changed_to("v2"),
     Phase.FAILED, Phase.PENDING),
    ("Succeeded to Progressing when the template changes",
     succeeded, spec_changed_to("v2"), Phase.SUCCEEDED, Phase.PROGRESSING),
    ("Progressing to Paused at a pause step", progressing, tick(), Phase.PROGRESSING, Phase.PAUSED),
    ("Paused to Progressing on promote", paused, tick(control="promote"),
     Phase.PAUSED, Phase.PROGRESSING),
    ("Progressing to Paused when the user pauses", progressing, tick(control="pause"),
     Phase.PROGRESSING, Phase.PAUSED),
    ("Progressing to Promoting at the 100% step",
     # at 100% the Service is narrowed to the ready canary; the next tick sees it served
     lambda: step(step(step(paused(), control="promote"), analysis={"passes": 1})), tick(),
     Phase.PROGRESSING, Phase.PROMOTING),
    ("Promoting to Succeeded when the bake is over", promoting, tick(seconds=300),
     Phase.PROMOTING, Phase.SUCCEEDED),
    ("Promoting to RolledBack on a breach during the bake", promoting,
     tick(analysis={"breach": True}), Phase.PROMOTING, Phase.ROLLED_BACK),
    ("Progressing to RolledBack on a breach", progressing, tick(analysis={"breach": True}),
     Phase.PROGRESSING, Phase.ROLLED_BACK),
    ("Paused to RolledBack on a breach (a pause never silences a rollback indicator)",
     paused, tick(analysis={"breach": True}), Phase.PAUSED, Phase.ROLLED_BACK),
    ("Paused to Degraded on abort", paused, tick(control="abort"), Phase.PAUSED, Phase.DEGRADED),
    ("Progressing to Degraded past progressDeadline",
     broken_canary, tick(seconds=600), Phase.PROGRESSING, Phase.DEGRADED),
    ("RolledBack to Progressing on retry", rolled_back, tick(control="retry"),
     Phase.ROLLED_BACK, Phase.PROGRESSING),
    ("RolledBack to Progressing when a newer revision is applied", rolled_back,
     spec_changed_to("v3"), Phase.ROLLED_BACK, Phase.PROGRESSING),
    ("RolledBack to Succeeded when the spec goes back to the stable revision", rolled_back,
     spec_changed_to("v1"), Phase.ROLLED_BACK, Phase.SUCCEEDED),
    ("Degraded to Progressing on retry", degraded, tick(control="retry"),
     Phase.DEGRADED, Phase.PROGRESSING),
    ("Degraded to Succeeded when the spec goes back to the stable revision", degraded,
     spec_changed_to("v1"), Phase.DEGRADED, Phase.SUCCEEDED),
    ("RolledBack stays RolledBack while the spec still names the bad revision", rolled_back,
     tick(seconds=3600), Phase.ROLLED_BACK, Phase.ROLLED_BACK),
]


@pytest.mark.parametrize(
    ("build", "move", "before", "after"),
    [t[1:] for t in TRANSITIONS],
    ids=[t[0] for t in TRANSITIONS],
)
def test_phase_transition(
    build: Callable[[], World], move: Callable[[World], World], before: Phase, after: Phase
) -> None:
    world = build()
    assert world.status.phase == before, world.status.message
    world.events.clear()
    move(world)
    assert world.status.phase == after, world.status.message
    phase_events = [e for e in world.events if e.reason not in ("StepCompleted", "RolloutStarted",
                                                                 "RolloutSuperseded",
                                                                 "ControlIgnored")]
    if before != after:
        # Every phase change leaves exactly one event, a Warning when things went wrong.
        assert len(phase_events) == 1, world.events
        bad = after in (Phase.ROLLED_BACK, Phase.DEGRADED, Phase.FAILED)
        assert phase_events[0].type == ("Warning" if bad else "Normal")
        assert phase_events[0].message == world.status.message
    else:
        assert phase_events == []


def test_conditions_carry_the_generation_and_move_their_time_only_when_they_flip() -> None:
    world = rolling(V1, V2)
    step(world)
    started = {c.type: c.last_transition_time for c in world.status.conditions}
    step(world, seconds=30)  # a pause step: Progressing flips to Unknown, Ready stays False
    later = {c.type: c for c in world.status.conditions}
    assert later["Ready"].last_transition_time == started["Ready"]
    assert later["Progressing"].last_transition_time != started["Progressing"]
    assert {c.observed_generation for c in world.status.conditions} == {world.generation}
    assert [c.type for c in world.status.conditions] == [
        "Ready", "Progressing", "Degraded", "RolledBack"
    ]


def test_observed_generation_follows_the_spec() -> None:
    world = deployed(V1)
    world.change(spec_of("v1", replicas=7))
    step(world)
    assert world.status.observed_generation == world.generation


def test_an_invalid_spec_marks_ready_false_and_touches_nothing_else() -> None:
    world = paused()
    before = world.status
    errors = ["spec.strategy.canary.steps[1].setWeight: Input should be less than or equal to 100"]
    status = invalid_spec_status(before, 7, errors, world.now)
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.observed_generation) == ("False", "InvalidSpec", 7)
    assert errors[0] in ready.message and errors[0] in (status.message or "")
    assert status.phase == before.phase
    assert status.current_step == before.current_step
    assert status.canary_revision == before.canary_revision
    assert status.observed_generation == 7


def test_a_valid_spec_after_an_invalid_one_clears_the_invalid_condition() -> None:
    world = deployed(V1)
    world.status = invalid_spec_status(world.status, 2, ["spec.replicas: bad"], world.now)
    step(world)
    ready = next(c for c in world.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "RolloutCompleted")


def test_the_engine_starts_from_an_empty_status() -> None:
    world = World(V1, status=ModelDeploymentStatus())
    decision = world.tick()
    assert [e.reason for e in decision.actions if isinstance(e, EmitEvent)] == [
        "RolloutStarted", "RolloutPending"
    ]


def test_a_stopped_rollout_keeps_its_reason_after_an_invalid_spec_came_and_went() -> None:
    world = rolled_back()
    reason = world.status.message
    world.status = invalid_spec_status(world.status, 5, ["spec.replicas: bad"], world.now)
    step(world)
    assert world.status.phase == Phase.ROLLED_BACK
    assert world.status.message == reason
    assert world.condition("Ready") == ("False", "RollbackIndicatorBreached")

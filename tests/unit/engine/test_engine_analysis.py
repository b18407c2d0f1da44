"""What the engine does with analysis reports: advance, hold, pause, roll back, bake."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from modeldeploy.engine import analysis_request, revision_of
from modeldeploy.spec import MetricStatus, ModelDeploymentSpec, Phase, Verdict
from rollout_world import World, replicas_of, report, rolling, spec_of, weight_of

STEPS: list[dict[str, Any]] = [{"setWeight": 10}, {"analysis": {"measurements": 3}}, {"setWeight": 100}]


def specs(**extra: Any) -> tuple[ModelDeploymentSpec, ModelDeploymentSpec]:
    options = {"steps": STEPS, "analysis": True, "rollback": {"bakeTime": "5m"}, **extra}
    return spec_of("v1", **options), spec_of("v2", **options)


V1, V2 = specs()
R1, R2 = revision_of(V1), revision_of(V2)
MANUAL_V1, MANUAL_V2 = specs(rollback={"automatic": False, "bakeTime": "5m"})


def measure(world: World, **outcome: Any) -> World:
    """One tick whose analysis report was measured in that tick."""
    now = world.now + timedelta(seconds=10)
    world.tick(analysis=report(world.spec, now, **outcome))
    return world


def in_analysis(old: ModelDeploymentSpec = V1, new: ModelDeploymentSpec = V2) -> World:
    world = rolling(old, new)
    world.ticks(2)
    assert world.status.current_step == 1, world.status.message
    return world


def at_bake() -> World:
    world = in_analysis()
    for passes in (1, 2, 3):
        measure(world, passes=passes)
    world.ticks(3)  # 100%: the canary ready, then the Service narrowed to it, then the bake
    assert world.status.bake_until is not None, world.status.message
    return world


def passes_then(*counts: int) -> Callable[[], World]:
    def build() -> World:
        world = in_analysis()
        for count in counts:
            measure(world, passes=count)
        return world

    return build


def stale_report() -> World:
    world = in_analysis()
    world.tick(analysis=report(V2, world.now, passes=3))  # measured when the step started
    return world


def report_on_another_revision() -> World:
    world = in_analysis()
    world.tick(analysis=report(V1, world.now + timedelta(seconds=10), passes=3))
    return world


def then(build: Callable[[], World], **outcome: Any) -> Callable[[], World]:
    return lambda: measure(build(), **outcome)


def background_breach() -> World:
    world = rolling(V1, V2)
    world.tick()
    return measure(world, breach=True)


def inconclusive_rolls_back() -> World:
    old, new = specs()
    assert old.analysis is not None and new.analysis is not None
    old.analysis.on_inconclusive = new.analysis.on_inconclusive = "rollback"
    return measure(in_analysis(old, new), inconclusive=True)


def bake_over() -> World:
    world = at_bake()
    world.tick(timedelta(minutes=5))
    return world


@dataclass(frozen=True)
class Expect:
    phase: Phase
    message: str
    replicas: dict[str, int]
    weight: int
    stable: str


CASES: list[tuple[str, Callable[[], World], Expect]] = [
    ("an analysis step holds at 2 of 3 passes",
     passes_then(1, 2), Expect(Phase.PROGRESSING, "analysis 2/3 passed", {R2: 1, R1: 4}, 20, R1)),
    ("three passes in a row complete the analysis step",
     passes_then(1, 2, 3),
     Expect(Phase.PROGRESSING, "step 3/4 setWeight 100", {R2: 4, R1: 4}, 100, R1)),
    ("a report measured before the step started does not count",
     stale_report, Expect(Phase.PROGRESSING, "analysis 0/3 passed", {R2: 1, R1: 4}, 20, R1)),
    ("a report about another revision does not count",
     report_on_another_revision,
     Expect(Phase.PROGRESSING, "analysis 0/3 passed", {R2: 1, R1: 4}, 20, R1)),
    ("a rollback indicator breach rolls back at once, naming metric, value, threshold, revision",
     then(in_analysis, breach=True),
     Expect(Phase.ROLLED_BACK, f"success-rate = 0.5 breached min 0.85 (revision {R2})",
            {R1: 4, R2: 0}, 0, R1)),
    ("a breach while a setWeight step waits rolls back too (analysis runs in the background)",
     background_breach, Expect(Phase.ROLLED_BACK, "breached min 0.85", {R1: 4, R2: 0}, 0, R1)),
    ("failureLimit exceeded rolls back when rollback is automatic",
     then(in_analysis, failed=True),
     Expect(Phase.ROLLED_BACK, "analysis failed: success-rate: 0.5 (min 0.95)", {R1: 4, R2: 0},
            0, R1)),
    ("failureLimit exceeded holds the rollout where it is when rollback is not automatic",
     then(lambda: in_analysis(MANUAL_V1, MANUAL_V2), failed=True),
     Expect(Phase.PAUSED, "rollback.automatic is off", {}, 20, revision_of(MANUAL_V1))),
    ("inconclusive past its limit pauses with the reason",
     then(in_analysis, inconclusive=True),
     Expect(Phase.PAUSED, "analysis inconclusive: success-rate: no data 4 times in a row",
            {R2: 1, R1: 4}, 20, R1)),
    ("inconclusive past its limit rolls back when onInconclusive is rollback",
     inconclusive_rolls_back, Expect(Phase.ROLLED_BACK, "analysis inconclusive", {}, 0, R1)),
    ("after 100% the previous revision stays warm while the canary bakes",
     at_bake, Expect(Phase.PROMOTING, f"previous revision {R1} kept until", {R2: 4, R1: 4}, 100,
                     R1)),
    ("the bake over, the previous revision scales to 0 and the rollout Succeeded",
     bake_over, Expect(Phase.SUCCEEDED, f"revision {R2} is stable", {R2: 4, R1: 0}, 0, R2)),
    ("a breach during the bake reverts to the previous revision",
     then(at_bake, breach=True),
     Expect(Phase.ROLLED_BACK, "breached min 0.85", {R1: 4, R2: 0}, 0, R1)),
]


@pytest.mark.parametrize(("scenario", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_analysis_outcome(scenario: Callable[[], World], expect: Expect) -> None:
    world = scenario()
    assert world.last is not None
    assert world.status.phase == expect.phase
    assert expect.message in (world.status.message or ""), world.status.message
    if expect.replicas:
        assert replicas_of(world.last) == expect.replicas
    assert weight_of(world.last) == expect.weight
    assert world.status.stable_revision == expect.stable


def test_a_rollback_says_so_in_conditions_history_and_a_warning_event() -> None:
    world = then(in_analysis, breach=True)()
    assert world.condition("Degraded") == ("True", "RollbackIndicatorBreached")
    assert world.condition("RolledBack") == ("True", "RollbackIndicatorBreached")
    assert world.condition("Ready")[0] == "False"
    event = world.events[-1]
    assert (event.type, event.reason) == ("Warning", "RollbackIndicatorBreached")
    for part in ("success-rate", "0.5", "min 0.85", R2):
        assert part in event.message
    assert (world.status.history[0].outcome, world.status.aborted_revision) == ("RolledBack", R2)


def test_a_rolled_back_revision_is_not_retried_until_the_spec_changes() -> None:
    world = then(in_analysis, breach=True)()
    world.tick(timedelta(hours=1))
    assert world.status.phase == Phase.ROLLED_BACK
    assert world.status.canary_revision is None
    other = spec_of("v3", steps=STEPS, analysis=True, rollback={"bakeTime": "5m"})
    world.change(other)
    world.tick()
    assert world.status.canary_revision == revision_of(other)


def test_a_failed_analysis_held_without_automatic_rollback_is_marked_degraded() -> None:
    world = then(lambda: in_analysis(MANUAL_V1, MANUAL_V2), failed=True)()
    assert world.condition("Degraded") == ("True", "AnalysisFailed")
    assert world.status.pause_cause == "analysisFailed"
    world.tick(control="abort")
    assert world.status.phase == Phase.DEGRADED


def test_the_last_measurements_are_written_to_status_and_passes_restart_with_each_step(
) -> None:
    world = rolling(V1, V2)
    world.tick()
    measure(world, passes=1)  # measured at 10%, before the analysis step
    assert world.status.current_step == 1
    [latest] = world.status.analysis
    assert (latest.name, latest.value, latest.consecutive_passes) == ("success-rate", 0.99, 0)
    measure(world, passes=1)
    assert [m.name for m in world.status.analysis] == ["success-rate"]


def test_analysis_is_requested_with_the_steps_measurements_during_an_analysis_step() -> None:
    world = in_analysis()
    request = analysis_request(V2, world.status, world.now)
    assert request is not None
    assert (request.revision, request.stable_revision, request.measurements) == (R2, R1, 3)
    assert request.since == world.now


def test_analysis_is_requested_during_the_bake_and_not_once_stable() -> None:
    world = at_bake()
    assert analysis_request(V2, world.status, world.now) is not None
    world.tick(timedelta(minutes=5))
    assert analysis_request(V2, world.status, world.now) is None


def test_no_analysis_is_requested_when_none_is_configured() -> None:
    world = rolling(spec_of("v1"), spec_of("v2"))
    world.tick()
    assert analysis_request(spec_of("v2"), world.status, world.now) is None


def test_a_newer_revision_during_the_bake_promotes_the_baking_one_and_canaries_against_it(
) -> None:
    world = at_bake()
    world.events.clear()
    newer = spec_of("v3", steps=STEPS, analysis=True, rollback={"bakeTime": "5m"})
    world.change(newer)
    world.tick()
    assert (world.status.stable_revision, world.status.canary_revision) == (
        R2, revision_of(newer)
    )
    assert world.status.previous_revision == R1
    assert [(e.revision, e.outcome) for e in world.status.history[:2]] == [
        (revision_of(newer), "InProgress"),
        (R2, "Promoted"),
    ]
    assert [e.reason for e in world.events] == ["RolloutStarted", "RolloutProgressing"]


def test_promote_during_the_bake_ends_it_early() -> None:
    world = at_bake()
    world.tick(control="promote")
    assert world.status.phase == Phase.SUCCEEDED
    assert world.status.stable_revision == R2
    assert world.history_steps()[-1] == "bake ended early by user"


def test_between_measurements_an_inconclusive_indicator_does_not_hide_the_gates_passes() -> None:
    """A rollback indicator counts no passes: with no data (a warm cache left no uncached
    request in the window) or a breach not acted on it is inconclusive, and the step's
    progress between rounds is still the gates' passes."""
    world = in_analysis()
    measured = report(world.spec, world.now + timedelta(seconds=10), passes=2)
    indicator = MetricStatus(name="uncached-error-rate (rollback indicator)", threshold="max 0.05",
                             verdict=Verdict.INCONCLUSIVE, message="value is NaN",
                             time=measured.metrics[0].time)
    world.tick(analysis=dataclasses.replace(measured, metrics=(*measured.metrics, indicator)))
    assert "analysis 2/3 passed" in (world.status.message or "")
    world.tick()  # no report: read back from status.analysis
    assert "analysis 2/3 passed" in (world.status.message or ""), world.status.message

"""Restart safety: a tick replayed, or re-run after its actions were applied, never advances twice.

And whole rollouts simulated tick by tick, read back from history and events as an
SRE would read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from modeldeploy.engine import EmitEvent, reconcile, revision_of
from modeldeploy.spec import ControlRequest, ModelDeploymentSpec, Phase
from rollout_world import NAME, World, deployed, report, rolling, spec_of

STEPS: list[dict[str, Any]] = [
    {"setWeight": 10}, {"pause": {"duration": "1m"}}, {"analysis": {"measurements": 2}},
    {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
V1 = spec_of("v1", steps=STEPS, analysis=True, rollback={"bakeTime": "5m"})
V2 = spec_of("v2", steps=STEPS, analysis=True, rollback={"bakeTime": "5m"})


def after(*seconds: int) -> Callable[[], World]:
    def build() -> World:
        world = rolling(V1, V2)
        for second in seconds:
            world.tick(timedelta(seconds=second))
        return world

    return build


def first_deployment() -> World:
    return World(V1)


# (id, world, the next tick's control, the next tick's analysis outcome)
STATES: list[tuple[str, Callable[[], World], str | None, dict[str, Any] | None]] = [
    ("a first deployment just created", first_deployment, None, None),
    ("a new revision about to start", after(), None, None),
    ("a canary whose 10% step is about to complete", after(10), None, None),
    ("a timed pause about to elapse", after(10, 10, 60), None, None),
    ("an analysis step about to pass", after(10, 10, 60, 10), None, {"passes": 2}),
    ("a pause without duration promoted", after(10, 10, 60, 10, 10, 10, 10), "promote", None),
    ("a rollout promoted to full", after(10, 10), "promoteFull", None),
    ("a rollout aborted", after(10, 10), "abort", None),
    ("a rollout paused", after(10, 10), "pause", None),
    ("a canary breaching a rollback indicator", after(10, 10), None, {"breach": True}),
    ("a canary past its progress deadline", after(10, 600), None, None),
]


@pytest.mark.parametrize(
    ("build", "control", "outcome"), [s[1:] for s in STATES], ids=[s[0] for s in STATES]
)
def test_replaying_a_tick_changes_nothing_and_advances_nothing(
    build: Callable[[], World], control: str | None, outcome: dict[str, Any] | None
) -> None:
    world = build()
    if control is not None:
        world.status.control = ControlRequest(action=control, requested_at="2026-01-01T12:00:00Z")
    now = world.now + timedelta(seconds=10)
    analysis = report(world.spec, now, **outcome) if outcome is not None else None
    observation = world.cluster.observe(now, world.generation, analysis)

    first = reconcile(world.spec, world.status, observation, NAME)
    replay = reconcile(world.spec, first.status, observation, NAME)

    assert replay.status == first.status
    assert [a for a in replay.actions if not isinstance(a, EmitEvent)] == [
        a for a in first.actions if not isinstance(a, EmitEvent)
    ]
    assert not [a for a in replay.actions if isinstance(a, EmitEvent)]

    # The operator applied the actions, then died before its next look: the same
    # tick run again on the cluster as it now is must not take a second step.
    world.cluster.apply(first.actions)
    settled = world.cluster.observe(now, world.generation, analysis)
    rerun = reconcile(world.spec, first.status, settled, NAME)
    assert rerun.status.current_step == first.status.current_step
    assert rerun.status.bake_until == first.status.bake_until
    assert rerun.status.history == first.status.history


def test_a_tick_whose_status_write_was_lost_decides_the_same_again() -> None:
    world = after(10, 10, 60)()
    observation = world.cluster.observe(world.now + timedelta(seconds=10), 2, None)
    once = reconcile(world.spec, world.status, observation, NAME)
    again = reconcile(world.spec, world.status, observation, NAME)
    assert once == again


# ------------------------------------------------------------------ simulations

@dataclass(frozen=True)
class Tick:
    seconds: int = 10
    control: str | None = None
    passes: int | None = None
    breach: bool = False


def simulate(old: ModelDeploymentSpec, new: ModelDeploymentSpec, ticks: list[Tick]) -> World:
    world = rolling(old, new)
    world.events.clear()
    for tick in ticks:
        analysis = None
        if tick.passes is not None or tick.breach:
            measured = world.now + timedelta(seconds=tick.seconds)
            analysis = report(new, measured, passes=tick.passes or 0, breach=tick.breach)
        world.tick(timedelta(seconds=tick.seconds), control=tick.control, analysis=analysis)
    return world


FULL_ROLLOUT = [
    Tick(), Tick(),                        # 10%: canary up, ready
    Tick(60),                              # pause 1m elapsed
    Tick(passes=1), Tick(passes=2),        # analysis passes twice
    Tick(), Tick(),                        # 50%: up, ready: pause without duration
    Tick(3600),                            # an hour later it still waits
    Tick(control="promote"),               # promoted by user
    Tick(), Tick(), Tick(),                # 100% (the Service narrowed to canary), full: bake
    Tick(300),                             # bake over
]

SIMULATIONS: list[tuple[str, list[Tick], Phase, list[str], list[str]]] = [
    ("a rollout through every kind of step ends Succeeded after the bake",
     FULL_ROLLOUT, Phase.SUCCEEDED,
     ["setWeight 10", "pause 1m", "analysis 2/2 passed", "setWeight 50", "promoted by user",
      "setWeight 100", "full 100%", "bake 5m", "baked 5m"],
     ["RolloutStarted", "RolloutProgressing", "StepCompleted", "RolloutPaused", "StepCompleted",
      "RolloutProgressing", "StepCompleted", "StepCompleted", "RolloutPaused", "StepCompleted",
      "RolloutProgressing", "StepCompleted", "RolloutPromoting", "StepCompleted",
      "RolloutCompleted"]),
    ("a rollout that breaches during analysis ends RolledBack",
     [Tick(), Tick(), Tick(60), Tick(passes=1), Tick(breach=True)], Phase.ROLLED_BACK,
     ["setWeight 10", "pause 1m",
      f"rollback indicator success-rate = 0.5 breached min 0.85 (revision {revision_of(V2)})"],
     ["RolloutStarted", "RolloutProgressing", "StepCompleted", "RolloutPaused", "StepCompleted",
      "RolloutProgressing", "RollbackIndicatorBreached"]),
    ("a rollout paused by the user waits out its pause, then resumes",
     [Tick(), Tick(), Tick(control="pause"), Tick(600), Tick(control="resume"), Tick(60)],
     Phase.PROGRESSING,
     ["setWeight 10", "paused by user", "resumed by user", "pause 1m"],
     ["RolloutStarted", "RolloutProgressing", "StepCompleted", "RolloutPaused", "StepCompleted",
      "RolloutProgressing"]),
]


@pytest.mark.parametrize(
    ("ticks", "phase", "steps", "events"),
    [s[1:] for s in SIMULATIONS],
    ids=[s[0] for s in SIMULATIONS],
)
def test_simulated_rollout(
    ticks: list[Tick], phase: Phase, steps: list[str], events: list[str]
) -> None:
    world = simulate(V1, V2, ticks)
    assert world.status.phase == phase, world.status.message
    entry = world.status.history[0]
    assert entry.revision == revision_of(V2)
    assert entry.steps == steps
    assert [e.reason for e in world.events] == events


def test_history_is_bounded_by_revision_history_limit() -> None:
    world = deployed(spec_of("v0", revisionHistoryLimit=3))
    for image in ("v1", "v2", "v3", "v4"):
        world.change(spec_of(image, revisionHistoryLimit=3, steps=[{"setWeight": 100}]))
        world.ticks(4)
    assert [e.revision for e in world.status.history] == [
        revision_of(spec_of(image)) for image in ("v4", "v3", "v2")
    ]
    assert all(e.outcome == "Promoted" for e in world.status.history)

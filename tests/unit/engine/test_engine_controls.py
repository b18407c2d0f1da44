"""Manual controls (promote, promoteFull, abort, retry, pause, resume) from status.control.

The engine consumes each control once and clears it in the status it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from modeldeploy.engine import revision_of
from modeldeploy.spec import Phase
from rollout_world import World, replicas_of, report, rolling, spec_of, weight_of

V1 = spec_of("v1", analysis=True)
STEPS: list[dict[str, Any]] = [{"setWeight": 10}, {"pause": {}}, {"pause": {"duration": "10m"}},
         {"analysis": {"measurements": 3}}, {"setWeight": 50}, {"setWeight": 100}]
V2 = spec_of("v2", steps=STEPS, analysis=True)
R1, R2 = revision_of(V1), revision_of(V2)
FULL = len(STEPS)  # the implied 100% step


def at_step(step: int) -> Callable[[], World]:
    """A rollout of V2 over V1 standing at ``step`` (0-based), canary ready there."""

    def build() -> World:
        world = rolling(V1, V2)
        world.ticks(2)
        for _ in range(step - 1):
            world.tick(control="promote")
        assert world.status.current_step == step, world.status.message
        return world

    return build


def waiting_for_readiness() -> World:
    world = rolling(V1, V2)
    world.cluster.broken[R2] = "ContainerCreating"
    world.tick()
    return world


def aborted() -> World:
    world = at_step(1)()
    world.tick(control="abort")
    return world


def rolled_back() -> World:
    world = at_step(1)()
    world.tick(analysis=report(V2, world.now + timedelta(seconds=5), breach=True))
    return world


def paused_by_user() -> World:
    world = at_step(2)()
    world.tick(control="pause")
    return world


@dataclass(frozen=True)
class Expect:
    phase: Phase
    step: int | None
    message: str
    record: str


CASES: list[tuple[str, Callable[[], World], str, Expect]] = [
    ("promote skips a pause without duration",
     at_step(1), "promote",
     Expect(Phase.PAUSED, 2, "step 3/7 pause 10m: 10m left", "promoted by user")),
    ("promote skips a timed pause before it elapsed",
     at_step(2), "promote", Expect(Phase.PROGRESSING, 3, "analysis", "promoted by user")),
    ("promote skips an analysis step that has not passed",
     at_step(3), "promote", Expect(Phase.PROGRESSING, 4, "setWeight 50", "promoted by user")),
    ("promote moves on from a step still waiting for readiness",
     waiting_for_readiness, "promote",
     Expect(Phase.PROGRESSING, 1, "step 2/7 pause", "promoted by user")),
    ("promoteFull jumps to 100% and waits for readiness there",
     at_step(1), "promoteFull",
     Expect(Phase.PROGRESSING, FULL, "full 100%: waiting for canary 1/4", "promoted to full by user")),
    ("abort sends all traffic to stable and stops the canary",
     at_step(2), "abort",
     Expect(Phase.DEGRADED, None, f"all traffic back to stable revision {R1}", "aborted by user")),
    ("pause holds a timed pause",
     at_step(2), "pause", Expect(Phase.PAUSED, 2, "paused by user", "paused by user")),
    ("resume releases a user pause and restarts the step",
     paused_by_user, "resume", Expect(Phase.PAUSED, 2, "10m left", "resumed by user")),
    ("retry restarts an aborted revision from the first step",
     aborted, "retry", Expect(Phase.PROGRESSING, 0, "step 1/7 setWeight 10", "")),
    ("retry restarts a rolled-back revision from the first step",
     rolled_back, "retry", Expect(Phase.PROGRESSING, 0, "step 1/7 setWeight 10", "")),
    ("retry during a healthy rollout is ignored",
     at_step(1), "retry", Expect(Phase.PAUSED, 1, "paused until `modeldeploy promote`",
                                 "setWeight 10")),
    ("resume when nothing is paused is ignored",
     at_step(1), "resume", Expect(Phase.PAUSED, 1, "paused until", "setWeight 10")),
    ("promote with nothing rolling out is ignored",
     aborted, "promote", Expect(Phase.DEGRADED, None, "aborted by user", "aborted by user")),
]


@pytest.mark.parametrize(
    ("scenario", "control", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_control(scenario: Callable[[], World], control: str, expect: Expect) -> None:
    world = scenario()
    world.tick(control=control)
    assert world.status.control is None  # consumed, so it acts once
    assert world.status.phase == expect.phase
    assert world.status.current_step == expect.step
    assert expect.message in (world.status.message or ""), world.status.message
    steps = world.history_steps()
    assert (steps[-1] if steps else "").startswith(expect.record), steps


def test_an_ignored_control_leaves_a_normal_event_saying_why() -> None:
    world = at_step(1)()
    decision = world.tick(control="retry")
    ignored = [e for e in world.events if e.reason == "ControlIgnored"]
    assert ignored and "retry ignored" in ignored[-1].message
    assert decision.status.control is None


def test_a_paused_rollout_does_not_move_past_its_timed_pause() -> None:
    world = paused_by_user()
    world.tick(timedelta(hours=2))
    assert world.status.current_step == 2
    assert world.status.phase == Phase.PAUSED


def test_abort_scales_the_canary_to_zero_and_keeps_it_for_inspection() -> None:
    world = aborted()
    assert world.last is not None
    assert replicas_of(world.last) == {R1: 4, R2: 0}
    assert weight_of(world.last) == 0
    assert world.condition("Degraded") == ("True", "RolloutAborted")
    assert world.status.history[0].outcome == "Aborted"


def test_an_aborted_revision_is_not_restarted_by_time_alone() -> None:
    world = aborted()
    world.tick(timedelta(days=1))
    assert world.status.phase == Phase.DEGRADED
    assert world.status.canary_revision is None


def test_retry_starts_a_new_history_entry() -> None:
    world = aborted()
    world.tick(control="retry")
    assert [(e.revision, e.outcome) for e in world.status.history[:2]] == [
        (R2, "InProgress"),
        (R2, "Aborted"),
    ]
    assert world.status.aborted_revision is None

"""An inconclusive pause ends by itself once analysis is conclusive again (Prometheus back),
and a canary that is not ready is never held (or reverted) as inconclusive: its deadline decides."""

from __future__ import annotations

from datetime import timedelta

import pytest
from modeldeploy.engine import revision_of
from modeldeploy.spec import Phase, Verdict
from rollout_world import World, rolling
from test_engine_analysis import V1, V2, in_analysis, measure


def paused_inconclusive() -> World:
    world = measure(in_analysis(), verdict=Verdict.INCONCLUSIVE, inconclusive=True)
    assert world.status.phase == Phase.PAUSED, world.status.message
    assert world.status.pause_cause == "inconclusive"
    return world


def test_a_conclusive_round_after_an_inconclusive_pause_resumes_the_rollout() -> None:
    world = measure(paused_inconclusive(), passes=1)
    assert world.status.phase == Phase.PROGRESSING, world.status.message
    assert world.status.paused_at is None and world.status.pause_cause is None
    assert "analysis conclusive again: resumed" in world.status.history[0].steps
    for passes in (2, 3):
        measure(world, passes=passes)
    assert world.status.current_step == 2, world.status.message  # the analysis step passed


def test_an_inconclusive_pause_holds_while_rounds_stay_inconclusive() -> None:
    world = measure(paused_inconclusive(), verdict=Verdict.INCONCLUSIVE)
    assert world.status.phase == Phase.PAUSED
    assert world.status.current_step == 1


def test_a_user_pause_is_not_released_by_a_passing_round() -> None:
    world = in_analysis()
    world.status.paused_at = world.status.step_started_at
    world.status.pause_cause = "user"
    world.status.pause_reason = "paused by user"
    measure(world, passes=1)
    assert world.status.phase == Phase.PAUSED and world.status.pause_cause == "user"


def crash_looping_canary_measured_inconclusive(on_inconclusive: str) -> World:
    """A canary whose pods never become ready, measured (no requests: inconclusive) past the
    limit, then left until past the 10-minute progressDeadline."""
    old, new = V1.model_copy(deep=True), V2.model_copy(deep=True)
    assert old.analysis is not None and new.analysis is not None
    old.analysis.on_inconclusive = new.analysis.on_inconclusive = on_inconclusive
    world = rolling(old, new)
    world.cluster.broken[revision_of(new)] = "CrashLoopBackOff: back-off restarting failed container"
    world.tick()
    for _ in range(3):
        measure(world, verdict=Verdict.INCONCLUSIVE, inconclusive=True)
    world.tick(timedelta(minutes=11))
    return world


@pytest.mark.parametrize("on_inconclusive", ["pause", "rollback"])
def test_a_canary_that_never_becomes_ready_is_reverted_by_its_deadline_not_held_as_inconclusive(
    on_inconclusive: str,
) -> None:
    world = crash_looping_canary_measured_inconclusive(on_inconclusive)
    assert world.status.phase == Phase.DEGRADED, world.status.message
    assert world.condition("Degraded") == ("True", "ProgressDeadlineExceeded")
    assert "CrashLoopBackOff" in (world.status.message or "")
    assert world.status.pause_cause is None

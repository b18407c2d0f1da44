"""An inconclusive pause ends by itself once analysis is conclusive again (Prometheus back)."""

from __future__ import annotations

from modeldeploy.spec import Phase, Verdict
from rollout_world import World
from test_engine_analysis import in_analysis, measure


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

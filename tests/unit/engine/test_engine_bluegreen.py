"""Blue-green: full green beside blue, preview, optional analysis, switch, bake, scale down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from modeldeploy.engine import EnsurePreviewService, EnsureService, SetTrafficWeight, revision_of
from modeldeploy.spec import ModelDeploymentSpec, Phase
from rollout_world import World, replicas_of, report, rolling, spec_of


def blue_green(image: str, **strategy: Any) -> ModelDeploymentSpec:
    return spec_of(
        image,
        strategy={"blueGreen": strategy},
        rollback={"bakeTime": "5m"},
        analysis=True,
    )


AUTO_BLUE, AUTO_GREEN = blue_green("v1", autoPromotionSeconds=60), blue_green(
    "v2", autoPromotionSeconds=60
)
BLUE, GREEN = revision_of(AUTO_BLUE), revision_of(AUTO_GREEN)
MANUAL = blue_green("v2")
MANUAL_GREEN = revision_of(MANUAL)
ANALYSED = blue_green("v2", autoPromotionSeconds=0, prePromotionAnalysis={"measurements": 2})
ANALYSED_GREEN = revision_of(ANALYSED)


def ticks(new: ModelDeploymentSpec, *afters: int, control: str | None = None,
          **outcome: Any) -> Callable[[], World]:
    """Roll ``new`` out over blue, one tick per number of seconds given."""

    def build() -> World:
        world = rolling(AUTO_BLUE, new)
        for seconds in afters:
            world.tick(timedelta(seconds=seconds))
        if control is not None:
            world.tick(control=control)
        if outcome:
            measured = world.now + timedelta(seconds=10)
            world.tick(analysis=report(new, measured, **outcome))
        return world

    return build


@dataclass(frozen=True)
class Expect:
    phase: Phase
    message: str
    active: str
    preview: str
    replicas: dict[str, int]


CASES: list[tuple[str, Callable[[], World], Expect]] = [
    ("green comes up at full size beside blue, which keeps all traffic",
     ticks(AUTO_GREEN, 10),
     Expect(Phase.PROGRESSING, "step 1/3 preview: waiting for green 0/4 ready", BLUE, GREEN,
            {GREEN: 4, BLUE: 4})),
    ("a ready green waits autoPromotionSeconds before the switch",
     ticks(AUTO_GREEN, 10, 10, 30),
     Expect(Phase.PROGRESSING, "switching to green in 30s", BLUE, GREEN, {GREEN: 4, BLUE: 4})),
    ("autoPromotionSeconds elapsed, the Service switches to green",
     ticks(AUTO_GREEN, 10, 10, 60),
     Expect(Phase.PROMOTING, "switch to green", GREEN, GREEN, {GREEN: 4, BLUE: 4})),
    ("after the switch blue is kept at full size for the bake",
     ticks(AUTO_GREEN, 10, 10, 60, 10),
     Expect(Phase.PROMOTING, f"previous revision {BLUE} kept until", GREEN, GREEN,
            {GREEN: 4, BLUE: 4})),
    ("the bake over, blue scales to 0 and green is stable",
     ticks(AUTO_GREEN, 10, 10, 60, 10, 300),
     Expect(Phase.SUCCEEDED, f"revision {GREEN} is stable", GREEN, GREEN, {GREEN: 4, BLUE: 0})),
    ("without autoPromotionSeconds a ready green waits for promote",
     ticks(MANUAL, 10, 10, 3600),
     Expect(Phase.PAUSED, "paused until `modeldeploy promote`", BLUE, MANUAL_GREEN,
            {MANUAL_GREEN: 4, BLUE: 4})),
    ("promote switches to green",
     ticks(MANUAL, 10, 10, control="promote"),
     Expect(Phase.PROMOTING, "switch to green", MANUAL_GREEN, MANUAL_GREEN,
            {MANUAL_GREEN: 4, BLUE: 4})),
    ("pre-promotion analysis holds the switch until it passed",
     ticks(ANALYSED, 10, 10, passes=1),
     Expect(Phase.PROGRESSING, "analysis 1/2 passed", BLUE, ANALYSED_GREEN,
            {ANALYSED_GREEN: 4, BLUE: 4})),
    ("pre-promotion analysis passed, the switch follows",
     ticks(ANALYSED, 10, 10, 10, passes=2),
     Expect(Phase.PROGRESSING, "await promotion", BLUE, ANALYSED_GREEN,
            {ANALYSED_GREEN: 4, BLUE: 4})),
    ("a breach during pre-promotion analysis rolls back before any user saw green",
     ticks(ANALYSED, 10, 10, breach=True),
     Expect(Phase.ROLLED_BACK, "breached", BLUE, BLUE, {BLUE: 4, ANALYSED_GREEN: 0})),
    ("a breach during the bake switches back to blue",
     ticks(AUTO_GREEN, 10, 10, 60, 10, breach=True),
     Expect(Phase.ROLLED_BACK, "breached", BLUE, BLUE, {BLUE: 4, GREEN: 0})),
]


@pytest.mark.parametrize(("scenario", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_blue_green(scenario: Callable[[], World], expect: Expect) -> None:
    world = scenario()
    assert world.last is not None
    actions = world.last.actions
    assert world.status.phase == expect.phase
    assert expect.message in (world.status.message or ""), world.status.message
    assert [a for a in actions if isinstance(a, EnsureService)] == [EnsureService(expect.active)]
    assert [a for a in actions if isinstance(a, EnsurePreviewService)] == [
        EnsurePreviewService(expect.preview)
    ]
    assert replicas_of(world.last) == expect.replicas
    # Blue-green switches Services; it never asks a traffic router for a weight.
    assert not [a for a in actions if isinstance(a, SetTrafficWeight)]


def test_blue_green_history_reads_as_the_steps_taken() -> None:
    world = ticks(AUTO_GREEN, 10, 10, 60, 10, 300)()
    assert world.history_steps() == [
        "preview ready", "autoPromotion 1m", "switch to green", "bake 5m", "baked 5m"
    ]

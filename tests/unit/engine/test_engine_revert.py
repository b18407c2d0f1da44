"""A revert never leaves the Service without ready endpoints, whatever the capacity.

Pods here take a minute to become ready (a GPU model server loading its weights), so a
revert that switched the Service to a stable revision at 0 pods, or scaled the canary
away before stable pods were ready, would show as a tick with no ready pod behind the
Service. Every tick of every revert below is checked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from modeldeploy.engine import revision_of
from modeldeploy.spec import ModelDeploymentSpec, Phase
from rollout_world import World, report, rolling, spec_of

STARTUP = timedelta(seconds=60)
REPLICAS = 4
HALF_THEN_HOLD: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
STRAIGHT_TO_FULL: list[dict[str, Any]] = [{"setWeight": 50}]


def specs(
    dynamic: bool, steps: list[dict[str, Any]], replicas: int = REPLICAS
) -> tuple[ModelDeploymentSpec, ModelDeploymentSpec]:
    def one(image: str) -> ModelDeploymentSpec:
        return spec_of(
            image, replicas=replicas, gpu=dynamic, analysis=True,
            strategy={"canary": {"steps": steps, "dynamicStableScale": dynamic}},
            rollback={"bakeTime": "1h"},
        )

    return one("v1"), one("v2")


def until(world: World, done: Callable[[World], bool], what: str, ticks: int = 60) -> World:
    for _ in range(ticks):
        if done(world):
            return world
        world.tick()
    raise AssertionError(f"{what}: not reached in {ticks} ticks; {world.status.message}")


def slow_world(old: ModelDeploymentSpec, new: ModelDeploymentSpec) -> World:
    world = rolling(old, new)
    world.cluster.startup = STARTUP
    return world


def baking(dynamic: bool, replicas: int = REPLICAS) -> World:
    world = slow_world(*specs(dynamic, STRAIGHT_TO_FULL, replicas))
    return until(world, lambda w: w.status.bake_until is not None, "the bake")


def held_at_half(dynamic: bool, replicas: int = REPLICAS) -> World:
    world = slow_world(*specs(dynamic, HALF_THEN_HOLD, replicas))
    return until(world, lambda w: w.status.phase == Phase.PAUSED, "the pause at 50%")


def abort(world: World) -> None:
    world.tick(control="abort")


def breach(world: World) -> None:
    world.tick(analysis=report(world.spec, world.now + timedelta(seconds=10), breach=True))


def git_revert(world: World) -> None:
    world.change(spec_of("v1", replicas=world.spec.replicas, gpu=world.spec.template.gpu_count() > 0,
                         analysis=True, strategy=world.spec.strategy.model_dump(by_alias=True,
                                                                               exclude_none=True),
                         rollback={"bakeTime": "1h"}))
    world.tick()


def revert_keeping_endpoints(world: World, revert: Callable[[World], None]) -> list[int]:
    """Revert, then tick until stable serves alone at full size; the ready endpoints per tick.

    Checked after each tick's actions are applied: pods only become ready between ticks,
    so that is when the Service has the fewest.
    """
    n = world.spec.replicas
    stable = world.status.stable_revision
    assert stable is not None
    assert world.cluster.ready_behind_service() == n
    revert(world)
    endpoints = [world.cluster.ready_behind_service()]
    pods = [sum(d.desired_replicas for d in world.cluster.deployments.values())]
    for _ in range(60):
        restored = world.cluster.deployments[stable]
        if (world.status.reverting_from is None and restored.ready_replicas == n
                and world.cluster.service_selects == stable):
            break
        world.tick()
        endpoints.append(world.cluster.ready_behind_service())
        pods.append(sum(d.desired_replicas for d in world.cluster.deployments.values()))
    else:
        raise AssertionError(f"stable not back at full size: {world.status.message}")
    canary = world.spec.strategy.canary
    if canary is not None and canary.dynamic_stable_scale:
        # No surge with dynamicStableScale: both revisions together stay within N pods
        # (two with one replica), giving up one pod at a time for a stable one.
        assert max(pods) <= max(n, 2), pods
        assert min(endpoints) >= max(1, n - 1), endpoints
    else:
        assert min(endpoints) >= n, endpoints  # surge: stable comes back beside the canary
    others = {r: d.desired_replicas for r, d in world.cluster.deployments.items() if r != stable}
    assert set(others.values()) <= {0}, others
    return endpoints


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamicStableScale", "surge"])
@pytest.mark.parametrize(
    "revert", [abort, breach, git_revert], ids=["abort", "rollback indicator", "git revert"]
)
def test_a_revert_from_the_bake_keeps_ready_endpoints_every_tick(
    dynamic: bool, revert: Callable[[World], None]
) -> None:
    revert_keeping_endpoints(baking(dynamic), revert)


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamicStableScale", "surge"])
def test_a_revert_mid_canary_keeps_ready_endpoints_every_tick(dynamic: bool) -> None:
    revert_keeping_endpoints(held_at_half(dynamic), abort)


@pytest.mark.parametrize("build", [baking, held_at_half], ids=["from the bake", "mid-canary"])
def test_a_single_replica_revert_starts_the_stable_pod_before_the_canary_goes(
    build: Callable[[bool, int], World]
) -> None:
    # One pod and no surge: the canary holds it (even at 50%), and someone has to serve
    # while the stable pod starts.
    revert_keeping_endpoints(build(True, 1), abort)


def test_with_dynamic_stable_scale_the_bake_says_the_previous_revision_is_not_kept_warm() -> None:
    world = baking(True)
    old = world.status.stable_revision
    assert world.cluster.deployments[old or ""].desired_replicas == 0
    assert f"previous revision {old} is NOT kept warm" in (world.status.message or "")
    warm = baking(False)
    assert "kept until" in (warm.status.message or "")
    assert "warm at 4 pods" in (warm.status.message or "")


def test_a_revert_in_progress_says_what_still_serves_and_ends_with_an_event() -> None:
    world = baking(True)
    canary = world.status.canary_revision
    abort(world)
    status = world.status
    assert status.phase == Phase.DEGRADED
    assert status.reverting_from == canary
    assert "stable 0/4 pods ready" in (status.message or "")
    assert f"revision {canary} keeps serving on 3 pods until stable takes over" in (
        status.message or "")
    assert status.canary_weight == 100  # every request still goes to the reverted revision
    assert world.last is not None and world.last.requeue_after is not None
    until(world, lambda w: w.status.reverting_from is None, "the revert done")
    assert "keeps serving" not in (world.status.message or "")
    assert world.status.message == world.status.history[0].reason
    assert [e.reason for e in world.events].count("RevertCompleted") == 1


def test_a_new_revision_waits_for_a_revert_to_finish() -> None:
    world = baking(True)
    abort(world)
    newer = spec_of("v3", replicas=REPLICAS, gpu=True, analysis=True,
                    strategy={"canary": {"steps": STRAIGHT_TO_FULL}}, rollback={"bakeTime": "1h"})
    world.change(newer)
    world.tick()
    assert world.status.canary_revision is None
    assert world.status.phase == Phase.PROGRESSING
    assert f"revision {revision_of(newer)} rolls out once it is done" in (world.status.message or "")
    assert world.cluster.ready_behind_service() >= 1
    until(world, lambda w: w.status.canary_revision == revision_of(newer), "the new rollout")

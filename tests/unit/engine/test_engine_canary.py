"""The canary path: first deployment, no-op ticks, steps, readiness, deadlines, GPUs.

Each case builds a world, runs ticks, and states what an SRE would read in status
and what the operator would ask of the cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from modeldeploy.engine import (
    EmitEvent,
    EnsureConfigMap,
    EnsureDeployment,
    EnsureService,
    SetTrafficWeight,
    revision_of,
)
from modeldeploy.spec import Phase
from rollout_world import World, deployed, replicas_of, rolling, spec_of, weight_of

V1 = spec_of("v1")
V2 = spec_of("v2")
R1, R2 = revision_of(V1), revision_of(V2)
UNTIMED: list[dict[str, Any]] = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]


@dataclass(frozen=True)
class Expect:
    phase: Phase
    step: int | None
    message: str
    replicas: dict[str, int]
    weight: int | None = None


def first_tick() -> World:
    world = World(V1)
    world.tick()
    return world


def first_ready() -> World:
    return deployed(V1)


def unchanged() -> World:
    world = deployed(V1)
    world.tick()
    return world


def rescaled() -> World:
    world = deployed(V1)
    world.change(spec_of("v1", replicas=6))
    world.tick()
    return world


def canary_started() -> World:
    world = rolling(V1, V2)
    world.tick()
    return world


def canary_ready_at_10() -> World:
    world = canary_started()
    world.tick()
    return world


def pause_not_yet_elapsed() -> World:
    world = canary_ready_at_10()
    world.tick(timedelta(seconds=59))
    return world


def pause_elapsed() -> World:
    world = canary_ready_at_10()
    world.tick(timedelta(seconds=60))
    return world


def untimed_pause_after_a_day() -> World:
    world = rolling(V1, spec_of("v2", steps=UNTIMED))
    world.ticks(2)
    world.tick(timedelta(days=1))
    return world


def service_still_on_stable() -> World:
    world = rolling(V1, V2)
    world.cluster.service_follows = False  # the Service keeps selecting v1 alone
    world.ticks(3)
    return world


def canary_crash_looping_within_deadline() -> World:
    world = rolling(V1, V2)
    world.cluster.broken[R2] = "CrashLoopBackOff: back-off restarting failed container"
    world.tick()
    world.tick(timedelta(minutes=9))
    return world


def canary_crash_looping_past_deadline() -> World:
    world = canary_crash_looping_within_deadline()
    world.tick(timedelta(minutes=1))
    return world


def gpu_canary_unschedulable_past_deadline() -> World:
    world = rolling(spec_of("v1", gpu=True), spec_of("v2", gpu=True))
    gpu_v2 = revision_of(spec_of("v2", gpu=True))
    world.cluster.broken[gpu_v2] = "Unschedulable: 0/3 nodes have free nvidia.com/gpu"
    world.tick()
    world.tick(timedelta(minutes=10))
    return world


def first_deployment_past_deadline() -> World:
    world = World(V1)
    world.cluster.broken[R1] = "ImagePullBackOff: modeldeploy/song-analyzer:v1 not found"
    world.tick()
    world.tick(timedelta(minutes=10))
    return world


def gpu_canary_at_10() -> World:
    world = rolling(spec_of("v1", gpu=True), spec_of("v2", gpu=True))
    world.ticks(1)
    return world


def superseded_mid_rollout() -> World:
    world = canary_ready_at_10()
    world.change(spec_of("v3"))
    world.tick()
    return world


def reverted_mid_rollout() -> World:
    world = canary_ready_at_10()
    world.change(V1)
    world.tick()
    return world


def completed() -> World:
    world = pause_elapsed()
    world.ticks(3)
    return world


R3 = revision_of(spec_of("v3"))
GPU1, GPU2 = revision_of(spec_of("v1", gpu=True)), revision_of(spec_of("v2", gpu=True))

CASES: list[tuple[str, Callable[[], World], Expect]] = [
    ("a first deployment goes straight to all replicas and is Pending until ready",
     first_tick, Expect(Phase.PENDING, None, "waiting for 0/4 pods ready", {R1: 4})),
    ("a first deployment whose pods are ready is Succeeded",
     first_ready, Expect(Phase.SUCCEEDED, None, f"revision {R1} is stable", {R1: 4}, 0)),
    ("a spec whose revision is the stable one changes nothing",
     unchanged, Expect(Phase.SUCCEEDED, None, "is stable", {R1: 4}, 0)),
    ("a replicas-only change scales stable in place, no canary",
     rescaled, Expect(Phase.SUCCEEDED, None, "is stable", {R1: 6}, 0)),
    ("a template change starts a canary at 10% that waits for readiness",
     canary_started,
     Expect(Phase.PROGRESSING, 0, "step 1/4 setWeight 10: waiting for canary 0/1 ready",
            {R2: 1, R1: 4}, 20)),
    ("a ready canary at 10% moves on to the pause step",
     canary_ready_at_10, Expect(Phase.PAUSED, 1, "step 2/4 pause 1m: 1m left", {R2: 1, R1: 4}, 20)),
    ("a timed pause holds before its duration elapsed",
     pause_not_yet_elapsed, Expect(Phase.PAUSED, 1, "1s left", {R2: 1, R1: 4}, 20)),
    ("a timed pause moves on once its duration elapsed",
     pause_elapsed,
     Expect(Phase.PROGRESSING, 2, "step 3/4 setWeight 100: waiting for canary 1/4 ready",
            {R2: 4, R1: 4}, 100)),
    ("a pause without duration still waits after a day",
     untimed_pause_after_a_day,
     Expect(Phase.PAUSED, 1, "paused until `modeldeploy promote`", {}, 20)),
    ("a split the Service does not serve yet holds the step",
     service_still_on_stable,
     Expect(Phase.PROGRESSING, 0,
            "waiting for the Service to spread requests over 1 canary and 4 stable ready pods "
            "(now 0 and 4)", {R2: 1, R1: 4}, 20)),
    ("a crash-looping canary within progressDeadline keeps waiting with the reason",
     canary_crash_looping_within_deadline,
     Expect(Phase.PROGRESSING, 0, "0/1 ready: CrashLoopBackOff", {R2: 1, R1: 4}, 20)),
    ("a crash-looping canary past progressDeadline is aborted: traffic back, canary at 0",
     canary_crash_looping_past_deadline,
     Expect(Phase.DEGRADED, None, "not ready within progressDeadline 10m: waiting for canary "
            "0/1 ready: CrashLoopBackOff", {R1: 4, R2: 0}, 0)),
    ("a GPU canary that cannot be scheduled is aborted naming the missing GPUs",
     gpu_canary_unschedulable_past_deadline,
     Expect(Phase.DEGRADED, None, "0/3 nodes have free nvidia.com/gpu", {GPU1: 2 + 2, GPU2: 0},
            0)),
    ("a first deployment past progressDeadline is Failed, its pods left to inspect",
     first_deployment_past_deadline,
     Expect(Phase.FAILED, None, "ImagePullBackOff", {R1: 4})),
    ("a GPU template scales stable down as the canary scales up and says why",
     gpu_canary_at_10,
     Expect(Phase.PROGRESSING, 0, "dynamicStableScale on: the template requests nvidia.com/gpu",
            {GPU2: 1, GPU1: 3}, 25)),
    ("a newer revision mid-rollout supersedes the canary and starts from step 1",
     superseded_mid_rollout,
     Expect(Phase.PROGRESSING, 0, "step 1/4 setWeight 10", {R3: 1, R1: 4}, 20)),
    ("the spec going back to stable mid-rollout cancels the canary",
     reverted_mid_rollout, Expect(Phase.SUCCEEDED, None, f"revision {R1} is stable", {R1: 4}, 0)),
    ("a canary through all its steps becomes stable and the old revision idles at 0",
     completed, Expect(Phase.SUCCEEDED, None, f"revision {R2} is stable", {R2: 4, R1: 0}, 0)),
]


@pytest.mark.parametrize(("scenario", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_canary_rollout(scenario: Callable[[], World], expect: Expect) -> None:
    world = scenario()
    assert world.last is not None
    assert world.status.phase == expect.phase
    assert world.status.current_step == expect.step
    assert expect.message in (world.status.message or ""), world.status.message
    assert replicas_of(world.last) == expect.replicas or not expect.replicas
    assert weight_of(world.last) == expect.weight
    assert world.status.canary_weight == (expect.weight if expect.step is not None else
                                          world.status.canary_weight)


def test_an_unchanged_revision_emits_no_event_and_writes_the_same_status() -> None:
    world = deployed(V1)
    before = world.status.model_copy(deep=True)
    decision = world.tick()
    assert not [a for a in decision.actions if isinstance(a, EmitEvent)]
    assert decision.status == before
    assert decision.requeue_after is None


def test_a_progress_deadline_abort_says_so_in_conditions_and_a_warning_event() -> None:
    world = canary_crash_looping_past_deadline()
    assert world.condition("Progressing") == ("False", "ProgressDeadlineExceeded")
    assert world.condition("Degraded") == ("True", "ProgressDeadlineExceeded")
    assert world.status.aborted_revision == R2
    warning = world.events[-1]
    assert (warning.type, warning.reason) == ("Warning", "ProgressDeadlineExceeded")
    assert "CrashLoopBackOff" in warning.message
    assert world.status.history[0].outcome == "Aborted"


def test_an_aborted_revision_stays_down_until_the_spec_changes() -> None:
    world = canary_crash_looping_past_deadline()
    world.cluster.broken.clear()
    decision = world.tick(timedelta(hours=1))
    assert world.status.phase == Phase.DEGRADED
    assert replicas_of(decision) == {R1: 4, R2: 0}
    world.change(spec_of("v3"))
    world.tick()
    assert world.status.canary_revision == R3
    assert world.status.aborted_revision is None


def test_a_known_good_revision_skips_pauses_and_analysis_but_waits_for_readiness() -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 10}, {"pause": {}}, {"analysis": {}}, {"setWeight": 50},
             {"pause": {"duration": "1h"}}, {"setWeight": 100}]
    v1, v2 = spec_of("v1", steps=steps, analysis=True), spec_of("v2", steps=steps, analysis=True)
    world = rolling(v1, v2)
    world.tick()
    world.tick(control="promoteFull")
    world.ticks(3)
    assert world.status.stable_revision == revision_of(v2)
    world.change(v1)  # a `git revert`
    started = world.tick()
    assert "known-good revision: pauses and analysis skipped" in (world.status.message or "")
    assert weight_of(started) == 20  # 10% of 4 pods, surge: one canary pod beside four
    world.ticks(6)
    assert world.status.stable_revision == revision_of(v1)
    assert world.status.phase == Phase.SUCCEEDED
    assert world.history_steps() == [
        "setWeight 10", "skipped pause", "skipped analysis", "setWeight 50",
        "skipped pause 1h", "setWeight 100", "full 100%", "known-good revision promoted without bake",
    ]


def test_config_gets_its_configmap_before_the_deployment() -> None:
    world = World(spec_of("v1", config={"FF_CACHE": "on"}))
    decision = world.tick()
    kinds = [type(a) for a in decision.actions]
    assert kinds.index(EnsureConfigMap) < kinds.index(EnsureDeployment)


def test_the_service_selects_canary_alone_once_it_is_ready_at_100_percent() -> None:
    world = pause_elapsed()
    waiting = world.last
    assert waiting is not None
    assert [a for a in waiting.actions if isinstance(a, EnsureService)] == [EnsureService(None)]
    ready = world.tick()
    assert [a for a in ready.actions if isinstance(a, EnsureService)] == [EnsureService(R2)]
    assert [a for a in ready.actions if isinstance(a, SetTrafficWeight)] == [
        SetTrafficWeight(R1, R2, 100)
    ]
    assert replicas_of(ready) == {R2: 4, R1: 4}  # stable warm, but out of the Service


REQUEUES: list[tuple[str, Callable[[], World], timedelta | None]] = [
    ("a stable revision needs no look until something changes", unchanged, None),
    ("a canary waiting for readiness is looked at again soon",
     canary_crash_looping_within_deadline, timedelta(seconds=10)),
    ("a timed pause is looked at again when it elapses", pause_not_yet_elapsed,
     timedelta(seconds=1)),
    ("a pause without duration waits for the promote that changes the status",
     untimed_pause_after_a_day, None),
]


@pytest.mark.parametrize(
    ("scenario", "expected"), [r[1:] for r in REQUEUES], ids=[r[0] for r in REQUEUES]
)
def test_requeue(scenario: Callable[[], World], expected: timedelta | None) -> None:
    world = scenario()
    assert world.last is not None
    assert world.last.requeue_after == expected


def test_a_timed_pause_requeues_for_exactly_what_is_left() -> None:
    world = canary_ready_at_10()
    assert world.tick(timedelta(seconds=20)).requeue_after == timedelta(seconds=40)


SURGE: list[tuple[str, bool, int, int]] = [
    ("without dynamicStableScale stable keeps all pods while no canary pod is ready",
     False, 0, 4),
    ("without dynamicStableScale stable gives up one pod per ready canary pod", False, 1, 3),
    ("without dynamicStableScale stable reaches its planned size once canary is ready",
     False, 2, 2),
    ("with dynamicStableScale stable makes room at once, so GPU pods can schedule", True, 0, 2),
]


@pytest.mark.parametrize(
    ("gpu", "canary_ready", "stable"), [s[1:] for s in SURGE], ids=[s[0] for s in SURGE]
)
def test_stable_scales_down_only_as_fast_as_capacity_allows(
    gpu: bool, canary_ready: int, stable: int
) -> None:
    old, new = spec_of("v1", gpu=gpu), spec_of("v2", gpu=gpu, steps=[{"setWeight": 50}])
    world = rolling(old, new)
    world.tick()
    canary = world.cluster.deployments[revision_of(new)]
    world.cluster.deployments[canary.revision] = replace(
        canary, ready_replicas=canary_ready, available_replicas=canary_ready
    )
    decision = world.tick()
    assert replicas_of(decision)[revision_of(old)] == stable


def test_only_stable_previous_and_aborted_deployments_are_kept_older_ones_are_deleted() -> None:
    one_step: list[dict[str, Any]] = [{"setWeight": 100}]
    world = deployed(spec_of("v1", steps=one_step))
    for image in ("v2", "v3"):
        world.change(spec_of(image, steps=one_step))
        world.ticks(4)
    assert world.last is not None
    v1, v2, v3 = (revision_of(spec_of(i)) for i in ("v1", "v2", "v3"))
    assert replicas_of(world.last) == {v3: 4, v2: 0}  # v2 kept idle for a quick revert
    assert v1 not in world.cluster.deployments  # deleted by a DeleteDeployment action


def test_with_the_gateway_router_the_weight_is_exact_and_stable_keeps_its_pods() -> None:
    routing = {"trafficRouting": {"gatewayAPI": {"httpRoute": "song-analyzer"}}}
    old = spec_of("v1", strategy={"canary": {"steps": [{"setWeight": 10}], **routing}})
    new = spec_of("v2", strategy={"canary": {"steps": [{"setWeight": 10}], **routing}})
    world = rolling(old, new)
    decision = world.tick()
    # No weight on the route before the canary has a ready pod (a Gateway would answer 503).
    assert weight_of(decision) == 0
    assert replicas_of(decision) == {revision_of(new): 1, revision_of(old): 4}
    decision = world.tick()
    assert weight_of(decision) == 10
    assert replicas_of(decision) == {revision_of(new): 1, revision_of(old): 4}
    assert world.status.canary_weight == 10

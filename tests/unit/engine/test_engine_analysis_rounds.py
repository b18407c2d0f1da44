"""Analysis rounds judged for real across a whole rollout: counters and relative checks.

Each round goes through the runner's own judging (``judge_round``: presets, evaluation,
stable baselines) as the operator runs it, on answers from a fake Prometheus that
computes what the real one would: a revision with no ready pod behind the Service
serves no requests, so its query has no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from modeldeploy.analysis import presets
from modeldeploy.analysis_runner import judge_round, round_due
from modeldeploy.engine import Decision, analysis_request, revision_of
from modeldeploy.measurement import Measurement, NoData, QueryResult
from modeldeploy.spec import ModelDeploymentSpec, ModelDeploymentStatus, Phase, Verdict
from rollout_world import PROMETHEUS, World, rolling, spec_of

LATENCY_QUERY = 'latency_seconds{revision="{{revision}}"}'


@dataclass
class Prometheus:
    """The latency each revision answers with while it serves requests."""

    latency: dict[str, float]

    def answer(self, world: World, revision: str) -> QueryResult:
        cluster = world.cluster
        deployment = cluster.deployments.get(revision)
        serving = deployment is not None and deployment.ready_replicas > 0 and (
            cluster.service_selects in (None, revision)
        )
        if not serving:
            return NoData("no series: the revision served no requests", world.now)
        return Measurement(self.latency[revision], world.now)


def tick_measuring(world: World, prometheus: Prometheus, after: timedelta) -> Decision:
    """One tick, with the round the runner would measure at that moment (if one is due)."""
    now = world.now + after
    analysis = world.spec.analysis
    assert analysis is not None
    request = analysis_request(world.spec, world.status, now)
    report = None
    if request is not None and round_due(world.spec, world.status, now):
        gates, _ = presets.resolve(analysis)
        world.now = now  # the fake Prometheus answers as of the round
        canary = {g.name: prometheus.answer(world, request.revision) for g in gates}
        stable = {
            g.name: prometheus.answer(world, request.stable_revision)
            for g in gates
            if g.relative_to_stable is not None and request.stable_revision
            and request.stable_serves_traffic  # the runner does not query a stable at 0%
        }
        report = judge_round(analysis, world.status, request, canary, stable, now)
        world.now = now - after
    return world.tick(after, analysis=report)


def latency_specs(
    steps: list[dict[str, Any]], metric: dict[str, Any], interval: str, bake: str
) -> tuple[ModelDeploymentSpec, ModelDeploymentSpec]:
    analysis = {"provider": PROMETHEUS, "interval": interval,
                "metrics": [{"name": "latency", "query": LATENCY_QUERY, **metric}]}

    def one(image: str) -> ModelDeploymentSpec:
        body = spec_of(image, steps=steps, analysis=True, rollback={"bakeTime": bake}).model_dump(
            by_alias=True, exclude_none=True
        )
        return ModelDeploymentSpec.model_validate({**body, "analysis": analysis})

    return one("v1"), one("v2")


# ------------------------------------------------------------------ counters across steps

SHORT_STEPS: list[dict[str, Any]] = [
    step for weight in (10, 20, 30, 40, 50, 60)
    for step in ({"setWeight": weight}, {"pause": {"duration": "15s"}})
]


def test_a_gate_failing_every_round_rolls_back_even_when_every_step_is_shorter_than_its_limit(
) -> None:
    # failureLimit 2: three failures in a row, 30 s at one round per 10 s; each step
    # lasts about 20 s, so counters cleared at every step would never get there.
    old, new = latency_specs(SHORT_STEPS, {"thresholdRange": {"max": 1.0}}, "10s", "0s")
    world = rolling(old, new)
    prometheus = Prometheus({revision_of(old): 0.5, revision_of(new): 2.0})
    steps_seen: set[int] = set()
    for _ in range(60):
        tick_measuring(world, prometheus, timedelta(seconds=10))
        if world.status.current_step is not None:
            steps_seen.add(world.status.current_step)
        if world.status.canary_revision is None:
            break
    assert world.status.phase == Phase.ROLLED_BACK, world.status.message
    assert world.status.stable_revision == revision_of(old)
    assert world.condition("Degraded") == ("True", "AnalysisFailed")
    assert "failed 3 times in a row (failureLimit 2)" in (world.status.message or "")
    assert len(steps_seen) >= 2  # the failures were counted across steps


def test_a_pass_still_resets_the_failures_in_a_row() -> None:
    old, new = latency_specs(SHORT_STEPS, {"thresholdRange": {"max": 1.0}}, "10s", "0s")
    world = rolling(old, new)
    prometheus = Prometheus({revision_of(old): 0.5, revision_of(new): 2.0})
    for round_number in range(60):
        # Two failures, then a pass: never three in a row.
        prometheus.latency[revision_of(new)] = 0.5 if round_number % 3 == 2 else 2.0
        tick_measuring(world, prometheus, timedelta(seconds=10))
        if world.status.canary_revision is None:
            break
    assert world.status.phase == Phase.SUCCEEDED, world.status.message
    assert world.status.stable_revision == revision_of(new)


# ------------------------------------------------------------------ relativeToStable at 100%

TO_FULL: list[dict[str, Any]] = [{"setWeight": 50}, {"analysis": {"measurements": 2}}]
RELATIVE = {"relativeToStable": {"maxRatio": 2.0}}


def relative_world() -> tuple[World, Prometheus]:
    # A bake of 5 minutes is 10 rounds of 30 s: well past inconclusiveLimit + 1 (4).
    old, new = latency_specs(TO_FULL, RELATIVE, "30s", "5m")
    prometheus = Prometheus({revision_of(old): 0.8, revision_of(new): 1.0})
    return rolling(old, new), prometheus


def until_baking(world: World, prometheus: Prometheus) -> None:
    for _ in range(60):
        if world.status.bake_until is not None:
            return
        tick_measuring(world, prometheus, timedelta(seconds=10))
    raise AssertionError(f"never baked: {world.status.message}")


def test_a_relative_check_in_the_bake_compares_with_stable_as_measured_before_full() -> None:
    world, prometheus = relative_world()
    until_baking(world, prometheus)
    phases: set[Phase] = set()
    bake_rounds = []
    for _ in range(60):
        tick_measuring(world, prometheus, timedelta(seconds=10))
        phases.add(world.status.phase or Phase.PENDING)
        latency = next((m for m in world.status.analysis if m.name == "latency"), None)
        if world.status.bake_until is not None and latency is not None:
            bake_rounds.append((latency.time, latency.verdict, latency.stable_value))
        # A restart mid-bake: the operator reads the status back from the API server.
        world.status = ModelDeploymentStatus.model_validate(
            world.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        )
        if world.status.canary_revision is None:
            break
    assert Phase.PAUSED not in phases
    assert world.status.phase == Phase.SUCCEEDED, world.status.message
    assert world.status.stable_revision == revision_of(world.spec)
    rounds = set(bake_rounds)
    assert len({time for time, _, _ in rounds}) >= 5, rounds  # more than inconclusiveLimit + 1
    assert {(verdict, stable) for _, verdict, stable in rounds} == {(Verdict.PASS, 0.8)}


def test_a_canary_slower_than_the_stable_baseline_still_fails_in_the_bake() -> None:
    world, prometheus = relative_world()
    until_baking(world, prometheus)
    prometheus.latency[revision_of(world.spec)] = 2.5  # over 2 x the baseline 0.8
    for _ in range(60):
        tick_measuring(world, prometheus, timedelta(seconds=10))
        if world.status.canary_revision is None:
            break
    assert world.status.phase == Phase.ROLLED_BACK, world.status.message
    assert world.condition("Degraded") == ("True", "AnalysisFailed")
    assert "vs stable 0.8" in (world.status.message or "")


def test_without_a_stable_baseline_a_relative_check_at_full_stays_inconclusive() -> None:
    # Straight to 100%: stable was never measured while it served, so there is nothing
    # to compare with; missing data never promotes.
    old, new = latency_specs([{"setWeight": 100}], RELATIVE, "30s", "5m")
    world = rolling(old, new)
    prometheus = Prometheus({revision_of(old): 0.8, revision_of(new): 1.0})
    for _ in range(60):
        tick_measuring(world, prometheus, timedelta(seconds=10))
        if world.status.phase == Phase.PAUSED:
            break
    assert world.status.phase == Phase.PAUSED, world.status.message
    assert world.status.pause_cause == "inconclusive"
    assert "no baseline" in (world.status.message or "")

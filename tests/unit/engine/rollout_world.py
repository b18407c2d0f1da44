"""A tiny simulated world for engine tests: specs, a fake cluster, a tick driver.

The fake cluster applies the engine's actions the way Kubernetes would settle
them: a Deployment scaled to N has N ready pods on the next look, unless the test
marks its revision broken (pods never ready, with a reason). What the data plane
serves is computed as the real routers read it, never echoed from the engine: the
replicas router reports the ready pods per track that the Service's selector picks
(a test can make the Service lag behind), the gatewayAPI router the weights written
to the route, once a Gateway accepts it (a test can make the Gateway refuse it).
Time only moves when a test says so.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from modeldeploy.analysis import AnalysisFailure, AnalysisReport, Breach
from modeldeploy.engine import (
    Action,
    Decision,
    DeleteDeployment,
    DeploymentObservation,
    EmitEvent,
    EnsureDeployment,
    EnsureService,
    Observation,
    ScaleDeployment,
    Served,
    ServedSplit,
    SetTrafficWeight,
    Unverified,
    reconcile,
    revision_of,
)
from modeldeploy.spec import (
    ControlRequest,
    EvaluationStatus,
    MetricStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Verdict,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
NAME = "song-analyzer"
PROMETHEUS = {"prometheus": {"address": "http://prometheus:9090"}}


def spec_of(
    image: str = "v1",
    *,
    replicas: int = 4,
    steps: list[dict[str, Any]] | None = None,
    analysis: bool = False,
    gpu: bool = False,
    config: dict[str, str] | None = None,
    **extra: Any,
) -> ModelDeploymentSpec:
    """A spec; ``image`` names what runs, so two images are two revisions."""
    container: dict[str, Any] = {"name": "app", "image": f"modeldeploy/song-analyzer:{image}"}
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    body: dict[str, Any] = {
        "replicas": replicas,
        "template": {"spec": {"containers": [container]}},
        "strategy": {
            "canary": {
                "steps": steps
                if steps is not None
                else [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 100}]
            }
        },
        "rollback": {"automatic": True, "bakeTime": "0s"},
    }
    if analysis:
        body["analysis"] = {"provider": PROMETHEUS, "presets": ["success-rate"]}
    if config is not None:
        body["config"] = config
    for key, value in extra.items():
        if key == "rollback":  # merged, so a test can change one rollback setting
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return ModelDeploymentSpec.model_validate(body)


def report(
    spec: ModelDeploymentSpec,
    at: datetime,
    *,
    passes: int = 0,
    verdict: Verdict = Verdict.PASS,
    breach: bool = False,
    failed: bool = False,
    inconclusive: bool = False,
) -> AnalysisReport:
    """An analysis report about the spec's revision, as issue 5's evaluation makes them."""
    revision = revision_of(spec)
    metric = MetricStatus(
        name="success-rate",
        value=0.99 if verdict == Verdict.PASS else 0.5,
        threshold="min 0.95",
        verdict=verdict,
        time=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        consecutive_passes=passes,
    )
    return AnalysisReport(
        revision=revision,
        measured_at=at,
        verdict=verdict,
        consecutive_passes=passes,
        metrics=(metric,),
        breach=Breach("success-rate", 0.5, "min 0.85", revision) if breach else None,
        failed=AnalysisFailure("success-rate", "0.5 (min 0.95); failed 3 times in a row")
        if failed
        else None,
        inconclusive_exceeded=AnalysisFailure("success-rate", "no data 4 times in a row")
        if inconclusive
        else None,
    )


@dataclass
class FakeCluster:
    """Deployments by revision, as the kube adapter would report them after applying,
    and the Service and route the routers read."""

    deployments: dict[str, DeploymentObservation] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    router: str = "replicas"  # the trafficRouting key of the router simulated
    # The revision the Service selects (None: every revision of the ModelDeployment).
    service_selects: str | None = None
    # False: the Service keeps the selector it has (its update lags or is refused).
    service_follows: bool = True
    # What the router last wrote (the route's backends, and which revision is which).
    route: SetTrafficWeight | None = None
    # False: the route keeps the RequestMirror percent it has (its update lags).
    mirror_follows: bool = True
    # A Gateway's reason for refusing the HTTPRoute (None: a Gateway accepts it).
    route_refused: str | None = None
    # How long a new pod takes to become ready (a GPU model server loading its weights);
    # 0: ready on the next look. ``pods`` holds when each pod of a revision is ready.
    startup: timedelta = timedelta(0)
    pods: dict[str, list[datetime]] = field(default_factory=dict)
    clock: datetime = T0

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, EnsureDeployment):
                self._scale(action.revision, action.track, action.replicas)
            elif isinstance(action, ScaleDeployment):
                old = self.deployments.get(action.revision)
                self._scale(action.revision, old.track if old else "stable", action.replicas)
            elif isinstance(action, DeleteDeployment):
                self.deployments.pop(action.revision, None)
            elif isinstance(action, EnsureService) and self.service_follows:
                self.service_selects = action.revision
            elif isinstance(action, SetTrafficWeight):
                kept = self.route.mirror_percent if self.route is not None else 0
                self.route = action if self.mirror_follows else dataclasses.replace(
                    action, mirror_percent=kept)

    def _scale(self, revision: str, track: str, replicas: int) -> None:
        reason = self.broken.get(revision)
        # Scaling down removes the pods that started last (not ready ones first), as a
        # ReplicaSet does; scaling up adds pods that are ready ``startup`` from now.
        kept = sorted(self.pods.get(revision, []))[:replicas]
        self.pods[revision] = kept + [self.clock + self.startup] * (replicas - len(kept))
        ready = 0 if reason else replicas
        if self.startup > timedelta(0) and not reason:
            ready = sum(1 for at in self.pods[revision] if at <= self.clock)
        self.deployments[revision] = DeploymentObservation(
            revision=revision,
            track=track,
            desired_replicas=replicas,
            ready_replicas=ready,
            updated_replicas=replicas,
            available_replicas=ready,
            not_ready_reason=reason,
        )

    def _behind_service(self, revision: str | None) -> int:
        """Ready pods of ``revision`` among those the Service spreads requests over."""
        if revision is None or self.service_selects not in (None, revision):
            return 0
        deployment = self.deployments.get(revision)
        return deployment.ready_replicas if deployment is not None else 0

    def served(self) -> Served | None:
        """What the data plane serves, as the real router for ``self.router`` reads it."""
        if self.route is None:
            return None  # no canary traffic set yet (a first deployment asks no router)
        if self.router == "gatewayAPI":
            if self.route_refused is not None:
                return Unverified(self.route_refused, refused=True)
            canary_weight = self.route.weight if self.route.canary_revision else 0
            # The route's RequestMirror filter, as the router wrote it.
            return ServedSplit(canary=canary_weight, stable=100 - canary_weight,
                               mirror=self.route.mirror_percent)
        return ServedSplit(
            canary=self._behind_service(self.route.canary_revision),
            stable=self._behind_service(self.route.stable_revision),
        )

    def ready_behind_service(self) -> int:
        """Ready pods the Service ``<name>`` sends requests to (its ready endpoints)."""
        return sum(
            d.ready_replicas for revision, d in self.deployments.items()
            if self.service_selects in (None, revision)
        )

    def observe(
        self, now: datetime, generation: int, analysis: AnalysisReport | None,
        evaluation: EvaluationStatus | None = None,
    ) -> Observation:
        self.clock = now
        for revision, deployment in list(self.deployments.items()):
            if self.startup > timedelta(0):  # pods that finished starting since the last look
                self._scale(revision, deployment.track, deployment.desired_replicas)
        return Observation(
            now=now,
            generation=generation,
            deployments=dict(self.deployments),
            served=self.served(),
            analysis=analysis,
            evaluation=evaluation,
        )


@dataclass
class World:
    """The engine driven tick by tick against a fake cluster."""

    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    cluster: FakeCluster = field(default_factory=FakeCluster)
    now: datetime = T0
    generation: int = 1
    events: list[EmitEvent] = field(default_factory=list)
    last: Decision | None = None

    def __post_init__(self) -> None:
        self.cluster.router = router_of(self.spec)

    def tick(
        self,
        after: timedelta = timedelta(seconds=10),
        *,
        control: str | None = None,
        analysis: AnalysisReport | None = None,
        evaluation: EvaluationStatus | None = None,
    ) -> Decision:
        self.now += after
        if control is not None:
            self.status.control = ControlRequest.model_validate(
                {"action": control, "requestedAt": "2026-01-01T12:00:00Z"}
            )
        observation = self.cluster.observe(self.now, self.generation, analysis, evaluation)
        decision = reconcile(self.spec, self.status, observation, NAME)
        self.cluster.apply(decision.actions)
        self.status = decision.status
        self.events += [a for a in decision.actions if isinstance(a, EmitEvent)]
        self.last = decision
        return decision

    def ticks(self, count: int, after: timedelta = timedelta(seconds=10)) -> Decision:
        decision = self.tick(after)
        for _ in range(count - 1):
            decision = self.tick(after)
        return decision

    def change(self, spec: ModelDeploymentSpec) -> None:
        self.spec = spec
        self.generation += 1
        self.cluster.router = router_of(spec)

    def history_steps(self) -> list[str]:
        return list(self.status.history[0].steps) if self.status.history else []

    def condition(self, type_: str) -> tuple[str, str]:
        found = next(c for c in self.status.conditions if c.type == type_)
        return found.status, found.reason

    def copy(self) -> World:
        return copy.deepcopy(self)


def router_of(spec: ModelDeploymentSpec) -> str:
    canary = spec.strategy.canary
    if canary is not None and canary.traffic_routing.gateway_api is not None:
        return "gatewayAPI"
    return "replicas"


def deployed(spec: ModelDeploymentSpec) -> World:
    """A world where ``spec`` was deployed and is stable (Succeeded)."""
    world = World(spec)
    world.ticks(2)
    assert world.status.stable_revision == revision_of(spec), world.status.message
    return world


def rolling(old: ModelDeploymentSpec, new: ModelDeploymentSpec) -> World:
    """``old`` stable, then ``new`` applied (not yet reconciled)."""
    world = deployed(old)
    world.change(new)
    return world


def replicas_of(decision: Decision) -> dict[str, int]:
    """Desired replicas per revision in a decision."""
    out: dict[str, int] = {}
    for action in decision.actions:
        if isinstance(action, EnsureDeployment | ScaleDeployment):
            out[action.revision] = action.replicas
    return out


def weight_of(decision: Decision) -> int | None:
    weights = [a.weight for a in decision.actions if isinstance(a, SetTrafficWeight)]
    return weights[-1] if weights else None

"""Replica planning: a weight becomes canary and stable pod counts, and the real split."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from kubernetes.client import ApiClient
from modeldeploy import spec as s
from modeldeploy.engine import (
    GATEWAY_API_ROUTER,
    REPLICAS_ROUTER,
    Action,
    DeleteDeployment,
    EnsureDeployment,
    EnsureService,
    Observation,
    ReplicaPlan,
    RouterCapabilities,
    ScaleDeployment,
    plan_replicas,
    reconcile,
)
from modeldeploy.kube import objects
from modeldeploy.kube.cache import ClusterCache
from modeldeploy.kube.client import KubeClient
from modeldeploy.observe import observe_deployments
from modeldeploy.routing.replicas import ReplicasRouter
from modeldeploy.spec import ModelDeploymentStatus
from rollout_world import NAME, T0, spec_of

REPLICAS = range(1, 11)
WEIGHTS = (0, 1, 10, 33, 50, 99, 100)
SETUPS: list[tuple[RouterCapabilities, bool]] = [
    (REPLICAS_ROUTER, False),
    (REPLICAS_ROUTER, True),
    (GATEWAY_API_ROUTER, False),
    (GATEWAY_API_ROUTER, True),
]
GRID = [
    (router, dynamic, replicas, weight)
    for router, dynamic in SETUPS
    for replicas in REPLICAS
    for weight in WEIGHTS
]
GRID_IDS = [
    f"{router.name} router{' with dynamicStableScale' if dynamic else ''}, {n} replicas at {w}%"
    for router, dynamic, n, w in GRID
]


@pytest.mark.parametrize(("router", "dynamic", "replicas", "weight"), GRID, ids=GRID_IDS)
def test_every_plan_keeps_the_promises_users_rely_on(
    router: RouterCapabilities, dynamic: bool, replicas: int, weight: int
) -> None:
    plan = plan_replicas(weight, replicas, router, dynamic)
    # A canary gets at least one pod as soon as it gets any traffic, and none at 0%.
    assert (plan.canary >= 1) == (weight > 0)
    assert plan.canary <= replicas
    if dynamic:
        # No surge: never more pods than spec.replicas (GPUs are rarely spare).
        assert plan.canary + plan.stable <= replicas
    else:
        # Capacity never drops below spec.replicas.
        assert plan.canary + plan.stable >= replicas
        assert plan.canary + plan.stable <= 2 * replicas
    # The effective weight is the real split: 0 and 100 only when one side has no traffic.
    assert (plan.effective_weight == 0) == (weight == 0)
    if plan.effective_weight == 100:
        assert weight == 100 or plan.stable == 0
    if router == REPLICAS_ROUTER and 0 < weight < 100 and plan.stable > 0:
        total = plan.canary + plan.stable
        assert abs(plan.effective_weight - 100 * plan.canary / total) <= 1


EXACT: list[tuple[str, RouterCapabilities, bool, int, int, ReplicaPlan]] = [
    ("4 replicas at 10% surge one canary pod beside all four stable ones",
     REPLICAS_ROUTER, False, 4, 10, ReplicaPlan(canary=1, stable=4, effective_weight=20)),
    ("10 replicas at 33% round the canary up and stable down by the whole share",
     REPLICAS_ROUTER, False, 10, 33, ReplicaPlan(canary=4, stable=7, effective_weight=36)),
    ("4 replicas at 50% split evenly without surge",
     REPLICAS_ROUTER, False, 4, 50, ReplicaPlan(canary=2, stable=2, effective_weight=50)),
    ("1 replica at 10% needs a second pod, so the real split is 50%",
     REPLICAS_ROUTER, False, 1, 10, ReplicaPlan(canary=1, stable=1, effective_weight=50)),
    ("10 replicas at 1% still give the canary one pod",
     REPLICAS_ROUTER, False, 10, 1, ReplicaPlan(canary=1, stable=10, effective_weight=9)),
    ("10 replicas at 99% keep one stable pod",
     REPLICAS_ROUTER, False, 10, 99, ReplicaPlan(canary=10, stable=1, effective_weight=91)),
    ("at 100% stable stays warm for rollback (the Service then selects canary alone)",
     REPLICAS_ROUTER, False, 4, 100, ReplicaPlan(canary=4, stable=4, effective_weight=100)),
    ("dynamicStableScale at 50% of 4 moves two pods from stable to canary",
     REPLICAS_ROUTER, True, 4, 50, ReplicaPlan(canary=2, stable=2, effective_weight=50)),
    ("dynamicStableScale at 10% of 10 moves one pod",
     REPLICAS_ROUTER, True, 10, 10, ReplicaPlan(canary=1, stable=9, effective_weight=10)),
    ("dynamicStableScale at 99% of 2 keeps one stable pod until 100%",
     REPLICAS_ROUTER, True, 2, 99, ReplicaPlan(canary=1, stable=1, effective_weight=50)),
    ("dynamicStableScale with one replica hands the only pod to canary: 100% real",
     REPLICAS_ROUTER, True, 1, 10, ReplicaPlan(canary=1, stable=0, effective_weight=100)),
    ("dynamicStableScale at 100% frees every stable pod",
     REPLICAS_ROUTER, True, 4, 100, ReplicaPlan(canary=4, stable=0, effective_weight=100)),
    ("gateway weights are exact; canary pods are the weight's share rounded up",
     GATEWAY_API_ROUTER, False, 10, 33, ReplicaPlan(canary=4, stable=10, effective_weight=33)),
    ("gateway at 1% of 1 replica still runs one canary pod",
     GATEWAY_API_ROUTER, False, 1, 1, ReplicaPlan(canary=1, stable=1, effective_weight=1)),
    ("gateway with dynamicStableScale gives stable what canary does not take",
     GATEWAY_API_ROUTER, True, 4, 10, ReplicaPlan(canary=1, stable=3, effective_weight=10)),
    ("gateway with dynamicStableScale and one replica can only send everything to canary",
     GATEWAY_API_ROUTER, True, 1, 50, ReplicaPlan(canary=1, stable=0, effective_weight=100)),
    ("weight 0 is all stable",
     GATEWAY_API_ROUTER, False, 3, 0, ReplicaPlan(canary=0, stable=3, effective_weight=0)),
    ("scaled to zero runs nothing at any weight",
     REPLICAS_ROUTER, False, 0, 50, ReplicaPlan(canary=0, stable=0, effective_weight=50)),
]


@pytest.mark.parametrize(
    ("router", "dynamic", "replicas", "weight", "expected"),
    [case[1:] for case in EXACT],
    ids=[case[0] for case in EXACT],
)
def test_plan_rounds_as_documented(
    router: RouterCapabilities, dynamic: bool, replicas: int, weight: int, expected: ReplicaPlan
) -> None:
    assert plan_replicas(weight, replicas, router, dynamic) == expected


def test_a_weight_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        plan_replicas(101, 4, REPLICAS_ROUTER, False)


# -- the engine and the real replicas router together ---------------------------------------
#
# Every replica count and weight must get past its setWeight step: the router reports the
# ready pods the Service spreads over and the engine compares them with the pods it
# planned. Nothing is faked on the router side: the real ReplicasRouter reads a real
# KubeClient over the operator's real watch cache, filled with the Deployments and the
# Service the engine's actions produce, as the API server would hold them once every pod
# is ready.

NAMESPACE = "ml"
PROPERTY_REPLICAS = range(1, 65)
PROPERTY_WEIGHTS = range(1, 101)
# Ticks a setWeight step may take with every pod ready at once: one to scale, one to
# see the pods ready (and narrow the Service at 100%), one to see the Service serve it.
STEP_TICKS = 4


def model_deployment(image: str, replicas: int, weight: int, dynamic: bool) -> s.ModelDeployment:
    spec = spec_of(image, replicas=replicas, strategy={"canary": {
        "steps": [{"setWeight": weight}, {"pause": {}}], "dynamicStableScale": dynamic,
    }})
    return s.ModelDeployment.model_validate({
        "apiVersion": f"{s.GROUP}/{s.VERSION}", "kind": s.KIND,
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "md-uid", "generation": 1},
        "spec": spec.model_dump(by_alias=True, exclude_none=True),
    })


class ServedCluster:
    """The operator's cache as the API server would fill it after the engine's writes,
    with readiness reached (every Deployment's pods ready)."""

    def __init__(self, api: ApiClient) -> None:
        self.cache = ClusterCache(api, "property-test", [NAMESPACE], lambda *_: None)
        self.kube = KubeClient(api, self.cache)
        self.router = ReplicasRouter(self.kube)

    def copy(self, api: ApiClient) -> ServedCluster:
        twin = ServedCluster(api)
        for kind, store in self.cache.stores.items():
            for obj in store.objects.values():
                twin.cache.stores[kind].put(copy.deepcopy(obj))
        return twin

    def settle(self, md: s.ModelDeployment, actions: list[Action]) -> None:
        self.cache.remember(s.KIND, md.model_dump(by_alias=True, exclude_none=True))
        for action in actions:
            if isinstance(action, EnsureDeployment | ScaleDeployment):
                self._deployment(md, action)
            elif isinstance(action, DeleteDeployment):
                name = objects.deployment_name(NAME, action.revision)
                cached = self.cache.get("Deployment", NAMESPACE, name)
                if cached is not None:
                    self.cache.stores["Deployment"].remove(cached)
            elif isinstance(action, EnsureService):
                service = objects.service(md, NAME, action.revision)
                # The merge patch's null removes the key: the Service selects every revision.
                selector = service["spec"]["selector"]
                service["spec"]["selector"] = {k: v for k, v in selector.items() if v is not None}
                self.cache.remember("Service", service)

    def _deployment(self, md: s.ModelDeployment, action: EnsureDeployment | ScaleDeployment) -> None:
        name = objects.deployment_name(NAME, action.revision)
        cached = self.cache.get("Deployment", NAMESPACE, name)
        if cached is None:
            assert isinstance(action, EnsureDeployment), action
            cached = objects.deployment(md, action.revision, action.track, action.replicas)
        replicas = action.replicas
        ready = {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                 "availableReplicas": replicas}
        self.cache.remember("Deployment", {
            **cached, "spec": {**cached["spec"], "replicas": replicas}, "status": ready,
        })

    async def observe(self, md: s.ModelDeployment, status: ModelDeploymentStatus, now: datetime,
                      generation: int) -> Observation:
        served = None
        if status.stable_revision is not None:
            served = await self.router.served(md, status.stable_revision, status.canary_revision)
        return Observation(
            now=now, generation=generation,
            deployments=observe_deployments(self.kube.list_deployments(NAMESPACE, NAME), []),
            served=served,
        )


async def drive(
    cluster: ServedCluster, md: s.ModelDeployment, status: ModelDeploymentStatus, generation: int,
    done: Callable[[ModelDeploymentStatus], bool],
) -> ModelDeploymentStatus:
    """Tick until ``done`` (at most STEP_TICKS); the status it ended with."""
    now = T0
    for _ in range(STEP_TICKS):
        now += timedelta(seconds=10)
        observation = await cluster.observe(md, status, now, generation)
        decision = reconcile(md.spec, status, observation, NAME)
        cluster.settle(md, decision.actions)
        status = decision.status
        if done(status):
            break
    return status


@pytest.mark.parametrize("dynamic", [False, True], ids=["surge", "dynamicStableScale"])
def test_every_replica_count_and_weight_gets_past_its_set_weight_step(dynamic: bool) -> None:
    api = ApiClient()

    async def stuck() -> dict[tuple[int, int], str]:
        found: dict[tuple[int, int], str] = {}
        for replicas in PROPERTY_REPLICAS:
            # v1 deployed once per replica count (the steps are not part of the revision).
            deployed = ServedCluster(api)
            stable = await drive(deployed, model_deployment("v1", replicas, 1, dynamic),
                                 ModelDeploymentStatus(), 1, lambda s: s.stable_revision is not None)
            assert stable.stable_revision is not None, stable.message
            for weight in PROPERTY_WEIGHTS:
                status = await drive(deployed.copy(api), model_deployment("v2", replicas, weight, dynamic),
                                     stable, 2, lambda s: s.current_step == 1)
                if status.current_step != 1:
                    found[(replicas, weight)] = status.message or ""
        return found

    assert asyncio.run(stuck()) == {}

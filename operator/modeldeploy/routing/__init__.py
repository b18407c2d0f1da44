"""Traffic routers behind one interface, picked from a registry by the spec's trafficRouting key.

A router sets a weight and then says what the data plane really serves, in its own
terms (ready pods per track, or the weights of a route a Gateway accepted), as Argo
Rollouts' TrafficRoutingReconciler verifies: the engine compares that with its plan in
the same terms and moves on only once the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from modeldeploy import spec as s
from modeldeploy.engine.observations import Served
from modeldeploy.kube.client import KubeClient


class TrafficRouter(Protocol):
    async def set_weight(
        self, md: s.ModelDeployment, stable: str, canary: str | None, weight: int
    ) -> None:
        """Send ``weight`` percent of requests to ``canary``, the rest to ``stable``."""

    async def served(self, md: s.ModelDeployment, stable: str, canary: str | None) -> Served:
        """What the data plane serves now (see ``ServedSplit``), or why that cannot be told."""


RouterFactory = Callable[[KubeClient], TrafficRouter]
ROUTERS: dict[str, RouterFactory] = {}


def register(key: str) -> Callable[[RouterFactory], RouterFactory]:
    """Register a router under its ``strategy.canary.trafficRouting`` key."""

    def add(factory: RouterFactory) -> RouterFactory:
        ROUTERS[key] = factory
        return factory

    return add


def router_key(md: s.ModelDeployment) -> str:
    canary = md.spec.strategy.canary
    if canary is not None and canary.traffic_routing.gateway_api is not None:
        return "gatewayAPI"
    return "replicas"


def router_for(md: s.ModelDeployment, kube: KubeClient) -> TrafficRouter:
    return ROUTERS[router_key(md)](kube)


# Importing the implementations registers them.
from modeldeploy.routing import gateway_api, replicas  # noqa: E402

__all__ = ["ROUTERS", "TrafficRouter", "gateway_api", "register", "replicas", "router_for"]

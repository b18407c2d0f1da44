"""Traffic routers behind one interface, picked from a registry by the spec's trafficRouting key.

A router sets a weight and then says which weight the data plane really serves, as Argo
Rollouts' TrafficRoutingReconciler does: the engine moves on only once the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from modeldeploy import spec as s
from modeldeploy.kube.client import KubeClient


class TrafficRouter(Protocol):
    async def set_weight(
        self, md: s.ModelDeployment, stable: str, canary: str | None, weight: int
    ) -> None:
        """Send ``weight`` percent of requests to ``canary``, the rest to ``stable``."""

    async def served_weight(
        self, md: s.ModelDeployment, stable: str, canary: str | None
    ) -> int | None:
        """The canary's share the data plane serves now (None: cannot tell yet)."""


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

"""Traffic routers behind one interface, picked from a registry by the spec's trafficRouting key.

A router sets a weight and then says what the data plane really serves, in its own
terms (ready pods per track, or the weights of a route a Gateway accepted), as Argo
Rollouts' TrafficRoutingReconciler verifies: the engine compares that with its plan in
the same terms and moves on only once the two agree. A router that can mirror (copy a
share of the requests to the canary, its answers thrown away) sets and reports that
share too (``ServedSplit.mirror``).

The engine must not import this package, yet plans by what a router can do (are its
weights exact? can it mirror?). So a router's name and capabilities are plain data in
the engine's one table, ``modeldeploy.engine.routers.ROUTER_CAPABILITIES``; a router
class here says which entry it implements (``capabilities``), and ``@register`` files
it in ``ROUTERS`` under that entry's name. Adding a router: its field in the spec's
``TrafficRouting`` (the user's API), its entry in that table, and one module here with
the registered class, imported at the bottom of this file.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, TypeVar

from modeldeploy import spec as s
from modeldeploy.engine.observations import Served
from modeldeploy.engine.routers import RouterCapabilities, router_key
from modeldeploy.kube.client import KubeClient


class TrafficRouter(Protocol):
    # The entry of ROUTER_CAPABILITIES this router implements.
    capabilities: ClassVar[RouterCapabilities]

    def __init__(self, kube: KubeClient) -> None: ...

    async def set_weight(
        self, md: s.ModelDeployment, stable: str, canary: str | None, weight: int,
        *, mirror_percent: int = 0,
    ) -> None:
        """Send ``weight`` percent of requests to ``canary``, the rest to ``stable``, and
        copy ``mirror_percent`` percent of them to ``canary`` besides, its answers thrown
        away (shadow traffic). Only a router whose capabilities say ``supports_mirror``
        mirrors; the engine refuses a mirror step for any other, which ignores it."""

    async def served(self, md: s.ModelDeployment, stable: str, canary: str | None) -> Served:
        """What the data plane serves now (see ``ServedSplit``), or why that cannot be told."""


RouterClass = TypeVar("RouterClass", bound=type[TrafficRouter])
# Router classes by their strategy.canary.trafficRouting key.
ROUTERS: dict[str, type[TrafficRouter]] = {}


def register(router: RouterClass) -> RouterClass:
    """File a router class under the trafficRouting key its capabilities name."""
    ROUTERS[router.capabilities.name] = router
    return router


def router_for(md: s.ModelDeployment, kube: KubeClient) -> TrafficRouter:
    canary = md.spec.strategy.canary
    # Blue-green has no router (the engine plans it with none: its Service switches whole),
    # but the shell still calls one: the spec's default trafficRouting's, which sets nothing.
    routing = canary.traffic_routing if canary is not None else s.CanaryStrategy().traffic_routing
    return ROUTERS[router_key(routing)](kube)


# Importing the implementations registers them.
from modeldeploy.routing import gateway_api, replicas  # noqa: E402

__all__ = ["ROUTERS", "TrafficRouter", "gateway_api", "register", "replicas", "router_for"]

"""What the engine knows of each traffic router: plain data, keyed by the spec's trafficRouting key.

The engine plans and verifies by a router's capabilities, never by its name, and imports
no router (modeldeploy.routing is an adapter). ``ROUTER_CAPABILITIES`` is the one table of
router names and capabilities; each router class in modeldeploy.routing declares the
entry it implements, and the registry there files it under that entry's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from modeldeploy.spec import ModelDeploymentSpec, TrafficRouting


@dataclass(frozen=True)
class RouterCapabilities:
    """A traffic router as the engine plans for it."""

    # The router's key under strategy.canary.trafficRouting, as the spec spells it.
    name: str
    # True: the router sets the canary's share exactly (an HTTPRoute's backendRef weights),
    # so the canary's pods only need capacity for it. False: requests spread over ready
    # pods (one Service over both tracks), so the share IS the ratio of ready pods.
    exact_weights: bool
    # Whether the router can copy requests to the canary without serving its answers
    # (shadow traffic, a mirror step). The gatewayAPI router can (an HTTPRoute
    # RequestMirror filter); the replicas router never will without a mesh.
    supports_mirror: bool


REPLICAS_ROUTER = RouterCapabilities("replicas", exact_weights=False, supports_mirror=False)
GATEWAY_API_ROUTER = RouterCapabilities("gatewayAPI", exact_weights=True, supports_mirror=True)
ROUTER_CAPABILITIES = {router.name: router for router in (REPLICAS_ROUTER, GATEWAY_API_ROUTER)}


def router_key(traffic_routing: TrafficRouting) -> str:
    """The key of the one router ``traffic_routing`` sets (the model allows exactly one)."""
    return next(
        info.alias or field
        for field, info in TrafficRouting.model_fields.items()
        if getattr(traffic_routing, field) is not None
    )


def capabilities_of(spec: ModelDeploymentSpec) -> RouterCapabilities | None:
    """The capabilities of the router a canary uses; None for blue-green, which has no
    router (the Service switches from one revision to the other whole)."""
    canary = spec.strategy.canary
    return None if canary is None else ROUTER_CAPABILITIES[router_key(canary.traffic_routing)]


def mirror_refusals(spec: ModelDeploymentSpec) -> list[str]:
    """``<field>: <problem>`` for each mirror step the spec's router cannot carry out."""
    router = capabilities_of(spec)
    canary = spec.strategy.canary
    if router is None or canary is None or router.supports_mirror:
        return []
    capable = [r.name for r in ROUTER_CAPABILITIES.values() if r.supports_mirror]
    return [
        f"spec.strategy.canary.steps[{index}].mirror: the {router.name} router cannot copy "
        f"requests (a Service sends each request to one pod, and its answer to the user): "
        f"use trafficRouting {' or '.join(capable) or '(none can yet)'}, or remove the step"
        for index, step in enumerate(canary.steps)
        if step.mirror is not None
    ]

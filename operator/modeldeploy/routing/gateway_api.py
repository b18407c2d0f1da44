"""Split traffic with a Gateway API HTTPRoute: exact weights, whatever the pod counts.

The operator owns two Services, ``<name>-stable`` and ``<name>-canary``, each narrowed to
one revision, and sets them as the backendRefs of every rule of the named HTTPRoute
(an existing route keeps its parentRefs, hostnames and matches; a missing one is
created, owned by the ModelDeployment, with no parentRefs for the user to attach).
"""

from __future__ import annotations

from typing import Any

from modeldeploy import spec as s
from modeldeploy.kube import objects
from modeldeploy.kube.client import KubeClient
from modeldeploy.routing import register

ROUTE_GROUP = "gateway.networking.k8s.io"


def route_name(md: s.ModelDeployment) -> str:
    canary = md.spec.strategy.canary
    assert canary is not None and canary.traffic_routing.gateway_api is not None
    return canary.traffic_routing.gateway_api.http_route


def backend_refs(md: s.ModelDeployment, weight: int) -> list[dict[str, Any]]:
    port = md.spec.service.port
    return [
        {"name": f"{md.metadata.name}-stable", "port": port, "weight": 100 - weight},
        {"name": f"{md.metadata.name}-canary", "port": port, "weight": weight},
    ]


def canary_weight_of(route: dict[str, Any], md_name: str) -> int | None:
    """The canary's share in the route's first rule (all rules are set alike)."""
    rules = (route.get("spec") or {}).get("rules") or []
    if not rules:
        return None
    weights = {ref.get("name"): int(ref.get("weight", 1)) for ref in rules[0].get("backendRefs", [])}
    total = sum(weights.values())
    if total == 0 or f"{md_name}-canary" not in weights:
        return None
    return round(100 * weights[f"{md_name}-canary"] / total)


def _same_refs(have: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    """The route's refs say what we would write (the server may add defaults such as kind)."""
    return len(have) == len(want) and all(
        all(h.get(k) == v for k, v in w.items()) for h, w in zip(have, want, strict=True)
    )


class GatewayAPIRouter:
    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    async def set_weight(
        self, md: s.ModelDeployment, stable: str, canary: str | None, weight: int
    ) -> None:
        name = md.metadata.name
        # Per-track Services select by revision: a revision keeps the track label it was
        # born with on its pod template, so selecting by track would be wrong after promotion.
        await self._kube.apply(objects.service(md, f"{name}-stable", revision=stable))
        await self._kube.apply(objects.service(md, f"{name}-canary", revision=canary or stable))
        namespace = md.metadata.namespace
        route = self._kube.get_http_route(namespace, route_name(md))
        refs = backend_refs(md, weight if canary else 0)
        if route is None:
            await self._kube.create_http_route(
                {
                    "apiVersion": f"{ROUTE_GROUP}/v1",
                    "kind": "HTTPRoute",
                    "metadata": {
                        "name": route_name(md),
                        "namespace": namespace,
                        "labels": objects.common_labels(md),
                        "ownerReferences": [objects.owner_reference(md)],
                    },
                    "spec": {"rules": [{"backendRefs": refs}]},
                }
            )
            return
        rules = (route.get("spec") or {}).get("rules") or [{}]
        if all(_same_refs(rule.get("backendRefs") or [], refs) for rule in rules):
            return  # the route already says so: nothing to write
        new_rules = [{**rule, "backendRefs": refs} for rule in rules]
        # A merge patch replaces lists whole, which is what we want for rules.
        await self._kube.patch_http_route(namespace, route_name(md), {"spec": {"rules": new_rules}})

    async def served_weight(
        self, md: s.ModelDeployment, stable: str, canary: str | None
    ) -> int | None:
        route = self._kube.get_http_route(md.metadata.namespace, route_name(md))
        if route is None:
            return None
        return canary_weight_of(route, md.metadata.name)


register("gatewayAPI")(GatewayAPIRouter)

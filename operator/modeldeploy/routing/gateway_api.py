"""Split traffic with a Gateway API HTTPRoute: exact weights, whatever the pod counts.

The operator owns two Services, ``<name>-stable`` and ``<name>-canary``, each narrowed to
one revision, and sets them as backendRefs in every rule of the named HTTPRoute. A
missing route is created, owned by the ModelDeployment, with no parentRefs for the user
to attach. A route the user made is steered, not taken over:

- only the backendRefs to those two Services are written; the route's parentRefs,
  hostnames, matches, filters and any other backendRef stay as the user wrote them. A
  rule that also sends traffic to another backend (weight above 0) cannot serve the
  planned split, so the weights are not verified (the rollout waits, and
  progressDeadline names that backend) until the user removes it or sets its weight to 0;
- the route is marked ``modeldeploy.io/steered-by: <name>`` when first steered, and a
  route that another ModelDeployment of the namespace steers is never written: that is
  reported as a conflict (condition ObjectConflict), as for any object not ours.

What the data plane serves is not what was written: the route's weights count only once
a Gateway accepted the route as it is now, i.e. a ``status.parents`` entry for one of
its parentRefs has ``Accepted`` and ``ResolvedRefs`` True with ``observedGeneration``
equal to the route's ``metadata.generation`` (the Gateway API's own contract). A route
that every parent refuses (or that has no parentRefs) is reported as refused, with the
parent's reason; one whose status lags its generation is still being looked at.
"""

from __future__ import annotations

from typing import Any, ClassVar

from modeldeploy import spec as s
from modeldeploy.engine.observations import Served, ServedSplit, Unverified
from modeldeploy.engine.routers import GATEWAY_API_ROUTER, RouterCapabilities
from modeldeploy.kube import objects
from modeldeploy.kube.client import KubeClient, NotOurs, controlled_by, controller_of
from modeldeploy.routing import register

ROUTE_GROUP = "gateway.networking.k8s.io"
# Marks a route the user made as steered by one ModelDeployment (its name).
STEERED_BY = f"{s.GROUP}/steered-by"
# A Gateway controller's condition message goes to our status: bounded, one line.
MAX_REASON_CHARS = 300


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


def our_services(md_name: str) -> tuple[str, str]:
    """The two Services the route's backendRefs name: stable first."""
    return f"{md_name}-stable", f"{md_name}-canary"


def is_ours(ref: dict[str, Any], md_name: str) -> bool:
    return (ref.get("kind") or "Service") == "Service" and not ref.get("group") \
        and ref.get("name") in our_services(md_name)


def route_weights(route: dict[str, Any], md_name: str) -> ServedSplit | Unverified:
    """The canary and stable backendRef weights, the same in every rule (as they are set)."""
    name = route["metadata"]["name"]
    splits: set[tuple[int, int]] = set()
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        others = [f"{ref.get('kind') or 'Service'} {ref.get('name')} (weight {ref.get('weight', 1)})"
                  for ref in refs if not is_ours(ref, md_name) and int(ref.get("weight", 1)) > 0]
        if others:
            return Unverified(
                f"HTTPRoute {name} also sends traffic to {', '.join(others)}, so the canary's "
                f"share is not what was planned: remove that backendRef or set its weight to 0")
        weights = {ref.get("name"): int(ref.get("weight", 1)) for ref in refs if is_ours(ref, md_name)}
        splits.add((weights.get(f"{md_name}-canary", 0), weights.get(f"{md_name}-stable", 0)))
    if len(splits) != 1:
        return Unverified(f"HTTPRoute {name}'s rules to send the same weights to "
                          f"{md_name}-canary and {md_name}-stable")
    canary, stable = splits.pop()
    return ServedSplit(canary=canary, stable=stable)


def server_text(text: object) -> str:
    """Someone else's message, as status may carry it: one line, control characters out, capped."""
    line = "".join(c if c.isprintable() else " " for c in str(text)).strip()
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 1] + "…"


def parent_key(ref: dict[str, Any], route_namespace: str) -> tuple[object, ...]:
    """A parentRef with the Gateway API's defaults filled in, to match status to spec."""
    return (
        ref.get("group", ROUTE_GROUP) or ROUTE_GROUP,
        ref.get("kind") or "Gateway",
        ref.get("namespace") or route_namespace,
        ref.get("name"),
        ref.get("sectionName"),
        ref.get("port"),
    )


def describe_parent(ref: dict[str, Any], route_namespace: str) -> str:
    _, kind, namespace, name, section, port = parent_key(ref, route_namespace)
    where = "".join(
        [f" section {section}" if section else "", f" port {port}" if port else ""]
    )
    return f"parentRef {kind} {namespace}/{name}{where}"


def acceptance(route: dict[str, Any]) -> Unverified | None:
    """None when a parent serves the route as it is now; else what is waited for, or why
    every parent refuses it (``refused``)."""
    meta = route["metadata"]
    name, namespace, generation = meta["name"], meta.get("namespace") or "", meta.get("generation")
    refs = (route.get("spec") or {}).get("parentRefs") or []
    if not refs:
        return Unverified(
            f"HTTPRoute {name} has no parentRefs, so no Gateway serves it: add a parentRef "
            "naming your Gateway",
            refused=True,
        )
    parents = {
        parent_key(parent.get("parentRef") or {}, namespace): parent
        for parent in (route.get("status") or {}).get("parents") or []
    }
    waiting: list[str] = []
    refused: list[str] = []
    for ref in refs:
        what = describe_parent(ref, namespace)
        parent = parents.get(parent_key(ref, namespace)) or {}
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        accepted, resolved = conditions.get("Accepted"), conditions.get("ResolvedRefs")
        current = f"generation {generation} of HTTPRoute {name}"
        if accepted is None or accepted.get("observedGeneration") != generation:
            waiting.append(f"the Gateway controller to accept or refuse {current} for {what}")
        elif accepted.get("status") != "True":
            refused.append(
                f"HTTPRoute {name} is not accepted by {what}: "
                f"{server_text(accepted.get('reason'))}: {server_text(accepted.get('message'))}"
            )
        elif resolved is None or resolved.get("observedGeneration") != generation:
            waiting.append(f"the Gateway controller to resolve the backends of {current} for {what}")
        elif resolved.get("status") != "True":
            waiting.append(
                f"the backends of HTTPRoute {name} to resolve for {what} (ResolvedRefs "
                f"{server_text(resolved.get('reason'))}: {server_text(resolved.get('message'))})"
            )
        else:
            return None
    if waiting:
        return Unverified("; ".join(waiting))
    return Unverified("; ".join(refused), refused=True)


def _same_refs(have: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    """The route's refs say what we would write (the server may add defaults such as kind)."""
    return len(have) == len(want) and all(
        all(h.get(k) == v for k, v in w.items()) for h, w in zip(have, want, strict=True)
    )


@register
class GatewayAPIRouter:
    capabilities: ClassVar[RouterCapabilities] = GATEWAY_API_ROUTER

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
        owned = controlled_by(route, md.metadata.uid)
        annotations = route["metadata"].get("annotations") or {}
        if not owned:
            self._check_not_steered_by_another(md, route)
        rules = (route.get("spec") or {}).get("rules") or [{}]

        def ours(rule: dict[str, Any]) -> list[dict[str, Any]]:
            return [ref for ref in rule.get("backendRefs") or [] if is_ours(ref, name)]

        claimed = owned or annotations.get(STEERED_BY) == name
        if claimed and all(_same_refs(ours(rule), refs) for rule in rules):
            return  # the route already says so: nothing to write
        new_rules = [
            {**rule, "backendRefs": [*(r for r in rule.get("backendRefs") or [] if not is_ours(r, name)),
                                     *refs]}
            for rule in rules
        ]
        # A merge patch replaces lists whole, which is what we want for rules.
        patch: dict[str, Any] = {"spec": {"rules": new_rules}}
        if not claimed:
            patch["metadata"] = {"annotations": {STEERED_BY: name}}
        await self._kube.patch_http_route(namespace, route_name(md), patch)

    def _check_not_steered_by_another(self, md: s.ModelDeployment, route: dict[str, Any]) -> None:
        """NotOurs when another ModelDeployment of the namespace steers the route: two
        rollouts writing one route's weights would undo each other's every step."""
        namespace, name = md.metadata.namespace, md.metadata.name
        steering = (route["metadata"].get("annotations") or {}).get(STEERED_BY)
        controller = controller_of(route)
        if controller is not None and controller.get("kind") == s.KIND:
            steering = str(controller.get("name"))
        if steering and steering != name \
                and self._kube.get_model_deployment(namespace, steering) is not None:
            raise NotOurs(
                "HTTPRoute", route["metadata"]["name"], f"ModelDeployment {steering}",
                fix="give this ModelDeployment its own route (gatewayAPI.httpRoute)")

    async def served(self, md: s.ModelDeployment, stable: str, canary: str | None) -> Served:
        """The weights of the route when a Gateway accepted it as it is now."""
        route = self._kube.get_http_route(md.metadata.namespace, route_name(md))
        if route is None:
            return Unverified(f"HTTPRoute {route_name(md)} to be created")
        return acceptance(route) or route_weights(route, md.metadata.name)

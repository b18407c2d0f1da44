"""Split traffic with a Gateway API HTTPRoute: exact weights, whatever the pod counts.

The operator owns two Services, ``<name>-stable`` and ``<name>-canary``, each narrowed to
one revision (the engine's EnsureTrackServices keeps them), and sets them as backendRefs in
every rule of the named HTTPRoute. A
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

Shadow traffic (a mirror step): besides the backendRefs, every rule gets exactly one
``RequestMirror`` filter of ours, to the ``<name>-canary`` Service with ``percent: P``:
the Gateway sends a copy of P% of the rule's requests to the canary and throws the
copies' answers away, so the canary is measured on real traffic while users are served
by the backendRefs alone. With P 0 our filter is removed (so is it while there is no
canary: the canary Service then selects stable). The user's filters, a RequestMirror
to another backend among them, are never touched; a RequestMirror to ``<name>-canary``
is taken for ours.

What the data plane serves is not what was written: the route's weights count only once
a Gateway accepted the route as it is now, i.e. a ``status.parents`` entry for one of
its parentRefs has ``Accepted`` and ``ResolvedRefs`` True with ``observedGeneration``
equal to the route's ``metadata.generation`` (the Gateway API's own contract). A route
that every parent refuses (or that has no parentRefs) is reported as refused, with the
parent's reason; one whose status lags its generation is still being looked at. The
mirrored percent served is our filter's, read the same way (0 without one); rules that
disagree on it, like rules that disagree on the weights, are not a split the data plane
serves, so they are reported as unverified.
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
    stable, canary = our_services(md.metadata.name)
    return [
        {"name": stable, "port": port, "weight": 100 - weight},
        {"name": canary, "port": port, "weight": weight},
    ]


# The two Services the route's backendRefs name, stable first: the engine keeps them
# (EnsureTrackServices, applied before the weights that name them).
our_services = objects.track_service_names


def is_ours(ref: dict[str, Any], md_name: str) -> bool:
    return (ref.get("kind") or "Service") == "Service" and not ref.get("group") \
        and ref.get("name") in our_services(md_name)


def mirror_filter(md: s.ModelDeployment, percent: int) -> dict[str, Any]:
    """Our RequestMirror filter: ``percent`` of a rule's requests copied to the canary."""
    return {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"name": our_services(md.metadata.name)[1], "port": md.spec.service.port},
            "percent": percent,
        },
    }


def is_our_mirror(rule_filter: dict[str, Any], md_name: str, namespace: str) -> bool:
    """A RequestMirror filter to our canary Service (any other filter is the user's)."""
    if rule_filter.get("type") != "RequestMirror":
        return False
    ref = (rule_filter.get("requestMirror") or {}).get("backendRef") or {}
    return (ref.get("kind") or "Service") == "Service" and not ref.get("group") \
        and ref.get("name") == our_services(md_name)[1] \
        and (ref.get("namespace") or namespace) == namespace


def mirrored_percent(rule_filter: dict[str, Any]) -> int | str:
    """The percent of requests a RequestMirror filter copies, as the Gateway API reads it
    (``percent``, else ``fraction``, else all); a string says why it is no whole percent."""
    mirror = rule_filter.get("requestMirror") or {}
    try:
        if mirror.get("percent") is not None:
            return int(mirror["percent"])
        fraction = mirror.get("fraction")
        if fraction is None:
            return 100
        numerator = int(fraction.get("numerator", 0))
        denominator = int(fraction.get("denominator", 100))
    except (AttributeError, TypeError, ValueError):
        return f"{server_text(mirror)[:80]}, not a number"
    if denominator <= 0 or (numerator * 100) % denominator:
        return f"a fraction {numerator}/{denominator}, not a whole percent"
    return numerator * 100 // denominator


def route_weights(route: dict[str, Any], md_name: str) -> ServedSplit | Unverified:
    """The canary and stable backendRef weights and the percent our RequestMirror filter
    copies to the canary, the same in every rule (as they are set)."""
    name, namespace = route["metadata"]["name"], route["metadata"].get("namespace") or ""
    canary_service = our_services(md_name)[1]
    splits: set[tuple[int, int]] = set()
    mirrors: set[int] = set()
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
        ours = [f for f in rule.get("filters") or [] if is_our_mirror(f, md_name, namespace)]
        if len(ours) > 1:
            return Unverified(f"HTTPRoute {name} to have one RequestMirror filter to "
                              f"{canary_service} per rule, not {len(ours)}")
        percent = mirrored_percent(ours[0]) if ours else 0
        if isinstance(percent, str):
            return Unverified(f"HTTPRoute {name}'s RequestMirror filter to {canary_service} to "
                              f"copy a whole percent of requests (it copies {percent})")
        mirrors.add(percent)
    if len(splits) != 1:
        return Unverified(f"HTTPRoute {name}'s rules to send the same weights to "
                          f"{md_name}-canary and {md_name}-stable")
    if len(mirrors) != 1:
        return Unverified(f"HTTPRoute {name}'s rules to mirror the same percent of requests to "
                          f"{canary_service} (they mirror {', '.join(map(str, sorted(mirrors)))})")
    canary, stable = splits.pop()
    return ServedSplit(canary=canary, stable=stable, mirror=mirrors.pop())


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


def _says(have: Any, want: Any) -> bool:
    """``have`` says what ``want`` does: the same, but for fields the server may add to an
    object (defaults such as a backendRef's ``kind``)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_says(have.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) \
            and all(_says(h, w) for h, w in zip(have, want, strict=True))
    return bool(have == want)


def _same_refs(have: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    """The route's refs (or filters) say what we would write."""
    return _says(have, want)


@register
class GatewayAPIRouter:
    capabilities: ClassVar[RouterCapabilities] = GATEWAY_API_ROUTER

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    async def set_weight(
        self, md: s.ModelDeployment, stable: str, canary: str | None, weight: int,
        *, mirror_percent: int = 0,
    ) -> None:
        """Write ``weight`` and ``mirror_percent`` into every rule of the route (see the
        module docstring); nothing when the route already says so."""
        if not 0 <= mirror_percent <= 100:
            raise ValueError(f"mirror_percent must be 0 to 100, not {mirror_percent}")
        name = md.metadata.name
        namespace = md.metadata.namespace
        route = self._kube.get_http_route(namespace, route_name(md))
        refs = backend_refs(md, weight if canary else 0)
        # Without a canary, the canary Service selects stable: copying to it would only
        # double stable's load.
        mirror = mirror_filter(md, mirror_percent) if canary and mirror_percent > 0 else None
        mirrors = [mirror] if mirror else []
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
                    "spec": {"rules": [{"backendRefs": refs,
                                        **({"filters": mirrors} if mirrors else {})}]},
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

        def our_mirrors(rule: dict[str, Any]) -> list[dict[str, Any]]:
            return [f for f in rule.get("filters") or [] if is_our_mirror(f, name, namespace)]

        def steered(rule: dict[str, Any]) -> dict[str, Any]:
            """The rule with our backendRefs and mirror filter, the user's kept in place."""
            new = {**rule, "backendRefs": [
                *(r for r in rule.get("backendRefs") or [] if not is_ours(r, name)), *refs]}
            filters = [f for f in rule.get("filters") or [] if not is_our_mirror(f, name, namespace)]
            if filters or mirrors:
                new["filters"] = [*filters, *mirrors]
            else:
                new.pop("filters", None)
            return new

        claimed = owned or annotations.get(STEERED_BY) == name
        if claimed and all(_same_refs(ours(rule), refs) and _same_refs(our_mirrors(rule), mirrors)
                           for rule in rules):
            return  # the route already says so: nothing to write
        new_rules = [steered(rule) for rule in rules]
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
        """The weights (and mirrored percent) of the route when a Gateway accepted it as it
        is now."""
        route = self._kube.get_http_route(md.metadata.namespace, route_name(md))
        if route is None:
            return Unverified(f"HTTPRoute {route_name(md)} to be created")
        return acceptance(route) or route_weights(route, md.metadata.name)

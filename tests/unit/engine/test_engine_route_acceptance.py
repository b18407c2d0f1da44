"""The gatewayAPI router counts a route's weights only once a Gateway accepted the route.

Engine: a route no Gateway accepts holds the rollout (Paused, with the parent's reason)
and the rollout goes on by itself once one does. Router: the real GatewayAPIRouter reads
the HTTPRoute's status from the operator's real cache, as a Gateway controller writes it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from kubernetes.client import ApiClient
from modeldeploy import spec as s
from modeldeploy.engine import ServedSplit, Unverified
from modeldeploy.kube.cache import ClusterCache
from modeldeploy.kube.client import KubeClient
from modeldeploy.routing.gateway_api import GatewayAPIRouter
from modeldeploy.spec import Phase
from rollout_world import NAME, World, rolling, spec_of

ROUTE = "song-analyzer-route"
ROUTING = {"trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}}}
STEPS: list[dict[str, Any]] = [{"setWeight": 10}, {"pause": {}}]
REFUSED = (
    "HTTPRoute song-analyzer-route is not accepted by parentRef Gateway ml/public: "
    "NoMatchingParent: no Gateway ml/public"
)


def gateway_spec(image: str) -> s.ModelDeploymentSpec:
    return spec_of(image, strategy={"canary": {"steps": STEPS, **ROUTING}})


def refused_at_10() -> World:
    world = rolling(gateway_spec("v1"), gateway_spec("v2"))
    world.cluster.route_refused = REFUSED
    world.ticks(3)
    return world


def test_a_route_no_gateway_accepts_pauses_the_rollout_with_the_parents_reason() -> None:
    world = refused_at_10()
    assert world.status.phase == Phase.PAUSED
    assert world.status.pause_cause == "routeNotAccepted"
    assert world.status.message == (
        f"step 1/3 setWeight 10: {REFUSED}; resumes on its own once a Gateway accepts the route"
    )
    assert world.status.current_step == 0
    assert REFUSED in world.history_steps()


def test_a_refused_route_is_a_hold_that_progress_deadline_does_not_abort() -> None:
    world = refused_at_10()
    world.tick(timedelta(hours=1))
    assert world.status.phase == Phase.PAUSED, world.status.message
    assert world.status.canary_revision is not None


def test_once_a_gateway_accepts_the_route_the_rollout_goes_on_by_itself() -> None:
    world = refused_at_10()
    world.cluster.route_refused = None
    world.tick()
    assert world.status.pause_cause is None and world.status.paused_at is None
    assert "route accepted: resumed" in world.history_steps()
    world.ticks(2)
    assert world.status.current_step == 1, world.status.message
    assert world.status.message == "step 2/3 pause: paused until `modeldeploy promote`"


def test_the_pause_reason_follows_the_gateways_current_reason() -> None:
    world = refused_at_10()
    world.cluster.route_refused = "HTTPRoute song-analyzer-route has no parentRefs"
    world.tick()
    assert world.status.pause_reason is not None
    assert world.status.pause_reason.startswith("HTTPRoute song-analyzer-route has no parentRefs;")


def test_a_user_pause_is_not_taken_over_by_the_route_and_the_route_holds_after_resume() -> None:
    world = rolling(gateway_spec("v1"), gateway_spec("v2"))
    world.tick()
    world.tick(control="pause")
    world.cluster.route_refused = REFUSED
    world.tick()
    assert world.status.pause_cause == "user"
    world.tick(control="resume")
    world.tick()
    assert world.status.pause_cause == "routeNotAccepted", world.status.message


# -- the real router over the operator's cache ------------------------------------------------


def md_with_route() -> s.ModelDeployment:
    return s.ModelDeployment.model_validate({
        "apiVersion": f"{s.GROUP}/{s.VERSION}", "kind": s.KIND,
        "metadata": {"name": NAME, "namespace": "ml", "uid": "md-uid"},
        "spec": gateway_spec("v2").model_dump(by_alias=True, exclude_none=True),
    })


def condition(type_: str, status: str, reason: str, generation: int, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": "2026-01-01T12:00:00Z"}


def parent(ref: dict[str, Any], *conditions: dict[str, Any]) -> dict[str, Any]:
    return {"parentRef": ref, "controllerName": "example.net/gateway", "conditions": list(conditions)}


def route(parent_refs: list[dict[str, Any]], parents: list[dict[str, Any]] | None,
          generation: int = 3) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": "ml", "generation": generation,
                     "resourceVersion": "7"},
        "spec": {"parentRefs": parent_refs, "rules": [{"backendRefs": [
            {"name": f"{NAME}-stable", "port": 80, "weight": 90},
            {"name": f"{NAME}-canary", "port": 80, "weight": 10},
        ]}]},
    }
    if parents is not None:
        body["status"] = {"parents": parents}
    return body


def served(http_route: dict[str, Any]) -> ServedSplit | Unverified:
    api = ApiClient()
    cache = ClusterCache(api, "route-test", ["ml"], lambda *_: None)
    cache.remember("HTTPRoute", http_route)
    router = GatewayAPIRouter(KubeClient(api, cache))
    return asyncio.run(router.served(md_with_route(), "r1", "r2"))


PUBLIC = {"name": "public"}
ACCEPTED = condition("Accepted", "True", "Accepted", 3)
RESOLVED = condition("ResolvedRefs", "True", "ResolvedRefs", 3)

CASES: list[tuple[str, dict[str, Any], ServedSplit | Unverified]] = [
    ("a route accepted for its generation serves its weights",
     route([PUBLIC], [parent({"group": "gateway.networking.k8s.io", "kind": "Gateway",
                              "namespace": "ml", "name": "public"}, ACCEPTED, RESOLVED)]),
     ServedSplit(canary=10, stable=90)),
    ("a route no Gateway controller reported on yet is waited for",
     route([PUBLIC], None),
     Unverified("the Gateway controller to accept or refuse generation 3 of HTTPRoute "
                f"{ROUTE} for parentRef Gateway ml/public")),
    ("an acceptance of an older generation says nothing about the weights written since",
     route([PUBLIC], [parent(PUBLIC, condition("Accepted", "True", "Accepted", 2),
                             condition("ResolvedRefs", "True", "ResolvedRefs", 2))]),
     Unverified("the Gateway controller to accept or refuse generation 3 of HTTPRoute "
                f"{ROUTE} for parentRef Gateway ml/public")),
    ("a parent that refuses the route is the reason, with which parentRef",
     route([PUBLIC], [parent(PUBLIC, condition("Accepted", "False", "NoMatchingParent", 3,
                                               "no Gateway ml/public"),
                             condition("ResolvedRefs", "True", "ResolvedRefs", 3))]),
     Unverified(REFUSED, refused=True)),
    ("a route with no parentRefs is served by no Gateway",
     route([], None),
     Unverified(f"HTTPRoute {ROUTE} has no parentRefs, so no Gateway serves it: add a "
                "parentRef naming your Gateway", refused=True)),
    ("accepted with a backend missing is waited for, with the controller's reason",
     route([PUBLIC], [parent(PUBLIC, ACCEPTED, condition(
         "ResolvedRefs", "False", "BackendNotFound", 3, "Service ml/song-analyzer-canary\nnot found"))]),
     Unverified(f"the backends of HTTPRoute {ROUTE} to resolve for parentRef Gateway ml/public "
                "(ResolvedRefs BackendNotFound: Service ml/song-analyzer-canary not found)")),
    ("one accepting parent is enough, whatever the others say",
     route([{"name": "internal", "sectionName": "http"}, PUBLIC],
           [parent({"name": "internal", "sectionName": "http"},
                   condition("Accepted", "False", "NotAllowedByListeners", 3, "no listener"),
                   RESOLVED),
            parent(PUBLIC, ACCEPTED, RESOLVED)]),
     ServedSplit(canary=10, stable=90)),
    ("a parent's status for another section is not this parentRef's",
     route([{"name": "public", "sectionName": "https"}], [parent(PUBLIC, ACCEPTED, RESOLVED)]),
     Unverified("the Gateway controller to accept or refuse generation 3 of HTTPRoute "
                f"{ROUTE} for parentRef Gateway ml/public section https")),
]


@pytest.mark.parametrize(("http_route", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_router_reads_what_the_gateway_serves_from_the_route_status(
    http_route: dict[str, Any], expected: ServedSplit | Unverified
) -> None:
    assert served(http_route) == expected

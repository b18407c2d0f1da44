"""The gatewayAPI router's writes and reads of an HTTPRoute: backendRef weights and our
one RequestMirror filter (shadow traffic to the canary), the user's filters left alone.

The router runs over a fake KubeClient that keeps one route and applies the router's
merge patches to it as the API server does (RFC 7386: lists replaced whole).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import pytest
from modeldeploy import spec as s
from modeldeploy.engine import ServedSplit, Unverified
from modeldeploy.kube.client import KubeClient
from modeldeploy.routing.gateway_api import GatewayAPIRouter, route_weights
from modeldeploy.routing.replicas import ReplicasRouter

JSON = dict[str, Any]
NAME = "song-analyzer"
NAMESPACE = "ml"
ROUTE = "song-route"
STABLE, CANARY = f"{NAME}-stable", f"{NAME}-canary"
HEADER = {"type": "RequestHeaderModifier",
          "requestHeaderModifier": {"add": [{"name": "x-team", "value": "ml"}]}}
USERS_MIRROR = {"type": "RequestMirror",
                "requestMirror": {"backendRef": {"name": "audit", "port": 8080}, "percent": 5}}


def model_deployment() -> s.ModelDeployment:
    return s.ModelDeployment.model_validate({
        "apiVersion": f"{s.GROUP}/{s.VERSION}", "kind": s.KIND,
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "md-uid"},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [{"name": "app", "image": "song-analyzer:v1"}]}},
            "strategy": {"canary": {"trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}}}},
        },
    })


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


class FakeKube:
    """The few KubeClient calls the routers make, over one stored route."""

    def __init__(self, route: JSON | None) -> None:
        self.route = copy.deepcopy(route)
        self.writes: list[JSON] = []

    async def apply(self, manifest: JSON) -> None:
        pass  # the per-track Services

    def get_http_route(self, namespace: str, name: str) -> JSON | None:
        return self.route

    async def create_http_route(self, manifest: JSON) -> None:
        self.writes.append(manifest)
        self.route = copy.deepcopy(manifest)

    async def patch_http_route(self, namespace: str, name: str, patch: JSON) -> None:
        self.writes.append(patch)
        self.route = merge_patch(self.route, patch)

    def get_model_deployment(self, namespace: str, name: str) -> JSON | None:
        return None

    def get_service_selector(self, namespace: str, name: str) -> dict[str, str] | None:
        return {"modeldeploy.io/name": NAME}

    def list_deployments(self, namespace: str, name: str) -> list[JSON]:
        return [{"metadata": {"name": f"{NAME}-r1"}, "status": {"readyReplicas": 2}},
                {"metadata": {"name": f"{NAME}-r2"}, "status": {"readyReplicas": 1}}]


def user_route(*rules: JSON) -> JSON:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": NAMESPACE, "generation": 1},
        "spec": {"parentRefs": [{"name": "public"}], "rules": list(rules)},
    }


def set_weight(kube: FakeKube, weight: int, mirror_percent: int, canary: str | None = "r2") -> None:
    router = GatewayAPIRouter(cast(KubeClient, kube))
    asyncio.run(router.set_weight(model_deployment(), "r1", canary, weight,
                                  mirror_percent=mirror_percent))


def our_mirror(percent: int) -> JSON:
    return {"type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": CANARY, "port": 80}, "percent": percent}}


def refs(stable: int, canary: int) -> list[JSON]:
    return [{"name": STABLE, "port": 80, "weight": stable},
            {"name": CANARY, "port": 80, "weight": canary}]


def rules_of(kube: FakeKube) -> list[JSON]:
    assert kube.route is not None
    return kube.route["spec"]["rules"]  # type: ignore[no-any-return]


def two_rule_route() -> JSON:
    return user_route(
        {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
         "backendRefs": [{"name": STABLE, "port": 80}], "filters": [HEADER, USERS_MIRROR]},
        {"backendRefs": [{"name": STABLE, "port": 80}]},
    )


# -- writing ------------------------------------------------------------------------------


def test_a_mirror_step_puts_one_mirror_filter_of_ours_in_every_rule_after_the_users() -> None:
    kube = FakeKube(two_rule_route())
    set_weight(kube, 0, 10)
    first, second = rules_of(kube)
    assert first["filters"] == [HEADER, USERS_MIRROR, our_mirror(10)]
    assert second["filters"] == [our_mirror(10)]
    assert first["backendRefs"] == second["backendRefs"] == refs(100, 0)
    assert first["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]
    assert kube.route is not None
    assert kube.route["spec"]["parentRefs"] == [{"name": "public"}]


def test_a_new_percent_replaces_our_filter_and_zero_removes_it_leaving_the_users() -> None:
    kube = FakeKube(two_rule_route())
    set_weight(kube, 0, 10)
    set_weight(kube, 0, 25)
    assert [rule.get("filters") for rule in rules_of(kube)] == [
        [HEADER, USERS_MIRROR, our_mirror(25)], [our_mirror(25)]]

    set_weight(kube, 20, 0)
    first, second = rules_of(kube)
    assert first["filters"] == [HEADER, USERS_MIRROR]
    assert "filters" not in second
    assert first["backendRefs"] == [*refs(80, 20)]


def test_nothing_is_written_when_the_route_already_says_so_with_server_defaults() -> None:
    kube = FakeKube(two_rule_route())
    set_weight(kube, 0, 10)
    assert len(kube.writes) == 1
    for rule in rules_of(kube):  # what the real CRD defaults in a filter's backendRef
        rule["filters"][-1]["requestMirror"]["backendRef"].update(group="", kind="Service")
    set_weight(kube, 0, 10)
    assert len(kube.writes) == 1

    set_weight(kube, 0, 20)  # the filters differ, the weights do not: still written
    assert len(kube.writes) == 2


def test_a_second_mirror_filter_to_the_canary_is_collapsed_into_ours() -> None:
    kube = FakeKube(user_route({"backendRefs": [{"name": STABLE, "port": 80}],
                                "filters": [our_mirror(5), HEADER, our_mirror(7)]}))
    set_weight(kube, 0, 10)
    assert rules_of(kube)[0]["filters"] == [HEADER, our_mirror(10)]


def test_no_canary_means_no_mirror_filter_whatever_the_percent() -> None:
    kube = FakeKube(two_rule_route())
    set_weight(kube, 0, 30, canary=None)
    assert [rule.get("filters") for rule in rules_of(kube)] == [[HEADER, USERS_MIRROR], None]


def test_a_route_the_router_creates_carries_the_mirror_filter() -> None:
    kube = FakeKube(None)
    set_weight(kube, 0, 50)
    assert rules_of(kube) == [{"backendRefs": refs(100, 0), "filters": [our_mirror(50)]}]
    kube = FakeKube(None)
    set_weight(kube, 10, 0)
    assert rules_of(kube) == [{"backendRefs": refs(90, 10)}]


@pytest.mark.parametrize("percent", [-1, 101])
def test_a_mirror_percent_outside_0_to_100_is_refused(percent: int) -> None:
    with pytest.raises(ValueError, match="mirror_percent"):
        set_weight(FakeKube(two_rule_route()), 0, percent)


# -- reading ------------------------------------------------------------------------------


def rule(*filters: JSON, stable: int = 90, canary: int = 10) -> JSON:
    return {"backendRefs": refs(stable, canary), "filters": list(filters)}


def fraction_mirror(numerator: int, denominator: int | None = None) -> JSON:
    fraction: JSON = {"numerator": numerator}
    if denominator is not None:
        fraction["denominator"] = denominator
    return {"type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": CANARY, "port": 80}, "fraction": fraction}}


EVERY_REQUEST = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": CANARY}}}
READS: list[tuple[str, list[JSON], ServedSplit | Unverified]] = [
    ("our filter's percent is the mirrored share", [rule(our_mirror(10)), rule(HEADER, our_mirror(10))],
     ServedSplit(canary=10, stable=90, mirror=10)),
    ("no filter of ours: nothing mirrored", [rule(HEADER)], ServedSplit(canary=10, stable=90)),
    ("a user's mirror to another backend is not ours", [rule(USERS_MIRROR)],
     ServedSplit(canary=10, stable=90, mirror=0)),
    ("a fraction is read as the Gateway reads it", [rule(fraction_mirror(1, 4))],
     ServedSplit(canary=10, stable=90, mirror=25)),
    ("a fraction's denominator is 100 by default", [rule(fraction_mirror(30))],
     ServedSplit(canary=10, stable=90, mirror=30)),
    ("neither percent nor fraction copies every request", [rule(EVERY_REQUEST)],
     ServedSplit(canary=10, stable=90, mirror=100)),
    ("rules that disagree on the mirror are unverified", [rule(our_mirror(10)), rule(HEADER)],
     Unverified(f"HTTPRoute {ROUTE}'s rules to mirror the same percent of requests to {CANARY} "
                "(they mirror 0, 10)")),
    ("two filters of ours in a rule are unverified", [rule(our_mirror(10), our_mirror(10))],
     Unverified(f"HTTPRoute {ROUTE} to have one RequestMirror filter to {CANARY} per rule, not 2")),
    ("a fraction that is no whole percent is unverified", [rule(fraction_mirror(1, 3))],
     Unverified(f"HTTPRoute {ROUTE}'s RequestMirror filter to {CANARY} to copy a whole percent "
                "of requests (it copies a fraction 1/3, not a whole percent)")),
    ("weights that disagree are reported first", [rule(stable=80, canary=20), rule(our_mirror(5))],
     Unverified(f"HTTPRoute {ROUTE}'s rules to send the same weights to {CANARY} and {STABLE}")),
]


@pytest.mark.parametrize(("rules", "expected"), [r[1:] for r in READS], ids=[r[0] for r in READS])
def test_the_mirrored_percent_is_read_from_our_filter(
    rules: list[JSON], expected: ServedSplit | Unverified
) -> None:
    assert route_weights(user_route(*rules), NAME) == expected


def test_served_reports_the_mirror_of_a_route_a_gateway_accepted() -> None:
    kube = FakeKube(two_rule_route())
    set_weight(kube, 10, 20)
    assert kube.route is not None
    generation = kube.route["metadata"]["generation"]
    kube.route["status"] = {"parents": [{
        "parentRef": {"name": "public"}, "controllerName": "example.net/gateway",
        "conditions": [{"type": kind, "status": "True", "reason": kind, "observedGeneration": generation}
                       for kind in ("Accepted", "ResolvedRefs")],
    }]}
    router = GatewayAPIRouter(cast(KubeClient, kube))
    served = asyncio.run(router.served(model_deployment(), "r1", "r2"))
    assert served == ServedSplit(canary=10, stable=90, mirror=20)


def test_the_replicas_router_never_mirrors() -> None:
    kube = FakeKube(None)
    router = ReplicasRouter(cast(KubeClient, kube))
    asyncio.run(router.set_weight(model_deployment(), "r1", "r2", 10, mirror_percent=50))
    assert kube.writes == []
    served = asyncio.run(router.served(model_deployment(), "r1", "r2"))
    assert served == ServedSplit(canary=1, stable=2, mirror=0)

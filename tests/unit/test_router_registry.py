"""One registry of traffic routers: every router the spec can name has a class and the
capabilities the engine plans by, and the shell and the engine agree on which apply."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiClient
from modeldeploy import spec as s
from modeldeploy.engine import capabilities_of
from modeldeploy.engine.routers import ROUTER_CAPABILITIES
from modeldeploy.kube.cache import ClusterCache
from modeldeploy.kube.client import KubeClient
from modeldeploy.routing import ROUTERS, TrafficRouter, router_for
from modeldeploy.routing.gateway_api import GatewayAPIRouter
from modeldeploy.routing.replicas import ReplicasRouter

NAMESPACE = "ml"
# The keys a user may write under strategy.canary.trafficRouting.
ROUTING_KEYS = sorted(info.alias or field for field, info in s.TrafficRouting.model_fields.items())


def model_deployment(strategy: dict[str, Any]) -> s.ModelDeployment:
    return s.ModelDeployment.model_validate({
        "apiVersion": f"{s.GROUP}/{s.VERSION}", "kind": s.KIND,
        "metadata": {"name": "song-analyzer", "namespace": NAMESPACE, "uid": "md-uid"},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [{"name": "app", "image": "song-analyzer:v1"}]}},
            "strategy": strategy,
        },
    })


def kube() -> KubeClient:
    api = ApiClient()
    return KubeClient(api, ClusterCache(api, "registry-test", [NAMESPACE], lambda *_: None))


def test_every_router_the_spec_can_name_has_a_class_and_capabilities() -> None:
    assert sorted(ROUTERS) == ROUTING_KEYS
    assert sorted(ROUTER_CAPABILITIES) == ROUTING_KEYS
    for key, router in ROUTERS.items():
        assert router.capabilities is ROUTER_CAPABILITIES[key]
        assert router.capabilities.name == key


@pytest.mark.parametrize(
    ("routing", "router_class", "exact_weights", "supports_mirror"),
    [
        ({"replicas": {}}, ReplicasRouter, False, False),
        ({"gatewayAPI": {"httpRoute": "song-analyzer"}}, GatewayAPIRouter, True, True),
    ],
    ids=[
        "replicas: requests spread over ready pods, so the weight is the pods' ratio; no mirror",
        "gatewayAPI: the HTTPRoute's weights are exact, so canary pods are only capacity; "
        "it mirrors with a RequestMirror filter",
    ],
)
def test_the_shell_and_the_engine_pick_the_same_router_for_a_spec(
    routing: dict[str, Any], router_class: type[TrafficRouter], exact_weights: bool,
    supports_mirror: bool,
) -> None:
    md = model_deployment({"canary": {"trafficRouting": routing}})
    router = router_for(md, kube())
    planned_by = capabilities_of(md.spec)
    assert type(router) is router_class
    assert planned_by is router_class.capabilities
    assert planned_by.exact_weights is exact_weights
    assert planned_by.supports_mirror is supports_mirror


def test_blue_green_is_planned_with_no_router_and_its_service_read_as_replicas_reads_it() -> None:
    md = model_deployment({"blueGreen": {}})
    assert capabilities_of(md.spec) is None
    assert type(router_for(md, kube())) is ReplicasRouter


def test_a_canary_without_traffic_routing_uses_the_replicas_router() -> None:
    md = model_deployment({"canary": {}})
    assert type(router_for(md, kube())) is ReplicasRouter
    assert capabilities_of(md.spec) is ReplicasRouter.capabilities

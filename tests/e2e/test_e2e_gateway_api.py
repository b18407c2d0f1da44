"""The gatewayAPI router on a real cluster: the named HTTPRoute's backendRef weights follow the
canary steps once the Gateway accepted the route, the user's parts of the route are kept, and
each backend the weights name is the Service of the revision it should be
(tests/integration/rollout/test_gateway_api.py's scenario).

The operator counts a weight only once a Gateway accepted the route, so the cluster needs a
Gateway API implementation (it brings the Gateway API CRDs and accepts routes);
E2E_GATEWAY_CLASS names its GatewayClass (e.g. `eg` for Envoy Gateway). kind has none: there the
scenario is skipped with that reason. hack/e2e-on-sandbox sets it to `sandbox` (the sandbox's
data plane plays the Gateway controller). Each backend is sampled through its own Service, so
nothing here depends on how the implementation forwards traffic.
"""

from __future__ import annotations

import os

import pytest
from e2e_cluster import GATEWAY_CRD, GATEWAY_PLURAL, HTTP_ROUTE_CRD, HTTP_ROUTE_PLURAL, Body, Cluster
from e2e_scenario import (
    deploy_first,
    model_deployment,
    modeldeploy,
    start_rollout,
    wait_paused_at,
    wait_status,
)

pytestmark = pytest.mark.e2e

NAME = "gw"
ROUTE = "gw-route"
GATEWAY = "gateway"
GATEWAY_CLASS = os.environ.get("E2E_GATEWAY_CLASS", "")
STEPS: list[Body] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]


def manifest(namespace: str, version: str) -> Body:
    return model_deployment(
        NAME, namespace, version, bake_time="5s",
        strategy={"canary": {"steps": STEPS, "trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}}}},
    )


def gateway(namespace: str) -> Body:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": GATEWAY, "namespace": namespace},
        "spec": {"gatewayClassName": GATEWAY_CLASS,
                 "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
    }


def user_route(namespace: str) -> Body:
    """The route as the platform team wrote it: attached to a gateway, on a path."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": GATEWAY}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": f"{NAME}-stable", "port": 80}],
            }],
        },
    }


def weights(cluster: Cluster, namespace: str) -> dict[str, int]:
    """backendRef name -> weight, in every rule alike."""
    rules = cluster.get_http_route(namespace, ROUTE)["spec"]["rules"]
    per_rule = [{ref["name"]: ref.get("weight", 1) for ref in rule["backendRefs"]} for rule in rules]
    assert all(w == per_rule[0] for w in per_rule), per_rule
    return per_rule[0]


def split(stable: int, canary: int) -> dict[str, int]:
    return {f"{NAME}-stable": stable, f"{NAME}-canary": canary}


@pytest.fixture
def gateway_api(cluster: Cluster) -> None:
    missing = [crd for crd in (GATEWAY_CRD, HTTP_ROUTE_CRD) if not cluster.serves_crd(crd)]
    if missing or not GATEWAY_CLASS:
        lacking = [f"no {crd} CRD" for crd in missing] + ([] if GATEWAY_CLASS else ["no E2E_GATEWAY_CLASS"])
        pytest.skip(
            f"needs a Gateway API implementation to accept the route ({', '.join(lacking)}): install "
            "one (e.g. Envoy Gateway, which brings the Gateway API CRDs) and set E2E_GATEWAY_CLASS "
            "to its GatewayClass"
        )


def test_the_http_route_weights_follow_the_canary_steps(
    cluster: Cluster, namespace: str, gateway_api: None
) -> None:
    cluster.create_gateway_api_object(GATEWAY_PLURAL, gateway(namespace))
    cluster.create_gateway_api_object(HTTP_ROUTE_PLURAL, user_route(namespace))
    stable = deploy_first(cluster, manifest(namespace, "v1"))
    assert weights(cluster, namespace) == split(100, 0)

    canary = start_rollout(cluster, namespace, NAME, "v2")
    at_20 = wait_paused_at(cluster, namespace, NAME, step=1)
    assert at_20["canaryWeight"] == 20
    assert weights(cluster, namespace) == split(80, 20)
    route = cluster.get_http_route(namespace, ROUTE)
    assert route["spec"]["parentRefs"] == [{"name": GATEWAY}]  # the user's parts are kept
    assert route["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    # Each weighted backend is its revision's Service, and only that revision answers on it.
    assert cluster.service_selector(namespace, f"{NAME}-stable")["modeldeploy.io/revision"] == stable
    assert cluster.service_selector(namespace, f"{NAME}-canary")["modeldeploy.io/revision"] == canary
    cluster.wait_served_only_by(namespace, f"{NAME}-stable", "v1", "the stable backend")
    cluster.wait_served_only_by(namespace, f"{NAME}-canary", "v2", "the canary backend")

    modeldeploy(cluster, namespace, "promote", NAME)
    at_60 = wait_paused_at(cluster, namespace, NAME, step=3)
    assert at_60["canaryWeight"] == 60
    assert weights(cluster, namespace) == split(40, 60)

    modeldeploy(cluster, namespace, "promote", NAME)
    wait_status(cluster, namespace, NAME, lambda s: bool(s.get("bakeUntil")))
    assert weights(cluster, namespace) == split(0, 100)

    wait_status(
        cluster, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == canary,
    )
    # The new revision is stable: the stable backend serves it, the canary weight is 0.
    assert weights(cluster, namespace) == split(100, 0)
    assert cluster.service_selector(namespace, f"{NAME}-stable")["modeldeploy.io/revision"] == canary
    cluster.wait_served_only_by(namespace, f"{NAME}-stable", "v2", "the stable backend, after promotion")

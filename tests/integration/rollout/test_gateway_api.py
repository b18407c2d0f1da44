"""The gatewayAPI router: the named HTTPRoute's backendRef weights follow the steps."""

from __future__ import annotations

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from operator_process import OperatorProcess
from scenario import (
    JSON,
    User,
    by_revision,
    deploy_first,
    model_deployment,
    sample,
    start_rollout,
    template,
    wait_phase,
    wait_served_by,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "gw"
ROUTE = "gw-route"
STEPS: list[JSON] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]
SAMPLE = 200
SPLIT_TOLERANCE = 5  # percentage points; smooth weighted round-robin is exact to a request


def manifest(namespace: str, mark: str) -> JSON:
    return model_deployment(
        NAME, namespace, template(mark), replicas=2,
        strategy={"canary": {"steps": STEPS, "trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}}}},
    )


def user_route(namespace: str) -> JSON:
    """The route as the platform team wrote it: attached to a gateway, on a path."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": f"{NAME}-stable", "port": 80}],
            }],
        },
    }


def weights(kube: KubeAPI, namespace: str) -> dict[str, int]:
    """backendRef name -> weight, in every rule alike."""
    route = kube.get("HTTPRoute", namespace, ROUTE)
    assert route is not None
    rules = route["spec"]["rules"]
    per_rule = [{ref["name"]: ref.get("weight", 1) for ref in rule["backendRefs"]} for rule in rules]
    assert all(w == per_rule[0] for w in per_rule), per_rule
    return per_rule[0]


def split(stable: int, canary: int) -> dict[str, int]:
    return {f"{NAME}-stable": stable, f"{NAME}-canary": canary}


def test_the_http_route_weights_follow_the_canary_steps(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    user.apply(user_route(namespace))
    stable = deploy_first(user, kube, manifest(namespace, "v1"))
    assert weights(kube, namespace) == split(100, 0)

    canary = start_rollout(user, kube, manifest(namespace, "v2"))
    at_20 = wait_phase(kube, namespace, NAME, "Paused", step=1)
    assert at_20["canaryWeight"] == 20
    assert weights(kube, namespace) == split(80, 20)
    route = kube.get("HTTPRoute", namespace, ROUTE)
    assert route is not None
    assert route["spec"]["parentRefs"] == [{"name": "gateway"}]  # the user's parts are kept
    assert route["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]

    # Measured through the route's own address.
    route_url = sandbox.route_url(namespace, ROUTE)
    wait_served_by(route_url, NAME, [stable, canary], "the route to send traffic to both")
    served = by_revision(sample(route_url, SAMPLE), NAME, [stable, canary])
    assert abs(100 * served[canary] / SAMPLE - 20) <= SPLIT_TOLERANCE, served

    user.modeldeploy("promote", NAME)
    at_60 = wait_phase(kube, namespace, NAME, "Paused", step=3)
    assert at_60["canaryWeight"] == 60
    assert weights(kube, namespace) == split(40, 60)

    user.modeldeploy("promote", NAME)
    wait_status(kube, namespace, NAME, lambda s: bool(s.get("bakeUntil")), "the bake")
    assert weights(kube, namespace) == split(0, 100)

    wait_status(
        kube, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == canary,
        "the canary to be promoted",
    )
    # The new revision is stable: the stable backend serves it, the canary weight is 0.
    assert weights(kube, namespace) == split(100, 0)
    stable_service = kube.get("Service", namespace, f"{NAME}-stable")
    assert stable_service is not None
    assert stable_service["spec"]["selector"]["modeldeploy.io/revision"] == canary
    wait_served_by(route_url, NAME, [canary], "the route to serve the new revision alone")

"""The gatewayAPI router: the named HTTPRoute's backendRef weights follow the steps, and
count only once a Gateway accepted the route (the sandbox's data plane is the Gateway
controller: it writes the route's status.parents as a real implementation does)."""

from __future__ import annotations

import httpx
import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, service, wait_until
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


def gateway(namespace: str, name: str) -> JSON:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gatewayClassName": "sandbox",
                 "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
    }


def user_route(namespace: str, parent: str = "gateway") -> JSON:
    """The route as the platform team wrote it: attached to a gateway, on a path."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": parent}],
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
    user.apply(gateway(namespace, "gateway"))
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


def test_a_route_no_gateway_accepts_pauses_the_rollout_until_its_gateway_exists(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    user.apply(user_route(namespace, parent="public"))  # the Gateway is not there yet
    stable = deploy_first(user, kube, manifest(namespace, "v1"))
    canary = start_rollout(user, kube, manifest(namespace, "v2"))

    held = wait_status(kube, namespace, NAME, lambda s: s.get("pauseCause") == "routeNotAccepted",
                       "the rollout to hold for the route")
    assert held["phase"] == "Paused" and held["currentStep"] == 0
    assert held["message"] == (
        f"step 1/5 setWeight 20: HTTPRoute {ROUTE} is not accepted by parentRef Gateway "
        f"{namespace}/public: NoMatchingParent: no Gateway {namespace}/public; "
        "resumes on its own once a Gateway accepts the route"
    )
    # Truthfully so: the route's weights are written (once the canary's pod is ready: a
    # route weight needs a ready endpoint), but nothing routes by them.
    wait_until(lambda: weights(kube, namespace) == split(80, 20), timeout=30,
               what="the route's weights 80/20")
    route_url = sandbox.route_url(namespace, ROUTE)
    assert httpx.get(f"{route_url}/health", timeout=10).status_code == 404

    user.apply(gateway(namespace, "public"))
    at_20 = wait_phase(kube, namespace, NAME, "Paused", step=1)
    assert "pauseCause" not in at_20 and at_20["canaryWeight"] == 20
    route = kube.get("HTTPRoute", namespace, ROUTE)
    assert route is not None
    conditions = {c["type"]: (c["status"], c["observedGeneration"])
                  for c in route["status"]["parents"][0]["conditions"]}
    generation = route["metadata"]["generation"]
    assert conditions == {"Accepted": ("True", generation), "ResolvedRefs": ("True", generation)}
    wait_served_by(route_url, NAME, [stable, canary], "the accepted route to split traffic")


def test_the_sandbox_gateway_reports_a_missing_backend_service(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    """ResolvedRefs False with BackendNotFound while a backendRef names no Service."""
    kube.create(gateway(namespace, "gateway"))
    kube.create(user_route(namespace))

    def resolved_refs() -> JSON | None:
        route = kube.get("HTTPRoute", namespace, ROUTE) or {}
        parents = (route.get("status") or {}).get("parents") or []
        found = [c for p in parents for c in p["conditions"] if c["type"] == "ResolvedRefs"]
        return found[0] if found else None

    missing = wait_until(resolved_refs, timeout=30, what="the route's status")
    assert (missing["status"], missing["reason"]) == ("False", "BackendNotFound")
    assert missing["message"] == f"Service {namespace}/{NAME}-stable not found"


def test_a_route_the_user_made_is_steered_not_taken_over(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    """Only the two backendRefs the operator adds are written; another backend with a
    weight holds the step (its share would skew the split) until the user sets it to 0;
    a second ModelDeployment naming the same route is refused, not obeyed."""
    user = User(sandbox, namespace)
    user.apply(gateway(namespace, "gateway"))
    kube.create(service("legacy", namespace, {"app": "legacy"}))
    route = user_route(namespace)
    legacy = {"name": "legacy", "port": 80, "weight": 1}
    header = {"type": "RequestHeaderModifier",
              "requestHeaderModifier": {"add": [{"name": "x-team", "value": "ml"}]}}
    route["spec"]["rules"][0].update(backendRefs=[legacy], filters=[header])
    user.apply(route)
    deploy_first(user, kube, manifest(namespace, "v1"))
    steered = kube.get("HTTPRoute", namespace, ROUTE)
    assert steered is not None
    assert steered["metadata"]["annotations"]["modeldeploy.io/steered-by"] == NAME
    assert steered["spec"]["rules"][0]["filters"] == [header]
    assert [ref["name"] for ref in steered["spec"]["rules"][0]["backendRefs"]] == [
        "legacy", f"{NAME}-stable", f"{NAME}-canary"]
    assert weights(kube, namespace) == {"legacy": 1, **split(100, 0)}

    start_rollout(user, kube, manifest(namespace, "v2"))
    held = wait_status(kube, namespace, NAME,
                       lambda s: "also sends traffic to Service legacy (weight 1)" in s.get("message", ""),
                       "the rollout to wait on the legacy backend's share")
    assert held["currentStep"] == 0
    assert weights(kube, namespace) == {"legacy": 1, **split(80, 20)}

    rules = kube.get("HTTPRoute", namespace, ROUTE)["spec"]["rules"]  # type: ignore[index]
    rules[0]["backendRefs"][0]["weight"] = 0
    kube.merge_patch("HTTPRoute", namespace, ROUTE, {"spec": {"rules": rules}})
    at_20 = wait_phase(kube, namespace, NAME, "Paused", step=1)
    assert at_20["canaryWeight"] == 20
    assert weights(kube, namespace) == {"legacy": 0, **split(80, 20)}

    other = model_deployment(
        "gw-other", namespace, template("o1"), replicas=1,
        strategy={"canary": {"steps": STEPS, "trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}}}},
    )
    user.apply(other)
    refused = wait_status(
        kube, namespace, "gw-other",
        lambda s: any(c["type"] == "ObjectConflict" and c["status"] == "True"
                      for c in s.get("conditions") or []),
        "the second ModelDeployment to report the route as not its own",
    )
    assert f"HTTPRoute {ROUTE} exists and is controlled by ModelDeployment {NAME}" in next(
        c["message"] for c in refused["conditions"] if c["type"] == "ObjectConflict")
    assert weights(kube, namespace) == {"legacy": 0, **split(80, 20)}

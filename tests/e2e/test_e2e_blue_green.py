"""Blue-green on a real cluster: green is previewed beside blue, switched to on promote, blue
kept for the bake and then scaled down (tests/integration/rollout/test_blue_green.py's scenario).
Who answers is told by each revision's own API key (e2e_scenario.marked_template), on requests
sent through the API server's proxy to the main and the preview Service."""

from __future__ import annotations

import getpass

import pytest
from e2e_cluster import Body, Cluster
from e2e_scenario import (
    deploy_first,
    entry_of,
    model_deployment,
    modeldeploy,
    start_rollout,
    wait_paused_at,
    wait_status,
)

pytestmark = pytest.mark.e2e

NAME = "bg"
PREVIEW = "bg-preview"


def manifest(namespace: str, version: str) -> Body:
    return model_deployment(
        NAME, namespace, version, bake_time="10s", strategy={"blueGreen": {"previewService": PREVIEW}}
    )


def test_blue_green_previews_green_switches_on_promote_and_scales_blue_down_after_the_bake(
    cluster: Cluster, namespace: str
) -> None:
    blue = deploy_first(cluster, manifest(namespace, "blue"))
    green = start_rollout(cluster, namespace, NAME, "green")

    # Green at full size beside blue, reachable on the preview Service only.
    awaiting = wait_paused_at(cluster, namespace, NAME, step=1)
    assert awaiting["message"] == "step 2/3 await promotion: paused until `modeldeploy promote`"
    assert cluster.deployment_of(namespace, NAME, green).status.ready_replicas == 2
    cluster.wait_served_only_by(namespace, PREVIEW, "green", "the preview Service to serve green")
    assert cluster.answers_with_key(namespace, NAME, "blue", 20) == {200: 20}, "blue alone on main"

    modeldeploy(cluster, namespace, "promote", NAME)
    # The switch: the tick that consumed promote pointed the main Service at green.
    baking = wait_status(cluster, namespace, NAME, lambda s: bool(s.get("bakeUntil")))
    assert baking["phase"] == "Promoting" and baking["canaryRevision"] == green
    assert cluster.service_selector(namespace, NAME)["modeldeploy.io/revision"] == green
    # Blue stays at full size through the bake, for an instant way back.
    assert cluster.deployment_of(namespace, NAME, blue).spec.replicas == 2
    cluster.wait_served_only_by(namespace, NAME, "green", "the main Service to serve green")

    done = wait_status(
        cluster, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == green,
    )
    assert entry_of(done, green)["steps"] == [
        "preview ready", f"promoted by {getpass.getuser()}", "switch to green", "bake 10s", "baked 10s",
    ]
    assert cluster.deployment_of(namespace, NAME, blue).spec.replicas == 0
    cluster.wait_for_no_pods_of(namespace, NAME, blue)
    assert cluster.answers_with_key(namespace, NAME, "green", 20) == {200: 20}

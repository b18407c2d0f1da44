"""Blue-green: green is previewed beside blue, switched to on promote, blue kept for the bake."""

from __future__ import annotations

import getpass

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from operator_process import OperatorProcess
from scenario import (
    JSON,
    User,
    by_revision,
    deploy_first,
    deployment,
    entry_of,
    model_deployment,
    revision_pods,
    sample,
    start_rollout,
    template,
    wait_phase,
    wait_served_by,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "bg"
PREVIEW = "bg-preview"


def manifest(namespace: str, mark: str) -> JSON:
    return model_deployment(
        NAME, namespace, template(mark), replicas=2, bake_time="3s",
        strategy={"blueGreen": {"previewService": PREVIEW}},
    )


def test_blue_green_previews_green_switches_on_promote_and_scales_blue_down_after_the_bake(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    blue = deploy_first(user, kube, manifest(namespace, "blue"))
    green = start_rollout(user, kube, manifest(namespace, "green"))
    main_url = sandbox.service_url(namespace, NAME)

    # Green at full size beside blue, reachable on the preview Service only.
    awaiting = wait_phase(kube, namespace, NAME, "Paused", step=1)
    assert awaiting["message"] == "step 2/3 await promotion: paused until `modeldeploy promote`"
    assert deployment(kube, namespace, NAME, green)["status"]["readyReplicas"] == 2
    preview_url = sandbox.service_url(namespace, PREVIEW)
    wait_served_by(preview_url, NAME, [green], "the preview Service to serve green")
    assert by_revision(sample(preview_url, 50), NAME, [blue, green]) == {green: 50}
    assert by_revision(sample(main_url, 50), NAME, [blue, green]) == {blue: 50}

    user.modeldeploy("promote", NAME)
    # The switch: the tick that consumed promote pointed the main Service at green.
    baking = wait_status(kube, namespace, NAME, lambda s: bool(s.get("bakeUntil")), "the bake")
    assert baking["phase"] == "Promoting" and baking["canaryRevision"] == green
    service = kube.get("Service", namespace, NAME)
    assert service is not None
    assert service["spec"]["selector"]["modeldeploy.io/revision"] == green
    # Blue stays at full size through the bake, for an instant way back.
    assert deployment(kube, namespace, NAME, blue)["spec"]["replicas"] == 2
    wait_served_by(main_url, NAME, [green], "the main Service to serve green")
    assert by_revision(sample(main_url, 50), NAME, [blue, green]) == {green: 50}

    done = wait_status(
        kube, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == green,
        "green to become stable after the bake",
    )
    assert entry_of(done, green)["steps"] == [
        "preview ready", f"promoted by {getpass.getuser()}", "switch to green", "bake 3s", "baked 3s",
    ]
    assert deployment(kube, namespace, NAME, blue)["spec"]["replicas"] == 0
    wait_until(
        lambda: not revision_pods(kube, namespace, NAME, blue), timeout=30,
        what="blue's pods to be gone",
    )
    assert by_revision(sample(main_url, 20), NAME, [green]) == {green: 20}

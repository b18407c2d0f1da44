"""The objects a ModelDeployment owns, as the operator builds them (before any API call)."""

from __future__ import annotations

from typing import Any

from modeldeploy import spec as s
from modeldeploy.kube import objects
from modeldeploy.kube.client import without_nulls


def md(**spec: Any) -> s.ModelDeployment:
    return s.ModelDeployment.model_validate({
        "metadata": {"name": "textgen", "namespace": "ml", "uid": "u-1"},
        "spec": {
            "replicas": 2,
            "template": {"metadata": {"labels": {"team": "nlp"}}, "spec": {"containers": [{
                "name": "app", "image": "modeldeploy/textgen:1",
                "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": 0.5, "memory": "2Gi"}},
            }]}},
            **spec,
        },
    })


def test_a_revisions_deployment_selects_its_own_pods_and_is_owned() -> None:
    deployment = objects.deployment(md(), "abc123def0", "canary", 1)
    assert deployment["metadata"]["name"] == "textgen-abc123def0"
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "modeldeploy.io/name": "textgen", "modeldeploy.io/revision": "abc123def0",
    }
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "nlp" and labels["modeldeploy.io/track"] == "canary"
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelDeployment", "u-1", True)


def test_resource_quantities_written_as_numbers_become_strings() -> None:
    """`nvidia.com/gpu: 1` in YAML must not stop the Deployment from being created."""
    deployment = objects.deployment(md(), "abc123def0", "canary", 1)
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "1", "cpu": "0.5", "memory": "2Gi"}


def test_config_reaches_the_pods_from_the_revisions_immutable_configmap() -> None:
    model = md(config={"FF_PARALLEL": "true"})
    container = objects.deployment(model, "abc123def0", "canary", 1)["spec"]["template"]["spec"][
        "containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "textgen-config-abc123def0"}}]
    configmap = objects.configmap(model, "abc123def0")
    assert configmap["immutable"] is True and configmap["data"] == {"FF_PARALLEL": "true"}


def test_a_service_without_a_revision_widens_back_to_every_revision() -> None:
    service = objects.service(md(), "textgen", revision=None)
    # A merge patch removes the revision key (null); a create leaves it out.
    assert service["spec"]["selector"] == {"modeldeploy.io/name": "textgen", "modeldeploy.io/revision": None}
    assert without_nulls(service)["spec"]["selector"] == {"modeldeploy.io/name": "textgen"}
    narrowed = objects.service(md(), "textgen", revision="abc123def0")
    assert narrowed["spec"]["selector"]["modeldeploy.io/revision"] == "abc123def0"

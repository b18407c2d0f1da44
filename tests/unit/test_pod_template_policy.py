"""The podTemplatePolicy refuses templates that reach beyond the namespace, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from modeldeploy.podpolicy import PodTemplatePolicy

RESTRICTED = PodTemplatePolicy.from_env("restricted", "model-reader, ")


def pod(**extra: Any) -> dict[str, Any]:
    return {"containers": [{"name": "app", "image": "songs:1"}], **extra}


@pytest.mark.parametrize(
    ("pod_spec", "field"),
    [
        (pod(serviceAccountName="cluster-admin-sa"), "spec.template.spec.serviceAccountName"),
        (pod(serviceAccount="ci-deployer"), "spec.template.spec.serviceAccount"),
        (pod(hostNetwork=True), "spec.template.spec.hostNetwork"),
        (pod(hostPID=True), "spec.template.spec.hostPID"),
        (pod(hostIPC=True), "spec.template.spec.hostIPC"),
        (pod(volumes=[{"name": "cache", "emptyDir": {}}, {"name": "root", "hostPath": {"path": "/"}}]),
         "spec.template.spec.volumes[1].hostPath"),
        ({"containers": [{"name": "a", "image": "x"},
                         {"name": "b", "image": "y", "securityContext": {"privileged": True}}]},
         "spec.template.spec.containers[1].securityContext.privileged"),
        ({"containers": [{"name": "a", "image": "x"}],
          "initContainers": [{"name": "i", "image": "y", "securityContext": {"privileged": True}}]},
         "spec.template.spec.initContainers[0].securityContext.privileged"),
    ],
)
def test_a_restricted_policy_refuses_each_escape_naming_the_field_and_the_fix(
    pod_spec: dict[str, Any], field: str
) -> None:
    refused = RESTRICTED.refusals(pod_spec)
    assert len(refused) == 1, refused
    assert refused[0].startswith(f"{field}: ")
    assert "podTemplatePolicy" in refused[0]


def test_the_default_and_listed_service_accounts_and_ordinary_templates_pass() -> None:
    for pod_spec in (
        pod(), pod(serviceAccountName="default"), pod(serviceAccountName="model-reader"),
        pod(hostNetwork=False, securityContext={"runAsNonRoot": True},
            volumes=[{"name": "weights", "persistentVolumeClaim": {"claimName": "w"}}]),
    ):
        assert RESTRICTED.refusals(pod_spec) == []


def test_the_policy_is_off_unless_asked_for_and_a_typo_is_refused_at_start() -> None:
    assert PodTemplatePolicy.from_env(None, None).refusals(pod(hostPID=True)) == []
    with pytest.raises(ValueError, match="MODELDEPLOY_POD_TEMPLATE_POLICY='strict'"):
        PodTemplatePolicy.from_env("strict", None)

"""The chart's default webhook reaches the operator as it reads it, with read access to its
one Secret only; webhook Secrets of ModelDeployments are readable by name only."""

from __future__ import annotations

import pytest
from chart_harness import NAMESPACE, SCENARIOS, objects, of_kind, scenario_values
from modeldeploy.notify import WebhookTarget
from test_chart_render import operator_config


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_default_webhook_unless_one_is_set(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objs = objects(scenario_values(scenario))
    assert operator_config(objs, monkeypatch).default_webhook is None
    assert not [r for r in of_kind(objs, "Role") if r["metadata"]["name"].endswith("-default-webhook")]


@pytest.mark.parametrize("watch", [[], ["ml"]], ids=["cluster-wide", "namespaced"])
def test_the_default_webhook_is_read_from_its_secret_in_the_release_namespace(
    watch: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    objs = objects({"watchNamespaces": watch, "notifications": {"defaultWebhook": {
        "secretName": "rollout-webhook", "format": "slack", "events": ["RolledBack", "Failed"]}}})
    assert operator_config(objs, monkeypatch).default_webhook == WebhookTarget(
        "default", NAMESPACE, "rollout-webhook", "url", "slack", frozenset({"RolledBack", "Failed"}))
    role = next(r for r in of_kind(objs, "Role") if r["metadata"]["name"].endswith("-default-webhook"))
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                              "resourceNames": ["rollout-webhook"], "verbs": ["get"]}]
    binding = next(b for b in of_kind(objs, "RoleBinding")
                   if b["metadata"]["name"] == role["metadata"]["name"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_webhook_secrets_join_the_analysis_secrets_in_one_read_only_rule() -> None:
    objs = objects({"rbac": {"analysisSecretNames": ["prom-token"],
                             "notificationSecretNames": ["hooks", "prom-token"]}})
    role = next(r for r in of_kind(objs, "ClusterRole") if r["metadata"]["name"] == "md-modeldeploy")
    secrets = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert secrets == [{"apiGroups": [""], "resources": ["secrets"],
                        "resourceNames": ["prom-token", "hooks"], "verbs": ["get"]}]

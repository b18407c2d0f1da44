"""The chart's podTemplatePolicy reaches the operator as it reads it: restricted by default."""

from __future__ import annotations

import pytest
from chart_harness import SCENARIOS, objects, scenario_values
from test_chart_render import operator_config

ESCAPING = {"containers": [{"name": "app", "image": "songs:1"}],
            "serviceAccountName": "model-reader", "hostNetwork": True}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_mode_refuses_escaping_templates_by_default(
    scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = operator_config(objects(scenario_values(scenario)), monkeypatch).pod_template_policy
    assert [r.split(":", 1)[0] for r in policy.refusals(ESCAPING)] == [
        "spec.template.spec.serviceAccountName", "spec.template.spec.hostNetwork"]


def test_listed_service_accounts_are_allowed_and_off_turns_the_policy_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listed = objects({"podTemplatePolicy": {"allowedServiceAccounts": ["model-reader"]}})
    refused = operator_config(listed, monkeypatch).pod_template_policy.refusals(ESCAPING)
    assert [r.split(":", 1)[0] for r in refused] == ["spec.template.spec.hostNetwork"]
    off = objects({"podTemplatePolicy": {"mode": "off"}})
    assert operator_config(off, monkeypatch).pod_template_policy.refusals(ESCAPING) == []

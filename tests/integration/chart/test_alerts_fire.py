"""The chart's alert and recording rules load in the sandbox's real Prometheus, and an alert
fires there after a rollback (issue 7, acceptance 5).

charts/modeldeploy/files/alerts.yaml (the file the PrometheusRule template includes unchanged)
is dropped into the sandbox Prometheus' rules folder and loaded with ``POST /-/reload``; the real
operator's own metrics endpoint is registered as the ``operator`` scrape target; a canary whose
rollback indicator is breached on its first measurement is rolled back by the operator; and
``/api/v1/alerts`` must then show ``ModelDeploymentRolledBack`` firing (it has no ``for:``),
labelled with the ModelDeployment's namespace and name. The rule file and the target are
removed afterwards: the sandbox is shared by the whole session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from operator_process import OperatorProcess, kubectl_apply
from operator_process import model_deployment as shared_model_deployment

REPO_ROOT = Path(__file__).resolve().parents[3]
ALERTS = REPO_ROOT / "charts" / "modeldeploy" / "files" / "alerts.yaml"
PROMTOOL = "/usr/bin/promtool"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path("/usr/bin/prometheus").exists() or shutil.which(PROMTOOL) is None,
        reason="Debian's prometheus package is not installed (/usr/bin/prometheus, "
        "/usr/bin/promtool): apt-get install -y prometheus",
    ),
]


def prometheus_get(sandbox: Sandbox, path: str) -> dict[str, Any]:
    response = httpx.get(f"{sandbox.prometheus_url}{path}", timeout=10)
    response.raise_for_status()
    data: dict[str, Any] = response.json()["data"]
    return data


def reload(sandbox: Sandbox) -> None:
    response = httpx.post(f"{sandbox.prometheus_url}/-/reload", timeout=30)
    assert response.status_code == 200, response.text


@pytest.fixture
def chart_rules(sandbox: Sandbox) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """alerts.yaml loaded into the sandbox's Prometheus; yields its rules by group, as loaded."""
    checked = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    target = sandbox.rules_dir / "modeldeploy-chart-alerts.yaml"
    shutil.copyfile(ALERTS, target)
    try:
        reload(sandbox)

        def loaded() -> dict[str, list[dict[str, Any]]] | None:
            groups = prometheus_get(sandbox, "/api/v1/rules")["groups"]
            ours = {g["name"]: g["rules"] for g in groups if g["file"] == str(target)}
            return ours or None

        yield wait_until(loaded, timeout=30, what="Prometheus to load the chart's rules")
    finally:
        target.unlink()
        reload(sandbox)


@pytest.fixture
def operator_scraped(sandbox: Sandbox, operator: OperatorProcess) -> Iterator[str]:
    """The operator's metrics endpoint as the sandbox's `operator` scrape target."""
    address = f"127.0.0.1:{operator.metrics_port}"
    sandbox.operator_targets_file.write_text(json.dumps([{"targets": [address]}]))
    try:
        wait_until(
            lambda: prometheus_get(sandbox, f'/api/v1/query?query=up{{instance="{address}"}}==1')[
                "result"],
            timeout=30, what="Prometheus to scrape the operator",
        )
        yield address
    finally:
        sandbox.operator_targets_file.write_text("[]\n")


def model_deployment(name: str, namespace: str, mark: str, prometheus: str) -> dict[str, Any]:
    return shared_model_deployment(
        name, namespace, env={"MARK": mark},
        strategy={"canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]}},
        analysis={
            "interval": "1s",
            "provider": {"prometheus": {"address": prometheus}},
            # Always 1: the indicator below is breached on the canary's first measurement.
            "metrics": [{"name": "error-ratio", "query": "vector(1)", "thresholdRange": {"max": 0.05}}],
            "rollbackIndicators": [{"metric": "error-ratio", "thresholdRange": {"max": 0.05}}],
        },
        rollback={"bakeTime": "0s"},
    )


def wait_phase(kube: KubeAPI, namespace: str, name: str, wanted: str) -> dict[str, Any]:
    """The status once it reaches ``wanted``; on timeout, the error shows the last status."""
    seen: list[dict[str, Any]] = [{}]

    def reached() -> dict[str, Any] | None:
        path = f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments/{name}"
        seen[0] = kube.http.get(path).json().get("status") or {}
        return seen[0] if seen[0].get("phase") == wanted else None

    try:
        return wait_until(reached, timeout=60, what=f"{name} to reach {wanted}", interval=0.25)
    except AssertionError as error:
        raise AssertionError(f"{error}; last status: {seen[0]}") from None


def alerts_named(sandbox: Sandbox, alert: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = prometheus_get(sandbox, "/api/v1/alerts")["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == alert]


def rules_in_file() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_chart_rule_loads_and_evaluates_in_the_sandbox_prometheus(
    sandbox: Sandbox, chart_rules: dict[str, list[dict[str, Any]]]
) -> None:
    expected = {r.get("alert") or r.get("record") for r in rules_in_file()}
    assert {r["name"] for rules in chart_rules.values() for r in rules} == expected

    def all_evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus_get(sandbox, "/api/v1/rules")["groups"]
        rules = [r for g in groups if g["name"] in chart_rules for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else None

    evaluated = wait_until(all_evaluated, timeout=60, what="every chart rule to be evaluated")
    assert [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"] == []


def test_a_rollback_fires_the_rolled_back_alert_naming_the_model_deployment(
    sandbox: Sandbox,
    kube: KubeAPI,
    namespace: str,
    chart_rules: dict[str, list[dict[str, Any]]],
    operator_scraped: str,
) -> None:
    kubeconfig = Path(sandbox.kubeconfig)
    prometheus = str(sandbox.prometheus_url)

    kubectl_apply(model_deployment("scorer", namespace, "1", prometheus), kubeconfig)
    wait_phase(kube, namespace, "scorer", "Succeeded")
    kubectl_apply(model_deployment("scorer", namespace, "2", prometheus), kubeconfig)
    status = wait_phase(kube, namespace, "scorer", "RolledBack")
    assert "error-ratio" in status["message"], status

    def firing() -> list[dict[str, Any]] | None:
        found = [a for a in alerts_named(sandbox, "ModelDeploymentRolledBack")
                 if a["labels"].get("namespace") == namespace and a["state"] == "firing"]
        return found or None

    alert = wait_until(firing, timeout=60, what="ModelDeploymentRolledBack to fire", interval=0.5)[0]
    assert alert["labels"]["name"] == "scorer"
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == f"ModelDeployment {namespace}/scorer was rolled back"

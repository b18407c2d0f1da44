"""The alert and recording rules load in a real Prometheus (promtool), fire when they should, and
every series they or the dashboard use is one the operator or the model services promise."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_harness import CHART, REPO

PROMTOOL = "/usr/bin/promtool"
ALERTS = CHART / "files" / "alerts.yaml"
DASHBOARD = json.loads((CHART / "files" / "dashboard.json").read_text())
PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"

needs_promtool = pytest.mark.skipif(
    shutil.which(PROMTOOL) is None,
    reason=f"{PROMTOOL} is absent: `apt-get install -y prometheus` provides the real promtool",
)

# DESIGN.md's metric contract: what every model service exposes.
MODEL_SERVICE_METRICS = {
    "model_requests_total",
    "model_request_duration_seconds",
    "model_upstream_requests_total",
    "model_tokens_total",
    "model_cost_usd_total",
    "model_cache_requests_total",
    "model_info",
}
# Labels the PodMonitor attaches; they look like metric names but are not.
CONTRACT_LABELS = {"modeldeploy_name", "modeldeploy_revision", "modeldeploy_track"}
SERIES = re.compile(r"\b(modeldeploy_[a-z_]+|model_[a-z_]+)\b")
RECORDING_RULE_NAME = re.compile(r"\b\w+:[\w:]+")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False)


@needs_promtool
def test_rules_file_loads_in_prometheus() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_alerts_fire_when_they_should_and_stay_quiet_otherwise() -> None:
    result = promtool("test", "rules", str(PROMTOOL_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_file_defines_the_four_documented_alerts() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert alerts == {
        "ModelDeploymentRolledBack",
        "ModelDeploymentDegraded",
        "ModelDeploymentProgressingTooLong",
        "ModelDeploymentAnalysisInconclusive",
    }
    for rule in rules:
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Grafana's variables replaced by what Grafana would send, each query must parse."""
    substitutions = {"$__rate_interval": "2m", "$namespace": ".*", "$name": ".*"}
    rules: list[dict[str, Any]] = []
    for number, expr in enumerate(_dashboard_exprs()):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    rules_file = tmp_path / "dashboard-queries.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shows_weight_success_rate_latency_and_rollbacks() -> None:
    titles = {p["title"] for p in DASHBOARD["panels"]}
    assert {
        "Canary weight",
        "Success rate: canary vs stable",
        "p95 latency: canary vs stable",
        "Rollbacks",
    } <= titles
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def _series_used(text: str) -> set[str]:
    names = set(SERIES.findall(RECORDING_RULE_NAME.sub("", text))) - CONTRACT_LABELS
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def _operator_metrics_in_readme() -> set[str]:
    readme = (CHART / "README.md").read_text()
    return set(re.findall(r"^\| `(modeldeploy_[a-z_]+)` \|", readme, re.MULTILINE))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(ALERTS, id="the alert rules use only promised series"),
        pytest.param(CHART / "files" / "dashboard.json", id="the dashboard uses only promised series"),
    ],
)
def test_every_series_used_is_promised_by_the_operator_or_the_model_services(
    source: Path,
) -> None:
    used = _series_used(source.read_text())
    assert used, "no series found"
    promised = _operator_metrics_in_readme() | MODEL_SERVICE_METRICS
    assert used - promised == set(), (
        f"{source.relative_to(REPO)} uses series not listed in charts/modeldeploy/README.md"
    )


def test_readme_lists_the_operator_metrics_the_issue_asks_for() -> None:
    assert {
        "modeldeploy_rollouts_total",
        "modeldeploy_rollbacks_total",
        "modeldeploy_analysis_measurements_total",
        "modeldeploy_analysis_query_seconds",
        "modeldeploy_canary_weight",
        "modeldeploy_phase",
    } <= _operator_metrics_in_readme()

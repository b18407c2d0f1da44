"""memory-utilization: cAdvisor's working set over limit, for one revision's containers.

cAdvisor's (and kube-state-metrics') series carry ``namespace``, ``pod`` and
``container`` only, so the query finds a revision's containers by pod name: the
operator's Deployment ``<name>-<revision>`` gives pods
``<name>-<revision>-<pod-template-hash>-<suffix>``. These tests hold the query to that
naming, and run it in a real Prometheus engine (promtool) over the series a plain
cAdvisor job and a default kube-prometheus-stack each give it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from modeldeploy import spec as s
from modeldeploy.analysis import presets
from modeldeploy.analysis.promql import QueryContext, render
from modeldeploy.kube.objects import deployment_name

PROMTOOL = "/usr/bin/promtool"
CONTEXT = QueryContext(name="images", namespace="ml", revision="4f1c2a9e0b",
                       stable_revision="77d0e3b1c5", interval="30s")
QUERY = render(presets.BUILTIN_QUERIES["memory-utilization"], CONTEXT)


def pod_of(md_name: str, revision: str, pod_template_hash: str = "5d8f7c9b6",
           suffix: str = "x2k4q") -> str:
    """A pod name as the ReplicaSet controller makes it for the operator's Deployment."""
    return f"{deployment_name(md_name, revision)}-{pod_template_hash}-{suffix}"


def selectors(query: str, metric: str) -> list[dict[str, tuple[str, str]]]:
    """Each label selector of ``metric`` in the query: label -> (operator, value)."""
    found = []
    for body in re.findall(rf"{metric}\{{([^}}]*)\}}", query):
        matchers: dict[str, tuple[str, str]] = {}
        for label, op, value in re.findall(r'(\w+)(=~|!=|=)"([^"]*)"', body):
            matchers[label if op != "!=" else f"{label}!={value}"] = (op, value)
        found.append(matchers)
    return found


def test_the_rendered_query_divides_the_peak_working_set_by_the_limit_of_the_revisions_containers(
) -> None:
    containers = ('namespace="ml",pod=~"images-4f1c2a9e0b-[a-z0-9]+(-[a-z0-9]+)?",'
                  'container!="",container!="POD"')
    expected = (
        "max(max by (namespace, pod, container) (max_over_time("
        f"container_memory_working_set_bytes{{{containers}}}[30s])) / "
        "(max by (namespace, pod, container) ("
        f"container_spec_memory_limit_bytes{{{containers}}} > 0) or "
        "max by (namespace, pod, container) ("
        f'kube_pod_container_resource_limits{{{containers},resource="memory"}} > 0)))'
    )
    assert render(presets.BUILTIN_QUERIES["memory-utilization"], CONTEXT) == expected


@pytest.mark.parametrize("metric", ["container_memory_working_set_bytes",
                                    "container_spec_memory_limit_bytes",
                                    "kube_pod_container_resource_limits"])
def test_every_series_leaves_out_the_pod_level_and_pause_series(metric: str) -> None:
    (matchers,) = selectors(QUERY, metric)
    assert matchers["container!="] == ("!=", "")
    assert matchers["container!=POD"] == ("!=", "POD")
    assert matchers["namespace"] == ("=", "ml")


@pytest.mark.parametrize(
    ("pod", "selected"),
    [
        (pod_of("images", "4f1c2a9e0b"), True),
        (pod_of("images", "4f1c2a9e0b", "7c9dbb5f4", "abcde"), True),
        # The API server cuts a generated name's prefix at 58 characters: the revision stays.
        (f"{deployment_name('images', '4f1c2a9e0b')}-5d8f7x2k4q", True),
        (pod_of("images", "77d0e3b1c5"), False),
        (pod_of("images-4f1c2a9e0b", "4f1c2a9e0b"), False),
        (pod_of("other", "4f1c2a9e0b"), False),
        (deployment_name("images", "4f1c2a9e0b"), False),
    ],
    ids=[
        "a pod of the revision's Deployment is measured",
        "a pod of another ReplicaSet of the same revision is measured",
        "a pod whose generated name was cut short is measured",
        "a pod of the stable revision is not",
        "a pod of a ModelDeployment named like the revision's Deployment is not",
        "a pod of another ModelDeployment at the same revision is not",
        "a name without a pod suffix is not",
    ],
)
def test_the_pod_matcher_selects_exactly_the_revisions_pods(pod: str, selected: bool) -> None:
    patterns = {selector["pod"] for selector in selectors(QUERY, r"\w+")}
    assert len(patterns) == 1, "every series selects the same pods"
    ((op, pattern),) = patterns
    # PromQL regex matchers are anchored at both ends, as fullmatch is.
    assert op == "=~" and (re.fullmatch(pattern, pod) is not None) is selected


def test_the_query_takes_the_placeholders_the_spec_allows() -> None:
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", presets.BUILTIN_QUERIES["memory-utilization"]))
    assert used == {"namespace", "name", "revision", "interval"}
    assert used <= s.QUERY_PLACEHOLDERS


def test_memory_utilization_is_a_preset_and_a_built_in_metric_with_a_90_percent_default() -> None:
    analysis = s.Analysis.model_validate({
        "provider": {"prometheus": {"address": "http://p:9090"}},
        "presets": ["memory-utilization"],
        "rollbackIndicators": [{"metric": "memory-utilization", "thresholdRange": {"max": 0.95}}],
    })
    gates, indicators = presets.resolve(analysis)
    gate = next(g for g in gates if g.name == "memory-utilization")
    assert gate.threshold_range == s.ThresholdRange(max=0.9)
    assert gate.query == presets.BUILTIN_QUERIES["memory-utilization"]
    (indicator,) = indicators
    assert indicator.metric == "memory-utilization"
    assert indicator.query == presets.BUILTIN_QUERIES["memory-utilization"]
    assert "memory-utilization" in s.BUILTIN_METRICS


def test_a_custom_metric_named_memory_utilization_needs_no_query() -> None:
    metric = s.Metric.model_validate({"name": "memory-utilization", "thresholdRange": {"max": 0.8}})
    assert metric.query is None


# --------------------------------------------------------------- in a Prometheus engine

MiB = 2**20
CANARY_POD = pod_of("images", "4f1c2a9e0b")
STABLE_POD = pod_of("images", "77d0e3b1c5")


def series(metric: str, pod: str, container: str, values: str, **labels: str) -> dict[str, str]:
    """One promtool input series of the ``ml`` namespace, 15 s apart."""
    all_labels = {"namespace": "ml", "pod": pod, "container": container, **labels}
    rendered = ", ".join(f'{k}="{v}"' for k, v in all_labels.items())
    return {"series": f"{metric}{{{rendered}}}", "values": values}


def working_set(pod: str, container: str, values: str, **labels: str) -> dict[str, str]:
    return series("container_memory_working_set_bytes", pod, container, values, **labels)


def cadvisor_limit(pod: str, container: str, limit: int) -> dict[str, str]:
    return series("container_spec_memory_limit_bytes", pod, container, f"{limit}x8")


def ksm_limit(pod: str, container: str, resource: str, amount: int) -> dict[str, str]:
    unit = "byte" if resource == "memory" else "core"
    return series("kube_pod_container_resource_limits", pod, container, f"{amount}x8",
                  resource=resource, unit=unit, uid="0d9c", node="node-a")


# The canary's app container peaks at 60 MiB of its 64 MiB limit (0.9375) 15 s into the
# minute and holds 48 MiB at the end of it (0.75): the window's peak is what counts.
CANARY_APP = working_set(CANARY_POD, "app", f"{40 * MiB} {60 * MiB} {48 * MiB}x6")
# What the query must leave out, each fuller than the canary's app container.
DISTRACTORS = [
    working_set(CANARY_POD, "", f"{100 * MiB}x8"),  # the pod-level cgroup
    working_set(CANARY_POD, "POD", f"{1 * MiB}x8"),  # the pause container
    series("container_spec_memory_limit_bytes", CANARY_POD, "POD", f"{1 * MiB}x8"),
    working_set(CANARY_POD, "sidecar", f"{30 * MiB}x8"),  # no limit: 0 from cAdvisor
    cadvisor_limit(CANARY_POD, "sidecar", 0),
    working_set(STABLE_POD, "app", f"{63 * MiB}x8"),  # the stable revision's pod
    cadvisor_limit(STABLE_POD, "app", 64 * MiB),
    # The kubelet's /metrics/resource says the same container's working set again.
    working_set(CANARY_POD, "app", f"{40 * MiB}x8", metrics_path="/metrics/resource"),
]
SCENARIOS = [
    pytest.param([CANARY_APP, cadvisor_limit(CANARY_POD, "app", 64 * MiB), *DISTRACTORS], [0.9375],
                 id="cAdvisor's own limit series (a plain cAdvisor job, the sandbox)"),
    pytest.param([CANARY_APP, ksm_limit(CANARY_POD, "app", "memory", 64 * MiB),
                  ksm_limit(CANARY_POD, "app", "cpu", 1), *DISTRACTORS], [0.9375],
                 id="kube-prometheus-stack: no container_spec series, kube-state-metrics' limit"),
    pytest.param([CANARY_APP, cadvisor_limit(CANARY_POD, "app", 64 * MiB),
                   ksm_limit(CANARY_POD, "app", "memory", 64 * MiB), *DISTRACTORS], [0.9375],
                 id="both limit series for one container: measured once"),
    pytest.param([CANARY_APP, cadvisor_limit(CANARY_POD, "app", 0), *DISTRACTORS], [],
                 id="no container of the revision has a limit: no data, never +Inf"),
]


@pytest.mark.skipif(shutil.which(PROMTOOL) is None,
                    reason=f"{PROMTOOL} is absent: `apt-get install -y prometheus` provides it")
@pytest.mark.parametrize(("input_series", "expected"), SCENARIOS)
def test_the_query_measures_the_revisions_fullest_container_in_prometheus(
    input_series: list[dict[str, str]], expected: list[float], tmp_path: Path
) -> None:
    query = render(presets.BUILTIN_QUERIES["memory-utilization"],
                   QueryContext("images", "ml", "4f1c2a9e0b", "77d0e3b1c5", "1m"))
    test_file: dict[str, Any] = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": input_series,
            "promql_expr_test": [{
                "expr": query, "eval_time": "1m",
                "exp_samples": [{"labels": "{}", "value": value} for value in expected],
            }],
        }],
    }
    path = tmp_path / "memory_test.yaml"
    path.write_text(yaml.safe_dump(test_file, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

"""Render the modeldeploy chart with Helm's own engine (helm-python-sdk), for the chart tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "modeldeploy"
RELEASE = "md"
NAMESPACE = "modeldeploy"

# The documented modes: ci/<scenario>-values.yaml.
SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))


def scenario_values(scenario: str) -> dict[str, Any]:
    """The values of one ci/ scenario."""
    loaded = yaml.safe_load((CHART / "ci" / f"{scenario}-values.yaml").read_text())
    return dict(loaded or {})


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Render the chart offline; template path -> manifest text. Raises Helm's errors."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders with these values."""
    rendered = render(values)
    return [obj for path, text in rendered.items() if path.endswith(".yaml") for obj in _docs(text)]


def _docs(text: str) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(text):
        if doc:
            yield doc


def only(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single object of this kind; fails when there are none or several."""
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def operator_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator container of the chart's one Deployment (in every mode)."""
    workloads = of_kind(objs, "Deployment") + of_kind(objs, "StatefulSet")
    assert len(workloads) == 1, "the chart renders exactly one operator workload"
    containers: list[dict[str, Any]] = workloads[0]["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "operator")


def dockerfile_stages(dockerfile: Path) -> list[list[str]]:
    """A Dockerfile's instructions per stage, continuation lines joined, comments dropped.
    (No container engine here, so images are checked by reading what builds them.)"""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages

"""The chart installs exactly the CRDs the operator's models generate, and keeps them on uninstall."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_harness import CHART, REPO, objects, of_kind

TOP_LEVEL_CRDS = sorted((REPO / "crds").glob("*.yaml"))
CHART_CRDS = CHART / "files" / "crds"


@pytest.mark.parametrize("crd", TOP_LEVEL_CRDS, ids=[p.name for p in TOP_LEVEL_CRDS])
def test_chart_copy_of_each_crd_equals_the_generated_one_byte_for_byte(crd: Path) -> None:
    copy = CHART_CRDS / crd.name
    assert copy.is_file(), f"{copy} is missing: run hack/sync-chart-crds"
    assert copy.read_bytes() == crd.read_bytes(), (
        f"{copy.relative_to(REPO)} differs from crds/{crd.name}: run hack/sync-chart-crds"
    )


def test_sync_script_copies_every_generated_crd(tmp_path: Path) -> None:
    subprocess.run([str(REPO / "hack" / "sync-chart-crds"), str(tmp_path)], check=True, capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in TOP_LEVEL_CRDS]
    for crd in TOP_LEVEL_CRDS:
        assert (tmp_path / crd.name).read_bytes() == crd.read_bytes()


def _without_chart_metadata(crd: dict[str, Any]) -> dict[str, Any]:
    meta = dict(crd["metadata"])
    meta.pop("annotations", None)
    meta.pop("labels", None)
    return {**crd, "metadata": meta}


def test_rendered_crd_is_the_generated_crd_plus_keep_policy_and_chart_labels() -> None:
    generated = yaml.safe_load((REPO / "crds" / "modeldeployment.yaml").read_text())
    rendered = next(
        c
        for c in of_kind(objects(), "CustomResourceDefinition")
        if c["metadata"]["name"] == generated["metadata"]["name"]
    )
    assert _without_chart_metadata(rendered) == _without_chart_metadata(generated)
    assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert generated["metadata"]["labels"].items() <= rendered["metadata"]["labels"].items()
    assert rendered["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="the ModelDeployment CRD is kept on uninstall"),
        pytest.param({"ha": {"enabled": True}}, id="the CRD is kept on uninstall in HA mode too"),
    ],
)
def test_every_rendered_crd_survives_helm_uninstall(values: dict[str, Any]) -> None:
    crds = of_kind(objects(values), "CustomResourceDefinition")
    assert crds
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

"""The kind and CRD-sync scripts parse, and hack/kind-up.sh loads the very images the chart and
the e2e scenarios ask for. (Running kind-up itself needs Docker and kind; see the chart README.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from chart_harness import CHART, REPO

KIND_UP = REPO / "hack" / "kind-up.sh"
SCRIPTS = [KIND_UP, REPO / "hack" / "sync-chart-crds"]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_is_executable_bash_that_parses(script: Path) -> None:
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "set -euo pipefail" in script.read_text()


def test_kind_up_builds_the_operator_image_the_chart_runs_and_never_pulls_it() -> None:
    text = KIND_UP.read_text()
    repository = yaml.safe_load((CHART / "values.yaml").read_text())["image"]["repository"]
    assert f'docker build -f operator/Dockerfile -t "{repository}:${{tag}}" .' in text
    assert '--set image.tag="$tag"' in text
    assert "--set image.pullPolicy=Never" in text


def test_kind_up_names_service_images_as_the_examples_do() -> None:
    text = KIND_UP.read_text()
    assert ('docker build "${build_args[@]}" -f "workloads/${svc}/Dockerfile" '
            '-t "modeldeploy/${svc}:${tag}" .') in text
    # kind nodes have no GPUs: textgen is built with CPU-only torch there.
    assert '"$svc" == textgen' in text and "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    for example in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(example.read_text()):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert re.fullmatch(r"modeldeploy/[a-z0-9-]+:[\w.-]+", container["image"]), (
                    f"{example.name}: {container['image']} is not modeldeploy/<svc>:<tag>"
                )


def test_kind_up_pins_the_prometheus_stack_and_selects_the_charts_monitors() -> None:
    text = KIND_UP.read_text()
    assert re.search(r'kps_version="\$\{KPS_VERSION:-\d+\.\d+\.\d+\}"', text)
    assert '--version "$kps_version"' in text
    for selector in ("podMonitor", "serviceMonitor", "rule"):
        assert f"{selector}SelectorNilUsesHelmValues=false" in text

"""The kind and CRD-sync scripts parse, and hack/kind-up.sh loads the very images the chart and
the e2e scenarios ask for. (Running kind-up itself needs Docker and kind; see the chart README.)

Also how the e2e tier (tests/e2e) picks its cluster, which cannot run here: with fake ``docker``
and ``kind`` executables on a fake PATH, that it uses an installed kind, hands pytest-kind its
paths, and otherwise skips with a reason that says what to install or run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


def test_kind_up_uses_the_kind_binary_kind_bin_names() -> None:
    text = KIND_UP.read_text()
    assert 'kind="${KIND_BIN:-kind}"' in text
    assert not re.search(r"^\s*kind ", text, re.MULTILINE), "a kind call that ignores KIND_BIN"


# -- the e2e tier's choice of cluster ------------------------------------------------------

E2E = REPO / "tests" / "e2e"
KUBECONFIG_TEXT = """apiVersion: v1
kind: Config
clusters: [{name: kind-modeldeploy, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: kind-modeldeploy, context: {cluster: kind-modeldeploy, user: kind-modeldeploy}}]
current-context: kind-modeldeploy
users: [{name: kind-modeldeploy, user: {token: fake}}]
"""


def _e2e_target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("e2e_target_under_test", E2E / "e2e_target.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _tool(directory: Path, name: str, script: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def fake_docker(directory: Path, *, daemon: bool) -> Path:
    """The docker CLI: `docker info` fails as the real one does when no daemon answers."""
    if daemon:
        return _tool(directory, "docker", 'echo "Server Version: 28.2.2"\n')
    return _tool(directory, "docker", 'echo "Cannot connect to the Docker daemon" >&2\nexit 1\n')


def fake_kind(directory: Path, clusters: list[str]) -> Path:
    """kind with these clusters: `get clusters` lists them, `get kubeconfig --name N` prints N's
    kubeconfig or fails as the real one does for an unknown name."""
    cases = "".join(
        f'  "get kubeconfig --name {name}") printf %s \'{KUBECONFIG_TEXT}\' ;;\n' for name in clusters
    )
    return _tool(directory, "kind", (
        'case "$*" in\n'
        f'  "get clusters") {"; ".join(f"echo {c}" for c in clusters) or "true"} ;;\n'
        f"{cases}"
        '  "get kubeconfig --name "*) echo "ERROR: could not locate any control plane nodes" >&2; exit 1 ;;\n'
        '  *) echo "unexpected: $*" >&2; exit 2 ;;\n'
        "esac\n"
    ))


def test_without_docker_and_kind_the_e2e_tier_says_to_install_both(tmp_path: Path) -> None:
    target, reason = _e2e_target().find_target({"PATH": str(tmp_path / "bin")}, tmp_path)
    assert target is None
    assert "install Docker (https://docs.docker.com/engine/install/)" in reason
    assert "install kind (https://kind.sigs.k8s.io/" in reason and "KIND_BIN" in reason
    assert "hack/kind-up.sh" in reason


def test_with_docker_but_no_daemon_the_e2e_tier_says_to_start_it(tmp_path: Path) -> None:
    fake_docker(tmp_path / "bin", daemon=False)
    fake_kind(tmp_path / "bin", ["modeldeploy"])
    target, reason = _e2e_target().find_target({"PATH": str(tmp_path / "bin")}, tmp_path)
    assert target is None
    assert "Docker daemon is not reachable" in reason and "start Docker" in reason


def test_kind_bin_outside_path_is_used_and_a_missing_cluster_says_to_run_kind_up(tmp_path: Path) -> None:
    fake_docker(tmp_path / "bin", daemon=True)
    kind = fake_kind(tmp_path / "elsewhere", ["other"])
    environ = {"PATH": str(tmp_path / "bin"), "KIND_BIN": str(kind)}
    target, reason = _e2e_target().find_target(environ, tmp_path)
    assert target is None
    assert f"no kind cluster 'modeldeploy' (`{kind} get clusters`)" in reason
    assert "run hack/kind-up.sh" in reason and "E2E_KIND_UP=1" in reason


def test_kind_bin_that_is_no_executable_is_named_with_the_fix(tmp_path: Path) -> None:
    fake_docker(tmp_path / "bin", daemon=True)
    environ = {"PATH": str(tmp_path / "bin"), "KIND_BIN": str(tmp_path / "kind")}
    target, reason = _e2e_target().find_target(environ, tmp_path)
    assert target is None
    assert reason == f"KIND_BIN={tmp_path / 'kind'} is not an executable file: point it at the kind binary"


def test_an_installed_kind_with_the_cluster_gives_pytest_kind_every_path(tmp_path: Path) -> None:
    fake_docker(tmp_path / "bin", daemon=True)
    kind = fake_kind(tmp_path / "bin", ["other", "modeldeploy"])
    kubectl = _tool(tmp_path / "bin", "kubectl", "exit 0\n")
    target, reason = _e2e_target().find_target({"PATH": str(tmp_path / "bin")}, tmp_path)
    assert reason == ""
    assert (target.name, target.kind_bin, target.kubectl_bin) == ("modeldeploy", kind, kubectl)
    assert (target.exists, target.kind_up) == (True, False)  # kept after the run, not rebuilt
    assert target.kubeconfig.read_text() == KUBECONFIG_TEXT
    assert target.kubeconfig.stat().st_mode & 0o777 == 0o600


def test_e2e_kind_up_lets_pytest_kind_create_a_missing_cluster(tmp_path: Path) -> None:
    fake_docker(tmp_path / "bin", daemon=True)
    fake_kind(tmp_path / "bin", [])
    environ = {"PATH": str(tmp_path / "bin"), "E2E_KIND_UP": "1", "KIND_CLUSTER": "e2e"}
    target, reason = _e2e_target().find_target(environ, tmp_path)
    assert reason == ""
    assert (target.name, target.exists, target.kind_up) == ("e2e", False, True)
    assert target.kubectl_bin is None  # not installed, and not asked to download


def test_kubeconfig_wins_over_kind(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(KUBECONFIG_TEXT)
    fake_kind(tmp_path / "bin", ["modeldeploy"])
    target, reason = _e2e_target().find_target(
        {"PATH": str(tmp_path / "bin"), "KUBECONFIG": str(config)}, tmp_path
    )
    assert (target, reason) == (config, "")


def _run_e2e_tier(tmp_path: Path, *args: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    environ["PATH"] = str(tmp_path / "bin")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(E2E), "-q", "-rs", "-p", "no:cacheprovider", *args],
        cwd=REPO, env=environ, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_every_e2e_scenario_is_skipped_with_the_reason_where_nothing_is_installed(tmp_path: Path) -> None:
    out = _run_e2e_tier(tmp_path)
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    files = {p.name for p in E2E.glob("test_*.py")}
    assert {re.search(r"tests/e2e/(test_\w+\.py)", line)[1] for line in skips} == files  # type: ignore[index]
    for line in skips:
        assert "no KUBECONFIG, and no Docker and no kind here: install Docker" in line, line
    assert " passed" not in out and "error" not in out.lower()


def test_the_e2e_tier_reaches_the_cluster_with_the_installed_kind_and_pytest_kinds_options(
    tmp_path: Path,
) -> None:
    fake_docker(tmp_path / "bin", daemon=True)
    fake_kind(tmp_path / "bin", ["e2e"])
    kubeconfig = tmp_path / "given-kubeconfig"
    # pytest-kind's own options: the cluster's name, where its kubeconfig goes.
    out = _run_e2e_tier(tmp_path, "--cluster-name", "e2e", "--kubeconfig", str(kubeconfig))
    assert kubeconfig.read_text() == KUBECONFIG_TEXT  # from `kind get kubeconfig --name e2e`
    assert f"the cluster in {kubeconfig} is unreachable" in out

"""The e2e tier: the rollout scenarios against a real cluster, through the Kubernetes API only.

The cluster is the one ``KUBECONFIG`` points at, or else a kind cluster through pytest-kind's
``kind_cluster`` fixture (``KindCluster``): ``KIND_CLUSTER`` (default ``modeldeploy``, the one
hack/kind-up.sh creates and fills with the images, Prometheus and the chart), reached with the
``kind`` and ``kubectl`` installed here, whose paths are handed to pytest-kind so that it
downloads nothing (e2e_target.py says how they are found, and how to allow a download). A cluster
that existed before the run is kept afterwards; one pytest-kind created (``E2E_KIND_UP=1``) is
deleted unless ``--keep-cluster``. Where there is no cluster, every test here is collected and
skipped with a reason that says what to install or run.

Run it on a machine with Docker, kind, kubectl and helm::

    pip install -e '.[dev]'          # pytest-kind is in the dev extras
    hack/kind-up.sh                  # cluster "modeldeploy", images, Prometheus, the chart
    pytest tests/e2e -m e2e -v -rs   # or E2E_KIND_UP=1 pytest tests/e2e ... to do both in one go
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from e2e_cluster import Cluster
from e2e_target import KindTarget, Target, find_target

if TYPE_CHECKING:
    from pytest_kind import KindCluster

REPO = Path(__file__).resolve().parents[2]
_TARGET = pytest.StashKey[Target]()
# pytest-kind's --cluster-name default: left as it is, the name comes from KIND_CLUSTER.
PYTEST_KIND_DEFAULT_NAME = "pytest-kind"


def _locate(config: pytest.Config) -> tuple[Target | None, str]:
    workdir = Path(tempfile.mkdtemp(prefix="modeldeploy-e2e-"))
    if not config.pluginmanager.has_plugin("pytest-kind"):
        if os.environ.get("KUBECONFIG"):
            return find_target(os.environ, workdir)
        return None, (
            "no KUBECONFIG, and pytest-kind is not installed: pip install -e '.[dev]' (the dev "
            "extras have it), with Docker and kind installed"
        )
    name = config.getoption("cluster_name")
    return find_target(
        os.environ, workdir,
        cluster_name=None if name == PYTEST_KIND_DEFAULT_NAME else name,
        kind_bin=config.getoption("kind_bin"),
        kubectl_bin=config.getoption("kind_kubectl_bin"),
        kubeconfig=config.getoption("kubeconfig"),
    )


def _hand_to_pytest_kind(config: pytest.Config, target: KindTarget) -> None:
    """Set pytest-kind's options to the paths found: with them it downloads nothing."""
    config.option.cluster_name = target.name
    config.option.kind_bin = str(target.kind_bin)
    # Left unset when kubectl is not installed: pytest-kind fetches it only for
    # KindCluster.kubectl() and port_forward(), which the tier never calls.
    config.option.kind_kubectl_bin = str(target.kubectl_bin) if target.kubectl_bin else None
    config.option.kubeconfig = str(target.kubeconfig)
    if target.exists:
        config.option.keep_cluster = True  # not this run's to delete: hack/kind-up.sh made it


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    ours = [item for item in items if here in Path(str(item.fspath)).parents]
    for item in ours:
        item.add_marker(pytest.mark.e2e)
    if not ours:
        return
    target, reason = _locate(config)
    if isinstance(target, KindTarget):
        _hand_to_pytest_kind(config, target)
        if target.exists and not target.kind_up:
            reason = Cluster.readiness_problem(target.kubeconfig)
    elif target is not None:
        reason = Cluster.readiness_problem(target)
    if target is not None and not reason:
        config.stash[_TARGET] = target
        return
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=reason))


def _kind_up(kind: KindCluster) -> None:
    """hack/kind-up.sh on pytest-kind's cluster: it reuses the cluster, builds and loads the
    images, installs Prometheus and the chart (asked for: it downloads)."""
    subprocess.run(
        [str(REPO / "hack" / "kind-up.sh")],
        env={**os.environ, "KIND_CLUSTER": kind.name, "KIND_BIN": str(kind.kind_path),
             "KUBECONFIG": str(kind.kubeconfig_path)},
        check=True, timeout=3600,
    )


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    target = request.config.stash[_TARGET]
    if not isinstance(target, KindTarget):
        return Cluster(target)
    kind: KindCluster = request.getfixturevalue("kind_cluster")  # pytest-kind: create or reuse
    if target.kind_up:
        _kind_up(kind)
        problem = Cluster.readiness_problem(kind.kubeconfig_path)
        if problem:
            pytest.fail(f"hack/kind-up.sh ran, yet {problem}")
    return Cluster(kind.kubeconfig_path)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per scenario, deleted afterwards with everything in it."""
    name = f"md-e2e-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(name)
    try:
        yield name
    finally:
        cluster.delete_namespace(name)

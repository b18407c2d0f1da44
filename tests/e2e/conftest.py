"""The e2e tier: the rollout scenarios against a real cluster, through the Kubernetes API only.

The cluster is the one `KUBECONFIG` points at, or else the kind cluster `hack/kind-up.sh`
created (`KIND_CLUSTER`, default `modeldeploy`). Either must already have the modeldeploy chart
installed (hack/kind-up.sh does it). Where there is no cluster, every test here is collected and
skipped with a reason that names what is missing.

Why not pytest-kind: its cluster fixture downloads kind and kubectl binaries at run time
(pinned to kind v0.17) and creates a bare cluster, while these scenarios need the images,
Prometheus and the chart that hack/kind-up.sh installs. So the tier uses the `kind` CLI that
script uses, only to find the cluster and its kubeconfig.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cluster import Cluster

KIND_CLUSTER = os.environ.get("KIND_CLUSTER", "modeldeploy")
_KUBECONFIG = pytest.StashKey[Path]()
SETUP = "see charts/modeldeploy/README.md, 'Run the e2e tests on a machine with Docker and kind'"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=60)


def _find_kubeconfig(tmp_dir: Path) -> tuple[Path | None, str]:
    """A kubeconfig for the e2e cluster, or None and why there is none."""
    configured = os.environ.get("KUBECONFIG")
    if configured:
        path = Path(configured.split(os.pathsep)[0])
        if path.is_file():
            return path, ""
        return None, f"KUBECONFIG={configured} does not exist ({SETUP})"
    missing = [tool for tool in ("docker", "kind") if shutil.which(tool) is None]
    if missing:
        return None, (
            f"no KUBECONFIG and no {'/'.join(missing)} on PATH: install Docker and kind, then run "
            f"hack/kind-up.sh and export KUBECONFIG ({SETUP})"
        )
    if _run("docker", "info").returncode != 0:
        return None, (
            "no KUBECONFIG, and the Docker daemon is not reachable (`docker info` fails): start "
            f"Docker, then run hack/kind-up.sh ({SETUP})"
        )
    clusters = _run("kind", "get", "clusters").stdout.split()
    if KIND_CLUSTER not in clusters:
        return None, f"no KUBECONFIG and no kind cluster {KIND_CLUSTER!r}: run hack/kind-up.sh"
    kubeconfig = tmp_dir / "kubeconfig"
    kubeconfig.write_text(_run("kind", "get", "kubeconfig", "--name", KIND_CLUSTER).stdout)
    return kubeconfig, ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    ours = [item for item in items if here in Path(str(item.fspath)).parents]
    for item in ours:
        item.add_marker(pytest.mark.e2e)
    if not ours:
        return
    kubeconfig, reason = _find_kubeconfig(Path(tempfile.mkdtemp(prefix="modeldeploy-e2e-")))
    if kubeconfig is not None:
        reason = Cluster.readiness_problem(kubeconfig)
    if kubeconfig is not None and not reason:
        config.stash[_KUBECONFIG] = kubeconfig
        return
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Cluster:
    return Cluster(pytestconfig.stash[_KUBECONFIG])


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per scenario, deleted afterwards with everything in it."""
    name = f"md-e2e-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(name)
    try:
        yield name
    finally:
        cluster.delete_namespace(name)

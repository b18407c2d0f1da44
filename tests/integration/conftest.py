"""The integration tier's shared sandbox: one per test session, started by the real CLI.

``sandbox`` runs ``hack/sandbox up --dir <tmp> --scrape-interval 1s`` (with
``--no-prometheus`` when Debian's prometheus is not installed), yields an attached
``mdsandbox.Sandbox`` (kubeconfig, api_url, prometheus_url, fake_upstream_url,
service_url(), route_url(); ``up_output`` holds what ``up`` printed), and runs
``hack/sandbox down`` at the end. The session sandbox has no GPUs (``--gpus 0``), so a
pod asking for ``nvidia.com/gpu`` stays Pending Unschedulable.

``kube`` is a small REST client of its API server; ``namespace`` gives each test a
fresh namespace and deletes it (and so its pods' processes) afterwards.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mdsandbox.prometheus import prometheus_binary
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from operator_process import OperatorProcess, run

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_CLI = REPO_ROOT / "hack" / "sandbox"
SCRAPE_INTERVAL = "1s"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    workdir = tmp_path_factory.mktemp("sandbox")
    command = [str(SANDBOX_CLI), "up", "--dir", str(workdir), "--scrape-interval", SCRAPE_INTERVAL]
    if prometheus_binary() is None:
        command.append("--no-prometheus")
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if result.returncode != 0:
        pytest.fail(f"hack/sandbox up failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    attached = Sandbox.attach(workdir)
    attached.up_output = result.stdout
    try:
        yield attached
    finally:
        subprocess.run(
            [str(SANDBOX_CLI), "down", "--dir", str(workdir)],
            capture_output=True, text=True, timeout=120, check=False,
        )


@pytest.fixture(scope="session")
def kube(sandbox: Sandbox) -> Iterator[KubeAPI]:
    client = KubeAPI(sandbox.api_url)
    yield client
    client.close()


@pytest.fixture
def namespace(kube: KubeAPI) -> Iterator[str]:
    name = f"rt-{uuid.uuid4().hex[:8]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kube.delete("Namespace", "", name)


@pytest.fixture(scope="session")
def crds_installed(sandbox: Sandbox) -> None:
    """The project's CRD, applied with the real kubectl as a user would."""
    run(["kubectl", "apply", "-f", str(REPO_ROOT / "crds")], Path(sandbox.kubeconfig))


@pytest.fixture
def operator_env() -> dict[str, str]:
    """Environment variables the test's operator runs with, besides the defaults (a module
    overrides this fixture to change a setting)."""
    return {}


@pytest.fixture
def operator(
    sandbox: Sandbox, crds_installed: None, tmp_path: Path, operator_env: dict[str, str]
) -> Iterator[OperatorProcess]:
    """A running operator process for one test (stopped, and its log shown on failure)."""
    process = OperatorProcess(Path(sandbox.kubeconfig), tmp_path, operator_env)
    process.start()
    try:
        yield process
    finally:
        process.stop()

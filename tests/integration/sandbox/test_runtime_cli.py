"""``hack/sandbox``: what people type to get a sandbox and to be rid of it."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from mdsandbox.prometheus import prometheus_binary
from mdsandbox.sandbox import Sandbox
from mdsandbox.state import group_members, pid_alive, read_state
from mdsandbox.testing import KubeAPI, container_pid, deployment, wait_deployment_ready

pytestmark = pytest.mark.integration
SANDBOX_CLI = Path(__file__).resolve().parents[3] / "hack" / "sandbox"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SANDBOX_CLI), *args], capture_output=True, text=True, timeout=180, check=False
    )


def test_up_prints_its_startup_time_and_a_kubeconfig_that_names_the_api_server(
    sandbox: Sandbox,
) -> None:
    lines = sandbox.up_output.splitlines()

    assert re.fullmatch(r"sandbox up in \d+\.\ds \(dir .+\)", lines[0])
    kubeconfig_line = next(line for line in lines if line.startswith("KUBECONFIG="))
    kubeconfig = Path(kubeconfig_line.removeprefix("KUBECONFIG="))
    config = yaml.safe_load(kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == sandbox.api_url
    assert f"API={sandbox.api_url}" in lines
    assert any(line.startswith("FAKE_UPSTREAM=http://127.0.0.1:") for line in lines)


def test_status_says_the_sandbox_runs(sandbox: Sandbox) -> None:
    result = run_cli("status", "--dir", str(sandbox.workdir))

    assert result.returncode == 0, result.stderr
    assert "phase: Running" in result.stdout


# Prometheus too where it is installed: its process must go with the rest.
WITH_PROMETHEUS = prometheus_binary() is not None


def start_with_cli(workdir: Path) -> Sandbox:
    up = run_cli("up", "--dir", str(workdir), *([] if WITH_PROMETHEUS else ["--no-prometheus"]))
    assert up.returncode == 0, up.stderr
    return Sandbox.attach(workdir)


def stop_with_cli(sandbox: Sandbox) -> None:
    down = run_cli("down", "--dir", str(sandbox.workdir))
    assert down.returncode == 0, down.stderr


def start_with_python(workdir: Path) -> Sandbox:
    return Sandbox(workdir, prometheus=WITH_PROMETHEUS).start()


def stop_with_python(sandbox: Sandbox) -> None:
    sandbox.stop()


@pytest.mark.parametrize(
    ("start", "stop"),
    [
        pytest.param(start_with_cli, stop_with_cli, id="hack/sandbox down stops every process"),
        pytest.param(start_with_python, stop_with_python, id="Sandbox.stop() stops every process"),
    ],
)
def test_down_leaves_no_process_behind(
    tmp_path: Path,
    start: Callable[[Path], Sandbox],
    stop: Callable[[Sandbox], None],
) -> None:
    started = start(tmp_path)
    state = read_state(tmp_path)
    assert state is not None
    kube = KubeAPI(started.api_url)
    try:
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "down"}})
        kube.create(deployment("web", "down", replicas=1))
        pod_pid = container_pid(wait_deployment_ready(kube, "down", "web", 1)[0])
    finally:
        kube.close()
    pids = [state.supervisor_pid, pod_pid, *state.pids.values()]
    assert all(pid_alive(pid) for pid in pids)
    assert ("prometheus" in state.pids) == WITH_PROMETHEUS

    stop(started)

    assert [pid for pid in pids if pid_alive(pid)] == []
    assert group_members(state.process_group) == []
    assert run_cli("status", "--dir", str(tmp_path)).returncode == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--scrape-interval", "fast"], "--scrape-interval",
            id="a scrape interval without a unit is refused",
        ),
        pytest.param(
            ["--scrape-interval", "1.5s"], "--scrape-interval",
            id="a fractional scrape interval that Prometheus would reject is refused",
        ),
        pytest.param(["--gpus", "-1"], "--gpus", id="a negative GPU count is refused"),
    ],
)
def test_up_refuses_bad_flags_naming_the_flag(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("up", "--dir", str(tmp_path), *args)

    assert result.returncode == 2
    assert message in result.stderr
    assert read_state(tmp_path) is None

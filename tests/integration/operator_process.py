"""The operator as a real process against the sandbox, and the real kubectl and CLI.

``OperatorProcess`` runs ``modeldeploy-operator`` (the console script users run) with the
sandbox's kubeconfig, exactly as on a cluster; ``kill()`` SIGKILLs it (no clean-up at
all) and ``start()`` brings a fresh one up, for restart-safety tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from mdsandbox.testing import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
        name: str = "operator",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.extra_env = extra_env or {}
        self.name = name
        self.log_dir = log_dir
        self.metrics_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "MODELDEPLOY_METRICS_PORT": str(self.metrics_port),
            # The operator runs outside the sandbox's "cluster": evaluation steps reach
            # Services by the address the sandbox publishes in their status.
            "MODELDEPLOY_SERVICE_ADDRESSES": "loadBalancerStatus",
            **self.extra_env,
        }
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(BIN / "modeldeploy-operator"), "--standalone"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        wait_until(
            lambda: "Activity 'configure' succeeded" in self.log_path.read_text(errors="replace")
            or self._died(),
            timeout=60, what="the operator to start",
        )
        assert not self._died(), f"operator exited at start:\n{self.log_tail()}"

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to tidy up, as when a node dies."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def run(args: list[str], kubeconfig: Path, check: bool = True, stdin: str | None = None) -> str:
    """Run a real command-line tool (kubectl, modeldeploy) against the sandbox."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(args, env=env, input=stdin, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def kubectl_apply(manifest: dict[str, Any], kubeconfig: Path) -> str:
    return run(["kubectl", "apply", "-f", "-"], kubeconfig, stdin=yaml.safe_dump(manifest))


def model_deployment(
    name: str,
    namespace: str,
    *,
    env: dict[str, str],
    image: str = "modeldeploy/fake-upstream:v1",
    replicas: int = 2,
    **spec: Any,
) -> dict[str, Any]:
    """A ModelDeployment of one container ``app`` (``env`` as given) with a 1 s /health
    readiness probe, so pods are ready fast; ``spec`` adds or overrides spec fields."""
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{
                "name": "app",
                "image": image,
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1},
            }]}},
            **spec,
        },
    }

"""Starting, finding and stopping a sandbox: what ``hack/sandbox`` and tests call.

``up`` starts the supervisor (``python -m mdsandbox supervise``) in a new session,
detached from the caller, and waits for its state file to say Running (or Failed).
``down`` sends the supervisor SIGTERM, waits for it to stop everything, then SIGKILLs
whatever is left in its process group (and any recorded pid), and checks that
nothing is. ``Sandbox`` wraps both for Python callers (tests, the demo)::

    with Sandbox(Path(".sandbox")) as sandbox:
        sandbox.kubeconfig, sandbox.api_url, sandbox.prometheus_url, sandbox.fake_upstream_url
        sandbox.service_url("default", "web")     # the Service's local address

``Sandbox.attach(dir)`` finds one already running (started by ``hack/sandbox up``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from mdsandbox.dataplane import URL_ANNOTATION
from mdsandbox.prometheus import parse_duration
from mdsandbox.state import SandboxState, group_members, pid_alive, read_state

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT / ".sandbox"
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0


class SandboxError(RuntimeError):
    """The sandbox could not be started, found or stopped; the message says why and what to do."""


def is_running(state: SandboxState | None) -> bool:
    return (
        state is not None
        and state.phase in ("Starting", "Running")
        and pid_alive(state.supervisor_pid)
    )


def log_tail(workdir: Path, lines: int = 30) -> str:
    path = workdir / "logs" / "supervisor.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no supervisor log)"


def up(
    workdir: Path,
    *,
    scrape_interval: str = "5s",
    prometheus: bool = True,
    gpus: int = 0,
    timeout: float = START_TIMEOUT_SECONDS,
) -> SandboxState:
    """Start a sandbox in ``workdir`` and wait until it runs."""
    parse_duration(scrape_interval)
    if gpus < 0:
        raise SandboxError(f"--gpus must be 0 or more, not {gpus}")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    existing = read_state(workdir)
    if is_running(existing):
        assert existing is not None
        raise SandboxError(
            f"a sandbox already runs in {workdir} (supervisor pid {existing.supervisor_pid}); "
            f"stop it first with: hack/sandbox down --dir {workdir}"
        )
    if existing is not None:
        stop_processes(workdir)  # what a killed supervisor left behind, if anything
    (workdir / "state.json").unlink(missing_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    command = [
        sys.executable, "-m", "mdsandbox", "supervise", "--dir", str(workdir),
        "--scrape-interval", scrape_interval, "--gpus", str(gpus),
    ]
    if not prometheus:
        command.append("--no-prometheus")
    with (workdir / "logs" / "supervisor.log").open("ab") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(workdir),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(workdir)
        if state is not None and state.phase == "Running":
            return state
        if (state is not None and state.phase == "Failed") or process.poll() is not None:
            process.wait()
            message = state.message if state is not None else "the supervisor exited"
            raise SandboxError(
                f"the sandbox failed to start: {message}\n--- {workdir}/logs/supervisor.log:\n"
                + log_tail(workdir)
            )
        time.sleep(0.1)
    stop_processes(workdir)
    raise SandboxError(
        f"the sandbox did not start within {timeout:.0f}s\n" + log_tail(workdir)
    )


def stop_processes(workdir: Path, timeout: float = STOP_TIMEOUT_SECONDS) -> list[int]:
    """Stop the sandbox in ``workdir``; returns the pids that had to be killed."""
    state = read_state(workdir)
    if state is None:
        return []
    if pid_alive(state.supervisor_pid):
        os.kill(state.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(state.supervisor_pid):
        time.sleep(0.1)
    leftovers = sorted(
        set(group_members(state.process_group))
        | {pid for pid in state.pids.values() if pid_alive(pid)}
        | ({state.supervisor_pid} if pid_alive(state.supervisor_pid) else set())
    )
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and (
        group_members(state.process_group) or any(pid_alive(p) for p in leftovers)
    ):
        time.sleep(0.1)
    still = group_members(state.process_group)
    if still:
        raise SandboxError(f"processes {still} of the sandbox in {workdir} would not die")
    return leftovers


class Sandbox:
    """A running sandbox, as Python callers see it."""

    def __init__(
        self,
        workdir: Path = DEFAULT_DIR,
        *,
        scrape_interval: str = "5s",
        prometheus: bool = True,
        gpus: int = 0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.scrape_interval = scrape_interval
        self.prometheus = prometheus
        self.gpus = gpus
        self.state: SandboxState | None = None
        self.up_output: str = ""  # what `hack/sandbox up` printed, when it started this one

    @classmethod
    def attach(cls, workdir: Path = DEFAULT_DIR) -> Sandbox:
        """The sandbox already running in ``workdir``."""
        state = read_state(Path(workdir).resolve())
        if not is_running(state) or state is None or state.phase != "Running":
            raise SandboxError(
                f"no running sandbox in {workdir}; start one with: hack/sandbox up --dir {workdir}"
            )
        sandbox = cls(Path(workdir), scrape_interval=state.scrape_interval, gpus=state.gpus)
        sandbox.state = state
        return sandbox

    def start(self) -> Sandbox:
        self.state = up(
            self.workdir, scrape_interval=self.scrape_interval, prometheus=self.prometheus,
            gpus=self.gpus,
        )
        return self

    def stop(self) -> None:
        stop_processes(self.workdir)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _require(self) -> SandboxState:
        if self.state is None:
            raise SandboxError("the sandbox is not started; call start() or use it as `with`")
        return self.state

    @property
    def kubeconfig(self) -> Path:
        return Path(str(self._require().kubeconfig))

    @property
    def api_url(self) -> str:
        return str(self._require().api_url)

    @property
    def prometheus_url(self) -> str | None:
        return self._require().prometheus_url

    @property
    def fake_upstream_url(self) -> str | None:
        return self._require().fake_upstream_url

    @property
    def operator_targets_file(self) -> Path:
        """A file_sd file (job ``operator``) anyone may write to have Prometheus scrape it."""
        return self.workdir / "prometheus" / "targets" / "operator.json"

    @property
    def rules_dir(self) -> Path:
        """Prometheus loads ``*.yaml`` rule files from here (then ``POST /-/reload``)."""
        return self.workdir / "prometheus" / "rules"

    def _wait_for(
        self, path: str, extract: Callable[[dict[str, Any]], str | None], what: str, timeout: float
    ) -> str:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.api_url, timeout=10) as client:
            while True:
                resp = client.get(path)
                if resp.status_code == 200:
                    found = extract(resp.json())
                    if found:
                        return str(found)
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"{what} has no local address after {timeout:.0f}s "
                        f"(HTTP {resp.status_code}); does it exist?"
                    )
                time.sleep(0.1)

    def service_url(self, namespace: str, name: str, timeout: float = 30.0) -> str:
        """``http://127.0.0.1:N`` where the data plane serves the Service (waits for it)."""

        def extract(service: dict[str, Any]) -> str | None:
            status = service.get("status") or {}
            ingress = (status.get("loadBalancer") or {}).get("ingress") or []
            if not ingress or not ingress[0].get("ports"):
                return None
            return f"http://{ingress[0]['ip']}:{ingress[0]['ports'][0]['port']}"

        return self._wait_for(
            f"/api/v1/namespaces/{namespace}/services/{name}", extract,
            f"Service {namespace}/{name}", timeout,
        )

    def route_url(self, namespace: str, name: str, timeout: float = 30.0) -> str:
        """``http://127.0.0.1:N`` where the data plane serves the HTTPRoute (waits for it)."""

        def extract(route: dict[str, Any]) -> str | None:
            annotations = (route.get("metadata") or {}).get("annotations") or {}
            url = annotations.get(URL_ANNOTATION)
            return str(url) if url else None

        return self._wait_for(
            f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/{name}",
            extract, f"HTTPRoute {namespace}/{name}", timeout,
        )


def scrape_seconds(state: SandboxState) -> float:
    return parse_duration(state.scrape_interval)

"""Test helpers shared by the services' tests: real servers on free loopback ports, metrics.

- :func:`serve_app` runs an app under uvicorn in a thread on a free 127.0.0.1 port.
- :func:`running_module` runs ``python -m <module>`` as a real process with env vars, waits
  until /health answers, and stops it (SIGTERM, then SIGKILL) on exit.
- :func:`parse_metrics` reads a /metrics page; :meth:`MetricSamples.value` gives a sample's
  value, 0.0 when absent (a labelled counter not yet incremented is 0).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it is true or fail after ``timeout_s`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def serve_app(app: FastAPI, *, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve ``app`` in a thread on a free loopback port; yields ``http://127.0.0.1:<port>``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout_s=timeout_s,
                 what="the app to start")  # fmt: skip
        if not server.started:
            raise RuntimeError("the app's server exited during start-up")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()


@dataclass
class ServiceProcess:
    """A service started by :func:`running_module`."""

    base_url: str
    process: subprocess.Popen[bytes]
    output_path: str = field(repr=False)

    def output(self) -> str:
        with open(self.output_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


@contextmanager
def running_module(
    module: str,
    env: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 60.0,  # a start on a busy two-core machine, under xdist
    health_path: str = "/health",
) -> Iterator[ServiceProcess]:
    """Run ``python -m module`` on a free port with ``env`` added; stop it on exit.

    The process's stdout and stderr go to a temporary file (:meth:`ServiceProcess.output`),
    so a chatty service can never block on a full pipe.
    """
    attempts = 3  # a free port can be taken between choosing it and binding it
    for attempt in range(attempts):
        port = free_port()
        full_env = {**os.environ, **(env or {}), "HOST": "127.0.0.1", "PORT": str(port)}
        with tempfile.TemporaryDirectory(prefix=f"{module}-") as scratch:
            output_path = os.path.join(scratch, "output.log")
            with open(output_path, "wb") as output:
                process = subprocess.Popen(
                    [sys.executable, "-m", module],
                    env=full_env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            service = ServiceProcess(f"http://127.0.0.1:{port}", process, output_path)
            try:
                _wait_until_answering(service, health_path, timeout_s, module)
                if process.poll() is not None:
                    if attempt + 1 < attempts and "address already in use" in service.output():
                        continue
                    raise RuntimeError(
                        f"{module} exited with {process.returncode}:\n{service.output()}"
                    )
                yield service
                return
            finally:
                _stop(process)


def _wait_until_answering(
    service: ServiceProcess, health_path: str, timeout_s: float, module: str
) -> None:
    """Poll until the service answers HTTP at all, or its process exits.

    An answer counts only once the process itself listens on the port: between choosing a
    free port and binding it, another server may take it, and its answers must not pass for
    this service's (this process then fails to bind and exits)."""
    port = int(service.base_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout_s
    while service.process.poll() is None:
        try:
            httpx.get(service.base_url + health_path, timeout=1.0)
            if _listens_on(service.process.pid, port) is not False:
                return
            raise httpx.ConnectError("another process answered on the port")
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{module} did not answer on {service.base_url} within {timeout_s}s:\n"
                    + service.output()
                ) from None
            time.sleep(0.05)


def _listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the listening TCP socket of ``port`` (from /proc; None
    where there is no /proc to ask)."""
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    # Columns: sl, local address (hex ip:port), remote address, state (0A = LISTEN), ..., inode.
    inodes = {fields[9] for fields in (line.split() for line in table)
              if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A"}
    owned = set()
    for fd in fds:
        try:
            owned.add(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile
    return any(f"socket:[{inode}]" in owned for inode in inodes)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass(frozen=True)
class MetricSamples:
    """Samples of one /metrics page, by name and labels."""

    samples: tuple[tuple[str, dict[str, str], float], ...]

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0.0 when none)."""
        return sum(
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
            for sample_name, sample_labels, _ in self.samples
        )


def parse_metrics(text: str) -> MetricSamples:
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append((sample.name, dict(sample.labels), float(sample.value)))
    return MetricSamples(tuple(samples))


def scrape(base_url: str, *, headers: Mapping[str, str] | None = None) -> MetricSamples:
    """GET ``base_url``/metrics and parse it."""
    response = httpx.get(base_url + "/metrics", headers=dict(headers or {}), timeout=5.0)
    response.raise_for_status()
    return parse_metrics(response.text)

"""The sandbox's supervisor: one detached process that runs every part of the sandbox.

``hack/sandbox up`` starts ``python -m mdsandbox supervise`` in a new session, so the
supervisor leads its own process group; every process it starts (Prometheus, the
fake upstream, the pods) stays in that group, and ``down`` can make sure nothing is
left by signalling the group. In the supervisor run, in one asyncio loop: the API
server (``mdsandbox.apiserver``), the controller manager, the kubelet, the data
plane and the Prometheus targets writer.

When everything answers, it writes ``<dir>/state.json`` (see ``mdsandbox.state``)
with ``"phase": "Running"``; on SIGTERM or SIGINT it stops the pods, Prometheus, the
fake upstream and the API server, and writes ``"phase": "Stopped"``. A start-up that
fails writes ``"phase": "Failed"`` and the reason, and exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from mdsandbox.controllers import ControllerManager
from mdsandbox.dataplane import DataPlane
from mdsandbox.kubelet import Kubelet, free_port, stop_process
from mdsandbox.prometheus import Prometheus
from mdsandbox.state import SandboxState, write_state

log = logging.getLogger("mdsandbox")


@dataclass
class SupervisorConfig:
    workdir: Path
    scrape_interval: str = "5s"
    prometheus: bool = True
    gpus: int = 0


async def wait_http_ok(url: str, process: asyncio.subprocess.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"{url}: the process exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f}s")


async def start_fake_upstream(workdir: Path) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    log_path = workdir / "logs" / "fake-upstream.log"
    env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", PYTHONUNBUFFERED="1")
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fakeupstream",
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
    return process, f"127.0.0.1:{port}"


async def supervise(config: SupervisorConfig) -> int:
    from mdsandbox.apiserver import APIServer, write_kubeconfig

    started = time.monotonic()
    workdir = config.workdir
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    state = SandboxState(
        phase="Starting",
        dir=str(workdir),
        supervisor_pid=os.getpid(),
        process_group=os.getpgid(0),
    )
    write_state(workdir, state)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    server = APIServer(
        host="127.0.0.1", port=0, audit_log=workdir / "audit.log", pod_log_dir=workdir / "logs" / "pods"
    )
    parts: list[ControllerManager | Kubelet | DataPlane | Prometheus] = []
    fake: asyncio.subprocess.Process | None = None
    exit_code = 0
    try:
        server.start()
        kubeconfig = workdir / "kubeconfig"
        write_kubeconfig(kubeconfig, server.url)
        state.api_url = server.url
        state.kubeconfig = str(kubeconfig)

        fake_address = None
        if importlib.util.find_spec("fakeupstream") is not None and importlib.util.find_spec(
            "fakeupstream.__main__"
        ) is not None:
            fake, fake_address = await start_fake_upstream(workdir)
            state.fake_upstream_url = f"http://{fake_address}/v1"
            state.pids["fake-upstream"] = fake.pid
        else:
            state.notes.append("fake upstream not started: package fakeupstream has no __main__")

        controllers = ControllerManager(server.url)
        kubelet = Kubelet(server.url, workdir, gpus=config.gpus)
        dataplane = DataPlane(server.url)
        parts = [controllers, kubelet, dataplane]
        prometheus: Prometheus | None = None
        if config.prometheus:
            prometheus = Prometheus(
                server.url, workdir, scrape_interval=config.scrape_interval,
                fake_upstream=fake_address,
            )
            parts.append(prometheus)
        for part in parts:
            await part.start()
        waits = []
        if fake is not None and fake_address is not None:
            waits.append(wait_http_ok(f"http://{fake_address}/health", fake, 60))
        if prometheus is not None:
            waits.append(prometheus.wait_ready())
        await asyncio.gather(*waits)
        if prometheus is not None and prometheus.process is not None:
            state.prometheus_url = prometheus.url
            state.pids["prometheus"] = prometheus.process.pid
        state.gpus = config.gpus
        state.scrape_interval = config.scrape_interval
        state.startup_seconds = round(time.monotonic() - started, 2)
        state.phase = "Running"
        write_state(workdir, state)
        log.info("sandbox running in %.1fs", state.startup_seconds)
        await stop.wait()
    except Exception as err:
        log.exception("sandbox failed")
        state.phase = "Failed"
        state.message = f"{type(err).__name__}: {err}"
        write_state(workdir, state)
        exit_code = 1
    finally:
        log.info("stopping the sandbox")
        for part in reversed(parts):
            with contextlib.suppress(Exception):
                await part.stop()
        await stop_process(fake, 5.0)
        with contextlib.suppress(Exception):
            server.stop()
        if state.phase != "Failed":
            state.phase = "Stopped"
        write_state(workdir, state)
    return exit_code


def main(config: SupervisorConfig) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return asyncio.run(supervise(config))

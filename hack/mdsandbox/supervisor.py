"""The sandbox's supervisor: one detached process that runs every part of the sandbox.

``hack/sandbox up`` starts ``python -m mdsandbox supervise`` in a new session, so the
supervisor leads its own process group; every process it starts (the API server,
Prometheus, the fake upstream, the pods) stays in that group, and ``down`` can make
sure nothing is left by signalling the group. The API server
(``python -m mdsandbox.apiserver``) is a process of its own, so it and the components
each have a core and do not share a GIL (in one process, every socket write of
one waited for the other's time slice, which halved throughput at benchmark sizes).
In the supervisor run, in one asyncio loop: the controller manager, the kubelet, the
data plane and the Prometheus targets writer.

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


async def start_apiserver(workdir: Path) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    log_path = workdir / "logs" / "apiserver.log"
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mdsandbox.apiserver", "--port", str(port),
            "--audit-log", str(workdir / "audit.log"),
            "--pod-log-dir", str(workdir / "logs" / "pods"),
            "--kubeconfig", str(workdir / "kubeconfig"),
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    await wait_http_ok(f"{url}/healthz", process, 60)
    return process, url


async def supervise(config: SupervisorConfig) -> int:
    from mdsandbox.apiserver import write_kubeconfig

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

    parts: list[ControllerManager | Kubelet | DataPlane | Prometheus] = []
    fake: asyncio.subprocess.Process | None = None
    apiserver: asyncio.subprocess.Process | None = None
    exit_code = 0
    try:
        apiserver, api_url = await start_apiserver(workdir)
        # The server writes it too, but maybe after its first answer: be sure it is there.
        write_kubeconfig(workdir / "kubeconfig", api_url)
        state.api_url = api_url
        state.kubeconfig = str(workdir / "kubeconfig")
        state.pids["apiserver"] = apiserver.pid

        fake_address = None
        if importlib.util.find_spec("fakeupstream") is not None and importlib.util.find_spec(
            "fakeupstream.__main__"
        ) is not None:
            fake, fake_address = await start_fake_upstream(workdir)
            state.fake_upstream_url = f"http://{fake_address}/v1"
            state.pids["fake-upstream"] = fake.pid
        else:
            state.notes.append("fake upstream not started: package fakeupstream has no __main__")

        controllers = ControllerManager(api_url)
        kubelet = Kubelet(api_url, workdir, gpus=config.gpus)
        dataplane = DataPlane(api_url)
        parts = [controllers, kubelet, dataplane]
        prometheus: Prometheus | None = None
        if config.prometheus:
            prometheus = Prometheus(
                api_url, workdir, scrape_interval=config.scrape_interval,
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
        await stop_process(apiserver, 10.0)
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
    profile_dir = os.environ.get("MDSANDBOX_PROFILE")
    if profile_dir:  # cProfile of this thread; the API server's thread writes its own
        import cProfile

        profiler = cProfile.Profile()
        try:
            return profiler.runcall(asyncio.run, supervise(config))
        finally:
            profiler.dump_stats(str(Path(profile_dir) / "supervisor.prof"))
    return asyncio.run(supervise(config))

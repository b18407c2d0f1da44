"""The sandbox's kubelet (and scheduler): each Pod becomes local processes.

An image ``[registry/]modeldeploy/<service>:<tag>`` runs as ``python -m <package>``
(``IMAGES`` below), with the container's env (``value``, ``valueFrom``
configMapKeyRef/secretKeyRef/fieldRef, ``envFrom`` configMapRef/secretRef), then
``PORT`` (a free local port), ``HOST=127.0.0.1`` and ``APP_VERSION=<tag>``. As a real
kubelet does (unless ``enableServiceLinks: false``), each Service of the namespace that
exists when the container starts gives ``<NAME>_SERVICE_HOST`` and ``<NAME>_SERVICE_PORT``
(and ``<NAME>_SERVICE_PORT_<PORTNAME>``), usable in ``$(VAR)`` expansion: here the host
is 127.0.0.1 and the port is the Service's local data-plane port, so a manifest that
reaches a Service through them works the same on a cluster and in the sandbox.

The pause image (``registry.k8s.io/pause``, ``k8s.gcr.io/pause`` or plain ``pause``,
any tag or digest; ``PAUSE_PATTERN``) runs no process: the container is running and
ready as soon as the pod is scheduled, with the status a process container gets
(conditions, ``containerStatuses`` ready/started/running, ``podIP``) and the
containerID ``pause://<pod uid>/<container>``. Its readiness, liveness and startup
probes are ignored (nothing listens, so there is nothing to probe), it gets no port
annotation, no log file, no Service-link env, and no Started/Killing events (at
benchmark sizes those would be thousands of writes); env from a missing
ConfigMap/Secret still gives CreateContainerConfigError. Once ready, a pod of pause
containers sleeps until it changes, so thousands of them cost nothing at rest.

Any other image leaves the pod Pending with the waiting reason ErrImagePull (then
ImagePullBackOff), as a missing image does; a missing ConfigMap/Secret key gives
CreateContainerConfigError. Nothing crashes the kubelet.

Cost: the kubelet looks only at pods that changed (its informer's ``on_object``), not
at every pod per event; a pod with processes is stepped every 0.25 s by its own task.

What a client sees, and the choices behind it:
- ``metadata.annotations["sandbox.modeldeploy.io/port"]``: the local port of the
  pod's first container, the one the data plane and Prometheus use (a Service's
  targetPort and a readiness probe's port are read as "the container's port": each
  container has exactly one). ``containerStatuses[].containerID`` is
  ``process://<pid>``.
- Scheduling: a pod asking for more ``nvidia.com/gpu`` (requests or limits) than the
  sandbox's free capacity (``--gpus``, default 0) stays Pending with PodScheduled
  False, reason Unschedulable, and the default scheduler's message. Scheduled pods
  get ``CUDA_VISIBLE_DEVICES`` set to the devices they were given (empty for pods
  that asked for none).
- Readiness: ``readinessProbe.httpGet`` (path, initialDelaySeconds, periodSeconds,
  timeoutSeconds, failureThreshold, successThreshold); 200-399 passes. Until the
  first success the probe runs every 0.25 s (at most periodSeconds) so pods become
  ready fast; afterwards every periodSeconds. Without a probe a container is ready
  once its port accepts TCP connections. Liveness and startup probes are not run.
- Restarts: a container that exits is restarted (restartPolicy is always Always)
  with back-off 0 s, 1 s, 2 s, 4 s ... capped at 30 s (kubelet's 10 s to 5 min, shortened
  for tests), reset after 60 s of running; meanwhile the waiting reason is
  CrashLoopBackOff and lastState holds the exit code.
- Deletion: the processes get SIGTERM, then SIGKILL after the pod's
  terminationGracePeriodSeconds (capped at 10 s). A pod marked for deletion is
  deleted for good (grace 0) once its processes are gone, as the kubelet does.
- stdout/stderr go to ``<dir>/logs/pods/<namespace>_<pod>_<container>.log``.
- Container metrics: like a real kubelet's cAdvisor, ``/metrics/cadvisor`` on a local
  port reports each running process container's ``container_memory_working_set_bytes``
  (its process tree's RSS) and ``container_spec_memory_limit_bytes`` (its
  ``resources.limits.memory``, 0 for none), labelled ``namespace``, ``pod``,
  ``container``; the port is published in ``<dir>/prometheus/targets/kubelet.json``,
  which the sandbox's Prometheus scrapes as job ``kubelet`` (details and approximations
  in ``mdsandbox.cadvisor``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import logging
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from mdsandbox.cadvisor import (
    ContainerMemory,
    ContainerMetricsServer,
    memory_limit_bytes,
    process_tree_rss_bytes,
    publish_target,
)
from mdsandbox.controllers import is_terminating, now_iso
from mdsandbox.events import record_event
from mdsandbox.kubeclient import ApiError, Informer, KubeClient, status_merge_patch

log = logging.getLogger(__name__)

JSON = dict[str, Any]

PORT_ANNOTATION = "sandbox.modeldeploy.io/port"
GPU_RESOURCE = "nvidia.com/gpu"
IMAGES = {
    "image-gen": "image_gen",
    "song-analyzer": "song_analyzer",
    "chat-proxy": "chat_proxy",
    "orchestrator": "orchestrator",
    "textgen": "textgen",
    "fake-upstream": "fakeupstream",
}
IMAGE_PATTERN = re.compile(r"^(?:.+/)?modeldeploy/(?P<service>[a-z0-9-]+)(?::(?P<tag>[\w.-]+))?$")
# The pause image, as a real cluster names it: registry.k8s.io/pause, k8s.gcr.io/pause or
# plain pause, any tag or digest.
PAUSE_PATTERN = re.compile(
    r"^(?:(?:registry\.k8s\.io|k8s\.gcr\.io)/)?pause(?::[\w.-]+)?(?:@sha256:[0-9a-f]{64})?$"
)
# Host variables a process needs to run at all; everything else comes from the pod.
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH", "VIRTUAL_ENV")
TICK_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 30.0
BACKOFF_RESET_SECONDS = 60.0
MAX_GRACE_SECONDS = 10.0


class ContainerConfigError(Exception):
    """A container cannot be started yet (missing ConfigMap, Secret or key)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_taken(port: int) -> bool:
    """Whether a server could not listen on ``port`` now (uvicorn binds with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def resolve_image(image: str) -> tuple[str, str]:
    """(package, tag) for a sandbox image; ValueError naming the image and the fix otherwise."""
    match = IMAGE_PATTERN.match(image or "")
    if match is None or match.group("service") not in IMAGES:
        known = ", ".join(f"modeldeploy/{name}:<tag>" for name in IMAGES)
        raise ValueError(
            f'failed to pull image "{image}": the sandbox runs only its own images ({known})'
        )
    package = IMAGES[match.group("service")]
    if importlib.util.find_spec(package) is None:
        raise ValueError(
            f'failed to pull image "{image}": package {package} is not installed in the '
            "sandbox's Python environment (pip install -e '.[workloads]')"
        )
    return package, match.group("tag") or "latest"


def is_pause_image(image: str | None) -> bool:
    """Whether a container runs the pause image, which the sandbox "runs" with no process."""
    return PAUSE_PATTERN.match(image or "") is not None


def gpu_request(pod: JSON) -> int:
    total = 0
    for container in pod.get("spec", {}).get("containers", []) or []:
        resources = container.get("resources") or {}
        amounts = [
            (resources.get(kind) or {}).get(GPU_RESOURCE) for kind in ("limits", "requests")
        ]
        total += max((int(str(a)) for a in amounts if a is not None), default=0)
    return total


@dataclass
class Container:
    """One container of a pod: its process, its restarts, its readiness."""

    spec: JSON
    port: int
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    spawning: asyncio.Future[asyncio.subprocess.Process] | None = None
    started_at: str | None = None
    started_monotonic: float = 0.0
    restart_count: int = 0
    next_start: float = 0.0
    ready: bool = False
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    first_pull_error: float | None = None
    last_terminated: JSON | None = None
    next_probe: float = 0.0
    probe_failures: int = 0
    probe_successes: int = 0
    ever_ready: bool = False
    pause: bool = False  # the pause image: running once started, with no process behind it
    pause_id: str = ""

    @property
    def name(self) -> str:
        return str(self.spec.get("name", "main"))

    @property
    def running(self) -> bool:
        if self.pause:
            return self.started_at is not None
        return self.process is not None and self.process.returncode is None

    def status(self) -> JSON:
        image = self.spec.get("image", "")
        status: JSON = {
            "name": self.name,
            "image": image,
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.running,
        }
        if self.running and self.pause:
            status["state"] = {"running": {"startedAt": self.started_at}}
            status["containerID"] = self.pause_id
        elif self.running and self.process is not None:
            status["state"] = {"running": {"startedAt": self.started_at}}
            status["containerID"] = f"process://{self.process.pid}"
        else:
            waiting: JSON = {"reason": self.waiting_reason}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            status["state"] = {"waiting": waiting}
        status["lastState"] = (
            {"terminated": self.last_terminated} if self.last_terminated else {}
        )
        return status


@dataclass
class PodRuntime:
    """A pod the kubelet has taken on: its containers and what it last reported."""

    namespace: str
    name: str
    uid: str
    containers: list[Container] = field(default_factory=list)
    scheduled: bool = False
    gpus: list[int] = field(default_factory=list)
    unschedulable_message: str = ""
    reported_unschedulable: bool = False
    conditions: dict[str, JSON] = field(default_factory=dict)
    start_time: str | None = None
    task: asyncio.Task[None] | None = None
    # Set when the pod changes; an idle pause pod sleeps on it instead of ticking.
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def idle(self) -> bool:
        """Nothing left to do until the pod changes: scheduled, every container a
        started pause container (no process to watch, no probe to run)."""
        return self.scheduled and bool(self.containers) and all(
            c.pause and c.running for c in self.containers
        )


class Kubelet:
    """Runs pods as local processes and reports their status to the API server."""

    def __init__(self, api_url: str, workdir: Path, *, gpus: int = 0) -> None:
        self.client = KubeClient(api_url)
        self.workdir = workdir
        self.logdir = workdir / "logs" / "pods"
        self.gpu_capacity = gpus
        self._wake = asyncio.Event()
        self.pods = Informer(
            self.client, "/api/v1/pods", name="kubelet pods", on_object=self._pod_changed
        )
        self.runtimes: dict[str, PodRuntime] = {}
        self._runtime_of: dict[tuple[str, str], str] = {}  # (namespace, name) -> runtime uid
        self._dirty: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._probe_session: aiohttp.ClientSession | None = None
        self._terminations: set[asyncio.Task[None]] = set()
        self.container_metrics = ContainerMetricsServer(self.container_memory)

    async def start(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._probe_session = aiohttp.ClientSession()
        await self.container_metrics.start()
        publish_target(self.workdir, self.container_metrics.port)
        self.pods.start()
        self._task = asyncio.create_task(self._loop(), name="kubelet")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pods.stop()
        await asyncio.gather(
            *(self._stop_runtime(rt, grace=3.0) for rt in list(self.runtimes.values())),
            *self._terminations,
        )
        self.runtimes.clear()
        await self.container_metrics.stop()
        if self._probe_session is not None:
            await self._probe_session.close()
        await self.client.close()

    def pids(self) -> list[int]:
        return [
            c.process.pid
            for rt in self.runtimes.values()
            for c in rt.containers
            if c.process is not None and c.process.returncode is None
        ]

    def container_memory(self) -> list[ContainerMemory]:
        """Each running process container's memory now, for ``/metrics/cadvisor``."""
        measured = []
        for runtime in self.runtimes.values():
            for container in runtime.containers:
                process = container.process
                if container.pause or process is None or process.returncode is not None:
                    continue
                rss = process_tree_rss_bytes(process.pid)
                if rss is None:  # exited since it was last looked at
                    continue
                measured.append(ContainerMemory(
                    runtime.namespace, runtime.name, container.name, rss,
                    memory_limit_bytes(container.spec),
                ))
        return measured

    def _pod_changed(self, key: tuple[str, str], obj: JSON) -> None:
        self._dirty.add(key)
        self._wake.set()

    async def _loop(self) -> None:
        await self.pods.synced.wait()
        while True:
            # Only changed pods are looked at: a pass over every pod per event would be
            # quadratic at thousands of pods. A relist marks every pod changed.
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._sync_pods()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kubelet sync failed")

    async def _sync_pods(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            pod = self.pods.objects.get(key)
            uid = (pod or {}).get("metadata", {}).get("uid")
            runtime_uid = self._runtime_of.get(key)
            runtime = self.runtimes.get(runtime_uid) if runtime_uid else None
            if runtime is not None and (pod is None or uid != runtime.uid or is_terminating(pod)):
                del self.runtimes[runtime.uid]
                del self._runtime_of[key]
                gone = pod if pod is not None and uid == runtime.uid else None
                task = asyncio.create_task(self._terminate(runtime, gone))
                self._terminations.add(task)
                task.add_done_callback(self._terminations.discard)
                runtime = None
            if pod is None or not uid or is_terminating(pod):
                continue
            if runtime is None:
                runtime = PodRuntime(key[0], key[1], uid)
                self.runtimes[uid] = runtime
                self._runtime_of[key] = uid
                runtime.task = asyncio.create_task(
                    self._run_pod(runtime), name=f"pod {key[0]}/{key[1]}"
                )
            else:
                runtime.wake.set()

    async def _terminate(self, runtime: PodRuntime, pod: JSON | None) -> None:
        grace = 30.0
        if pod is not None:
            grace = float(pod.get("spec", {}).get("terminationGracePeriodSeconds", 30))
        for container in runtime.containers:
            if container.running and not container.pause:
                await self._event(runtime, "Killing", f"Stopping container {container.name}")
        await self._stop_runtime(runtime, grace=min(grace, MAX_GRACE_SECONDS))
        if pod is not None:  # marked for deletion: finish it, as the kubelet does
            with contextlib.suppress(ApiError):
                await self.client.delete(
                    f"/api/v1/namespaces/{runtime.namespace}/pods/{runtime.name}",
                    grace_period_seconds=0,
                )

    async def _stop_runtime(self, runtime: PodRuntime, *, grace: float) -> None:
        if runtime.task is not None:
            runtime.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runtime.task
        for container in runtime.containers:
            if container.spawning is not None and container.process is None:
                with contextlib.suppress(Exception):
                    container.process = await container.spawning
        await asyncio.gather(*(stop_process(c.process, grace) for c in runtime.containers))

    async def _event(
        self, runtime: PodRuntime, reason: str, message: str, *, component: str = "kubelet",
        warning: bool = False,
    ) -> None:
        pod = {"metadata": {"name": runtime.name, "namespace": runtime.namespace, "uid": runtime.uid}}
        await record_event(
            self.client, pod, reason, message, kind="Pod", api_version="v1",
            component=component, event_type="Warning" if warning else "Normal",
        )

    # -- one pod -----------------------------------------------------------------------

    def _current(self, runtime: PodRuntime) -> JSON | None:
        pod = self.pods.get(runtime.namespace, runtime.name)
        if pod is None or pod["metadata"].get("uid") != runtime.uid:
            return None
        return pod

    async def _run_pod(self, runtime: PodRuntime) -> None:
        last_status: JSON | None = None
        try:
            while True:
                pod = self._current(runtime)
                if pod is None:
                    return
                try:
                    await self._step(runtime, pod)
                except ApiError as err:
                    log.warning("pod %s/%s: %s", runtime.namespace, runtime.name, err)
                status = self._pod_status(runtime)
                if status != last_status:
                    pod = self._current(runtime)
                    if pod is None:
                        return
                    old = pod.get("status", {}) or {}
                    with contextlib.suppress(ApiError):
                        updated = await self.client.merge_patch(
                            f"/api/v1/namespaces/{runtime.namespace}/pods/{runtime.name}/status",
                            {"status": status_merge_patch(old, status)},
                        )
                        self.pods.remember(updated)
                        last_status = status
                if runtime.idle and status == last_status:
                    # A ready pause pod has nothing to watch: sleep until it changes, so
                    # thousands of them cost nothing at rest.
                    runtime.wake.clear()
                    await runtime.wake.wait()
                else:
                    await asyncio.sleep(TICK_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod %s/%s: runtime failed", runtime.namespace, runtime.name)

    def _schedule(self, runtime: PodRuntime, pod: JSON) -> bool:
        if runtime.scheduled:
            return True
        wanted = gpu_request(pod)
        free: list[int] = []
        if wanted:  # a look at every pod's devices only when this one asks for some
            in_use = {gpu for rt in self.runtimes.values() if rt.scheduled for gpu in rt.gpus}
            free = [gpu for gpu in range(self.gpu_capacity) if gpu not in in_use]
        if wanted > len(free):
            runtime.unschedulable_message = (
                f"0/1 nodes are available: 1 Insufficient {GPU_RESOURCE}. preemption: 0/1 nodes "
                "are available: 1 No preemption victims found for incoming pod."
            )
            return False
        runtime.gpus = free[:wanted]
        runtime.scheduled = True
        runtime.start_time = now_iso()
        return True

    async def _step(self, runtime: PodRuntime, pod: JSON) -> None:
        if not self._schedule(runtime, pod):
            if not runtime.reported_unschedulable:
                runtime.reported_unschedulable = True
                await self._event(
                    runtime, "FailedScheduling", runtime.unschedulable_message,
                    component="default-scheduler", warning=True,
                )
            return
        if not runtime.containers:
            for spec in pod.get("spec", {}).get("containers", []) or []:
                pause = is_pause_image(spec.get("image"))
                container = Container(
                    spec=spec,
                    port=0 if pause else free_port(),
                    log_path=self.logdir
                    / f"{runtime.namespace}_{runtime.name}_{spec.get('name', 'main')}.log",
                    pause=pause,
                )
                runtime.containers.append(container)
            # A pause container listens nowhere: the annotation only when a process will.
            if runtime.containers and not runtime.containers[0].pause:
                updated = await self.client.merge_patch(
                    f"/api/v1/namespaces/{runtime.namespace}/pods/{runtime.name}",
                    {"metadata": {"annotations": {PORT_ANNOTATION: str(runtime.containers[0].port)}}},
                )
                self.pods.remember(updated)
        now = time.monotonic()
        for container in runtime.containers:
            if container.process is not None and container.process.returncode is not None:
                self._record_exit(container, now)
                if container.next_start > now:
                    await self._event(
                        runtime, "BackOff", f"Back-off restarting failed container {container.name} "
                        f"in pod {runtime.name}_{runtime.namespace}({runtime.uid})", warning=True,
                    )
            if container.pause:
                if not container.running and now >= container.next_start:
                    await self._start(runtime, pod, container)
                continue  # nothing to probe: a pause container is ready once started
            if container.process is None and now >= container.next_start:
                if container.restart_count and port_taken(container.port):
                    await self._move_port(runtime, container)
                await self._start(runtime, pod, container)
            if container.running:
                await self._probe(container, now)

    async def _move_port(self, runtime: PodRuntime, container: Container) -> None:
        """Give a restarting container a new port when its own is taken.

        A pod's port stands for its IP, which no other pod shares on a real node; here a
        port picked free may be taken before the process listens (another process's
        connection can get it as its ephemeral source port, and keep it), and the
        container would crash-loop on "address already in use" for as long as that lasts.
        """
        container.port = free_port()
        if container is runtime.containers[0]:
            updated = await self.client.merge_patch(
                f"/api/v1/namespaces/{runtime.namespace}/pods/{runtime.name}",
                {"metadata": {"annotations": {PORT_ANNOTATION: str(container.port)}}},
            )
            self.pods.remember(updated)

    def _record_exit(self, container: Container, now: float) -> None:
        assert container.process is not None
        code = container.process.returncode
        container.last_terminated = {
            "exitCode": code if code is not None and code >= 0 else 128 + -(code or 0),
            "reason": "Error" if code else "Completed",
            "startedAt": container.started_at,
            "finishedAt": now_iso(),
            "containerID": f"process://{container.process.pid}",
        }
        if code is not None and code < 0:
            container.last_terminated["signal"] = -code
        ran_for = now - container.started_monotonic
        if ran_for > BACKOFF_RESET_SECONDS:
            backoff = 0.0
        else:
            backoff = min(MAX_BACKOFF_SECONDS, 2.0 ** (container.restart_count - 1))
            backoff = 0.0 if container.restart_count == 0 else backoff
        container.process = None
        container.ready = False
        container.restart_count += 1
        container.next_start = now + backoff
        container.waiting_reason = "CrashLoopBackOff"
        container.waiting_message = (
            f"back-off {backoff:.0f}s restarting failed container={container.name}"
        )

    def _base_environment(self, runtime: PodRuntime) -> dict[str, str]:
        env = {key: os.environ[key] for key in PASSTHROUGH_ENV if key in os.environ}
        env["PYTHONUNBUFFERED"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in runtime.gpus)
        env["NVIDIA_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"] or "void"
        return env

    async def _start_pause(self, runtime: PodRuntime, pod: JSON, container: Container) -> None:
        """Start a pause container: no process, ready at once, probes ignored.

        Its env is still resolved when it has any (a missing ConfigMap or Secret gives
        CreateContainerConfigError, as on a node); Service links are not, nothing reads
        them. No Started event: at benchmark sizes they would be thousands of writes.
        """
        if container.spec.get("env") or container.spec.get("envFrom"):
            try:
                await self._container_env(pod, container.spec, service_links=False)
            except ContainerConfigError as err:
                container.waiting_reason = "CreateContainerConfigError"
                container.waiting_message = str(err)
                container.next_start = time.monotonic() + 1.0
                return
        container.started_at = now_iso()
        container.started_monotonic = time.monotonic()
        container.pause_id = f"pause://{runtime.uid}/{container.name}"
        container.waiting_reason = ""
        container.waiting_message = ""
        container.ready = container.ever_ready = True

    async def _start(self, runtime: PodRuntime, pod: JSON, container: Container) -> None:
        if container.pause:
            await self._start_pause(runtime, pod, container)
            return
        image = container.spec.get("image", "")
        try:
            package, tag = resolve_image(image)
        except ValueError as err:
            now = time.monotonic()
            if container.first_pull_error is None:
                container.first_pull_error = now
            container.waiting_reason = (
                "ErrImagePull" if now - container.first_pull_error < 5.0 else "ImagePullBackOff"
            )
            container.waiting_message = str(err)
            container.next_start = now + 1.0
            return
        env = self._base_environment(runtime)
        try:
            env.update(await self._container_env(pod, container.spec))
        except ContainerConfigError as err:
            container.waiting_reason = "CreateContainerConfigError"
            container.waiting_message = str(err)
            container.next_start = time.monotonic() + 1.0
            return
        env.update({"PORT": str(container.port), "HOST": "127.0.0.1", "APP_VERSION": tag})
        command = [sys.executable, "-m", package, *(container.spec.get("args") or [])]
        with container.log_path.open("ab") as log_file:
            log_file.write(f"--- {now_iso()} starting {' '.join(command)}\n".encode())
            log_file.flush()
            # Shielded and kept: a pod deleted while its process is being spawned must
            # still find (and stop) that process.
            container.spawning = asyncio.ensure_future(asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=str(self.workdir),
            ))
            container.process = await asyncio.shield(container.spawning)
        container.started_at = now_iso()
        container.started_monotonic = time.monotonic()
        await self._event(runtime, "Started", f"Started container {container.name}")
        container.waiting_reason = ""
        container.waiting_message = ""
        container.ready = False
        container.ever_ready = False
        container.probe_failures = 0
        container.probe_successes = 0
        probe = container.spec.get("readinessProbe") or {}
        container.next_probe = container.started_monotonic + float(
            probe.get("initialDelaySeconds", 0)
        )

    async def _service_links(self, pod: JSON) -> dict[str, str]:
        """The Service environment variables a kubelet gives a container at its start."""
        if (pod.get("spec") or {}).get("enableServiceLinks") is False:
            return {}
        namespace = pod["metadata"]["namespace"]
        listed = await self.client.get(f"/api/v1/namespaces/{namespace}/services") or {}
        links: dict[str, str] = {}
        for service in listed.get("items") or []:
            ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
            published = (ingress[0].get("ports") or []) if ingress else []
            if not published:
                continue  # the data plane has not given it a port yet
            prefix = service["metadata"]["name"].upper().replace("-", "_")
            port = str(published[0]["port"])
            links[f"{prefix}_SERVICE_HOST"] = "127.0.0.1"
            links[f"{prefix}_SERVICE_PORT"] = port
            for spec_port in (service.get("spec") or {}).get("ports") or []:
                if spec_port.get("name"):
                    links[f"{prefix}_SERVICE_PORT_{spec_port['name'].upper().replace('-', '_')}"] = port
        return links

    async def _container_env(
        self, pod: JSON, spec: JSON, *, service_links: bool = True
    ) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = await self._service_links(pod) if service_links else {}
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref = source["configMapRef"]
                data = await self._config_data(namespace, "configmaps", ref, None)
            elif "secretRef" in source:
                ref = source["secretRef"]
                data = await self._config_data(namespace, "secrets", ref, None)
            else:
                continue
            for key, value in (data or {}).items():
                env[prefix + key] = value
        for item in spec.get("env") or []:
            name = item.get("name")
            if not name:
                continue
            if "value" in item:
                env[name] = expand(str(item["value"]), env)
                continue
            source = item.get("valueFrom") or {}
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = await self._config_data(namespace, "configmaps", ref, ref.get("key"))
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = await self._config_data(namespace, "secrets", ref, ref.get("key"))
            elif "fieldRef" in source:
                value = field_value(pod, source["fieldRef"].get("fieldPath", ""))
            else:
                value = None
            if value is not None:
                env[name] = str(value)
        return env

    async def _config_data(
        self, namespace: str, plural: str, ref: JSON, key: str | None
    ) -> Any:
        kind = "configmap" if plural == "configmaps" else "secret"
        optional = bool(ref.get("optional"))
        name = ref.get("name", "")
        obj = await self.client.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        if obj is None:
            if optional:
                return None
            raise ContainerConfigError(f'{kind} "{name}" not found')
        data: dict[str, str] = dict(obj.get("data") or {})
        if plural == "secrets":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
            data.update(obj.get("stringData") or {})
        if key is None:
            return data
        if key not in data:
            if optional:
                return None
            raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
        return data[key]

    async def _probe(self, container: Container, now: float) -> None:
        if now < container.next_probe:
            return
        probe = container.spec.get("readinessProbe")
        if not probe or "httpGet" not in probe:
            if not container.ready:
                container.ready = await tcp_open(container.port)
            container.next_probe = now + TICK_SECONDS
            return
        period = float(probe.get("periodSeconds", 10))
        timeout = float(probe.get("timeoutSeconds", 1))
        path = probe["httpGet"].get("path", "/")
        ok = await self._http_ok(container.port, path, timeout)
        if ok:
            container.probe_failures = 0
            container.probe_successes += 1
            if container.probe_successes >= int(probe.get("successThreshold", 1)):
                container.ready = True
        else:
            container.probe_successes = 0
            container.probe_failures += 1
            if container.probe_failures >= int(probe.get("failureThreshold", 3)):
                container.ready = False
        container.ever_ready = container.ever_ready or container.ready
        container.next_probe = now + (period if container.ever_ready else min(period, TICK_SECONDS))

    async def _http_ok(self, port: int, path: str, timeout: float) -> bool:
        assert self._probe_session is not None
        try:
            async with self._probe_session.get(
                f"http://127.0.0.1:{port}{path}",
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as resp:
                return 200 <= resp.status < 400
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    def _pod_status(self, runtime: PodRuntime) -> JSON:
        def set_condition(
            kind: str, status: str, reason: str | None = None, message: str | None = None
        ) -> None:
            previous = runtime.conditions.get(kind)
            entry: JSON = {"type": kind, "status": status, "lastProbeTime": None}
            entry["lastTransitionTime"] = (
                previous["lastTransitionTime"]
                if previous is not None and previous["status"] == status
                else now_iso()
            )
            if reason:
                entry["reason"] = reason
            if message:
                entry["message"] = message
            runtime.conditions[kind] = entry

        if not runtime.scheduled:
            set_condition("PodScheduled", "False", "Unschedulable", runtime.unschedulable_message)
            return {
                "phase": "Pending",
                "conditions": [runtime.conditions["PodScheduled"]],
                "qosClass": "BestEffort",
            }
        containers = runtime.containers
        all_ready = bool(containers) and all(c.ready for c in containers)
        not_ready = [c.name for c in containers if not c.ready]
        message = f"containers with unready status: [{' '.join(not_ready)}]" if not_ready else None
        set_condition("Initialized", "True")
        set_condition("Ready", "True" if all_ready else "False",
                      None if all_ready else "ContainersNotReady", message)
        set_condition("ContainersReady", "True" if all_ready else "False",
                      None if all_ready else "ContainersNotReady", message)
        set_condition("PodScheduled", "True")
        ever_started = any(c.started_at for c in containers)
        status: JSON = {
            "phase": "Running" if ever_started else "Pending",
            "conditions": [runtime.conditions[k] for k in
                           ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": runtime.start_time,
            "containerStatuses": [c.status() for c in containers],
            "qosClass": "BestEffort",
        }
        return status


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of earlier variables; $$ escapes."""
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, value).replace("$$", "$")


def field_value(pod: JSON, path: str) -> str | None:
    meta = pod.get("metadata", {})
    if path == "metadata.name":
        return str(meta.get("name", ""))
    if path == "metadata.namespace":
        return str(meta.get("namespace", ""))
    if path == "metadata.uid":
        return str(meta.get("uid", ""))
    if path in ("status.podIP", "status.hostIP"):
        return "127.0.0.1"
    label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
    if label:
        return str(meta.get("labels", {}).get(label.group(1), ""))
    annotation = re.fullmatch(r"metadata\.annotations\['(.+)'\]", path)
    if annotation:
        return str(meta.get("annotations", {}).get(annotation.group(1), ""))
    return None


async def tcp_open(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def stop_process(process: asyncio.subprocess.Process | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

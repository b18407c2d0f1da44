"""The sandbox's Prometheus: the real binary, fed by file-based service discovery.

Layout under ``<dir>/prometheus/``:
- ``prometheus.yml``: generated once at start-up;
- ``targets/pods.json``: one target per running pod (its first container's
  ``sandbox.modeldeploy.io/port``), rewritten atomically (temp file + rename, which
  Prometheus' file watcher sees at once) whenever the set changes. Each target carries
  the labels Kubernetes service discovery would give it (``__meta_kubernetes_namespace``,
  ``__meta_kubernetes_pod_name``, ``__meta_kubernetes_pod_label_<label>``…), and the
  scrape config relabels them, as the chart's PodMonitor does, to ``namespace``,
  ``pod``, ``container``, ``modeldeploy_name``, ``modeldeploy_revision`` and
  ``modeldeploy_track`` (from the pod labels ``modeldeploy.io/name``, ``/revision``,
  ``/track``). Pods are scraped whether or not they are ready (as a PodMonitor does);
  a crashed process shows as ``up == 0``;
- ``targets/operator.json``: a second file_sd file (job ``operator``), empty at start,
  that anyone may write (same format) to have the operator's own metrics scraped;
- ``rules/*.yaml``: loaded as rule files; drop alert or recording rules there and
  ``POST /-/reload`` (the lifecycle API is on);
- ``data/``: the TSDB.

The fake upstream is scraped too (job ``fake-upstream``) when it runs, and so is the
kubelet's ``/metrics/cadvisor`` (job ``kubelet``, target in ``targets/kubelet.json``,
written by the kubelet; ``mdsandbox.cadvisor``), as kube-prometheus-stack scrapes a
node's kubelet: ``honor_labels`` keeps the ``namespace``, ``pod`` and ``container``
labels the kubelet gives each container's series.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from mdsandbox.cadvisor import CADVISOR_PATH, TARGETS_FILE
from mdsandbox.controllers import is_terminating
from mdsandbox.kubeclient import Informer, KubeClient
from mdsandbox.kubelet import PORT_ANNOTATION, free_port

log = logging.getLogger(__name__)

JSON = dict[str, Any]
PROMETHEUS_BINARY = "/usr/bin/prometheus"
POD_LABELS = {
    "modeldeploy.io/name": "modeldeploy_name",
    "modeldeploy.io/revision": "modeldeploy_revision",
    "modeldeploy.io/track": "modeldeploy_track",
}


def prometheus_binary() -> str | None:
    """The Prometheus executable, or None when it is not installed."""
    if os.access(PROMETHEUS_BINARY, os.X_OK):
        return PROMETHEUS_BINARY
    return shutil.which("prometheus")


def sanitize(label: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def parse_duration(text: str) -> float:
    """'5s', '500ms', '1m' → seconds; ValueError naming the flag and the fix otherwise."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"--scrape-interval {text!r} is not a duration Prometheus takes; use a positive whole "
            "number and a unit, like 5s or 500ms"
        )
    value = float(match.group(1))
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def write_atomically(path: Path, content: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.replace(tmp, path)


def pod_targets(pods: list[JSON]) -> list[JSON]:
    """The file_sd target groups for these pods (running, not terminating, with a port)."""
    groups = []
    for pod in sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
        group = pod_target(pod)
        if group is not None:
            groups.append(group)
    return groups


def pod_target(pod: JSON) -> JSON | None:
    """One pod's file_sd target group, or None when it is not scraped (not running, no
    port: a pause pod has none, terminating)."""
    meta = pod["metadata"]
    port = (meta.get("annotations") or {}).get(PORT_ANNOTATION)
    if port is None or is_terminating(pod):
        return None
    if (pod.get("status") or {}).get("phase") != "Running":
        return None
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    labels = {
        "__meta_kubernetes_namespace": meta["namespace"],
        "__meta_kubernetes_pod_name": meta["name"],
        "__meta_kubernetes_pod_uid": meta.get("uid", ""),
        "__meta_kubernetes_pod_container_name": containers[0].get("name", ""),
        "__meta_kubernetes_pod_ip": "127.0.0.1",
    }
    for key, value in (meta.get("labels") or {}).items():
        labels[f"__meta_kubernetes_pod_label_{sanitize(key)}"] = value
        labels[f"__meta_kubernetes_pod_labelpresent_{sanitize(key)}"] = "true"
    return {"targets": [f"127.0.0.1:{port}"], "labels": labels}


def prometheus_config(workdir: Path, scrape_interval: str, fake_upstream: str | None) -> JSON:
    prom = workdir / "prometheus"
    relabel = [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
    ]
    for label, target in POD_LABELS.items():
        relabel.append(
            {
                "source_labels": [f"__meta_kubernetes_pod_label_{sanitize(label)}"],
                "target_label": target,
            }
        )
    # A scrape may take as long as the interval, at most 10 s (Prometheus' default).
    timeout = f"{int(min(parse_duration(scrape_interval), 10.0) * 1000)}ms"
    config: JSON = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": timeout,
            "evaluation_interval": scrape_interval,
        },
        "rule_files": [str(prom / "rules" / "*.yaml")],
        "scrape_configs": [
            {
                "job_name": "pods",
                "file_sd_configs": [{"files": [str(prom / "targets" / "pods.json")]}],
                "relabel_configs": relabel,
            },
            {
                "job_name": "operator",
                "file_sd_configs": [{"files": [str(prom / "targets" / "operator.json")]}],
            },
            {
                "job_name": "kubelet",
                "metrics_path": CADVISOR_PATH,
                "honor_labels": True,
                "file_sd_configs": [{"files": [str(workdir / TARGETS_FILE)]}],
            },
        ],
    }
    if fake_upstream:
        config["scrape_configs"].append(
            {"job_name": "fake-upstream", "static_configs": [{"targets": [fake_upstream]}]}
        )
    return config


class Prometheus:
    """Runs Prometheus and keeps its pod targets file in step with the API server."""

    def __init__(
        self,
        api_url: str,
        workdir: Path,
        *,
        scrape_interval: str = "5s",
        fake_upstream: str | None = None,
    ) -> None:
        parse_duration(scrape_interval)
        self.workdir = workdir
        self.root = workdir / "prometheus"
        self.scrape_interval = scrape_interval
        self.fake_upstream = fake_upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = KubeClient(api_url)
        self._wake = asyncio.Event()
        # Each pod event updates that pod's target alone; the file is rewritten only when
        # the set of targets changed (pause pods never enter it).
        self._targets: dict[tuple[str, str], JSON] = {}
        self.pods = Informer(
            self.client, "/api/v1/pods", name="prometheus pods", on_object=self._pod_changed
        )
        self.process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_targets: str | None = None

    @property
    def targets_file(self) -> Path:
        return self.root / "targets" / "pods.json"

    async def start(self) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError(
                "prometheus is not installed: apt-get install -y prometheus, or start the "
                "sandbox with --no-prometheus"
            )
        for sub in ("targets", "rules", "data"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        write_atomically(self.targets_file, "[]\n")
        operator_file = self.root / "targets" / "operator.json"
        if not operator_file.exists():
            write_atomically(operator_file, "[]\n")
        config_path = self.root / "prometheus.yml"
        config = prometheus_config(self.workdir, self.scrape_interval, self.fake_upstream)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        log_path = self.workdir / "logs" / "prometheus.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.pods.start()
        self._task = asyncio.create_task(self._loop(), name="prometheus targets")

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.returncode is not None:
                    raise RuntimeError(
                        f"prometheus exited with {self.process.returncode}; see "
                        f"{self.workdir / 'logs' / 'prometheus.log'}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        self.url + "/-/ready", timeout=aiohttp.ClientTimeout(total=2)
                    ) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"prometheus did not become ready in {timeout:.0f}s")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pods.stop()
        await self.client.close()
        from mdsandbox.kubelet import stop_process

        await stop_process(self.process, 10.0)

    def _pod_changed(self, key: tuple[str, str], obj: JSON) -> None:
        group = pod_target(obj) if key in self.pods.objects else None
        if group is None:
            if self._targets.pop(key, None) is not None:
                self._wake.set()
        elif self._targets.get(key) != group:
            self._targets[key] = group
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                groups = [self._targets[key] for key in sorted(self._targets)]
                content = json.dumps(groups, indent=1) + "\n"
                if content != self._last_targets:
                    write_atomically(self.targets_file, content)
                    self._last_targets = content
            except Exception:
                log.exception("writing Prometheus targets failed")

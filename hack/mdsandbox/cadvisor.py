"""The kubelet's container metrics, as a real kubelet's cAdvisor exports them.

A real kubelet serves cAdvisor's per-container series on ``/metrics/cadvisor``, and
kube-prometheus-stack scrapes it as job ``kubelet`` with ``honor_labels``, so the series
keep the ``namespace``, ``pod`` and ``container`` labels the kubelet gives them (and
carry none of the pod's own labels). The sandbox's kubelet does the same for the two
series memory analysis reads, one sample per running process container:

- ``container_memory_working_set_bytes``: the resident set of the container's process
  and its descendants (``VmRSS`` of ``/proc/<pid>/status``, summed). An approximation:
  cAdvisor's working set is the cgroup's usage minus its inactive page cache, so it also
  counts active page cache and kernel memory, while RSS counts shared library pages in
  full (and once per process of a tree). For a Python service the two differ by a few MB.
- ``container_spec_memory_limit_bytes``: the container's ``resources.limits.memory`` as
  a Kubernetes quantity in bytes (rounded up, as the kubelet rounds it for the cgroup),
  or 0 when it has none, which is what cAdvisor reports for an unlimited container. A
  quantity that does not parse (the sandbox's API server does not validate quantities;
  a real one refuses the pod) is reported as 0 too. Nothing enforces the limit: a
  process above it keeps running, where a node would OOM-kill it.

Not exported: the pod-level (``container=""``) and pause (``container="POD"``) series a
real cAdvisor adds, and pause-image containers (no process, so no memory of their own;
thousands of them would otherwise fill every scrape). A container whose process is not
running has no series, as a stopped container's cgroup has none.

The endpoint listens on a free local port and is published for Prometheus' file-based
discovery in ``<dir>/prometheus/targets/kubelet.json`` (see :data:`TARGETS_FILE`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from aiohttp import web

CADVISOR_PATH = "/metrics/cadvisor"
# Where the kubelet publishes its endpoint for Prometheus (relative to the sandbox dir).
TARGETS_FILE = Path("prometheus") / "targets" / "kubelet.json"
WORKING_SET = "container_memory_working_set_bytes"
MEMORY_LIMIT = "container_spec_memory_limit_bytes"
_HELP = {
    WORKING_SET: "Current working set in bytes.",
    MEMORY_LIMIT: "Memory limit for the container.",
}
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    **{suffix: Decimal(10) ** (3 * power) for power, suffix in enumerate("kMGTPE", 1)},
    **{f"{suffix}i": Decimal(2) ** (10 * power) for power, suffix in enumerate("KMGTPE", 1)},
}
# Kubernetes' quantity grammar: a signed decimal, then a suffix or a decimal exponent.
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?:(?P<exponent>[eE][+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?"
)


def parse_quantity(text: str | int | float) -> int:
    """A Kubernetes quantity (``64Mi``, ``1G``, ``1.5Gi``, ``129e6``, ``100``) in whole
    units, rounded up; ValueError for anything else."""
    match = _QUANTITY.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"quantities must match the regular expression of a quantity: {text!r}")
    try:
        value = Decimal(match.group("number"))
        if match.group("exponent"):
            value = value.scaleb(int(match.group("exponent")[1:]))
        value *= _SUFFIXES[match.group("suffix") or ""]
    except InvalidOperation as err:
        raise ValueError(f"not a quantity: {text!r}") from err
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def memory_limit_bytes(container_spec: dict[str, Any]) -> int:
    """The container's memory limit in bytes; 0 for none (or one that does not parse)."""
    limit = ((container_spec.get("resources") or {}).get("limits") or {}).get("memory")
    if limit is None:
        return 0
    try:
        return max(parse_quantity(limit), 0)
    except ValueError:
        return 0


def _children(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                children.extend(int(c) for c in Path(task.path, "children").read_text().split())
    return children


def _rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB$", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def process_tree_rss_bytes(pid: int) -> int | None:
    """The summed VmRSS of ``pid`` and its descendants; None when ``pid`` is gone."""
    own = _rss_bytes(pid)
    if own is None:
        return None
    total, pending, seen = own, _children(pid), {pid}
    while pending:
        child = pending.pop()
        if child in seen:
            continue
        seen.add(child)
        total += _rss_bytes(child) or 0
        pending.extend(_children(child))
    return total


@dataclass(frozen=True)
class ContainerMemory:
    """One running container's memory, labelled as cAdvisor labels it."""

    namespace: str
    pod: str
    container: str
    working_set_bytes: int
    limit_bytes: int


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(containers: Iterable[ContainerMemory]) -> str:
    """The Prometheus text format of both series for these containers."""
    rows = sorted(containers, key=lambda c: (c.namespace, c.pod, c.container))
    lines: list[str] = []
    for family in (WORKING_SET, MEMORY_LIMIT):
        lines += [f"# HELP {family} {_HELP[family]}", f"# TYPE {family} gauge"]
        for row in rows:
            labels = (f'container="{_label_value(row.container)}",'
                      f'namespace="{_label_value(row.namespace)}",pod="{_label_value(row.pod)}"')
            value = row.working_set_bytes if family == WORKING_SET else row.limit_bytes
            lines.append(f"{family}{{{labels}}} {value}")
    return "\n".join(lines) + "\n"


def publish_target(workdir: Path, port: int) -> Path:
    """Write the file_sd file naming the endpoint (temp file + rename: Prometheus' file
    watcher never reads half of it)."""
    path = workdir / TARGETS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump([{"targets": [f"127.0.0.1:{port}"], "labels": {}}], handle)
        handle.write("\n")
    os.replace(tmp, path)
    return path


class ContainerMetricsServer:
    """Serves ``/metrics/cadvisor`` from what ``measure`` returns at each scrape."""

    def __init__(self, measure: Callable[[], list[ContainerMemory]]) -> None:
        self._measure = measure
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CADVISOR_PATH}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(CADVISOR_PATH, self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # Port 0: the kernel picks a free port, so no other process can take it first.
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, request: web.Request) -> web.Response:
        return web.Response(
            body=exposition(self._measure()).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

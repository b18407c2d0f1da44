"""N ModelDeployments, one operator: time to Succeeded, requests, RSS and CPU at rest, spec-change latency.

    hack/bench scale --n 100,300,1000                 # the issue's figures (issue 16)
    hack/bench scale --n 10 --rest-window 30 --skip-detection --unrelated 200
    hack/bench scale --n 100 --operator-src /tmp/before/operator --label before
    hack/bench scale --n 3 --image modeldeploy/fake-upstream:v1   # real processes, small N

One local sandbox (``--scrape-interval``, default 1s; or ``--dir`` of a running one) and ONE
operator process, started as the chart runs it with its defaults: ``modeldeploy-operator
--standalone`` with only KUBECONFIG and MODELDEPLOY_METRICS_PORT set (every other
MODELDEPLOY_* variable is removed from the environment). ``--operator-src DIR`` runs the
package found in DIR instead (``python -m modeldeploy`` with PYTHONPATH=DIR, e.g. a
``git worktree`` of an older commit); ``--operator-command`` runs any command line.

For each N, in the namespace ``scale``: N ModelDeployments of 2 replicas (image ``--image``,
default ``registry.k8s.io/pause:3.9``, which the sandbox runs without a process), canary steps
setWeight 50, analysis (1 measurement), setWeight 100, analysis every 5s with one custom
metric that passes on any revision (``vector(1)``, min 0.5) against the sandbox's Prometheus,
bake ``--bake-time`` (default 0s). Figures:

1. create -> all N ``Succeeded`` (created through the API server, concurrently);
2. at rest, once no ModelDeployment changed for ``--settle`` seconds, over ``--rest-window``:
   the operator's API requests per ModelDeployment per minute from the sandbox's audit log
   (user agent ``modeldeploy-operator/`` or ``kopf/``), split into reads (get, list), writes
   (create, update, patch, delete) and watch opens; the operator's RSS and CPU cores
   (``/proc/<pid>/status`` VmRSS, ``/proc/<pid>/stat`` utime+stime over the window);
3. spec change -> first canary action: ``--changes`` env-var changes, one at a time, on
   ModelDeployments spread evenly over the N; from the audit log's time of the patch to that
   of the operator's first Deployment creation (HTTP 201) in the namespace; p50 and p99
   (nearest rank: with 20 changes p99 is the slowest);
4. one env-var change on all N at once -> all N ``Succeeded`` on the new revision;
5. bad canary detection among the N at rest: ``hack/bench rollback``'s run (song-analyzer
   with traffic at 10 req/s, analysis every ``--detection-interval``, default 3s; the canary
   holds at 50%, then the fake upstream fails 30% of the new model's calls) in the
   namespace ``bench``, ``--detection-runs`` times (default 3), next to the same runs with no
   other ModelDeployment ("alone", measured once, before the first N). Per run: fault ->
   ``RolledBack`` and fault -> all traffic on stable, as ``hack/bench rollback`` reports
   them. Both mostly measure when the fault lands within the analysis round (up to one
   interval of wait, at random), so they are shown but not compared. What scale can change
   is measured from song-analyzer's status, which the benchmark watches throughout
   (``status.analysis[].time`` is the ``now`` of the reconcile that ran a round; its "seen"
   time is when the watch delivered the status that carried it first):
   - round lateness: each analysis round run while the canary holds at 50% (first seen in
     a status of the pause step, up to the breaching round, over all runs; from the third
     on: the second can wait a second more after the step's start, alone too) is due one
     interval after the previous one; lateness = its seen time - the previous round's seen
     time - interval
     (the status times are whole seconds, too coarse for this: the same figure from them,
     ``stamped``, is in the JSON);
   - revert latency: the seen time of the ``RolledBack`` status - the breaching round's
     status time (its whole second: up to 1 s more than the true figure);
   - the target's figure: extra round lateness among the N vs alone (p50 and max, each the
     figure among N minus the same alone), PASS when the max is <= 1 s;
6. RSS growth of the idle operator from ``--unrelated`` Deployments (0 replicas, about 3 KB
   each, none of the modeldeploy labels) in another namespace: RSS once it is steady (within
   1 MB for 5 s) after they are created, minus RSS before.

Then the growth of each figure between successive N, and the issue's targets at the largest
N, each PASS or FAIL (a missed target does not change the exit status; a step that did not
happen in time does: 1). Results: JSON under ``--output`` and a section appended to
docs/benchmarks.md ("Scale"), with the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.util
import itertools
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from mdsandbox.demo import (
    NAME as SONG_NAME,
)
from mdsandbox.demo import (
    DemoError,
    OperatorProcess,
    RolloutFollower,
    Snapshot,
    Timeline,
    apply,
    free_port,
    kubectl,
    prepare_namespace,
    song_analyzer,
    start_traffic,
    venv_bin,
)
from mdsandbox.prometheus import parse_duration, prometheus_binary
from mdsandbox.sandbox import REPO_ROOT, Sandbox, SandboxError

Manifest = dict[str, Any]

NAMESPACE = "scale"
UNRELATED_NAMESPACE = "scale-unrelated"
PAUSE_IMAGE = "registry.k8s.io/pause:3.9"
USER_AGENT = "modeldeploy-bench-scale/1"
OPERATOR_AGENTS = ("modeldeploy-operator/", "kopf/")
READS = frozenset({"get", "list"})
WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})
MD_PATH = "/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments"
CHANGE_ENV = "BENCH_CHANGE"
CONCURRENCY = 32  # requests in flight when creating or changing many objects
MB = 1024 * 1024

# Targets at N = 1,000 (issue 16).
TARGET_REQUESTS_PER_MD_MIN = 1.0
TARGET_RSS_MB = 300.0
TARGET_UNRELATED_MB = 5.0
TARGET_CPU_CORES = 0.1
TARGET_CANARY_P99_S = 1.0
TARGET_DETECTION_EXTRA_S = 1.0


class BenchError(RuntimeError):
    """A step did not happen (in time); the message says which."""


# --------------------------------------------------------------------------- arguments


def parse_n(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--n takes whole numbers separated by commas: {error}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("--n takes one or more numbers >= 1, e.g. 100,300,1000")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hack/bench scale", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n", type=parse_n, default=[100, 300, 1000],
                        help="numbers of ModelDeployments, comma-separated")
    parser.add_argument("--rest-window", type=float, default=60.0,
                        help="seconds over which requests, RSS and CPU at rest are measured")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="'at rest' = no ModelDeployment changed for this many seconds")
    parser.add_argument("--changes", type=int, default=20,
                        help="single spec changes for the spec-change -> canary latency")
    parser.add_argument("--unrelated", type=int, default=1000,
                        help="unrelated Deployments added to measure RSS growth (0: skip)")
    parser.add_argument("--skip-detection", action="store_true",
                        help="skip the bad-canary detection figure (the slowest)")
    parser.add_argument("--detection-runs", type=int, default=3,
                        help="bad-canary runs per N (and alone)")
    parser.add_argument("--detection-interval", default="3s",
                        help="song-analyzer's analysis interval in the detection runs "
                             "(also its rate window: give it a few scrapes)")
    parser.add_argument("--image", default=PAUSE_IMAGE,
                        help="image of the N ModelDeployments' pods (modeldeploy/fake-upstream:v1 "
                             "runs real processes: small N only)")
    parser.add_argument("--bake-time", default="0s", help="rollback.bakeTime of the N")
    parser.add_argument("--scrape-interval", default="1s",
                        help="Prometheus scrape interval (the N's pods run no process: not scraped)")
    parser.add_argument("--phase-timeout", type=float, default=None,
                        help="seconds each step may take (default: 300 + 0.6 s x N)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="a running sandbox's folder (hack/sandbox up --dir DIR); default: "
                             "start one in a temp folder and stop it at the end")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--operator-src", type=Path, default=None,
                       help="run the operator package found in this folder "
                            "(PYTHONPATH=DIR python -m modeldeploy --standalone)")
    group.add_argument("--operator-command", default=None,
                       help="the operator command line (its pid must be the operator's: exec, no "
                            "shell wrapper); --standalone is not added")
    parser.add_argument("--label", default="",
                        help="a name for this run in the results (e.g. before, after)")
    parser.add_argument("--output", type=Path,
                        default=Path(tempfile.gettempdir()) / "modeldeploy-bench-scale",
                        help="folder for the JSON results")
    parser.add_argument("--markdown", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md",
                        help="file whose 'Scale' section gets the results")
    parser.add_argument("--no-markdown", action="store_true", help="do not write --markdown")
    args = parser.parse_args(argv)
    if args.rest_window <= 0 or args.settle < 0 or args.changes < 0 or args.unrelated < 0:
        parser.error("--rest-window > 0; --settle, --changes and --unrelated >= 0")
    if args.detection_runs < 1:
        parser.error("--detection-runs >= 1")
    try:
        parse_duration(args.scrape_interval)
        parse_duration(args.detection_interval)
        if not re.fullmatch(r"([0-9]+(\.[0-9]+)?(ms|s|m|h))+", args.bake_time):
            raise ValueError(f"--bake-time {args.bake_time!r} is not a duration such as 0s, 30s or 5m")
    except ValueError as error:
        parser.error(str(error))
    return args


# --------------------------------------------------------------------------- waiting


def wait_for(condition: Callable[[], bool], deadline_s: float, what: str,
             check: Callable[[], None] | None = None, interval: float = 0.1) -> float:
    """Poll ``condition`` until true; the monotonic time it was seen true. BenchError at the deadline.

    ``check`` runs each round too (e.g. raises when the operator died).
    """
    deadline = time.monotonic() + deadline_s
    while True:
        if condition():
            return time.monotonic()
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {deadline_s:.0f}s")
        time.sleep(interval)


# --------------------------------------------------------------------------- the operator


def operator_env(kubeconfig: Path) -> dict[str, str]:
    """The chart's defaults: KUBECONFIG and a metrics port, no other MODELDEPLOY_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEPLOY_")}
    env.pop("PYTHONPATH", None)
    env["KUBECONFIG"] = str(kubeconfig)
    env["MODELDEPLOY_METRICS_PORT"] = str(free_port())
    return env


class ScaleOperator(OperatorProcess):
    """One operator process with the chart's default settings; its pid is measured in /proc."""

    def __init__(self, kubeconfig: Path, log_path: Path, audit: AuditLog,
                 src: Path | None = None, command: str | None = None) -> None:
        super().__init__(kubeconfig, log_path)
        self.audit = audit
        self.env = operator_env(kubeconfig)
        if command is not None:
            self.command = shlex.split(command)
        elif src is not None:
            self.command = [str(venv_bin() / "python"), "-m", "modeldeploy", "--standalone"]
            self.env["PYTHONPATH"] = str(src.resolve())
        else:
            self.command = [str(venv_bin() / "modeldeploy-operator"), "--standalone"]

    def describe(self) -> str:
        prefix = f"PYTHONPATH={self.env['PYTHONPATH']} " if "PYTHONPATH" in self.env else ""
        return (f"{prefix}MODELDEPLOY_METRICS_PORT={self.env['MODELDEPLOY_METRICS_PORT']} "
                f"{shlex.join(self.command)}")

    def start(self, timeout: float = 90.0) -> None:
        """Start it; it is up when its watch on ModelDeployments shows in the audit log."""
        mark = self.audit.mark()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True,
            )

        def watching() -> bool:
            return any(r["verb"] == "watch" and r["resource"] == "modeldeployments"
                       for r in self.audit.operator_records(mark))

        try:
            wait_for(watching, timeout, "the operator's watch on ModelDeployments", self.check)
        except BenchError as error:
            raise BenchError(f"{error}\n--- operator log ({self.log_path}):\n{self.log_tail()}") from None

    def check(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise BenchError(f"the operator exited ({code}); its log ({self.log_path}):\n"
                             + self.log_tail())

    def usage(self) -> ProcessUsage:
        self.check()
        assert self.process is not None
        return ProcessUsage.of(self.process.pid)


@dataclass(frozen=True)
class ProcessUsage:
    at: float  # monotonic
    cpu_s: float  # utime + stime
    rss_mb: float

    @classmethod
    def of(cls, pid: int) -> ProcessUsage:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # fields from the 3rd (state) on
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15
        rss_kb = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
        return cls(at=time.monotonic(), cpu_s=cpu, rss_mb=rss_kb / 1024)


# --------------------------------------------------------------------------- the audit log


class AuditLog:
    """The sandbox's audit log: one JSON line per request (ts, verb, resource, userAgent, ...)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def records(self, since: int, until: int | None = None) -> list[Manifest]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(since)
                data = handle.read() if until is None else handle.read(max(0, until - since))
        except FileNotFoundError:
            return []
        out: list[Manifest] = []
        for line in data.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))  # a line still being written is skipped
        return out

    def operator_records(self, since: int, until: int | None = None) -> list[Manifest]:
        return [r for r in self.records(since, until)
                if str(r.get("userAgent", "")).startswith(OPERATOR_AGENTS)]


@dataclass
class RequestCounts:
    reads: int = 0
    writes: int = 0
    watches: int = 0
    other: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)  # "verb resource[/sub] code" -> count

    @classmethod
    def of(cls, records: Iterable[Manifest]) -> RequestCounts:
        counts = cls()
        for record in records:
            verb = str(record.get("verb", ""))
            if verb in READS:
                counts.reads += 1
            elif verb in WRITES:
                counts.writes += 1
            elif verb == "watch":
                counts.watches += 1
            else:
                counts.other += 1
            resource = str(record.get("resource") or record.get("nonResourceURL") or "?")
            if record.get("subresource"):
                resource += f"/{record['subresource']}"
            key = f"{verb} {resource} {record.get('code')}"
            counts.by_kind[key] = counts.by_kind.get(key, 0) + 1
        return counts

    @property
    def total(self) -> int:
        return self.reads + self.writes + self.watches + self.other


# --------------------------------------------------------------------------- the API


def md_manifest(name: str, namespace: str, *, image: str, prometheus_url: str, change: str,
                bake_time: str) -> Manifest:
    """A ModelDeployment of 2 replicas with canary steps and an analysis that always passes."""
    container: Manifest = {
        "name": "app",
        "image": image,
        "env": [{"name": CHANGE_ENV, "value": change}],
    }
    if image != PAUSE_IMAGE:  # a real process: ready once it answers (as the integration tier does)
        container["readinessProbe"] = {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1}
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [container]}},
            "service": {"port": 80, "targetPort": 8080},
            "strategy": {"canary": {
                "steps": [{"setWeight": 50}, {"analysis": {"measurements": 1}}, {"setWeight": 100}],
                "trafficRouting": {"replicas": {}},
            }},
            "analysis": {
                "interval": "5s",
                "provider": {"prometheus": {"address": prometheus_url}},
                "metrics": [{"name": "always-passes", "query": "vector(1)",
                             "thresholdRange": {"min": 0.5}}],
            },
            "rollback": {"automatic": True, "bakeTime": bake_time},
        },
    }


def unrelated_deployment(index: int, namespace: str) -> Manifest:
    """A Deployment of 0 replicas, about 3 KB as JSON, with none of the modeldeploy labels."""
    name = f"unrelated-{index:04d}"
    env = [{"name": f"SETTING_{i:02d}", "value": f"{name}-{i:02d}-" + "x" * 96} for i in range(20)]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name, "team": "other"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "team": "other"}},
                "spec": {"containers": [{"name": "main", "image": PAUSE_IMAGE, "env": env}]},
            },
        },
    }


class API:
    """The few calls the benchmark makes itself, over HTTP, with its own user agent."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.http = httpx.Client(base_url=api_url, timeout=30, headers={"User-Agent": USER_AGENT})

    def close(self) -> None:
        self.http.close()

    def get(self, path: str) -> Manifest | None:
        response = self.http.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: Manifest = response.json()
        return body

    def delete_namespace(self, namespace: str, deadline_s: float, check: Callable[[], None]) -> None:
        """Delete it and wait until it is gone (its contents first: Terminating)."""
        response = self.http.delete(f"/api/v1/namespaces/{namespace}")
        if response.status_code not in (200, 202, 404):
            raise BenchError(f"deleting namespace {namespace}: HTTP {response.status_code} {response.text}")
        wait_for(lambda: self.get(f"/api/v1/namespaces/{namespace}") is None, deadline_s,
                 f"the deletion of namespace {namespace}", check, interval=0.5)

    def create_namespace(self, namespace: str) -> None:
        response = self.http.post("/api/v1/namespaces", json={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        if response.status_code != 201:
            raise BenchError(f"creating namespace {namespace}: HTTP {response.status_code} {response.text}")

    def send_all(self, requests: list[tuple[str, str, Manifest]],
                 content_type: str = "application/json") -> list[Manifest]:
        """(method, path, body) requests, CONCURRENCY at a time; their answers' bodies, in order."""

        async def send_all() -> list[Manifest]:
            limit = asyncio.Semaphore(CONCURRENCY)
            async with httpx.AsyncClient(base_url=self.api_url, timeout=60,
                                         headers={"User-Agent": USER_AGENT}) as client:

                async def send(method: str, path: str, body: Manifest) -> Manifest:
                    async with limit:
                        response = await client.request(
                            method, path, content=json.dumps(body),
                            headers={"Content-Type": content_type})
                    if response.status_code >= 300:
                        raise BenchError(f"{method} {path}: HTTP {response.status_code} {response.text}")
                    answer: Manifest = response.json()
                    return answer

                return list(await asyncio.gather(*(send(m, p, b) for m, p, b in requests)))

        return asyncio.run(send_all())


@dataclass
class MDState:
    generation: int = 0
    observed_generation: int = 0
    phase: str = ""
    stable: str | None = None
    canary: str | None = None
    weight: int | None = None
    changed_at: float = 0.0  # monotonic, when the watch delivered it


class MDWatcher:
    """A list+watch of the namespace's ModelDeployments in a thread: their newest state."""

    def __init__(self, api_url: str, namespace: str) -> None:
        self.path = MD_PATH.format(namespace=namespace)
        self.http = httpx.Client(base_url=api_url, headers={"User-Agent": USER_AGENT},
                                 timeout=httpx.Timeout(30.0, read=90.0))
        self.states: dict[str, MDState] = {}
        self.last_change = time.monotonic()
        self.error: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="md-watcher", daemon=True)

    def start(self) -> MDWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.http.close()
        self._thread.join(timeout=5)

    def snapshot(self) -> dict[str, MDState]:
        with self._lock:
            return dict(self.states)

    def _apply(self, kind: str, body: Manifest) -> None:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        name = str(meta.get("name"))
        with self._lock:
            now = time.monotonic()
            if kind == "DELETED":
                self.states.pop(name, None)
            else:
                self.states[name] = MDState(
                    generation=int(meta.get("generation") or 0),
                    observed_generation=int(status.get("observedGeneration") or 0),
                    phase=str(status.get("phase") or ""),
                    stable=status.get("stableRevision"),
                    canary=status.get("canaryRevision"),
                    weight=status.get("canaryWeight"),
                    changed_at=now,
                )
            self.last_change = now

    def _run(self) -> None:
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    listed = self.http.get(self.path)
                    listed.raise_for_status()
                    body = listed.json()
                    with self._lock:
                        self.states.clear()
                    for item in body.get("items") or []:
                        self._apply("ADDED", item)
                    resource_version = str(body["metadata"]["resourceVersion"])
                # No bookmarks: the sandbox ends a watch with a bookmark of its newest
                # resourceVersion even when changes are still queued for that watch, and
                # resuming from it loses them (seen at N=100 with the old operator).
                params = {"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": "60"}
                with self.http.stream("GET", self.path, params=params) as stream:
                    if stream.status_code == 410:
                        resource_version = None
                        continue
                    stream.raise_for_status()
                    for line in stream.iter_lines():
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            resource_version = None  # 410 Gone inside the stream: list again
                            break
                        resource_version = str((obj.get("metadata") or {}).get("resourceVersion")
                                               or resource_version)
                        if kind != "BOOKMARK":
                            self._apply(str(kind), obj)
            except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as error:
                if self._stop.is_set():
                    return
                self.error = f"{type(error).__name__}: {error}"
                resource_version = None
                time.sleep(0.5)


@dataclass(frozen=True)
class SeenStatus:
    at: float  # wall clock (time.time()), when the watch delivered it
    snapshot: Snapshot
    exact: bool  # False: delivered by a list after a broken watch, so seen late


class RoundWatcher(MDWatcher):
    """Every status of one ModelDeployment, with the wall time the watch delivered it."""

    def __init__(self, api_url: str, namespace: str, name: str) -> None:
        super().__init__(api_url, namespace)
        self.name = name
        self.events: list[SeenStatus] = []
        self._version: str | None = None

    def _apply(self, kind: str, body: Manifest) -> None:
        super()._apply(kind, body)
        meta = body.get("metadata") or {}
        if kind == "DELETED" or meta.get("name") != self.name:
            return
        version = str(meta.get("resourceVersion"))
        with self._lock:
            if version == self._version:
                return  # the same object listed again
            # ADDED after earlier events: a list after a broken watch, changes maybe missed.
            exact = not (kind == "ADDED" and self.events)
            self.events.append(SeenStatus(time.time(), Snapshot.of(body), exact))
            self._version = version

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def since(self, mark: int) -> list[SeenStatus]:
        with self._lock:
            return self.events[mark:]


# --------------------------------------------------------------------------- figures


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class RestFigures:
    window_s: float
    mds: int
    reads: int
    writes: int
    watches: int
    other: int
    rss_mb: float
    cpu_cores: float
    by_kind: dict[str, int]

    @property
    def per_md_min(self) -> float:
        return (self.reads + self.writes + self.watches + self.other) / self.mds / (self.window_s / 60)

    def per_md_min_of(self, count: int) -> float:
        return count / self.mds / (self.window_s / 60)


def stamp_seconds(text: str) -> float:
    """An RFC 3339 status time as seconds since the epoch."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def p50(values: list[float]) -> float | None:
    return percentile(values, 50) if values else None


@dataclass
class DetectionRun:
    """One bad-canary run: hack/bench rollback's figures and what the status watch saw."""

    to_rolled_back_s: float
    to_stable_s: float
    rounds: int = 0  # analysis rounds seen while the canary held at 50%, the breaching one too
    lateness_s: list[float] = field(default_factory=list)  # seen - previous seen - interval
    stamped_lateness_s: list[float] = field(default_factory=list)  # the same from status times
    revert_s: float | None = None  # RolledBack seen - the breaching round's status time
    breach: str = ""  # the RolledBack status message


def holding(snapshot: Snapshot, stable: str | None) -> bool:
    """The run's canary holds at 50% (the pause step), not yet reverted."""
    return (snapshot.canary is not None and snapshot.stable == stable and snapshot.weight == 50
            and "paused until" in snapshot.message and snapshot.phase != "RolledBack")


def read_rounds(run: DetectionRun, events: list[SeenStatus], stable: str | None, interval_s: float) -> None:
    """Fill ``run``'s round lateness and revert latency from the statuses seen during it."""
    first_seen: dict[str, int] = {}  # round time -> index of the first status that carried it
    for index, event in enumerate(events):
        if event.snapshot.round_time and event.snapshot.round_time not in first_seen:
            first_seen[event.snapshot.round_time] = index
    start = next((i for i, e in enumerate(events) if holding(e.snapshot, stable)), None)
    end = next((i for i, e in enumerate(events) if e.snapshot.phase == "RolledBack"
                and (start is None or i > start)), None)
    if start is None or end is None:
        return
    # Rounds run in the hold: first seen from its first status on. The round of the step before
    # (still in the status when the pause step begins) is left out, and with it the wait at the
    # step's start, which scale does not change.
    rounds: list[str] = []
    for event in events[start:end + 1]:
        stamp = event.snapshot.round_time
        if stamp and (not rounds or stamp != rounds[-1]) and first_seen[stamp] >= start:
            rounds.append(stamp)
    run.rounds = len(rounds)
    # The hold's first round may share the reconcile that began the pause step, which then
    # ticks again a second later (a step's first look) and waits an interval from there: the
    # round after it comes about 1 s late alone too. Lateness counts from the second round on.
    for before, after in itertools.pairwise(rounds[1:]):
        run.stamped_lateness_s.append(stamp_seconds(after) - stamp_seconds(before) - interval_s)
        seen_before, seen_after = events[first_seen[before]], events[first_seen[after]]
        if seen_before.exact and seen_after.exact:
            run.lateness_s.append(seen_after.at - seen_before.at - interval_s)
    reverted = events[end]
    run.breach = reverted.snapshot.message
    breaching = reverted.snapshot.round_time or (rounds[-1] if rounds else None)
    if breaching and reverted.exact:
        run.revert_s = reverted.at - stamp_seconds(breaching)


@dataclass
class Detection:
    """The bad-canary runs in one place (alone, or among N)."""

    runs: list[DetectionRun] = field(default_factory=list)

    @property
    def to_rolled_back_median(self) -> float | None:
        return statistics.median(r.to_rolled_back_s for r in self.runs) if self.runs else None

    @property
    def to_stable_median(self) -> float | None:
        return statistics.median(r.to_stable_s for r in self.runs) if self.runs else None

    @property
    def lateness(self) -> list[float]:
        return [x for r in self.runs for x in r.lateness_s]

    @property
    def lateness_p50(self) -> float | None:
        return p50(self.lateness)

    @property
    def lateness_max(self) -> float | None:
        return max(self.lateness, default=None)

    @property
    def stamped_lateness_max(self) -> float | None:
        return max((x for r in self.runs for x in r.stamped_lateness_s), default=None)

    @property
    def reverts(self) -> list[float]:
        return [r.revert_s for r in self.runs if r.revert_s is not None]

    @property
    def revert_p50(self) -> float | None:
        return p50(self.reverts)

    @property
    def revert_max(self) -> float | None:
        return max(self.reverts, default=None)

    def extra(self, alone: Detection | None) -> tuple[float | None, float | None, float | None]:
        """(lateness p50, lateness max, revert p50) here minus the same alone."""

        def minus(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a - b

        if alone is None:
            return None, None, None
        return (minus(self.lateness_p50, alone.lateness_p50), minus(self.lateness_max, alone.lateness_max),
                minus(self.revert_p50, alone.revert_p50))

    def as_json(self, alone: Detection | None = None) -> Manifest:
        body: Manifest = {
            "runs": [asdict(r) for r in self.runs],
            "to_rolled_back_median_s": self.to_rolled_back_median,
            "to_stable_median_s": self.to_stable_median,
            "rounds": sum(r.rounds for r in self.runs),
            "round_lateness_p50_s": self.lateness_p50,
            "round_lateness_max_s": self.lateness_max,
            "stamped_round_lateness_max_s": self.stamped_lateness_max,
            "revert_latency_p50_s": self.revert_p50,
            "revert_latency_max_s": self.revert_max,
        }
        if alone is not None:
            late_p50, late_max, revert_p50 = self.extra(alone)
            body["extra_vs_alone"] = {"round_lateness_p50_s": late_p50, "round_lateness_max_s": late_max,
                                      "revert_latency_p50_s": revert_p50}
        return body


@dataclass
class NResult:
    n: int
    create_s: float | None = None  # sending the N creates
    all_succeeded_s: float | None = None
    succeeded_p50_s: float | None = None
    settled: bool = True
    rest: RestFigures | None = None
    rss_before_unrelated_mb: float | None = None
    rss_after_unrelated_mb: float | None = None
    canary_latencies_s: list[float] = field(default_factory=list)
    all_change_s: float | None = None
    all_change_p50_s: float | None = None
    detection: Detection | None = None

    @property
    def unrelated_mb(self) -> float | None:
        if self.rss_before_unrelated_mb is None or self.rss_after_unrelated_mb is None:
            return None
        return self.rss_after_unrelated_mb - self.rss_before_unrelated_mb

    @property
    def canary_p50(self) -> float | None:
        return percentile(self.canary_latencies_s, 50) if self.canary_latencies_s else None

    @property
    def canary_p99(self) -> float | None:
        return percentile(self.canary_latencies_s, 99) if self.canary_latencies_s else None


class Bench:
    def __init__(self, args: argparse.Namespace, sandbox: Sandbox, operator: ScaleOperator,
                 audit: AuditLog, api: API, progress: Timeline) -> None:
        self.args = args
        self.sandbox = sandbox
        self.operator = operator
        self.audit = audit
        self.api = api
        self.progress = progress
        assert sandbox.prometheus_url is not None
        self.prometheus_url = sandbox.prometheus_url

    def say(self, text: str) -> None:
        self.progress.say(text)

    def deadline(self, n: int) -> float:
        return self.args.phase_timeout if self.args.phase_timeout is not None else 300 + 0.6 * n

    def manifest(self, name: str, change: str) -> Manifest:
        return md_manifest(name, NAMESPACE, image=self.args.image, prometheus_url=self.prometheus_url,
                           change=change, bake_time=self.args.bake_time)

    def ensure_gone(self, *namespaces: str) -> None:
        for namespace in namespaces:
            if self.api.get(f"/api/v1/namespaces/{namespace}") is not None:
                self.say(f"deleting namespace {namespace} left from an earlier run ...")
                self.api.delete_namespace(namespace, 600, self.operator.check)

    # -- 1 -----------------------------------------------------------------------------

    def run_n(self, n: int, results: list[NResult]) -> None:
        """Measure N; the result joins ``results`` at once, so a later failure keeps what was measured."""
        result = NResult(n=n)
        results.append(result)
        names = [f"md-{i:04d}" for i in range(n)]
        deadline = self.deadline(n)
        self.api.create_namespace(NAMESPACE)
        watcher = MDWatcher(self.api.api_url, NAMESPACE).start()
        try:
            self.say(f"N={n}: creating {n} ModelDeployments ...")
            started = time.monotonic()
            self.api.send_all([("POST", MD_PATH.format(namespace=NAMESPACE), self.manifest(name, "0"))
                               for name in names])
            result.create_s = time.monotonic() - started
            done = self.wait_all(watcher, names, lambda _, s: s.phase == "Succeeded" and bool(s.stable),
                                 deadline, f"all {n} ModelDeployments Succeeded")
            result.all_succeeded_s = max(done.values()) - started
            result.succeeded_p50_s = statistics.median(done.values()) - started
            self.say(f"N={n}: all Succeeded {result.all_succeeded_s:.1f}s after the first create "
                     f"(creates sent in {result.create_s:.1f}s)")
            # -- 2 -------------------------------------------------------------------
            result.settled = self.settle(watcher, n)
            result.rest = self.rest(n)
            rest = result.rest
            self.say(f"N={n}: at rest {rest.per_md_min:.2f} requests/MD/min "
                     f"({rest.per_md_min_of(rest.reads):.2f} reads, {rest.per_md_min_of(rest.writes):.2f} "
                     f"writes, {rest.watches} watch opens), RSS {rest.rss_mb:.0f} MB, "
                     f"CPU {rest.cpu_cores:.3f} cores")
            # -- 6 -------------------------------------------------------------------
            if self.args.unrelated:
                self.unrelated(result)
            # -- 3 -------------------------------------------------------------------
            if self.args.changes:
                self.single_changes(result, watcher, names)
            # -- 4 -------------------------------------------------------------------
            self.change_all(result, watcher, names)
            # -- 5 -------------------------------------------------------------------
            if not self.args.skip_detection:
                self.settle(watcher, n)
                result.detection = self.detection(f"N={n}")
        finally:
            watcher.stop()
        self.say(f"N={n}: deleting namespace {NAMESPACE} ...")
        self.api.delete_namespace(NAMESPACE, deadline, self.operator.check)

    def wait_all(self, watcher: MDWatcher, names: list[str], done: Callable[[str, MDState], bool],
                 deadline_s: float, what: str) -> dict[str, float]:
        """Wait until ``done`` holds for every name; the monotonic time each was first seen done."""
        seen: dict[str, float] = {}

        def all_done() -> bool:
            states = watcher.snapshot()
            for name in names:
                state = states.get(name)
                if name not in seen and state is not None and done(name, state):
                    seen[name] = state.changed_at
            self.progress.progress(f"{what}: {len(seen)}/{len(names)}")
            return len(seen) == len(names)

        try:
            wait_for(all_done, deadline_s, what, self.operator.check, interval=0.2)
        except BenchError as error:
            states = watcher.snapshot()
            late = [n for n in names if n not in seen][:5]
            detail = "; ".join(f"{n}: {asdict(states[n]) if n in states else 'absent'}" for n in late)
            raise BenchError(f"{error} ({len(seen)}/{len(names)}; e.g. {detail}; watcher error: "
                             f"{watcher.error})") from None
        return seen

    def settle(self, watcher: MDWatcher, n: int) -> bool:
        """Wait until no ModelDeployment changed for --settle seconds (False: gave up, noted)."""
        try:
            wait_for(lambda: time.monotonic() - watcher.last_change >= self.args.settle,
                     max(120.0, self.args.settle * 6), "", self.operator.check, interval=0.5)
            return True
        except BenchError:
            self.say(f"N={n}: ModelDeployments still change after {max(120.0, self.args.settle * 6):.0f}s "
                     "(measuring anyway)")
            return False

    def rest(self, n: int) -> RestFigures:
        self.say(f"N={n}: at rest; measuring over {self.args.rest_window:g}s ...")
        mark = self.audit.mark()
        wall_start = time.time()
        before = self.operator.usage()
        time.sleep(self.args.rest_window)  # the measurement window itself
        after = self.operator.usage()
        wall_end = time.time()
        records = [r for r in self.audit.operator_records(mark)
                   if wall_start <= float(r.get("ts", 0)) < wall_end]
        counts = RequestCounts.of(records)
        window = after.at - before.at
        mds = n + self.extra_mds()
        return RestFigures(
            window_s=window, mds=mds, reads=counts.reads, writes=counts.writes,
            watches=counts.watches, other=counts.other, rss_mb=after.rss_mb,
            cpu_cores=(after.cpu_s - before.cpu_s) / window,
            by_kind=dict(sorted(counts.by_kind.items(), key=lambda kv: -kv[1])),
        )

    def extra_mds(self) -> int:
        """ModelDeployments outside the namespace (another run's, a user's): counted too."""
        listed = self.api.get("/apis/modeldeploy.io/v1alpha1/modeldeployments")
        items = (listed or {}).get("items") or []
        return sum(1 for i in items if i["metadata"].get("namespace") != NAMESPACE)

    # -- 6 -------------------------------------------------------------------------------

    def steady_rss(self, deadline_s: float = 90.0) -> float:
        """RSS once it stayed within 1 MB for 5 s (or the last value at the deadline)."""
        samples: list[ProcessUsage] = []

        def steady() -> bool:
            samples.append(self.operator.usage())
            recent = [s for s in samples if s.at >= samples[-1].at - 5.0]
            return (samples[-1].at - samples[0].at >= 5.0
                    and max(s.rss_mb for s in recent) - min(s.rss_mb for s in recent) <= 1.0)

        with contextlib.suppress(BenchError):
            wait_for(steady, deadline_s, "", self.operator.check, interval=0.5)
        return samples[-1].rss_mb

    def unrelated(self, result: NResult) -> None:
        count = self.args.unrelated
        result.rss_before_unrelated_mb = self.steady_rss()
        self.say(f"N={result.n}: adding {count} unrelated Deployments in {UNRELATED_NAMESPACE} "
                 f"(idle operator RSS {result.rss_before_unrelated_mb:.1f} MB) ...")
        self.api.create_namespace(UNRELATED_NAMESPACE)
        path = f"/apis/apps/v1/namespaces/{UNRELATED_NAMESPACE}/deployments"
        self.api.send_all([("POST", path, unrelated_deployment(i, UNRELATED_NAMESPACE))
                           for i in range(count)])
        result.rss_after_unrelated_mb = self.steady_rss()
        self.say(f"N={result.n}: RSS {result.rss_after_unrelated_mb:.1f} MB with them "
                 f"({result.unrelated_mb:+.1f} MB); deleting them ...")
        self.api.delete_namespace(UNRELATED_NAMESPACE, 600, self.operator.check)

    # -- 3 -------------------------------------------------------------------------------

    def single_changes(self, result: NResult, watcher: MDWatcher, names: list[str]) -> None:
        count = min(self.args.changes, len(names))
        picked = [names[(i * len(names)) // count] for i in range(count)]
        self.say(f"N={result.n}: {count} single spec changes, one at a time ...")
        old = watcher.snapshot()
        generations: dict[str, int] = {}
        for number, name in enumerate(picked, 1):
            mark = self.audit.mark()
            answer = self.patch_env(name, f"single-{number}")
            generations[name] = int(answer["metadata"].get("generation") or 0)
            patched_at = self.find_patch(mark, name)
            created: list[float] = []

            def canary_created(since: int = mark, after: float = patched_at,
                               created: list[float] = created) -> bool:
                for record in self.audit.operator_records(since):
                    if (record.get("resource") == "deployments" and record.get("code") == 201
                            and record.get("namespace") == NAMESPACE
                            and record.get("verb") in ("create", "patch", "update")
                            and float(record.get("ts", 0)) >= after):
                        created.append(float(record["ts"]))
                        return True
                return False

            wait_for(canary_created, 60, f"the canary Deployment of {name} (change {number})",
                     self.operator.check, interval=0.02)
            result.canary_latencies_s.append(created[0] - patched_at)
        self.say(f"N={result.n}: spec change -> canary Deployment p50 {result.canary_p50:.3f}s "
                 f"p99 {result.canary_p99:.3f}s; waiting for the {count} rollouts to finish ...")
        self.wait_rolled_out(watcher, picked, old, generations, self.deadline(count),
                             f"the {count} changed ModelDeployments Succeeded on their new revision")

    def patch_env(self, name: str, change: str) -> Manifest:
        body = {"spec": {"template": self.manifest(name, change)["spec"]["template"]}}
        response = self.api.http.patch(f"{MD_PATH.format(namespace=NAMESPACE)}/{name}",
                                       content=json.dumps(body),
                                       headers={"Content-Type": "application/merge-patch+json"})
        if response.status_code != 200:
            raise BenchError(f"patching {name}: HTTP {response.status_code} {response.text}")
        answer: Manifest = response.json()
        return answer

    def find_patch(self, mark: int, name: str) -> float:
        """The audit log's time of our patch of ``name`` (when the server had applied it)."""
        for record in self.audit.records(mark):
            if (record.get("userAgent") == USER_AGENT and record.get("verb") == "patch"
                    and record.get("name") == name and record.get("resource") == "modeldeployments"):
                return float(record["ts"])
        raise BenchError(f"the audit log ({self.audit.path}) has no record of the patch of {name}")

    def wait_rolled_out(self, watcher: MDWatcher, names: list[str], old: dict[str, MDState],
                        generations: dict[str, int], deadline_s: float, what: str) -> dict[str, float]:
        """Wait until each is Succeeded on a new stable revision, its change observed."""

        def done(name: str, state: MDState) -> bool:
            before = old.get(name)
            return (state.phase == "Succeeded" and state.observed_generation >= generations[name]
                    and state.stable is not None and (before is None or state.stable != before.stable))

        return self.wait_all(watcher, names, done, deadline_s, what)

    # -- 4 -------------------------------------------------------------------------------

    def change_all(self, result: NResult, watcher: MDWatcher, names: list[str]) -> None:
        self.settle(watcher, result.n)
        old = watcher.snapshot()
        self.say(f"N={result.n}: one spec change on all {result.n} at once ...")
        path = MD_PATH.format(namespace=NAMESPACE)
        started = time.monotonic()
        answers = self.api.send_all(
            [("PATCH", f"{path}/{name}",
              {"spec": {"template": self.manifest(name, "all")["spec"]["template"]}}) for name in names],
            content_type="application/merge-patch+json")
        generations = {a["metadata"]["name"]: int(a["metadata"].get("generation") or 0) for a in answers}
        done = self.wait_rolled_out(watcher, names, old, generations, self.deadline(result.n),
                                    f"all {result.n} Succeeded on their new revision")
        result.all_change_s = max(done.values()) - started
        result.all_change_p50_s = statistics.median(done.values()) - started
        self.say(f"N={result.n}: all {result.n} Succeeded on the new revision "
                 f"{result.all_change_s:.1f}s after the first patch (median {result.all_change_p50_s:.1f}s)")

    # -- 5 -------------------------------------------------------------------------------

    def detection(self, where: str) -> Detection:
        """hack/bench rollback's runs, in its namespace, with song-analyzer's status watched."""
        rollback = rollback_benchmark()
        assert self.sandbox.prometheus_url is not None and self.sandbox.fake_upstream_url is not None
        namespace: str = rollback.NAMESPACE
        kubeconfig = self.sandbox.kubeconfig
        interval_s = parse_duration(self.args.detection_interval)
        self.say(f"{where}: bad canary detection, {self.args.detection_runs} runs of hack/bench "
                 f"rollback (namespace {namespace}, analysis every {self.args.detection_interval}) ...")
        self.ensure_gone(namespace)
        prepare_namespace(namespace, kubeconfig)
        follower = RolloutFollower(self.sandbox.api_url, self.progress, namespace=namespace)
        watcher = RoundWatcher(self.sandbox.api_url, namespace, SONG_NAME)
        watcher.start()
        run_args = argparse.Namespace(interval=self.args.detection_interval, error_rate=0.3)
        detection = Detection()
        try:
            apply(song_analyzer(f"{rollback.MODEL_PREFIX}:base", prometheus_url=self.sandbox.prometheus_url,
                                upstream_url=self.sandbox.fake_upstream_url, namespace=namespace,
                                steps=rollback.HOLD_AT_HALF,
                                analysis_interval=self.args.detection_interval), kubeconfig)
            first = follower.wait_for(lambda s: s.phase == "Succeeded", 180,
                                      f"{where}: song-analyzer's first deployment", self.operator)
            follower.traffic = start_traffic(self.sandbox.service_url(namespace, SONG_NAME), rate=10.0)
            for number in range(1, self.args.detection_runs + 1):
                mark = watcher.mark()
                result = rollback.one_run(number, run_args, self.sandbox, follower, self.operator,
                                          first.stable)
                # The follower polls; the watch may deliver the RolledBack status a little later.
                def reverted_seen(since: int = mark) -> bool:
                    return any(e.snapshot.phase == "RolledBack" for e in watcher.since(since))

                with contextlib.suppress(BenchError):
                    wait_for(reverted_seen, 10, "", self.operator.check)
                run = DetectionRun(to_rolled_back_s=result.to_rolled_back_s, to_stable_s=result.to_stable_s)
                read_rounds(run, watcher.since(mark), first.stable, interval_s)
                detection.runs.append(run)
                lateness = ("no round pairs seen" if not run.lateness_s else
                            f"round lateness p50 {fmt(p50(run.lateness_s), digits=2)} "
                            f"max {fmt(max(run.lateness_s), digits=2)}")
                self.say(f"{where}: run {number}: fault -> RolledBack {run.to_rolled_back_s:.1f}s "
                         f"(all traffic on stable after {run.to_stable_s:.1f}s); {run.rounds} rounds at "
                         f"50%, {lateness}, revert latency {fmt(run.revert_s, digits=2)}")
        finally:
            watcher.stop()
            if follower.traffic is not None:
                follower.traffic.stop()
            follower.close()
        if watcher.error is not None:
            self.say(f"{where}: the status watch broke at least once ({watcher.error}); rounds seen "
                     "by a list after it are left out of the lateness")
        self.api.delete_namespace(namespace, 300, self.operator.check)
        return detection


def rollback_benchmark() -> ModuleType:
    """hack/benchmarks/rollback.py, imported by path (benchmarks run with -P: not on sys.path)."""
    module = sys.modules.get("modeldeploy_bench_rollback")
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location("modeldeploy_bench_rollback",
                                                  Path(__file__).with_name("rollback.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- report


def fmt(value: float | None, unit: str = "s", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def signed(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:+.{digits}f}s"


def rows_for(results: list[NResult], alone: Detection | None) -> list[list[str]]:
    header = ["N", "create -> all Succeeded", "requests/MD/min at rest (reads, writes, watch opens)",
              "RSS", "CPU at rest", "spec change -> canary p50 / p99", "change all N -> all Succeeded",
              "bad canary: extra round lateness vs alone p50 / max", "RSS +unrelated Deployments"]
    rows = [header]
    for r in results:
        rest = r.rest
        requests = "-" if rest is None else (
            f"{rest.per_md_min:.2f} ({rest.per_md_min_of(rest.reads):.2f}, "
            f"{rest.per_md_min_of(rest.writes):.2f}, {rest.watches})")
        canary = ("-" if r.canary_p50 is None
                  else f"{fmt(r.canary_p50, digits=3)} / {fmt(r.canary_p99, digits=3)}")
        late_p50, late_max, _ = (None, None, None) if r.detection is None else r.detection.extra(alone)
        detection = ("-" if late_p50 is None and late_max is None
                     else f"{signed(late_p50)} / {signed(late_max)}")
        rows.append([
            str(r.n), fmt(r.all_succeeded_s), requests,
            fmt(rest.rss_mb if rest else None, " MB", 0), fmt(rest.cpu_cores if rest else None, "", 3),
            canary, fmt(r.all_change_s), detection, fmt(r.unrelated_mb, " MB", 1),
        ])
    return rows


def detection_rows(results: list[NResult], alone: Detection | None) -> list[list[str]]:
    """The bad-canary runs alone and among each N; empty when none ran."""
    header = ["where", "runs", "fault -> RolledBack median (min-max)", "fault -> stable median",
              "rounds at 50%", "round lateness p50 / max", "(from status times, max)",
              "revert latency p50 / max", "extra vs alone: lateness p50 / max, revert p50"]
    places = ([("alone", alone)] if alone is not None else []) + [
        (f"among N={r.n}", r.detection) for r in results if r.detection is not None]
    rows = [header]
    for where, d in places:
        assert d is not None
        if not d.runs:
            rows.append([where, "0", *["-"] * (len(header) - 2)])
            continue
        times = [r.to_rolled_back_s for r in d.runs]
        extra = "-"
        if d is not alone and alone is not None:
            late_p50, late_max, revert_p50 = d.extra(alone)
            extra = f"{signed(late_p50)} / {signed(late_max)}, {signed(revert_p50)}"
        rows.append([
            where, str(len(d.runs)),
            f"{fmt(d.to_rolled_back_median)} ({min(times):.1f}-{max(times):.1f}s)",
            fmt(d.to_stable_median), str(sum(r.rounds for r in d.runs)),
            f"{fmt(d.lateness_p50, digits=2)} / {fmt(d.lateness_max, digits=2)}",
            fmt(d.stamped_lateness_max, digits=0),
            f"{fmt(d.revert_p50, digits=2)} / {fmt(d.revert_max, digits=2)}", extra,
        ])
    return rows if len(rows) > 1 else []


def growth_rows(results: list[NResult]) -> list[list[str]]:
    """Each figure at N divided by the same figure at the previous N, next to N's own ratio."""
    figures: list[tuple[str, Callable[[NResult], float | None]]] = [
        ("create -> all Succeeded", lambda r: r.all_succeeded_s),
        ("requests per minute at rest (all MDs)",
         lambda r: r.rest.per_md_min * r.rest.mds if r.rest else None),
        ("requests/MD/min at rest", lambda r: r.rest.per_md_min if r.rest else None),
        ("RSS", lambda r: r.rest.rss_mb if r.rest else None),
        ("CPU at rest", lambda r: r.rest.cpu_cores if r.rest else None),
        ("spec change -> canary p99", lambda r: r.canary_p99),
        ("change all N -> all Succeeded", lambda r: r.all_change_s),
    ]
    rows = [["figure", *(f"N {a.n} -> {b.n} (x{b.n / a.n:.1f})" for a, b in itertools.pairwise(results))]]
    for label, get in figures:
        cells = [label]
        for a, b in itertools.pairwise(results):
            x, y = get(a), get(b)
            cells.append("-" if x is None or y is None or x <= 0 else f"x{y / x:.2f}")
        rows.append(cells)
    return rows


@dataclass
class Target:
    what: str
    target: str
    measured: str
    passed: bool | None  # None: not measured


def targets(result: NResult, alone: Detection | None) -> list[Target]:
    rest = result.rest
    out: list[Target] = []
    if rest is not None:
        out += [
            Target("API requests per ModelDeployment per minute at rest",
                   f"<= {TARGET_REQUESTS_PER_MD_MIN:g}", f"{rest.per_md_min:.2f}",
                   rest.per_md_min <= TARGET_REQUESTS_PER_MD_MIN),
            Target("writes at rest", "0", str(rest.writes), rest.writes == 0),
            Target("operator RSS", f"< {TARGET_RSS_MB:g} MB", f"{rest.rss_mb:.0f} MB",
                   rest.rss_mb < TARGET_RSS_MB),
            Target("CPU at rest", f"< {TARGET_CPU_CORES:g} core", f"{rest.cpu_cores:.3f}",
                   rest.cpu_cores < TARGET_CPU_CORES),
        ]
    unrelated = result.unrelated_mb
    out.append(Target("RSS growth per 1,000 unrelated Deployments", f"< {TARGET_UNRELATED_MB:g} MB",
                      fmt(unrelated, " MB"), None if unrelated is None else unrelated < TARGET_UNRELATED_MB))
    p99 = result.canary_p99
    out.append(Target("spec change -> canary p99", f"< {TARGET_CANARY_P99_S:g} s", fmt(p99, "s", 3),
                      None if p99 is None else p99 < TARGET_CANARY_P99_S))
    among = result.detection
    late_p50, late_max, revert_p50 = (None, None, None) if among is None else among.extra(alone)
    measured = "-"
    if among is not None and alone is not None and late_max is not None:
        measured = (f"max {signed(late_max)} ({fmt(among.lateness_max, digits=2)} vs "
                    f"{fmt(alone.lateness_max, digits=2)}), p50 {signed(late_p50)}; revert latency p50 "
                    f"{signed(revert_p50)}; fault -> RolledBack median {fmt(among.to_rolled_back_median)} "
                    f"vs {fmt(alone.to_rolled_back_median)}")
    out.append(Target("bad canary: extra analysis round lateness vs alone (max)",
                      f"<= {TARGET_DETECTION_EXTRA_S:g} s", measured,
                      None if late_max is None else late_max <= TARGET_DETECTION_EXTRA_S))
    return out


def verdict(passed: bool | None) -> str:
    return "not measured" if passed is None else ("PASS" if passed else "FAIL")


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def scale_n_unrelated(result: NResult, count: int) -> NResult:
    """The unrelated-Deployments growth per 1,000, as the target is stated."""
    if result.unrelated_mb is None or count == 1000 or count == 0:
        return result
    scaled = NResult(**{**result.__dict__})
    assert result.rss_before_unrelated_mb is not None
    scaled.rss_after_unrelated_mb = result.rss_before_unrelated_mb + result.unrelated_mb * 1000 / count
    return scaled


def report(args: argparse.Namespace, results: list[NResult], alone: Detection | None,
           operator: str, command: str, took_s: float) -> tuple[str, list[Target]]:
    """Print the figures; the markdown section for docs/benchmarks.md, and the targets."""
    last = results[-1]
    checks = targets(scale_n_unrelated(last, args.unrelated), alone)
    settings = (f"sandbox scrape {args.scrape_interval}; {'image ' + args.image}; 2 replicas; steps "
                f"setWeight 50, analysis (1 measurement, every 5s, vector(1) >= 0.5), setWeight 100; "
                f"bake {args.bake_time}; rest window {args.rest_window:g}s after {args.settle:g}s without "
                f"a change; {args.changes} single changes; {args.unrelated} unrelated Deployments; "
                + ("no detection runs" if args.skip_detection else
                   f"{args.detection_runs} detection runs per N and alone, analysis every "
                   f"{args.detection_interval}, 10 req/s, 30% of the canary's upstream calls failing"))
    print(f"scale: {', '.join(str(r.n) for r in results)} ModelDeployments in {took_s:.0f}s"
          + (f" ({args.label})" if args.label else ""))
    print(f"operator: {operator}")
    print(f"settings: {settings}")
    print()
    print(text_table(rows_for(results, alone)))
    detections = detection_rows(results, alone)
    if detections:
        print()
        print("bad canary detection (round lateness: each analysis round's seen time - the previous "
              "one's - interval, while the canary holds at 50%; revert latency: RolledBack seen - the "
              "breaching round's status time):")
        print(text_table(detections))
    unsettled = [r.n for r in results if not r.settled]
    if unsettled:
        print(f"(N={unsettled}: ModelDeployments still changed when the rest window began)")
    if len(results) > 1:
        print()
        print("growth between successive N (figure ratio next to N's ratio; faster than N's is "
              "worse than linear):")
        print(text_table(growth_rows(results)))
    print()
    print(f"targets at N={last.n} (issue 16 states them at N=1,000):")
    print(text_table([["figure", "target", "measured", ""]]
                     + [[t.what, t.target, t.measured, verdict(t.passed)] for t in checks]))
    if last.rest is not None:
        print()
        print(f"operator requests at rest, N={last.n}, over {last.rest.window_s:.0f}s (verb resource code):")
        for kind, count in list(last.rest.by_kind.items())[:15]:
            print(f"  {count:7d}  {kind}")
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"### {args.label or 'Run'}, {when}"
    section = "\n".join([
        title, "", "```console", f"$ {command}", "```", "",
        f"Operator: `{operator}`. Settings: {settings}. Took {took_s:.0f}s.", "",
        markdown_table(rows_for(results, alone)), "",
        *(["Bad canary detection (round lateness: each analysis round's seen time - the previous one's "
           "- interval, while the canary holds at 50%; revert latency: RolledBack seen - the breaching "
           "round's status time):", "", markdown_table(detections), ""] if detections else []),
        *(["Growth between successive N:", "", markdown_table(growth_rows(results)), ""]
          if len(results) > 1 else []),
        f"Targets at N={last.n}:", "",
        markdown_table([["figure", "target", "measured", "verdict"]]
                       + [[t.what, t.target, t.measured, verdict(t.passed)] for t in checks]),
        "",
    ])
    return section, checks


SCALE_HEADING = "## Scale"
SCALE_INTRO = """\
`hack/bench scale` (hack/benchmarks/scale.py; its docstring says how each figure is measured):
N ModelDeployments of 2 replicas on the local sandbox and one operator process with the
chart's default settings. Requests are the operator's own (user agents `modeldeploy-operator/`
and `kopf/`) from the sandbox's audit log; RSS and CPU from `/proc`. Each run appends a section.
"""


def write_markdown(path: Path, section: str) -> None:
    """Insert ``section`` at the end of the file's "## Scale" section (created if absent)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.rstrip("\n").split("\n")
    try:
        start = lines.index(SCALE_HEADING)
    except ValueError:
        lines += ["", SCALE_HEADING, "", *SCALE_INTRO.rstrip("\n").split("\n")]
        start = len(lines) - 1
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    new = [*lines[:end], "", *section.rstrip("\n").split("\n"), *([""] if end < len(lines) else []),
           *lines[end:]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(new) + "\n", encoding="utf-8")


def results_json(args: argparse.Namespace, results: list[NResult], alone: Detection | None, operator: str,
                 command: str, checks: list[Target], took_s: float) -> Manifest:
    def one(r: NResult) -> Manifest:
        rest = r.rest
        return {
            "n": r.n,
            "create_requests_s": r.create_s,
            "all_succeeded_s": r.all_succeeded_s,
            "succeeded_p50_s": r.succeeded_p50_s,
            "settled_before_rest": r.settled,
            "rest": None if rest is None else {
                **asdict(rest),
                "requests_per_md_min": rest.per_md_min,
                "reads_per_md_min": rest.per_md_min_of(rest.reads),
                "writes_per_md_min": rest.per_md_min_of(rest.writes),
                "watch_opens_per_md_min": rest.per_md_min_of(rest.watches),
            },
            "unrelated": {"count": args.unrelated, "rss_before_mb": r.rss_before_unrelated_mb,
                          "rss_after_mb": r.rss_after_unrelated_mb, "growth_mb": r.unrelated_mb},
            "spec_change_to_canary_s": {"values": r.canary_latencies_s, "p50": r.canary_p50,
                                        "p99": r.canary_p99},
            "change_all_to_succeeded_s": {"all": r.all_change_s, "p50": r.all_change_p50_s},
            "detection": None if r.detection is None else r.detection.as_json(alone),
        }

    return {
        "benchmark": "scale",
        "label": args.label,
        "command": command,
        "operator": operator,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "took_s": took_s,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "detection_alone": None if alone is None else alone.as_json(),
        "results": [one(r) for r in results],
        "targets": [asdict(t) for t in checks],
    }


# --------------------------------------------------------------------------- main


def save(args: argparse.Namespace, results: list[NResult], alone: Detection | None, operator: str,
         command: str, took_s: float, failed: str | None = None) -> None:
    """Print the report; write the JSON and (unless --no-markdown) the markdown section."""
    section, checks = report(args, results, alone, operator, command, took_s)
    if failed is not None:
        section += f"\nThe run stopped early: {failed.splitlines()[0]}\n"
    args.output.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.output / f"scale-{args.label + '-' if args.label else ''}{stamp}.json"
    body = results_json(args, results, alone, operator, command, checks, took_s)
    body["failed"] = failed
    out.write_text(json.dumps(body, indent=2) + "\n")
    print(f"\nresults: {out}")
    if not args.no_markdown:
        write_markdown(args.markdown, section)
        print(f"markdown: {args.markdown} (section 'Scale')")


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    command = shlex.join(["hack/bench", "scale", *raw])
    if prometheus_binary() is None and args.dir is None:
        print("hack/bench scale: Prometheus is not installed; run ./hack/setup", file=sys.stderr)
        return 1
    ours = args.dir is None
    workdir = (args.dir or Path(tempfile.mkdtemp(prefix="modeldeploy-bench-scale-"))).resolve()
    progress = Timeline(sys.stderr)
    started = time.monotonic()
    results: list[NResult] = []
    alone: Detection | None = None
    sandbox = Sandbox(workdir, scrape_interval=args.scrape_interval) if ours else None
    operator: ScaleOperator | None = None
    api: API | None = None
    failed: str | None = None
    code = 0
    try:
        if sandbox is not None:
            progress.say(f"starting a sandbox in {workdir} (scrape interval {args.scrape_interval}) ...")
            sandbox.start()
        else:
            sandbox = Sandbox.attach(workdir)
        if sandbox.prometheus_url is None or sandbox.fake_upstream_url is None:
            raise BenchError("the sandbox runs without Prometheus; the analysis needs it")
        kubectl(["apply", "-f", str(REPO_ROOT / "crds")], sandbox.kubeconfig)
        audit = AuditLog(workdir / "audit.log")
        api = API(sandbox.api_url)
        operator = ScaleOperator(sandbox.kubeconfig, workdir / "logs" / "operator-scale.log", audit,
                                 src=args.operator_src, command=args.operator_command)
        operator.start()
        progress.say(f"operator running (pid {operator.pid}): {operator.describe()}")
        bench = Bench(args, sandbox, operator, audit, api, progress)
        bench.ensure_gone(NAMESPACE, UNRELATED_NAMESPACE)
        if not args.skip_detection:
            alone = bench.detection("alone")
        for n in args.n:
            bench.run_n(n, results)
    except (BenchError, DemoError, SandboxError, httpx.HTTPError) as error:
        failed = str(error)
        code = 1
    except KeyboardInterrupt:
        failed = "interrupted"
        code = 130
    finally:
        if api is not None:
            api.close()
        if operator is not None:
            operator.stop()
        if ours and sandbox is not None:
            with contextlib.suppress(SandboxError):
                sandbox.stop()
        progress.close()
    if results and operator is not None:  # what was measured, even when a later step failed
        save(args, results, alone, operator.describe(), command, time.monotonic() - started, failed)
    if failed is not None:
        print(f"\nhack/bench scale failed: {failed}\n(the sandbox folder, with logs: {workdir})",
              file=sys.stderr)
    elif ours:
        shutil.rmtree(workdir, ignore_errors=True)  # a temp folder of ours; kept only on failure
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Manifests and observers shared by the analysis scenarios (issue 5).

Every scenario runs the real operator against the session sandbox, real model service
processes and a real Prometheus scraping them every second; the fake upstream's faults
(set per model at run time) make one track slow or failing. Analysis is sized for
speed: a 3 s interval (the rate windows use ``{{interval}}``), two replicas, short
bakes and small limits.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import subprocess
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from mdsandbox.prometheus import prometheus_binary
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from mdsandbox.traffic import Response
from operator_process import free_port, kubectl_apply
from operator_process import model_deployment as operator_model_deployment
from prometheus_client.parser import text_string_to_metric_families

JSON = dict[str, Any]
INTERVAL = "3s"
SONG_V1 = "ft:gpt-4o-mini-2024-07-18:acme:songs:v1"
SONG_V2 = "ft:gpt-4o-mini-2024-07-18:acme:songs:v2"
# Steps every scenario uses: half the traffic, then two passing rounds in a row, then all.
STEPS: list[JSON] = [{"setWeight": 50}, {"analysis": {"measurements": 2}}, {"setWeight": 100}]
# The gates of the song-analyzer preset (README, "Analysis"): each counts its own rounds.
SONG_ANALYZER_GATES = ("error-rate", "latency-p95", "cost-per-request")


def model_deployment(
    name: str,
    namespace: str,
    *,
    image: str,
    env: dict[str, str],
    analysis: JSON,
    bake_time: str = "1s",
    steps: list[JSON] | None = None,
) -> JSON:
    """A ModelDeployment of two replicas with the scenarios' steps and a 3 s analysis interval."""
    return operator_model_deployment(
        name, namespace, env=env, image=image,
        strategy={"canary": {"steps": steps if steps is not None else STEPS}},
        analysis={"interval": INTERVAL, **analysis},
        rollback={"automatic": True, "bakeTime": bake_time},
        progressDeadline="2m",
    )

def endpoints(sandbox: Sandbox, prometheus: str | None = None) -> tuple[str, str]:
    """The fake upstream's OpenAI base URL and the Prometheus to analyse with."""
    upstream, prometheus = sandbox.fake_upstream_url, prometheus or sandbox.prometheus_url
    assert upstream is not None and prometheus is not None, "the sandbox runs both"
    return upstream, prometheus


def song_analyzer(
    name: str,
    namespace: str,
    sandbox: Sandbox,
    *,
    model: str,
    tag: str,
    metrics: list[JSON] | None = None,
    bake_time: str = "1s",
    prometheus: str | None = None,
    steps: list[JSON] | None = None,
) -> JSON:
    upstream, prometheus = endpoints(sandbox, prometheus)
    env = {"LLM_API_BASE_URL": upstream, "OPENAI_API_KEY": "placeholder", "LLM_MODEL": model,
           "LLM_TIMEOUT": "10"}
    analysis: JSON = {"provider": {"prometheus": {"address": prometheus, "timeout": "2s"}},
                      "presets": ["song-analyzer"]}
    if metrics:
        analysis["metrics"] = metrics
    return model_deployment(name, namespace, image=f"modeldeploy/song-analyzer:{tag}", env=env,
                            analysis=analysis, bake_time=bake_time, steps=steps)


def image_gen(
    name: str,
    namespace: str,
    sandbox: Sandbox,
    *,
    model: str,
    tag: str,
    timeout_s: float,
    metrics: list[JSON] | None = None,
) -> JSON:
    upstream, prometheus = endpoints(sandbox)
    env = {"OPENAI_BASE_URL": upstream, "OPENAI_API_KEY": "placeholder", "IMAGE_MODEL": model,
           "IMAGE_TIMEOUT_S": f"{timeout_s:g}", "IMAGE_MAX_CONCURRENCY": "16"}
    analysis: JSON = {"provider": {"prometheus": {"address": prometheus, "timeout": "2s"}},
                      "presets": ["image-gen"]}
    if metrics:
        analysis["metrics"] = metrics
    return model_deployment(name, namespace, image=f"modeldeploy/image-gen:{tag}", env=env,
                            analysis=analysis)


def apply(manifest: JSON, sandbox: Sandbox) -> None:
    """``kubectl apply`` the manifest, as a user (or Argo CD) would."""
    kubectl_apply(manifest, Path(sandbox.kubeconfig))


def get_md(kube: KubeAPI, namespace: str, name: str) -> JSON:
    response = kube.http.get(
        f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments/{name}"
    )
    response.raise_for_status()
    body: JSON = dict(response.json())
    return body


def status_of(kube: KubeAPI, namespace: str, name: str) -> JSON:
    status: JSON = get_md(kube, namespace, name).get("status") or {}
    return status


def wait_status(
    kube: KubeAPI, namespace: str, name: str, predicate: Callable[[JSON], bool], *,
    what: str, timeout: float = 90,
) -> JSON:
    """Poll the resource's status until ``predicate`` holds; returns that status.

    On a timeout the error shows the last status's phase, message and analysis.
    """
    last: JSON = {}

    def check() -> JSON | None:
        nonlocal last
        last = status_of(kube, namespace, name)
        return last if predicate(last) else None

    try:
        return wait_until(check, timeout=timeout, what=f"{name}: {what}", interval=0.25)
    except AssertionError as error:
        summary = {k: last.get(k) for k in ("phase", "message", "analysis", "history")}
        raise AssertionError(f"{error}\nlast status: {summary}") from None


def wait_stable(kube: KubeAPI, namespace: str, name: str, timeout: float = 90) -> str:
    """Wait for phase Succeeded with no canary; returns the stable revision."""
    status = wait_status(
        kube, namespace, name,
        lambda s: s.get("phase") == "Succeeded" and not s.get("canaryRevision")
        and bool(s.get("stableRevision")),
        what="phase Succeeded", timeout=timeout,
    )
    return str(status["stableRevision"])


def wait_canary(kube: KubeAPI, namespace: str, name: str, stable: str, timeout: float = 60) -> str:
    """Wait until a canary revision other than ``stable`` is rolling out; returns it."""
    status = wait_status(
        kube, namespace, name,
        lambda s: bool(s.get("canaryRevision")) and s.get("stableRevision") == stable,
        what="a canary to start", timeout=timeout,
    )
    return str(status["canaryRevision"])


def wait_first_pass(kube: KubeAPI, namespace: str, name: str, step: int = 1,
                    timeout: float = 90) -> JSON:
    """Wait until the analysis step at index ``step`` has measured a passing round."""
    return wait_status(
        kube, namespace, name,
        lambda s: s.get("currentStep") == step and any(
            m["name"] == "error-rate" and m.get("consecutivePasses", 0) >= 1
            for m in s.get("analysis") or []),
        what="the analysis step's first passing round", timeout=timeout,
    )


class StatusTrail:
    """Every status read while waiting, so a test can check what held all along.

    Wrap a ``wait_status`` predicate: ``wait_status(..., trail.seeing(predicate), ...)``.
    """

    def __init__(self) -> None:
        self.statuses: list[JSON] = []

    def seeing(self, predicate: Callable[[JSON], bool]) -> Callable[[JSON], bool]:
        def check(status: JSON) -> bool:
            self.statuses.append(status)
            return predicate(status)
        return check

    def rounds(self, metric: str) -> list[JSON]:
        """Each distinct measurement of ``metric`` seen, oldest first (with the step it was
        seen in as ``step``)."""
        seen: dict[str, JSON] = {}
        for status in self.statuses:
            for measured in status.get("analysis") or []:
                if measured["name"] == metric and measured["time"] not in seen:
                    seen[measured["time"]] = {**measured, "step": status.get("currentStep")}
        return [seen[stamp] for stamp in sorted(seen)]


def assert_passes_counted_in_a_row(rounds: list[JSON]) -> None:
    """Each round of one gate within one step counts one pass more than the round before
    when it passed, and starts again from 0 when it did not: no round lost or counted
    twice (``rounds`` as :meth:`StatusTrail.rounds` gives them, all of one step).

    Rounds are ``INTERVAL`` apart at least; two stamps further apart than that may hold a
    round the poll did not see (a stalled test on a loaded machine), so a pass then counts
    at least once and at most once per interval in between.
    """
    interval = float(INTERVAL.removesuffix("s"))
    for before, after in pairwise(rounds):
        passes, earlier = after.get("consecutivePasses", 0), before.get("consecutivePasses", 0)
        gap = (parse_stamp(after["time"]) - parse_stamp(before["time"])).total_seconds()
        assert gap >= interval, f"{after['name']} measured {gap:g}s after {before}: before its interval"
        if after["verdict"] != "Pass":
            ok = passes == 0
        elif gap < 2 * interval:
            ok = passes == earlier + 1
        else:
            ok = 1 <= passes <= earlier + int(gap // interval)
        assert ok, (f"{after['name']} at {after['time']}: {after['verdict']} counted {passes} "
                    f"passes in a row after {before}")


def parse_stamp(text: str) -> dt.datetime:
    """A time as status writes it (RFC 3339, whole seconds, UTC)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def condition(status: JSON, type_: str) -> JSON:
    return next(c for c in status.get("conditions") or [] if c["type"] == type_)


def metric_status(status: JSON, name: str) -> JSON:
    return next(m for m in status.get("analysis") or [] if m["name"] == name)


def events_of(kube: KubeAPI, namespace: str, name: str) -> list[JSON]:
    return [
        e for e in kube.list("Event", namespace)
        if (e.get("involvedObject") or {}).get("kind") == "ModelDeployment"
        and (e.get("involvedObject") or {}).get("name") == name
    ]


def revision_of_pod(pod: str | None, name: str) -> str | None:
    """The revision a ``namespace/pod`` served by (pods are ``<name>-<revision>-<rs>-<id>``)."""
    if pod is None:
        return None
    pod_name = pod.split("/", 1)[-1]
    if not pod_name.startswith(f"{name}-"):
        return None
    return pod_name[len(name) + 1:].split("-", 1)[0]


def revisions_served(responses: list[Response], name: str) -> set[str | None]:
    return {revision_of_pod(r.pod, name) for r in responses}


def operator_metric(port: int, family: str, **labels: str) -> float:
    """The sum of the operator's own ``family`` samples whose labels include ``labels``."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = 0.0
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            if sample.name != family:
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


class OwnPrometheus:
    """A second real Prometheus on the sandbox's scrape configuration, stopped at will.

    Stopping the session sandbox's Prometheus would hurt every other test of the worker,
    so a scenario that takes Prometheus away runs this one (the same file-based discovery
    of the pods, so it scrapes them the same way) and points only its resource at it.
    It always listens on the same port, so the resource's provider address stays right
    across restarts; ``start(fresh_data=True)`` starts it on an empty data directory, as a
    Prometheus whose volume was lost.
    """

    def __init__(self, sandbox: Sandbox, workdir: Path) -> None:
        self.config = Path(sandbox.workdir) / "prometheus" / "prometheus.yml"
        self.workdir = workdir
        self.data = workdir / "prometheus-data"
        self.log = workdir / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.data_dirs = 1

    def start(self, fresh_data: bool = False) -> None:
        binary = prometheus_binary()
        assert binary is not None
        if fresh_data:
            self.data_dirs += 1
            self.data = self.workdir / f"prometheus-data-{self.data_dirs}"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.data}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_until(self._ready, timeout=60, what="our own Prometheus to be ready")

    def _ready(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, self.log.read_text(errors="replace")[-2000:]
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown), or SIGKILL with ``kill``: the port is free at once."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def __enter__(self) -> OwnPrometheus:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def report_detection(service: str, applied: dt.datetime, status: JSON) -> float:
    """Print how long a faulty revision lived, from its apply to the RolledBack condition's
    time (whole seconds; it includes the new pods' start-up): the README's table of the
    five services is read from these lines (``pytest -s``); no test asserts on them."""
    reverted_at = dt.datetime.fromisoformat(
        condition(status, "RolledBack")["lastTransitionTime"].replace("Z", "+00:00"))
    seconds = (reverted_at - applied).total_seconds()
    print(f"{service}: detection_seconds={seconds:.0f}")
    return seconds

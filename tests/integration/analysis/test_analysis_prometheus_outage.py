"""Prometheus gone mid-analysis: no promotion, a pause naming why, and on again when it returns.

Stopping the session sandbox's Prometheus would hurt every other test, so this test
runs its own real Prometheus with the sandbox's configuration (the same file-based
discovery of the pods, so it scrapes them the same way) and points only this resource
at it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from analysis_support import (
    SONG_V1,
    SONG_V2,
    apply,
    condition,
    song_analyzer,
    wait_canary,
    wait_stable,
    wait_status,
)
from mdsandbox.prometheus import prometheus_binary
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from mdsandbox.traffic import TrafficGenerator, song_request
from operator_process import OperatorProcess, free_port

pytestmark = pytest.mark.integration
NAME = "songs-outage"
STEPS = [{"setWeight": 50}, {"analysis": {"measurements": 4}}, {"setWeight": 100}]


class OwnPrometheus:
    """A second real Prometheus on the sandbox's scrape configuration, stopped at will."""

    def __init__(self, sandbox: Sandbox, workdir: Path) -> None:
        self.config = Path(sandbox.workdir) / "prometheus" / "prometheus.yml"
        self.data = workdir / "prometheus-data"
        self.log = workdir / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = prometheus_binary()
        assert binary is not None
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

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture
def own_prometheus(sandbox: Sandbox, tmp_path: Path) -> Iterator[OwnPrometheus]:
    prometheus = OwnPrometheus(sandbox, tmp_path)
    prometheus.start()
    try:
        yield prometheus
    finally:
        prometheus.stop()


def test_an_unreachable_prometheus_pauses_the_canary_with_the_reason_until_it_returns(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    own_prometheus: OwnPrometheus,
) -> None:
    def manifest(model: str, tag: str) -> dict[str, Any]:
        return song_analyzer(NAME, namespace, sandbox, prometheus=own_prometheus.url,
                             model=model, tag=tag, steps=STEPS)

    apply(manifest(SONG_V1, "1.0.0"), sandbox)
    stable = wait_stable(kube, namespace, NAME)
    url = sandbox.service_url(namespace, NAME) + "/analyze"

    with TrafficGenerator(url, body=song_request, rate=12, max_seconds=240, timeout_s=15):
        apply(manifest(SONG_V2, "1.1.0"), sandbox)
        canary = wait_canary(kube, namespace, NAME, stable)
        wait_status(
            kube, namespace, NAME,
            lambda s: s.get("currentStep") == 1 and any(
                m["name"] == "error-rate" and m.get("consecutivePasses", 0) >= 1
                for m in s.get("analysis") or []),
            what="the analysis step's first passing round", timeout=90,
        )
        own_prometheus.stop()
        paused = wait_status(kube, namespace, NAME, lambda s: s.get("phase") != "Progressing",
                             what="the rollout to stop progressing", timeout=90)
        assert paused["phase"] == "Paused", paused.get("message")
        own_prometheus.start()
        resumed = wait_status(
            kube, namespace, NAME,
            lambda s: s.get("stableRevision") == canary or s.get("phase") == "RolledBack",
            what="the canary promoted once Prometheus is back", timeout=120,
        )

    # Paused where it was, with the reason: inconclusive, Prometheus unreachable.
    assert paused["stableRevision"] == stable and paused["canaryRevision"] == canary
    assert paused["canaryWeight"] == 50 and paused["currentStep"] == 1
    message = paused["message"]
    assert "analysis inconclusive" in message, message
    assert f"Prometheus at {own_prometheus.url} unreachable" in message, message
    assert "inconclusiveLimit 3" in message, message
    assert condition(paused, "Degraded")["status"] == "False"
    assert condition(paused, "RolledBack")["status"] == "False"
    assert all(m["verdict"] == "Inconclusive" for m in paused["analysis"]), paused["analysis"]
    # And on again once it answers: the canary passed its analysis and was promoted.
    assert resumed["stableRevision"] == canary, resumed.get("message")
    assert resumed["history"][0]["outcome"] == "Promoted"
    assert "analysis conclusive again: resumed" in resumed["history"][0]["steps"]

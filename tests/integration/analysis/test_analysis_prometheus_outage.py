"""Prometheus gone mid-analysis: no promotion, a pause naming why, and on again when it returns.

Stopping the session sandbox's Prometheus would hurt every other test, so this test
runs its own real Prometheus (``analysis_support.OwnPrometheus``) and points only this
resource at it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from analysis_support import (
    SONG_V1,
    SONG_V2,
    OwnPrometheus,
    apply,
    condition,
    song_analyzer,
    wait_canary,
    wait_first_pass,
    wait_stable,
    wait_status,
)
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from mdsandbox.traffic import TrafficGenerator, song_request
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration
NAME = "songs-outage"
STEPS = [{"setWeight": 50}, {"analysis": {"measurements": 4}}, {"setWeight": 100}]


@pytest.fixture
def own_prometheus(sandbox: Sandbox, tmp_path: Path) -> Iterator[OwnPrometheus]:
    with OwnPrometheus(sandbox, tmp_path) as prometheus:
        yield prometheus


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
        wait_first_pass(kube, namespace, NAME)
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

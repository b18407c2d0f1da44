"""A latency check relative to stable: blames the canary for its own slowness, not the upstream's.

The control: the same check, the same slowness, but on the canary's model alone, fails
the analysis and reverts; so the promotion above is the relative check at work, not a
check that always passes.

At 100% stable serves nothing (its query has no data): the bake judges the canary
against the stable value measured before full promotion, so a bake longer than
(inconclusiveLimit + 1) intervals completes instead of pausing for good.
"""

from __future__ import annotations

from typing import Any

import pytest
from analysis_support import (
    SONG_V1,
    SONG_V2,
    apply,
    condition,
    metric_status,
    song_analyzer,
    wait_canary,
    wait_stable,
    wait_status,
)
from fakeupstream import FakeUpstreamClient
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from mdsandbox.traffic import TrafficGenerator, song_request
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration
JSON = dict[str, Any]
NAME = "songs-slow"
SLOW_S = 1.2
# latency-p95 judged against stable (the canary may be at most 2x as slow), replacing
# the bundle's absolute bound; an absolute "max 1" would fail every round below.
RELATIVE_LATENCY = [{"name": "latency-p95", "relativeToStable": {"maxRatio": 2.0}}]


def manifest(
    sandbox: Sandbox, namespace: str, model: str, tag: str, bake_time: str = "1s"
) -> dict[str, Any]:
    return song_analyzer(NAME, namespace, sandbox, model=model, tag=tag, metrics=RELATIVE_LATENCY,
                         bake_time=bake_time)


def deploy_v1(sandbox: Sandbox, kube: KubeAPI, namespace: str) -> str:
    """The first revision, stable; its revision."""
    apply(manifest(sandbox, namespace, SONG_V1, "1.0.0"), sandbox)
    return wait_stable(kube, namespace, NAME)


def test_a_canary_is_promoted_when_the_upstream_is_slow_for_both_tracks(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    stable = deploy_v1(sandbox, kube, namespace)
    for model in (SONG_V1, SONG_V2):
        upstream.set_fault(model, latency_s=SLOW_S)
    url = sandbox.service_url(namespace, NAME) + "/analyze"
    phases: set[str] = set()

    def seen(status: dict[str, object]) -> bool:
        phases.add(str(status.get("phase")))
        return True

    with TrafficGenerator(url, body=song_request, rate=8, concurrency=16, max_seconds=180,
                          timeout_s=15) as traffic:
        apply(manifest(sandbox, namespace, SONG_V2, "1.1.0"), sandbox)
        canary = wait_canary(kube, namespace, NAME, stable)
        both_slow = wait_status(
            kube, namespace, NAME,
            lambda s: seen(s) and any(
                m["name"] == "latency-p95" and m["verdict"] == "Pass"
                and (m.get("stableValue") or 0) >= 1.0 for m in s.get("analysis") or []
            ),
            what="a passing latency-p95 measurement against a slow stable", timeout=90,
        )
        done = wait_status(
            kube, namespace, NAME,
            lambda s: seen(s) and (s.get("stableRevision") == canary
                                   or s.get("phase") == "RolledBack"),
            what="the canary promoted", timeout=120,
        )
        responses = traffic.responses()

    latency = metric_status(both_slow, "latency-p95")
    assert latency["value"] >= SLOW_S and latency["stableValue"] >= SLOW_S
    assert latency["threshold"] == "<= 2x stable"
    assert "RolledBack" not in phases
    assert done["stableRevision"] == canary and done["history"][0]["outcome"] == "Promoted"
    # Slow, but every answer was a success.
    ok = [r for r in responses if r.ok]
    assert ok and len(ok) == len(responses), TrafficGenerator.statuses(responses)


def test_a_canary_slow_on_its_own_fails_the_same_relative_check(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    stable = deploy_v1(sandbox, kube, namespace)
    upstream.set_fault(SONG_V2, latency_s=SLOW_S)
    url = sandbox.service_url(namespace, NAME) + "/analyze"
    with TrafficGenerator(url, body=song_request, rate=8, concurrency=16, max_seconds=180,
                          timeout_s=15):
        apply(manifest(sandbox, namespace, SONG_V2, "1.1.0"), sandbox)
        canary = wait_canary(kube, namespace, NAME, stable)
        done = wait_status(
            kube, namespace, NAME,
            lambda s: s.get("phase") == "RolledBack" or s.get("stableRevision") == canary,
            what="the slow canary judged", timeout=120,
        )

    assert done["phase"] == "RolledBack", done.get("message")
    assert done["stableRevision"] == stable
    assert condition(done, "Degraded")["reason"] == "AnalysisFailed"
    assert "latency-p95" in done["message"] and "stable" in done["message"], done["message"]
    latency = metric_status(done, "latency-p95")
    assert latency["verdict"] == "Fail"
    assert latency["value"] >= SLOW_S > 2 * latency["stableValue"]


# inconclusiveLimit 3 at a 3 s interval: four inconclusive rounds (12 s) pause a rollout.
LONG_BAKE = "20s"


def test_a_bake_longer_than_the_inconclusive_limit_completes_against_the_stable_baseline(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    stable = deploy_v1(sandbox, kube, namespace)
    for model in (SONG_V1, SONG_V2):
        upstream.set_fault(model, latency_s=SLOW_S)  # a steady p95 on both tracks
    url = sandbox.service_url(namespace, NAME) + "/analyze"
    phases: set[str] = set()
    bake_rounds: dict[str, JSON] = {}

    def seen(status: JSON) -> bool:
        phases.add(str(status.get("phase")))
        latency = next((m for m in status.get("analysis") or [] if m["name"] == "latency-p95"),
                       None)
        if status.get("bakeUntil") and latency is not None:
            bake_rounds[latency["time"]] = latency
        return True

    with TrafficGenerator(url, body=song_request, rate=8, concurrency=16, max_seconds=240,
                          timeout_s=15):
        apply(manifest(sandbox, namespace, SONG_V2, "1.1.0", bake_time=LONG_BAKE), sandbox)
        canary = wait_canary(kube, namespace, NAME, stable)
        done = wait_status(
            kube, namespace, NAME,
            lambda s: seen(s) and (s.get("stableRevision") == canary
                                   or s.get("phase") in ("RolledBack", "Paused")),
            what="the bake to complete", timeout=180,
        )

    assert done["stableRevision"] == canary, done.get("message")
    assert done["history"][0]["outcome"] == "Promoted"
    assert "Paused" not in phases
    # Rounds during the bake judged the canary against stable's baseline, and passed.
    assert len(bake_rounds) >= 4, bake_rounds
    for latency in bake_rounds.values():
        assert latency["verdict"] == "Pass", latency
        assert latency["stableValue"] == latency["stableBaseline"] >= SLOW_S, latency

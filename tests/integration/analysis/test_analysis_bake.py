"""A breach that lasts during the bake after 100% reverts to the previous revision, kept warm."""

from __future__ import annotations

import time
from typing import Any

import pytest
from analysis_support import (
    SONG_V1,
    SONG_V2,
    apply,
    condition,
    revisions_served,
    song_analyzer,
    status_of,
    wait_canary,
    wait_stable,
    wait_status,
)
from fakeupstream import FakeUpstreamClient
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, is_ready, wait_until
from mdsandbox.traffic import Response, TrafficGenerator, song_request
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration
NAME = "songs-bake"


def test_a_breach_during_the_bake_reverts_to_the_warm_previous_revision(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    def manifest(model: str, tag: str) -> dict[str, Any]:
        return song_analyzer(NAME, namespace, sandbox, model=model, tag=tag,
                             bake_time="5m")

    apply(manifest(SONG_V1, "1.0.0"), sandbox)
    stable = wait_stable(kube, namespace, NAME)
    url = sandbox.service_url(namespace, NAME) + "/analyze"

    with TrafficGenerator(url, body=song_request, rate=12, max_seconds=180, timeout_s=15) as traffic:
        apply(manifest(SONG_V2, "1.1.0"), sandbox)
        canary = wait_canary(kube, namespace, NAME, stable)
        baking = wait_status(
            kube, namespace, NAME,
            lambda s: s.get("phase") == "Promoting" and bool(s.get("bakeUntil"))
            and s.get("canaryWeight") == 100,
            what="the canary at 100%, baking", timeout=90,
        )
        # During the bake the previous revision is kept at full size, ready, taking no traffic.
        wait_until(
            lambda: len([p for p in kube.list("Pod", namespace,
                                              f"modeldeploy.io/revision={stable}")
                         if is_ready(p)]) == 2,
            timeout=60, what="the previous revision's 2 pods ready during the bake",
        )
        assert status_of(kube, namespace, NAME)["phase"] == "Promoting"
        since = time.monotonic()

        def sent_during_bake() -> list[Response] | None:
            sent = [r for r in traffic.responses() if r.started > since]
            return sent if len(sent) >= 10 else None

        during_bake = wait_until(sent_during_bake, timeout=30, what="10 answers during the bake")
        upstream.set_fault(SONG_V2, malformed_rate=0.3)  # a 502 each, not retried
        status = wait_status(kube, namespace, NAME, lambda s: s.get("phase") != "Promoting",
                             what="the bake to end", timeout=60)

    assert baking["canaryRevision"] == canary and baking["stableRevision"] == stable
    assert revisions_served(during_bake, NAME) == {canary}  # the warm pods take no traffic
    assert status["phase"] == "RolledBack", status.get("message")
    assert status["stableRevision"] == stable and not status.get("canaryRevision")
    assert status["message"].startswith("rollback indicator uncached-error-rate = ")
    # Stable serves nothing during the bake, so only a breach that lasts three rounds reverts
    # (a provider's short burst would look the same in one window).
    assert "3 rounds in a row while stable serves no traffic" in status["message"]
    assert f"(revision {canary})" in status["message"]
    assert condition(status, "RolledBack")["status"] == "True"
    assert status["history"][0]["revision"] == canary
    assert status["history"][0]["outcome"] == "RolledBack"
    assert "bake 5m" in status["history"][0]["steps"]

    sample = TrafficGenerator(url, body=lambda n: song_request(50_000 + n), rate=20,
                              max_requests=30, timeout_s=15).run()
    assert all(r.ok for r in sample), TrafficGenerator.statuses(sample)
    assert revisions_served(sample, NAME) == {stable}

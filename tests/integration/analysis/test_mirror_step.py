"""A mirror step tries the canary on a copy of live traffic that no user sees.

song-analyzer behind a Gateway API HTTPRoute (the sandbox's data plane implements the
RequestMirror filter as Envoy does): the new revision's fine-tune fails half of its
answers. Under `mirror: {percent: 100}` it answers copies of every user request, its
rollback indicator breaches, and it is reverted before any user got one of its answers:
every answer users got came from a stable pod (``X-Sandbox-Pod``), all of them 200.
"""

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
    wait_canary,
    wait_stable,
    wait_status,
)
from bundle_support import gateway, http_route
from fakeupstream import FakeUpstreamClient
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from mdsandbox.traffic import TrafficGenerator, song_request
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration
NAME = "songs-mirror"
ROUTE = "songs-mirror-route"
STEPS = [{"mirror": {"percent": 100, "duration": "3m"}}, {"setWeight": 50}, {"setWeight": 100}]


def test_a_canary_failing_on_mirrored_traffic_is_reverted_before_it_served_a_user(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    def manifest(model: str, tag: str) -> dict[str, Any]:
        body = song_analyzer(NAME, namespace, sandbox, model=model, tag=tag, steps=STEPS)
        body["spec"]["strategy"]["canary"]["trafficRouting"] = {"gatewayAPI": {"httpRoute": ROUTE}}
        return body

    apply(gateway(namespace), sandbox)
    apply(http_route(NAME, namespace, ROUTE), sandbox)
    apply(manifest(SONG_V1, "1.0.0"), sandbox)
    stable = wait_stable(kube, namespace, NAME)
    upstream.set_fault(SONG_V2, malformed_rate=0.5)
    url = sandbox.route_url(namespace, ROUTE) + "/analyze"

    with TrafficGenerator(url, body=song_request, rate=12, max_seconds=240, timeout_s=15) as users:
        apply(manifest(SONG_V2, "1.1.0"), sandbox)
        canary = wait_canary(kube, namespace, NAME, stable)
        mirroring = wait_status(
            kube, namespace, NAME,
            lambda s: "mirroring 100% of requests" in (s.get("message") or ""),
            what="the mirror step in place", timeout=90)
        mirrored_from = time.monotonic()
        status = wait_status(kube, namespace, NAME, lambda s: s.get("phase") == "RolledBack",
                             what="phase RolledBack", timeout=120)
        reverted_at = time.monotonic()
        served = users.responses()

    assert mirroring["currentStep"] == 0
    assert condition(status, "Degraded")["reason"] == "RollbackIndicatorBreached", status["message"]
    assert f"(revision {canary})" in status["message"]
    # Reverted at the mirror step: it never took a share of users' traffic...
    assert not any(line.startswith("setWeight") for line in status["history"][0]["steps"]), \
        status["history"][0]
    # ...and no user ever got one of its answers, though it answered the copies (its
    # indicator was measured on them).
    answered = [r for r in served if r.status is not None]
    # Users were served while the canary answered their copies (the fast path may revert
    # within a few seconds of the mirror being in place, so a handful is what there is).
    assert any(mirrored_from <= r.started <= reverted_at for r in answered), \
        (mirrored_from, reverted_at, [r.started for r in answered][-5:])
    assert revisions_served(answered, NAME) == {stable}
    assert {r.status for r in answered} == {200}
    assert "uncached-error-rate" in status["message"]

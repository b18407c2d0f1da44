"""Rollback indicators are checked at the scrape interval, not only at analysis rounds.

The analysis interval here is a minute: the gates measure once a minute, as users run
them. The sandbox's Prometheus scrapes every second and says so in its targets API
(nothing in the spec declares it), so the indicators are also checked every second over
a 2 s window. A canary whose model starts failing half its answers after the first
round is reverted by the uncached-error-rate indicator within seconds, long before the next
gate round is due, and its status says the breach was found between rounds.

The control (the interval shortened to 20 s to keep it short): with
``indicatorMinRequests`` above what the short window holds, the checks between rounds never
act, and the same fault is reverted by the next gate round.

A fault stable shows too (an upstream outage, a burst of provider 429s) is not the
canary's: no rollback indicator reverts it, between rounds or at them; the gates count it,
and one that lasts fails them failureLimit + 1 rounds in a row.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from analysis_support import (
    SONG_V1,
    SONG_V2,
    apply,
    condition,
    metric_status,
    parse_stamp,
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
NAME = "songs-fast"
GATES = ("error-rate", "latency-p95", "cost-per-request")


def manifest(sandbox: Sandbox, namespace: str, model: str, tag: str, interval_s: int,
             min_requests: int) -> dict[str, Any]:
    md = song_analyzer(NAME, namespace, sandbox, model=model, tag=tag,
                       steps=[{"setWeight": 50}, {"pause": {}}])
    md["spec"]["analysis"]["interval"] = f"{interval_s}s"
    md["spec"]["analysis"]["indicatorMinRequests"] = min_requests
    return md


def held_at_half(kube: KubeAPI, namespace: str, stable: str) -> dict[str, Any]:
    """The canary's status once it holds at 50% and its first gate round is in."""
    wait_canary(kube, namespace, NAME, stable)
    return wait_status(
        kube, namespace, NAME,
        lambda s: s.get("canaryWeight") == 50 and s.get("currentStep") == 1
        and all(any(m["name"] == g and m.get("time") for m in s.get("analysis") or [])
                for g in GATES),
        what="the canary held at 50% after its first gate round", timeout=90,
    )


@pytest.mark.parametrize(("interval_s", "min_requests", "between_rounds"), [
    # 6 requests/s reach the canary: about 12 in a 2 s window, above a floor of 5.
    (60, 5, True),
    (20, 1000, False),
], ids=["checked between rounds", "too few requests for the short window"])
def test_a_breach_is_reverted_before_the_next_gate_round_is_due(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient, interval_s: int, min_requests: int, between_rounds: bool,
) -> None:
    def manifest_of(model: str, tag: str) -> dict[str, Any]:
        return manifest(sandbox, namespace, model, tag, interval_s, min_requests)

    apply(manifest_of(SONG_V1, "1.0.0"), sandbox)
    stable = wait_stable(kube, namespace, NAME)
    url = sandbox.service_url(namespace, NAME) + "/analyze"
    with TrafficGenerator(url, body=song_request, rate=12, max_seconds=180, timeout_s=15):
        apply(manifest_of(SONG_V2, "1.1.0"), sandbox)
        held = held_at_half(kube, namespace, stable)
        canary = held["canaryRevision"]
        first_round = {g: metric_status(held, g)["time"] for g in GATES}
        next_round_due = (max(parse_stamp(t) for t in first_round.values())
                          + dt.timedelta(seconds=interval_s))
        upstream.set_fault(SONG_V2, malformed_rate=0.5)
        status = wait_status(kube, namespace, NAME, lambda s: s.get("phase") == "RolledBack",
                             what="phase RolledBack", timeout=45)

    reverted = condition(status, "RolledBack")
    assert reverted["reason"] == "RollbackIndicatorBreached"
    message = status["message"]
    assert message.startswith("rollback indicator uncached-error-rate = "), message
    assert f"(revision {canary})" in message
    gate_times = {g: metric_status(status, g)["time"] for g in GATES}
    if between_rounds:
        assert parse_stamp(reverted["lastTransitionTime"]) < next_round_due
        assert "over the last 2s" in message and "checked between analysis rounds" in message
        # No gate round ran between the fault and the revert: the gates still show the first.
        assert gate_times == first_round
    else:
        assert parse_stamp(reverted["lastTransitionTime"]) >= next_round_due
        assert "between analysis rounds" not in message
        assert gate_times != first_round  # the round that reverted it measured the gates too
    indicator = metric_status(status, "uncached-error-rate (rollback indicator)")
    assert indicator["verdict"] == "Fail" and indicator["value"] > 0.05
    assert status["stableRevision"] == stable and status["history"][0]["outcome"] == "RolledBack"


def test_a_fault_stable_shows_too_is_judged_by_the_gates_not_the_indicators(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    def manifest_of(model: str, tag: str) -> dict[str, Any]:
        return manifest(sandbox, namespace, model, tag, interval_s=5, min_requests=5)

    apply(manifest_of(SONG_V1, "1.0.0"), sandbox)
    stable = wait_stable(kube, namespace, NAME)
    url = sandbox.service_url(namespace, NAME) + "/analyze"
    # 30 req/s: each track answers about 30 requests in the 2 s window, so a stable failing
    # half of them never shows as healthy by chance (at 12 req/s, 0 failures in 6 now and
    # then excused nothing and the canary's indicator reverted it).
    with TrafficGenerator(url, body=song_request, rate=30, max_seconds=180, timeout_s=15):
        apply(manifest_of(SONG_V2, "1.1.0"), sandbox)
        held_at_half(kube, namespace, stable)
        for model in (SONG_V1, SONG_V2):
            upstream.set_fault(model, malformed_rate=0.5)
        status = wait_status(kube, namespace, NAME, lambda s: s.get("phase") == "RolledBack",
                             what="phase RolledBack", timeout=90)

    reverted = condition(status, "RolledBack")
    assert reverted["reason"] == "AnalysisFailed", status["message"]
    assert status["message"].startswith("analysis failed: error-rate: "), status["message"]
    assert "failed 3 times in a row" in status["message"]
    indicator = metric_status(status, "uncached-error-rate (rollback indicator)")
    assert indicator["verdict"] == "Inconclusive" and indicator["value"] > 0.05
    assert "stable is troubled too" in indicator["message"], indicator

"""A Lease renewal that never finishes fails the liveness probe instead of hanging quietly.

The API server here is a real HTTP server (``hostile_http``): it lets the elector take the
Lease, then starts answering a byte at a time without ever finishing. Each read gets a
byte before its timeout, so only a deadline on the whole attempt ends the wait. The
elector gives up on the attempt, stops leading once its lease has passed, starts no second
request while the first still holds its thread, and stops beating: ``heartbeats.overdue()``
is what Kopf's liveness probe reports (``modeldeploy.handlers.heartbeats``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import kubernetes
import pytest
from hostile_http import hostile_server
from modeldeploy.kube.lease import HEARTBEAT, LeaderElector
from modeldeploy.liveness import Heartbeats

pytestmark = pytest.mark.integration
LEASE_SECONDS = 1


async def until(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Poll a condition under a deadline (the loop under test runs meanwhile)."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}") from None


def test_a_renewal_that_never_finishes_stops_the_heartbeat_and_the_leadership() -> None:
    with hostile_server("lease") as api:
        client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=api.url))
        beats = Heartbeats()
        elector = LeaderElector(client, "default", "modeldeploy-operator", "replica-a", LEASE_SECONDS,
                                heartbeats=beats)

        async def scenario() -> tuple[int, list[str]]:
            await elector.start()
            try:
                await until(lambda: elector.is_leader, "the elector to take the Lease")
                api.default = "trickle-headers"
                sent = len(api.requests)
                await until(lambda: not elector.is_leader, "the leader to stop leading")
                assert beats.overdue() == [], "a lease without renewal is not yet a stuck loop"
                await until(beats.overdue, "the leader election heartbeat to be overdue")
                return len(api.requests) - sent, beats.overdue()
            finally:
                await elector.stop()
                api.close()  # ends the trickle, and with it the request's thread

        requests_since, overdue = asyncio.run(scenario())
        client.close()

    assert [line.split(":")[0] for line in overdue] == [HEARTBEAT]
    assert requests_since <= 2, "no new attempt while one still holds its thread"

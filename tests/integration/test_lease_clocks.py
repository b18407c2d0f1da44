"""Leadership is kept on the monotonic clock: a wall clock that jumps changes nothing.

Against the sandbox's real API server (its Lease semantics: resourceVersion, 404, 409).
Each replica's clocks are given (``lease_clock.FakeClock``): its wall clock jumps an hour
back or forward while its monotonic clock goes on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from lease_clock import FakeClock
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from modeldeploy.kube.lease import LeaderElector

pytestmark = pytest.mark.integration
LEASE_SECONDS = 3
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def api_client(sandbox: Sandbox) -> Iterator[Any]:
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    yield client
    client.close()


def elector(api_client: Any, namespace: str, identity: str, clock: FakeClock) -> LeaderElector:
    return LeaderElector(api_client, namespace, "modeldeploy-operator", identity, LEASE_SECONDS, clock=clock)


def holder(kube: KubeAPI, namespace: str) -> str | None:
    lease = kube.http.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/modeldeploy-operator")
    return lease.json()["spec"].get("holderIdentity") if lease.status_code == 200 else None


def test_a_wall_clock_set_back_does_not_keep_a_leader_that_stopped_renewing(
    api_client: Any, namespace: str
) -> None:
    clock = FakeClock()
    leader = elector(api_client, namespace, "replica-a", clock)
    assert leader.try_acquire_or_renew() and leader.is_leader
    clock.set_wall(-HOUR)
    clock.advance(LEASE_SECONDS - 0.5)
    assert leader.is_leader, "within the lease since the renewal began"
    clock.advance(1)
    assert not leader.is_leader, "a lease after its last renewal it stops acting, whatever the wall says"


def test_a_wall_clock_set_forward_neither_ends_leadership_nor_lets_a_standby_in_early(
    api_client: Any, kube: KubeAPI, namespace: str
) -> None:
    leader_clock, standby_clock = FakeClock(), FakeClock()
    leader = elector(api_client, namespace, "replica-a", leader_clock)
    standby = elector(api_client, namespace, "replica-b", standby_clock)
    assert leader.try_acquire_or_renew()
    assert not standby.try_acquire_or_renew(), "the standby sees a live holder"

    leader_clock.set_wall(HOUR)
    assert leader.is_leader, "an hour on the wall clock is no time on the monotonic one"
    standby_clock.set_wall(HOUR)
    standby_clock.advance(1)
    assert not standby.try_acquire_or_renew(), "one second since it saw the Lease, not an hour"
    assert holder(kube, namespace) == "replica-a"

    # The leader renews (its renewTime an hour ahead: only people read it) and keeps leading.
    leader_clock.advance(1)
    assert leader.try_acquire_or_renew() and leader.is_leader
    standby_clock.advance(LEASE_SECONDS)
    assert not standby.try_acquire_or_renew(), "the renewal it saw starts its count again"
    assert holder(kube, namespace) == "replica-a"

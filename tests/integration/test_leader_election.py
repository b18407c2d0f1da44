"""Two operator replicas with leader election: one Lease holder acts; a dead leader is replaced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from operator_process import OperatorProcess, kubectl_apply

pytestmark = pytest.mark.integration
LEASE_SECONDS = 3


def _model_deployment(namespace: str, mark: str) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "elected", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "template": {"spec": {"containers": [{
                "name": "app", "image": "modeldeploy/fake-upstream:v1",
                "env": [{"name": "MARK", "value": mark}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1},
            }]}},
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"setWeight": 100}]}},
            "rollback": {"bakeTime": "1s"},
        },
    }


@pytest.fixture
def replicas(
    sandbox: Sandbox, crds_installed: None, namespace: str, tmp_path: Path
) -> Iterator[dict[str, OperatorProcess]]:
    env = {
        "MODELDEPLOY_LEADER_ELECTION": "true",
        "MODELDEPLOY_LEASE_SECONDS": str(LEASE_SECONDS),
        "POD_NAMESPACE": namespace,
    }
    processes = {
        identity: OperatorProcess(Path(sandbox.kubeconfig), tmp_path, name=identity,
                                  extra_env={**env, "POD_NAME": identity})
        for identity in ("replica-a", "replica-b")
    }
    for process in processes.values():
        process.start()
    try:
        yield processes
    finally:
        for process in processes.values():
            process.stop()


def _holder(kube: KubeAPI, namespace: str) -> str | None:
    response = kube.http.get(
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/modeldeploy-operator"
    )
    if response.status_code != 200:
        return None
    holder: str | None = response.json()["spec"].get("holderIdentity")
    return holder


def _phase(kube: KubeAPI, namespace: str) -> dict[str, Any]:
    response = kube.http.get(
        f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments/elected"
    )
    status: dict[str, Any] = response.json().get("status") or {}
    return status


def test_one_replica_leads_and_another_takes_over_when_it_dies(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, replicas: dict[str, OperatorProcess]
) -> None:
    kubeconfig = Path(sandbox.kubeconfig)
    leader = wait_until(lambda: _holder(kube, namespace), timeout=30, what="a replica to take the Lease")
    assert leader in replicas

    kubectl_apply(_model_deployment(namespace, "1"), kubeconfig)
    first = wait_until(lambda: (s := _phase(kube, namespace)).get("phase") == "Succeeded" and s,
                       timeout=60, what="the first deployment under the leader")

    replicas[leader].kill()
    survivor = next(identity for identity in replicas if identity != leader)
    wait_until(lambda: _holder(kube, namespace) == survivor, timeout=5 * LEASE_SECONDS + 10,
               what=f"{survivor} to take over the Lease from the dead leader")

    kubectl_apply(_model_deployment(namespace, "2"), kubeconfig)
    second = wait_until(
        lambda: (s := _phase(kube, namespace)).get("phase") == "Succeeded"
        and s.get("stableRevision") != first["stableRevision"] and s,
        timeout=90, what="the new leader to roll out the next revision",
    )
    assert [entry["outcome"] for entry in second["history"][:2]] == ["Promoted", "Promoted"]


@pytest.fixture
def api_client(sandbox: Sandbox) -> Iterator[Any]:
    """A kubernetes client of the sandbox's API server, from its kubeconfig."""
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    yield client
    client.close()


def test_expiry_is_measured_on_the_candidates_own_clock(
    kube: KubeAPI, namespace: str, api_client: Any
) -> None:
    """The Lease's election against the real API server, with each replica's clock given.

    A candidate whose clock runs an hour ahead of the leader's must not read the leader's
    ``renewTime`` as stale: it takes over only once it has itself seen the Lease unchanged
    for a full lease, and the old leader then stands down.
    """
    import datetime as dt

    from lease_clock import FakeClock
    from modeldeploy.kube.lease import LeaderElector

    leader_clock = FakeClock()
    candidate_clock = FakeClock(leader_clock.wall() + dt.timedelta(hours=1))  # an hour ahead

    def elector(identity: str, clock: FakeClock) -> LeaderElector:
        return LeaderElector(api_client, namespace, "modeldeploy-operator", identity, LEASE_SECONDS,
                             clock=clock)

    leader, candidate = elector("replica-a", leader_clock), elector("replica-b", candidate_clock)

    assert leader.try_acquire_or_renew(), "a missing Lease is created by the first replica"
    assert _holder(kube, namespace) == "replica-a"
    assert not candidate.try_acquire_or_renew(), "an hour-old renewTime is not a dead leader"
    leader_clock.advance(1)
    assert leader.try_acquire_or_renew(), "the leader renews"
    candidate_clock.advance(LEASE_SECONDS + 1)
    assert not candidate.try_acquire_or_renew(), "a renewal seen since resets the candidate's count"
    candidate_clock.advance(LEASE_SECONDS - 1)
    assert not candidate.try_acquire_or_renew(), (
        "not yet a full lease since the candidate saw the renewal"
    )
    candidate_clock.advance(1)
    assert candidate.try_acquire_or_renew(), (
        "the Lease went a full lease without renewal, on the candidate's clock: taken over"
    )
    assert _holder(kube, namespace) == "replica-b"
    leader_clock.advance(1)
    assert not leader.try_acquire_or_renew(), "the old leader stands down"
    assert not leader.is_leader

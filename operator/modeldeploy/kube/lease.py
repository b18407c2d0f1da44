"""Leader election on a coordination.k8s.io/v1 Lease, for running several operator replicas.

Kopf's peering pauses lower-priority peers but is not leader election: two operators
with the same priority both stop, and a crashed peer is noticed only after its
lifetime. So with MODELDEPLOY_LEADER_ELECTION=true every replica competes for one
Lease, the way client-go's leaderelection does it:

- a replica that holds the Lease renews it every ``lease_seconds / 3``;
- a replica takes the Lease when it is missing, or when its holder has not renewed it
  for ``lease_seconds`` (the holder died); every write carries the resourceVersion read,
  so of two replicas racing for an expired Lease exactly one wins (the other gets 409);
- "not renewed for lease_seconds" is measured on this replica's own clock, from when
  it last *saw* the Lease change (as client-go does), never by comparing the holder's
  ``renewTime`` with the local clock: clocks that disagree between nodes cannot make
  two leaders. So a replica that starts beside a live leader waits one full lease
  before it may take an abandoned Lease;
- a leader that fails to renew within ``lease_seconds`` stops acting on its own, before
  anyone else may take over, so two leaders never act at once.

Only the leader ticks ModelDeployments; the others keep watching (cheap) so they can
take over at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import kubernetes
from kubernetes.client import ApiClient, ApiException

log = logging.getLogger("modeldeploy.lease")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _micro(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self, api_client: ApiClient, namespace: str, name: str, identity: str, lease_seconds: int = 15
    ) -> None:
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self._renewed_at: dt.datetime | None = None
        # The Lease as last read (holder, renewTime, resourceVersion) and when, locally.
        self._observed: tuple[tuple[Any, ...], dt.datetime] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        """True while our last successful renewal is younger than the lease."""
        renewed = self._renewed_at
        return renewed is not None and _now() - renewed < dt.timedelta(seconds=self.lease_seconds)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="modeldeploy-leader-election")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.try_acquire_or_renew)
            except Exception:  # an API hiccup: keep trying; is_leader lapses on its own
                log.exception("leader election: could not read or write Lease %s/%s",
                              self.namespace, self.name)
            await asyncio.sleep(self.lease_seconds / 3)

    def try_acquire_or_renew(self, now: dt.datetime | None = None) -> bool:
        """One attempt; True when we hold the Lease afterwards (``now``: the local clock)."""
        now = now or _now()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": _micro(now),
        }
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": _micro(now), "leaseTransitions": 0},
            }
            return self._write(lambda: self._api.create_namespaced_lease(self.namespace, body), now)
        holder = lease.spec.holder_identity
        record = (holder, lease.spec.renew_time, lease.metadata.resource_version)
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, now)
        duration = lease.spec.lease_duration_seconds or self.lease_seconds
        expired = not holder or now - self._observed[1] >= dt.timedelta(seconds=duration)
        if holder != self.identity and not expired:
            self._renewed_at = None
            return False
        body = self._api.api_client.sanitize_for_serialization(lease)
        if holder != self.identity:
            log.info("leader election: taking over Lease %s/%s from %s", self.namespace, self.name, holder)
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = (lease.spec.lease_transitions or 0) + 1
        body["spec"] = {**body.get("spec", {}), **spec}
        return self._write(
            lambda: self._api.replace_namespaced_lease(self.name, self.namespace, body), now
        )

    def _write(self, call: Any, now: dt.datetime) -> bool:
        try:
            call()
        except ApiException as error:
            if error.status in (409, 422):  # another replica won the race
                self._renewed_at = None
                return False
            raise
        self._renewed_at = now
        return True

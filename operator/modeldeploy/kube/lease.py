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
  anyone else may take over, so two leaders never act at once;
- both local views (since when we hold it, since when we saw it unchanged) are kept on
  the monotonic clock, as client-go does: a wall clock set back cannot keep a replica
  leader after it stopped renewing, and one set forward cannot let a standby take over
  early. The wall clock only stamps ``renewTime``/``acquireTime`` for people to read;
- every attempt has a deadline (two thirds of the lease, client-go's renew deadline,
  for each request and for the attempt): an API server that stops answering costs a
  failed attempt, never a hung loop. A new attempt starts only once the previous one
  has finished, so a request that outlives its deadline holds one thread, not one per
  period, and the ``leader election`` heartbeat (``modeldeploy.liveness``) stops: the
  liveness probe fails and the kubelet restarts the replica.

Only the leader ticks ModelDeployments; the others keep watching (cheap) so they can
take over at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any, Protocol

import kubernetes
from kubernetes.client import ApiClient, ApiException

from modeldeploy.liveness import Heartbeats

log = logging.getLogger("modeldeploy.lease")
HEARTBEAT = "leader election"


class Clock(Protocol):
    """The two clocks of an elector: monotonic for its own view, wall for the Lease's stamps."""

    def monotonic(self) -> float: ...

    def wall(self) -> dt.datetime: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


def _micro(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api_client: ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        *,
        clock: Clock | None = None,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        # client-go's RenewDeadline (10 s of a 15 s lease): each request and each attempt.
        self.attempt_deadline = lease_seconds * 2 / 3
        self._clock = clock or SystemClock()
        self._heartbeats = heartbeats or Heartbeats()
        # Monotonic: when the attempt that last renewed (or took) the Lease began.
        self._renewed_at: float | None = None
        # The Lease as last read (holder, renewTime, resourceVersion), and since when
        # (monotonic) it has looked like that.
        self._observed: tuple[tuple[Any, ...], float] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        """True while our last successful renewal began less than a lease ago (monotonic)."""
        renewed = self._renewed_at
        return renewed is not None and self._clock.monotonic() - renewed < self.lease_seconds

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="modeldeploy-leader-election")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._heartbeats.stop(HEARTBEAT)

    async def _run(self) -> None:
        # A loop that finishes an attempt at least every lease is healthy; three leases
        # without one is a stuck renewal.
        self._heartbeats.beat(HEARTBEAT, 3 * self.lease_seconds)
        attempt: asyncio.Future[bool] | None = None
        while True:
            if attempt is None:
                attempt = asyncio.ensure_future(asyncio.to_thread(self.try_acquire_or_renew))
            await asyncio.wait({attempt}, timeout=self.attempt_deadline)
            if attempt.done():
                error = attempt.exception()
                if error is not None:  # an API hiccup: keep trying; is_leader lapses on its own
                    log.error("leader election: could not read or write Lease %s/%s",
                              self.namespace, self.name, exc_info=error)
                self._heartbeats.beat(HEARTBEAT, 3 * self.lease_seconds)
                attempt = None
            else:
                log.warning("leader election: no answer about Lease %s/%s within %.1fs",
                            self.namespace, self.name, self.attempt_deadline)
            await asyncio.sleep(self.lease_seconds / 3)

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards."""
        started = self._clock.monotonic()
        stamp = _micro(self._clock.wall())
        timeout = (self.attempt_deadline, self.attempt_deadline)  # (connect, read)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": stamp,
        }
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout)
        except ApiException as error:
            if error.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": stamp, "leaseTransitions": 0},
            }
            return self._write(lambda: self._api.create_namespaced_lease(
                self.namespace, body, _request_timeout=timeout), started)
        holder = lease.spec.holder_identity
        record = (holder, lease.spec.renew_time, lease.metadata.resource_version)
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, started)
        duration = lease.spec.lease_duration_seconds or self.lease_seconds
        expired = not holder or started - self._observed[1] >= duration
        if holder != self.identity and not expired:
            self._renewed_at = None
            return False
        body = self._api.api_client.sanitize_for_serialization(lease)
        if holder != self.identity:
            log.info("leader election: taking over Lease %s/%s from %s", self.namespace, self.name, holder)
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = (lease.spec.lease_transitions or 0) + 1
        body["spec"] = {**body.get("spec", {}), **spec}
        return self._write(lambda: self._api.replace_namespaced_lease(
            self.name, self.namespace, body, _request_timeout=timeout), started)

    def _write(self, call: Any, started: float) -> bool:
        try:
            call()
        except ApiException as error:
            if error.status in (409, 422):  # another replica won the race
                self._renewed_at = None
                return False
            raise
        # Counted from before the read, never from the answer: the local lease ends no
        # later than the one the others count from when they see our write.
        self._renewed_at = started
        return True

"""Kopf handlers: small, settings in one startup handler, state in the resource's status.

Kopf runs the process: settings, start-up and clean-up, signals, the liveness endpoint.
The watching is the controller's own (modeldeploy.kube.cache): Kopf's watches filter
labels on the client, so a Kopf handler on Deployments would stream every Deployment of
the cluster into the operator; the controller's informers select by label on the server.

Why no Kopf timer or daemon: Kopf blocks deletion of a resource with a finalizer while
a timer or daemon runs for it, and nothing a ModelDeployment owns needs cleaning beyond
what ownerReferences already garbage-collect. No finalizer is ever added.

Liveness: Kopf's endpoint (``--liveness``, set by the chart) answers with the results of
the ``@kopf.on.probe`` handlers. :func:`heartbeats` fails while a loop of the operator is
stuck (``modeldeploy.liveness``): a tick running for 10 minutes, a silent scheduling loop,
a Lease renewal that stopped finishing. Kopf then answers 500 and the kubelet restarts
the container; the new process resumes every rollout from its status.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from modeldeploy import metrics
from modeldeploy.controller import OperatorConfig, RolloutController
from modeldeploy.kube.client import load_api_client
from modeldeploy.kube.lease import LeaderElector
from modeldeploy.liveness import Heartbeats
from modeldeploy.providers import ALLOWED_ADDRESSES_ENV

log = logging.getLogger("modeldeploy.handlers")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorConfig.from_env()
    # Kopf watches nothing here; its own requests (none at run time) get a deadline too.
    # The controller's watches end on config.watch_server_timeout (stalled watch streams
    # are a known failure) and are re-established from the last version seen.
    settings.networking.request_timeout = 60
    # The controller posts its own Events (one per phase change); Kopf's would be noise.
    settings.posting.enabled = False
    # Kopf's peering pauses operators by priority; it is not leader election. Kopf runs
    # standalone, and several replicas elect one leader on a Lease (below).
    settings.peering.standalone = True
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # httpx logs each request's URL at INFO; a webhook URL read from a Secret often carries
    # a token, and modeldeploy.notify logs the webhook's name instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if config.metrics_port is not None:
        metrics.serve(config.metrics_port)
    if config.allowed_provider_addresses is None:
        log.warning("%s is not set: analysis may query (and send tokens to) any provider address",
                    ALLOWED_ADDRESSES_ENV)
    api_client = load_api_client()
    heartbeats = Heartbeats()
    memo.elector = None
    if config.leader_election:
        # Several replicas: one Lease decides who acts (see modeldeploy.kube.lease).
        memo.elector = LeaderElector(
            api_client, config.lease_namespace, config.lease_name, config.identity, config.lease_seconds,
            heartbeats=heartbeats,
        )
        await memo.elector.start()
    is_leader = (lambda: memo.elector.is_leader) if memo.elector else (lambda: True)
    memo.controller = RolloutController(api_client, config, is_leader=is_leader, heartbeats=heartbeats)
    await memo.controller.start()
    memo.heartbeats = heartbeats  # from here on, the liveness probe checks them


@kopf.on.probe(id="heartbeats")
async def heartbeats(memo: kopf.Memo, **_: Any) -> dict[str, float]:
    """Seconds since each loop's last heartbeat; fails (Kopf answers 500) when one is overdue."""
    beats: Heartbeats | None = memo.get("heartbeats")
    if beats is None:
        return {}  # still starting: Kopf runs the probes while the startup handler waits
    overdue = beats.overdue()
    if overdue:
        raise kopf.PermanentError("stuck: " + "; ".join(overdue))
    return beats.silence()


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    await memo.controller.stop()
    if memo.elector is not None:
        await memo.elector.stop()

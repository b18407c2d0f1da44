"""Kopf handlers: small, settings in one startup handler, state in the resource's status.

Why no Kopf timer or daemon: Kopf blocks deletion of a resource with a finalizer while
a timer or daemon runs for it, and nothing a ModelDeployment owns needs cleaning beyond
what ownerReferences already garbage-collect. So watch events only *wake* the
controller (modeldeploy.controller), which ticks each resource on its own schedule in
one operator-level task; no finalizer is ever added.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from modeldeploy import metrics
from modeldeploy import spec as s
from modeldeploy.controller import OperatorConfig, RolloutController
from modeldeploy.kube.client import KubeClient, load_api_client
from modeldeploy.kube.lease import LeaderElector


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorConfig.from_env()
    # Stalled watch streams are a known failure: make the server end them, and the
    # client give up a little later, so every watch is re-established regularly.
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_server_timeout + 30
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # The controller posts its own Events (one per phase change); Kopf's would be noise.
    settings.posting.enabled = False
    # Kopf's peering pauses operators by priority; it is not leader election. Kopf runs
    # standalone, and several replicas elect one leader on a Lease (below).
    settings.peering.standalone = True
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if config.metrics_port is not None:
        metrics.serve(config.metrics_port)
    api_client = load_api_client()
    memo.elector = None
    if config.leader_election:
        # Several replicas: one Lease decides who acts (see modeldeploy.kube.lease).
        memo.elector = LeaderElector(
            api_client, config.lease_namespace, config.lease_name, config.identity, config.lease_seconds
        )
        await memo.elector.start()
    is_leader = (lambda: memo.elector.is_leader) if memo.elector else (lambda: True)
    memo.controller = RolloutController(KubeClient(api_client), config, is_leader=is_leader)
    await memo.controller.start()


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    await memo.controller.stop()
    if memo.elector is not None:
        await memo.elector.stop()


@kopf.on.event(s.GROUP, s.VERSION, s.PLURAL)
async def model_deployment_changed(
    type: str, name: str, namespace: str | None, memo: Any, **_: Any
) -> None:
    memo.controller.notice(namespace or "default", name, gone=type == "DELETED")


@kopf.on.event("apps", "v1", "deployments", labels={s.LABEL_NAME: kopf.PRESENT})
async def owned_deployment_changed(
    labels: kopf.Labels, namespace: str | None, memo: Any, **_: Any
) -> None:
    # A canary becoming ready is what most steps wait for: tick its owner now.
    memo.controller.notice(namespace or "default", labels[s.LABEL_NAME], gone=False)

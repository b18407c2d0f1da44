"""The default router: one Service over every revision's pods, so the pod ratio is the split.

Setting a weight is the engine's scaling of the two Deployments; this router only
reports the READY pods per track among those the Service selects, which is what the
Service really spreads requests over. The engine compares those counts with the pod
counts it planned: no percentage is rounded on either side. A Service never mirrors, so
what it serves always has ``mirror`` 0.
"""

from __future__ import annotations

from typing import ClassVar

from modeldeploy import spec as s
from modeldeploy.engine.observations import Served, ServedSplit, Unverified
from modeldeploy.engine.routers import REPLICAS_ROUTER, RouterCapabilities
from modeldeploy.kube import objects
from modeldeploy.kube.client import KubeClient
from modeldeploy.routing import register


def ready_replicas(deployments: list[dict[str, object]], name: str) -> int:
    for deployment in deployments:
        meta = deployment.get("metadata")
        status = deployment.get("status")
        if isinstance(meta, dict) and meta.get("name") == name and isinstance(status, dict):
            value = status.get("readyReplicas") or 0
            return int(value) if isinstance(value, int) else 0
    return 0


@register
class ReplicasRouter:
    capabilities: ClassVar[RouterCapabilities] = REPLICAS_ROUTER

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    async def set_weight(
        self, md: s.ModelDeployment, stable: str, canary: str | None, weight: int,
        *, mirror_percent: int = 0,
    ) -> None:
        """Nothing to set: the engine's scaling of the two Deployments is the weight. A
        Service cannot copy requests, so ``mirror_percent`` is ignored (the engine refuses
        a mirror step with this router)."""

    async def served(self, md: s.ModelDeployment, stable: str, canary: str | None) -> Served:
        """The READY pods per track that the Service selects now (never mirroring)."""
        namespace, name = md.metadata.namespace, md.metadata.name
        selector = self._kube.get_service_selector(namespace, name)
        if selector is None:
            return Unverified(f"the Service {name} to exist")
        narrowed = selector.get(s.LABEL_REVISION)
        deployments = self._kube.list_deployments(namespace, name)

        def behind_service(revision: str | None) -> int:
            if revision is None or narrowed not in (None, revision):
                return 0  # not selected: a Service narrowed to the other revision
            return ready_replicas(deployments, objects.deployment_name(name, revision))

        return ServedSplit(canary=behind_service(canary), stable=behind_service(stable))

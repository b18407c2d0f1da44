"""The default router: one Service over every revision's pods, so the pod ratio is the split.

Setting a weight is the engine's scaling of the two Deployments; this router only reads
back the ratio of READY pods, which is what the Service really spreads requests over.
"""

from __future__ import annotations

from modeldeploy import spec as s
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


def served_share(stable_ready: int, canary_ready: int) -> int | None:
    """Percent of requests the canary gets from a Service spreading over ready pods."""
    total = stable_ready + canary_ready
    if total == 0:
        return None
    return round(100 * canary_ready / total)


class ReplicasRouter:
    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    async def set_weight(
        self, md: s.ModelDeployment, stable: str, canary: str | None, weight: int
    ) -> None:
        """Nothing to set: the engine's scaling of the two Deployments is the weight."""

    async def served_weight(
        self, md: s.ModelDeployment, stable: str, canary: str | None
    ) -> int | None:
        """The canary's share among the READY pods the Service selects now."""
        namespace, name = md.metadata.namespace, md.metadata.name
        selector = self._kube.get_service_selector(namespace, name)
        if selector is None:
            return None
        narrowed = selector.get(s.LABEL_REVISION)
        if narrowed is not None:  # the Service selects one revision alone (e.g. at 100%)
            return 100 if narrowed == canary else 0
        if canary is None:
            return 0
        deployments = self._kube.list_deployments(namespace, name)
        stable_ready = ready_replicas(deployments, objects.deployment_name(name, stable))
        canary_ready = ready_replicas(deployments, objects.deployment_name(name, canary))
        return served_share(stable_ready, canary_ready)


register("replicas")(ReplicasRouter)

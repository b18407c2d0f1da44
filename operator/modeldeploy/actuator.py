"""Apply the engine's actions through the adapters, in the order the engine gives them.

Every action says what should exist; the kube client writes only what differs from its
cache, so applying a decision at rest sends nothing.
"""

from __future__ import annotations

from modeldeploy import engine
from modeldeploy import spec as s
from modeldeploy.kube import objects
from modeldeploy.kube.client import KubeClient, NotOurs
from modeldeploy.routing import router_for


async def apply_actions(
    kube: KubeClient, md: s.ModelDeployment, actions: list[engine.Action]
) -> list[NotOurs]:
    """Apply every action; an object of someone else's in the way is skipped and returned."""
    conflicts: list[NotOurs] = []
    for action in actions:
        try:
            await _apply(kube, md, action)
        except NotOurs as conflict:
            conflicts.append(conflict)
    return conflicts


async def _apply(kube: KubeClient, md: s.ModelDeployment, action: engine.Action) -> None:
    namespace, name = md.metadata.namespace, md.metadata.name
    match action:
        case engine.EnsureConfigMap(revision=revision):
            await kube.apply(objects.configmap(md, revision))
        case engine.EnsureDeployment(revision=revision, track=track, replicas=replicas):
            await kube.apply(objects.deployment(md, revision, track, replicas))
            # The track moves (canary -> stable) without touching the template.
            await kube.label_pods(namespace, name, revision, {s.LABEL_TRACK: track})
        case engine.ScaleDeployment(revision=revision, replicas=replicas):
            await kube.scale_deployment(
                namespace, name, objects.deployment_name(name, revision), replicas)
        case engine.DeleteDeployment(revision=revision):
            await kube.delete("Deployment", namespace, name, objects.deployment_name(name, revision))
            await kube.delete("ConfigMap", namespace, name, objects.configmap_name(name, revision))
        case engine.EnsureService(revision=revision):
            await kube.apply(objects.service(md, name, revision))
        case engine.EnsurePreviewService(revision=revision):
            await kube.apply(objects.service(md, objects.preview_service_name(md), revision))
        case engine.SetTrafficWeight(stable_revision=stable, canary_revision=canary, weight=w):
            await router_for(md, kube).set_weight(md, stable, canary, w)
        case engine.EmitEvent():
            pass  # posted after the status write, so a lost write posts nothing

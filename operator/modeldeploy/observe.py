"""What the engine sees of the cluster, built from the cached objects a ModelDeployment owns."""

from __future__ import annotations

from typing import Any

from modeldeploy import engine
from modeldeploy import spec as s

Manifest = dict[str, Any]

# A container waiting for one of these reasons will not become ready by itself.
STUCK_REASONS = {"CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff",
                 "CreateContainerConfigError", "RunContainerError"}


def not_ready_reason(pods: list[Manifest]) -> str | None:
    """Why pods of a revision are not ready, in the words the cluster used."""
    for pod in pods:
        status = pod.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return f"{condition.get('reason', 'Unschedulable')}: {condition.get('message', '')}".strip()
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                return f"{waiting['reason']}: {waiting.get('message', '')}".strip().rstrip(":")
    return None


def observe_deployments(
    deployments: list[Manifest], pods: list[Manifest]
) -> dict[str, engine.DeploymentObservation]:
    observed: dict[str, engine.DeploymentObservation] = {}
    for deployment in deployments:
        labels = deployment["metadata"].get("labels") or {}
        revision = labels.get(s.LABEL_REVISION)
        if not revision:
            continue
        status = deployment.get("status") or {}
        revision_pods = [
            p for p in pods if (p["metadata"].get("labels") or {}).get(s.LABEL_REVISION) == revision
        ]
        observed[revision] = engine.DeploymentObservation(
            revision=revision,
            track=labels.get(s.LABEL_TRACK, "canary"),
            desired_replicas=int((deployment.get("spec") or {}).get("replicas") or 0),
            ready_replicas=int(status.get("readyReplicas") or 0),
            updated_replicas=int(status.get("updatedReplicas") or 0),
            available_replicas=int(status.get("availableReplicas") or 0),
            not_ready_reason=not_ready_reason(revision_pods),
        )
    return observed

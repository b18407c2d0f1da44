"""Apply the engine's actions through the adapters, in the order the engine gives them.

Every action says what should exist; the kube client writes only what differs from its
cache, so applying a decision at rest sends nothing.

Two things can stop an action, and both are reported rather than only logged:

- an object of someone else's in the way (``NotOurs``): skipped, the next actions
  still run (they touch other objects), and the controller reports the conflict;
- the API server refusing the action (an admission webhook, a quota, validation: a
  4xx), failing it (5xx), or not answering within the call's deadline: the actions
  after it are not tried (they may depend on it: no weight on a canary that was never
  created), and the failure is returned for the status (condition ``ActionFailed``
  with the server's message) and the back-off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import urllib3
from kubernetes.client import ApiException

from modeldeploy import engine
from modeldeploy import spec as s
from modeldeploy.kube import objects
from modeldeploy.kube.client import KubeClient, NotOurs
from modeldeploy.routing import router_for


@dataclass(frozen=True)
class ActionFailure:
    """An action the API server refused, failed or did not answer; nothing after it ran."""

    reason: str  # the API server's reason (Forbidden, Invalid, ...), or Timeout/Unreachable
    message: str  # what was being done, and the server's answer


@dataclass(frozen=True)
class Applied:
    conflicts: list[NotOurs]
    failure: ActionFailure | None


async def apply_actions(
    kube: KubeClient, md: s.ModelDeployment, actions: list[engine.Action]
) -> Applied:
    """Apply the actions in order, up to the first one that fails."""
    conflicts: list[NotOurs] = []
    for action in actions:
        try:
            await _apply(kube, md, action)
        except NotOurs as conflict:
            conflicts.append(conflict)
        except (ApiException, TimeoutError, urllib3.exceptions.HTTPError, OSError) as error:
            return Applied(conflicts, _failure(md, action, error))
    return Applied(conflicts, None)


def _failure(md: s.ModelDeployment, action: engine.Action, error: Exception) -> ActionFailure:
    doing = describe(md, action)
    if isinstance(error, ApiException):
        reason, said = _server_answer(error)
        return ActionFailure(
            reason, f"{doing}: the API server answered {error.status} {reason}: {said}")
    if isinstance(error, TimeoutError):
        return ActionFailure("Timeout", f"{doing}: the API server did not answer in time")
    return ActionFailure("Unreachable", f"{doing}: the API server could not be reached: {error}")


def _server_answer(error: ApiException) -> tuple[str, str]:
    """The reason and message of the Status object the API server sent, as kubectl shows them."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict):
        return str(body.get("reason") or error.reason), str(body.get("message") or error.reason)
    return str(error.reason or "Error"), str(error.body or error.reason)


def describe(md: s.ModelDeployment, action: engine.Action) -> str:
    """What an action asks of the API server, in the terms `kubectl get` shows."""
    name = md.metadata.name
    match action:
        case engine.EnsureConfigMap(revision=revision):
            return f"creating ConfigMap {objects.configmap_name(name, revision)}"
        case engine.EnsureDeployment(revision=revision, track=track, replicas=replicas):
            return (f"creating or updating Deployment {objects.deployment_name(name, revision)} "
                    f"({track}, {replicas} replicas)")
        case engine.ScaleDeployment(revision=revision, replicas=replicas):
            return f"scaling Deployment {objects.deployment_name(name, revision)} to {replicas}"
        case engine.DeleteDeployment(revision=revision):
            return f"deleting Deployment {objects.deployment_name(name, revision)}"
        case engine.EnsureService():
            return f"creating or updating Service {name}"
        case engine.EnsurePreviewService():
            return f"creating or updating Service {objects.preview_service_name(md)}"
        case engine.EnsureTrackServices():
            return f"creating or updating Services {name}-stable and {name}-canary"
        case engine.SetTrafficWeight(weight=weight):
            return f"setting the canary's traffic weight to {weight}%"
        case _:
            return type(action).__name__


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
        case engine.EnsureTrackServices(stable_revision=stable, canary_revision=canary):
            # Per-track Services select by revision: a revision keeps the track label it was
            # born with on its pod template, so selecting by track would be wrong after promotion.
            stable_service, canary_service = objects.track_service_names(name)
            await kube.apply(objects.service(md, stable_service, revision=stable))
            await kube.apply(objects.service(md, canary_service, revision=canary or stable))
        case engine.SetTrafficWeight(
            stable_revision=stable, canary_revision=canary, weight=w, mirror_percent=mirror
        ):
            await router_for(md, kube).set_weight(md, stable, canary, w, mirror_percent=mirror)
        case engine.EmitEvent():
            pass  # posted after the status write, so a lost write posts nothing

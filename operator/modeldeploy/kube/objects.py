"""The Kubernetes objects a ModelDeployment owns, as plain manifests (no I/O).

Naming (all in the ModelDeployment's namespace, all owned by it so deleting it deletes them):
- ``<name>-<revision>``: one Deployment per live revision; its selector is name + revision,
  so Deployments of different revisions never fight over pods.
- ``<name>``: the Service clients use. With the ``replicas`` router it selects every
  revision's pods (the pod ratio is the traffic split); with blue-green it selects the
  active revision only; with ``gatewayAPI`` it selects the stable revision (the HTTPRoute
  does the splitting over the per-track Services).
- ``<name>-stable`` / ``<name>-canary``: per-track Services, each narrowed to one revision:
  the ``gatewayAPI`` router's backends, and how an evaluation step reaches one revision
  alone (any canary router; blue-green uses ``<name>`` and the preview Service).
- ``<name>-preview``: blue-green's preview Service (or ``strategy.blueGreen.previewService``).
- ``<name>-config-<revision>``: an immutable ConfigMap of ``spec.config``, given to the
  containers with ``envFrom``, so a feature-flag change is a new revision, canaried.

The pod template keeps the labels it was created with: ``modeldeploy.io/track`` says the
track a revision was *born* on (canary, or stable for a first deployment). Relabelling a
template on promotion would restart every pod of the revision (a GPU model reloads its
weights), so the operator relabels running pods instead, and presets select by revision.
"""

from __future__ import annotations

import copy
from typing import Any

from modeldeploy import spec as s

Manifest = dict[str, Any]
MANAGED_BY = "modeldeploy"


def owner_reference(md: s.ModelDeployment) -> Manifest:
    return {
        "apiVersion": f"{s.GROUP}/{s.VERSION}",
        "kind": s.KIND,
        "name": md.metadata.name,
        "uid": md.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def common_labels(md: s.ModelDeployment) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": md.metadata.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        s.LABEL_NAME: md.metadata.name,
    }


def _metadata(md: s.ModelDeployment, name: str, labels: dict[str, str]) -> Manifest:
    return {
        "name": name,
        "namespace": md.metadata.namespace,
        "labels": {**common_labels(md), **labels},
        "ownerReferences": [owner_reference(md)],
    }


def deployment_name(md_name: str, revision: str) -> str:
    return f"{md_name}-{revision}"


def configmap_name(md_name: str, revision: str) -> str:
    return f"{md_name}-config-{revision}"


def track_service_names(md_name: str) -> tuple[str, str]:
    """The per-track Services: stable's first."""
    return f"{md_name}-stable", f"{md_name}-canary"


def preview_service_name(md: s.ModelDeployment) -> str:
    blue_green = md.spec.strategy.blue_green
    if blue_green and blue_green.preview_service:
        return blue_green.preview_service
    return f"{md.metadata.name}-preview"


def quantities_as_strings(pod_spec: Manifest) -> None:
    """Write the containers' resource quantities as strings, in place.

    YAML users write ``nvidia.com/gpu: 1`` and ``cpu: 0.5``; the API server accepts
    numbers for quantities, but the kubernetes client's typed models refuse them (a
    quantity is a string there), so a GPU template would never be created.
    """
    for key in ("initContainers", "containers"):
        for container in pod_spec.get(key) or []:
            resources = container.get("resources") or {}
            for bound in ("limits", "requests"):
                quantities = resources.get(bound)
                if isinstance(quantities, dict):
                    for resource, value in quantities.items():
                        if isinstance(value, int | float) and not isinstance(value, bool):
                            quantities[resource] = str(value)


def deployment(md: s.ModelDeployment, revision: str, track: str, replicas: int) -> Manifest:
    """The Deployment running ``revision``; ``track`` is the one it is born on."""
    name = md.metadata.name
    selector = {s.LABEL_NAME: name, s.LABEL_REVISION: revision}
    template = copy.deepcopy(md.spec.template.model_dump(by_alias=True, exclude_none=True))
    quantities_as_strings(template["spec"])
    pod_meta = template.setdefault("metadata", {})
    pod_meta["labels"] = {
        **(pod_meta.get("labels") or {}),
        **common_labels(md),
        **selector,
        s.LABEL_TRACK: track,
    }
    if md.spec.config:
        for container in template["spec"]["containers"]:
            env_from = container.setdefault("envFrom", [])
            env_from.append({"configMapRef": {"name": configmap_name(name, revision)}})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(
            md, deployment_name(name, revision), {s.LABEL_REVISION: revision, s.LABEL_TRACK: track}
        ),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": template,
            # One template per Deployment for its whole life: no ReplicaSet history needed.
            "revisionHistoryLimit": 1,
        },
    }


def configmap(md: s.ModelDeployment, revision: str) -> Manifest:
    """Immutable: a revision's config can never change under its pods."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(md, configmap_name(md.metadata.name, revision),
                              {s.LABEL_REVISION: revision}),
        "immutable": True,
        "data": dict(md.spec.config or {}),
    }


def service(
    md: s.ModelDeployment, name: str, revision: str | None, labels: dict[str, str] | None = None
) -> Manifest:
    """A Service over the ModelDeployment's pods; ``revision`` narrows it to one revision.

    Without a revision the selector says ``modeldeploy.io/revision: None``: removed by a
    merge patch (the Service widens back to every revision), dropped on create.
    """
    selector: dict[str, str | None] = {s.LABEL_NAME: md.metadata.name, s.LABEL_REVISION: revision}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md, name, labels or {}),
        "spec": {
            "selector": selector,
            "ports": [
                {
                    "name": "http",
                    "port": md.spec.service.port,
                    "targetPort": md.spec.service.target_port,
                    "protocol": "TCP",
                }
            ],
        },
    }

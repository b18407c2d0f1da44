"""The API surface: which resource types exist, and the discovery documents for them.

Built-in types are a fixed table (the ones the sandbox's controllers, Kopf and the
operator use); custom resources are added and removed as CustomResourceDefinitions
are written. Discovery answers in the legacy form (``APIGroupList`` and
``APIResourceList``); kubectl asks for aggregated discovery first and falls back to it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# apiextensions-apiserver lists a custom resource's verbs in this order (crd-register.json).
CUSTOM_RESOURCE_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update",
                         "watch"]
SUBRESOURCE_VERBS = ["get", "patch", "update"]


@dataclass
class ScalePaths:
    """Where a resource keeps what its ``/scale`` subresource shows (CRD ``subresources.scale``)."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = None  # a path to a selector string; None = from spec.selector


@dataclass
class ResourceType:
    """One served resource (group, version, plural) and how the server treats it."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool = True
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status_subresource: bool = False
    scale: ScalePaths | None = None
    has_generation: bool = False
    custom: bool = False  # served from a CRD: schema validation, no strategic merge patch
    schema: dict[str, Any] | None = None  # openAPIV3Schema of this version (custom only)
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    # The group/version it is stored as, when that is not the served one (storageVersionHash).
    storage_group_version: tuple[str, str] | None = None
    verbs: list[str] = field(default_factory=lambda: list(ALL_VERBS))

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def store_key(self) -> tuple[str, str]:
        """Objects are stored per group and plural, shared by all versions (no conversion)."""
        return (self.group, self.plural)

    def discovery_entries(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        # As kube-apiserver computes it: the storage group/version/kind, hashed.
        group, version = self.storage_group_version or (self.group, self.version)
        digest = hashlib.sha256(f"{group}/{version}/{self.kind}".encode()).digest()
        entry["storageVersionHash"] = base64.b64encode(digest[:8]).decode()
        entries = [entry]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": list(SUBRESOURCE_VERBS),
                }
            )
        if (self.group, self.plural) == ("", "pods"):
            entries.append({"name": "pods/log", "singularName": "", "namespaced": True,
                            "kind": "Pod", "verbs": ["get"]})
        if self.scale is not None:
            entries.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": list(SUBRESOURCE_VERBS),
                }
            )
        return entries


def _builtin(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: list[str] | None = None,
    categories: list[str] | None = None,
    status: bool = False,
    scale: bool = False,
    generation: bool = False,
    verbs: list[str] | None = None,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        singular="",  # kube-apiserver 1.24 leaves it empty for built-ins (discovery.json)
        namespaced=namespaced,
        short_names=short or [],
        categories=categories or [],
        status_subresource=status,
        scale=ScalePaths() if scale else None,
        has_generation=generation,
        verbs=verbs or list(ALL_VERBS),
    )


NAMESPACE_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]

BUILTIN_TYPES: list[ResourceType] = [
    _builtin("", "v1", "namespaces", "Namespace", namespaced=False, short=["ns"], status=True,
             verbs=NAMESPACE_VERBS),
    _builtin("", "v1", "pods", "Pod", short=["po"], categories=["all"], status=True),
    _builtin("", "v1", "services", "Service", short=["svc"], categories=["all"], status=True),
    _builtin("", "v1", "configmaps", "ConfigMap", short=["cm"]),
    _builtin("", "v1", "secrets", "Secret"),
    _builtin("", "v1", "events", "Event", short=["ev"]),
    _builtin("", "v1", "serviceaccounts", "ServiceAccount", short=["sa"]),
    _builtin("", "v1", "endpoints", "Endpoints", short=["ep"]),
    _builtin("apps", "v1", "deployments", "Deployment", short=["deploy"], categories=["all"],
             status=True, scale=True, generation=True),
    _builtin("apps", "v1", "replicasets", "ReplicaSet", short=["rs"], categories=["all"],
             status=True, scale=True, generation=True),
    replace(_builtin("events.k8s.io", "v1", "events", "Event", short=["ev"]),
            storage_group_version=("", "v1")),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease"),
    _builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
             namespaced=False, short=["crd", "crds"], categories=["api-extensions"], status=True,
             generation=True),
]
# kube-apiserver 1.24 still stores CRDs as v1beta1 (discovery.json's storageVersionHash).
BUILTIN_TYPES[-1].storage_group_version = ("apiextensions.k8s.io", "v1beta1")


class Registry:
    """The served resource types, keyed by (group, version, plural)."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in BUILTIN_TYPES:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def remove_group_resource(self, group: str, plural: str) -> None:
        for key in [k for k in self._types if k[0] == group and k[2] == plural]:
            del self._types[key]

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def for_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rt in self._types.values():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        return None

    def group_versions(self) -> dict[str, list[str]]:
        """Non-core groups and their versions, in registration order."""
        groups: dict[str, list[str]] = {}
        for rt in self._types.values():
            if rt.group and rt.version not in groups.setdefault(rt.group, []):
                groups[rt.group].append(rt.version)
        return groups

    def has_group_version(self, group: str, version: str) -> bool:
        return any(k[0] == group and k[1] == version for k in self._types)

    # -- discovery documents -------------------------------------------------------------

    def api_group_list(self) -> dict[str, Any]:
        groups = []
        for group, versions in self.group_versions().items():
            gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
            groups.append({"name": group, "versions": gvs, "preferredVersion": gvs[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def api_group(self, group: str) -> dict[str, Any] | None:
        versions = self.group_versions().get(group)
        if not versions:
            return None
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs,
                "preferredVersion": gvs[0]}

    def resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for rt in sorted(self._types.values(), key=lambda r: r.plural):
            if rt.group == group and rt.version == version:
                resources.extend(rt.discovery_entries())
        doc: dict[str, Any] = {"kind": "APIResourceList"}
        if group:
            doc["apiVersion"] = "v1"
        doc["groupVersion"] = f"{group}/{version}" if group else version
        doc["resources"] = resources
        return doc

"""Just enough OpenAPI v3 for kubectl.

kubectl (``--validate=strict``, its default) asks ``/openapi/v3`` whether the server
supports server-side field validation for a kind: it looks, in the group-version's
document, for a PATCH operation tagged with the kind's
``x-kubernetes-group-version-kind`` that takes a ``fieldValidation`` query parameter.
When it finds one it sends ``fieldValidation=Strict`` and validates nothing itself;
otherwise it downloads schemas to validate client-side. So each group-version
document lists the PATCH operations and no component schemas: kubectl apply then
builds strategic merge patches from its compiled-in types (built-in kinds) or JSON
merge patches (custom resources), as it does against a real server. ``kubectl
explain`` is not supported. ``/openapi/v2`` answers 404 (kubectl copes).
"""

from __future__ import annotations

from typing import Any

from .resources import Registry


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def index(registry: Registry) -> dict[str, Any]:
    """``/openapi/v3``: one entry per served group-version."""
    paths: dict[str, Any] = {}
    for rt in registry.all():
        key = _gv_path(rt.group, rt.version)
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}"}
    return {"paths": paths}


def group_version_document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    """``/openapi/v3/apis/<group>/<version>``: the PATCH operations of its kinds."""
    paths: dict[str, Any] = {}
    for rt in registry.all():
        if rt.group != group or rt.version != version:
            continue
        prefix = "/" + _gv_path(group, version)
        scope = "/namespaces/{namespace}" if rt.namespaced else ""
        operation = {
            "operationId": f"patch{rt.kind}",
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": group, "version": version,
                                                 "kind": rt.kind},
            "parameters": [
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "force", "in": "query", "schema": {"type": "boolean"}},
            ],
            "responses": {"200": {"description": "OK"}},
        }
        paths[f"{prefix}{scope}/{rt.plural}/{{name}}"] = {"patch": operation}
    if not paths:
        return None
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (mdsandbox)", "version": "v1.30.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }

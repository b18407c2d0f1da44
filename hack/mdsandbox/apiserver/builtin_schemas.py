"""Unknown-field detection for built-in kinds, from Kubernetes' own JSON schemas.

kube-apiserver decodes built-in objects into Go structs, so a field the type does not
have (``replica:`` for ``replicas:``) is dropped, with a warning by default and a 400
``strict decoding error`` under ``fieldValidation=Strict`` (what kubectl sends). The
schemas come from the ``kubernetes-validate`` package (a dev dependency, the newest
``*-local-strict`` set it ships); without it, built-in objects are stored as sent.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

Schema = dict[str, Any]


@lru_cache(maxsize=1)
def _definitions() -> dict[str, Schema] | None:
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent / "kubernetes-json-schema"
    candidates = sorted(
        (p for p in root.glob("v*-local-strict") if (p / "_definitions.json").is_file()),
        key=lambda p: tuple(int(x) for x in p.name[1:].split("-")[0].split(".")),
    )
    if not candidates:
        return None
    defs: dict[str, Schema] = json.loads((candidates[-1] / "_definitions.json").read_text())[
        "$defs"]
    return defs


@lru_cache(maxsize=64)
def _kind_schema(group: str, version: str, kind: str) -> Schema | None:
    defs = _definitions()
    if defs is None:
        return None
    for schema in defs.values():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            if (gvk.get("group", ""), gvk.get("version"), gvk.get("kind")) == (group, version,
                                                                                   kind):
                return schema
    return None


def _resolve(schema: Schema) -> Schema:
    defs = _definitions() or {}
    while "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


def strip_unknown_fields(group: str, version: str, kind: str, obj: Any) -> list[str]:
    """Remove fields ``kind`` does not have from ``obj`` (in place); return their paths."""
    schema = _kind_schema(group, version, kind)
    if schema is None:
        return []
    unknown: list[str] = []
    _walk(schema, obj, "", unknown)
    return unknown


def _walk(schema: Schema, value: Any, path: str, unknown: list[str]) -> None:
    schema = _resolve(schema)
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if properties is None and not isinstance(additional, dict):
            return  # a free-form map (or a type like RawExtension): nothing to check
        for key in list(value):
            child = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                _walk(properties[key], value[key], child, unknown)
            elif isinstance(additional, dict):
                _walk(additional, value[key], child, unknown)
            elif additional is False:
                unknown.append(child)
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _walk(schema["items"], item, f"{path}[{i}]", unknown)

"""Generate the ModelDeployment CustomResourceDefinition from the pydantic models.

``python -m modeldeploy.crd`` prints crds/modeldeployment.yaml; a test fails when the
committed file differs, so the schema can never drift from :mod:`modeldeploy.spec`.

pydantic emits JSON Schema 2020-12; a CRD needs a *structural* OpenAPI v3 schema.
The conversion here: ``$ref`` inlined; ``X | None`` becomes an optional ``X``;
``int | str`` becomes ``x-kubernetes-int-or-string``; free-form objects become
``x-kubernetes-preserve-unknown-fields``; numeric ``exclusiveMinimum`` becomes the
OpenAPI 3.0 boolean form; titles and defaults are dropped (defaults stay in the
models so the stored object is exactly what git holds); ``additionalProperties:
false`` is dropped (the API server prunes unknown fields, and the operator's
``extra="forbid"`` reports them in status).

A model with no fields (``trafficRouting.replicas``, written ``replicas: {}``) becomes
``type: object`` with ``x-kubernetes-preserve-unknown-fields: true`` and
``maxProperties: 0``. Not ``properties: {}``: the API server stores a CRD through Go
types that drop empty maps, and CEL has no type for an object value whose schema has
neither properties, nor additionalProperties, nor preserve-unknown-fields, so every
rule that reads it (the trafficRouting "exactly one of" rule's ``has(self.replicas)``)
fails with "invalid object type, expected either Properties or AdditionalProperties
...". Preserve-unknown-fields makes the value an empty map for CEL; ``maxProperties: 0``
keeps the object empty, refusing a field written inside it at admission instead of
storing it unpruned.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from modeldeploy import spec as s

JSONDict = dict[str, Any]

_DROP = {"title", "default", "discriminator", "examples"}


def _resolve(node: JSONDict, defs: JSONDict) -> JSONDict:
    """Inline a ``$ref`` (keeping sibling keys such as a field's own description)."""
    while "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _structural(node: JSONDict, defs: JSONDict) -> JSONDict:
    node = _resolve(node, defs)
    out: JSONDict = {}
    variants = node.get("anyOf") or node.get("oneOf")
    if variants is not None:
        kept = [_resolve(v, defs) for v in variants if v.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
        if len(kept) == 1:
            return _structural({**kept[0], **rest}, defs)
        if sorted(v.get("type", "") for v in kept) == ["integer", "string"]:
            out["x-kubernetes-int-or-string"] = True
            if "description" in rest:
                out["description"] = rest["description"]
            return out
        raise ValueError(f"cannot express this union in a structural schema: {node}")
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "properties":
            out["properties"] = {k: _structural(v, defs) for k, v in value.items()}
        elif key == "items":
            out["items"] = _structural(value, defs)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out["additionalProperties"] = _structural(value, defs)
            # False: dropped, see the module docstring.
        elif key == "description":
            out["description"] = _one_line(value)
        else:
            out[key] = value
    if out.get("enum") and "type" not in out:
        out["type"] = "string"
    if (out.get("type") == "object" and not out.get("properties")
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        # A model with no fields (``replicas: {}``): see the module docstring.
        out.pop("properties", None)
        out["x-kubernetes-preserve-unknown-fields"] = True
        out["maxProperties"] = 0
    # description and type first, then the rest: reads like hand-written CRDs.
    order = {"description": 0, "type": 1}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], 2)))


def _one_line(text: str) -> str:
    """Docstrings become one-line descriptions (as `kubectl explain` shows them)."""
    return " ".join(text.replace("``", "`").split())


def model_schema(model: type[BaseModel]) -> JSONDict:
    """The structural OpenAPI v3 schema of one pydantic model (by alias)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def openapi_schema() -> JSONDict:
    return {
        "type": "object",
        "description": "A model service rolled out by canary or blue-green, judged by Prometheus.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(s.ModelDeploymentSpec),
            "status": model_schema(s.ModelDeploymentStatus),
        },
    }


PRINTER_COLUMNS: list[JSONDict] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message"},
    # `kubectl get -o wide`: the last evaluation of the new revision.
    {"name": "Evaluation", "type": "string", "jsonPath": ".status.evaluation.verdict", "priority": 1},
    {"name": "Score", "type": "number", "jsonPath": ".status.evaluation.score", "priority": 1},
]


def crd() -> JSONDict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{s.PLURAL}.{s.GROUP}",
            "labels": {"app.kubernetes.io/name": "modeldeploy"},
        },
        "spec": {
            "group": s.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": s.KIND,
                "listKind": f"{s.KIND}List",
                "plural": s.PLURAL,
                "singular": s.SINGULAR,
                "shortNames": list(s.SHORT_NAMES),
                "categories": ["all", "modeldeploy"],
            },
            "versions": [
                {
                    "name": s.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


HEADER = (
    "# GENERATED by `python -m modeldeploy.crd` from operator/modeldeploy/spec.py."
    " Do not edit.\n"
)


class _NoAliasDumper(yaml.SafeDumper):
    """Write repeated sub-schemas in full: anchors are legal YAML but confuse readers."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    body = yaml.dump(
        crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100, allow_unicode=True
    )
    return HEADER + body


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()

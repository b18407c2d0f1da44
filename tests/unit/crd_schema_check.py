"""Check an object against a CRD's openAPIV3Schema as the API server would, without one.

Standard keywords are checked with jsonschema (Draft 4 semantics, which OpenAPI 3.0
follows: boolean exclusiveMinimum); ``x-kubernetes-validations`` CEL rules are
evaluated with cel-python at every node they sit on. Errors are returned as
``(field path, message)`` in Kubernetes' path style (``spec.steps[1].setWeight``).
"""

from __future__ import annotations

from typing import Any

import celpy
import jsonschema

_CEL = celpy.Environment()


def _path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _cel_errors(schema: dict[str, Any], value: Any, at: list[str | int]) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = _CEL.program(_CEL.compile(rule["rule"]))
        if not bool(program.evaluate({"self": celpy.json_to_cel(value)})):
            errors.append((_path(at), rule.get("message", f"failed rule: {rule['rule']}")))
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                errors += _cel_errors(sub, value[name], [*at, name])
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, [*at, i])
    return errors


def schema_errors(crd: dict[str, Any], obj: dict[str, Any]) -> list[tuple[str, str]]:
    """Every problem the CRD's schema (keywords and CEL rules) finds in ``obj``."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(schema)
    errors = [
        (_path(list(e.absolute_path)), e.message) for e in validator.iter_errors(obj)
    ]
    if not errors:  # CEL rules run on values that already passed the keyword checks
        errors += _cel_errors(schema, obj, [])
    return errors

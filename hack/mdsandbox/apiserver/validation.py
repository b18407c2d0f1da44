"""Structural-schema validation, defaulting and pruning of custom resources.

``validate(schema, obj, old=None)`` checks an object against a CRD's
``openAPIV3Schema`` the way apiextensions-apiserver does and returns one
:class:`~mdsandbox.apiserver.errors.Cause` per failing field, with Kubernetes' field
paths (``spec.strategy.canary.steps[1].setWeight``, ``spec.labels[app]``) and its
wording (``Invalid value: 300: spec.size in body should be less than or equal to 100``).
It is a plain function so other tests can check manifests against a CRD without a
server: ``validate(crd_version["schema"]["openAPIV3Schema"], manifest)``.

Covered: type (with nullable and x-kubernetes-int-or-string), required, enum, pattern,
minimum/maximum (and exclusive), multipleOf, minLength/maxLength, minItems/maxItems,
uniqueItems, minProperties/maxProperties, oneOf/anyOf/allOf/not, format (int32, int64,
date-time, a few more) and x-kubernetes-validations CEL rules (``self``, ``oldSelf`` in
transition rules, ``message``, ``messageExpression``, ``reason``, ``fieldPath``), run with
cel-python. As in kube-apiserver, CEL rules are skipped when a field is missing or of
the wrong type, and a ``<nil>`` cause says so. Causes come in schema order; a real
server's order among sibling properties is not fixed (Go map order), so compare sets.

``apply_defaults`` fills ``default`` values and ``prune`` drops fields the schema does not
declare (returning their paths, for ``fieldValidation=Strict|Warn``);
``validate_manifest`` runs all three as the server does for ``kubectl apply``.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

import celpy
from celpy.adapter import json_to_cel

from .errors import Cause

__all__ = ["Cause", "apply_defaults", "prune", "stored_schema", "validate",
           "validate_manifest"]

_MISSING = object()
_BLOCKING_REASONS = {"FieldValueRequired", "FieldValueTypeInvalid"}
_UNCHECKED = ("some validation rules were not checked because the object was invalid; "
              "correct the existing errors to complete validation")


# -- wording ----------------------------------------------------------------------------


def _go_value(value: Any) -> str:
    """A bad value as Go's field.Error prints it (%v for numbers, %q for strings)."""
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(_type_name(value))


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, f"Invalid value: {_go_value(value)}: {detail}", "FieldValueInvalid")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _body_path(path: str) -> str:
    """go-openapi names the root ``body``; a nested field is named by its path."""
    return path or "body"


# -- the schema as stored ----------------------------------------------------------------

# JSONSchemaProps (apiextensions.k8s.io/v1): every field is ``omitempty``, so an empty
# string, list or map and a false non-pointer boolean vanish when the API server stores
# a CRD; pointer fields (numbers, default, example, preserve-unknown-fields, list/map
# type) keep a zero value. Keys it does not declare do not survive decoding.
_SCHEMA_STRINGS = {"id", "$schema", "description", "type", "format", "title", "pattern"}
_SCHEMA_BOOLS = {"exclusiveMaximum", "exclusiveMinimum", "uniqueItems", "nullable",
                 "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string"}
_SCHEMA_POINTERS = {"$ref", "default", "maximum", "minimum", "maxLength", "minLength",
                    "maxItems", "minItems", "multipleOf", "maxProperties", "minProperties",
                    "externalDocs", "example", "x-kubernetes-preserve-unknown-fields",
                    "x-kubernetes-list-type", "x-kubernetes-map-type"}
_SCHEMA_LISTS = {"enum", "required", "x-kubernetes-list-map-keys"}
_SCHEMA_LISTS_OF_SCHEMAS = {"allOf", "oneOf", "anyOf"}
_SCHEMA_MAPS_OF_SCHEMAS = {"properties", "patternProperties", "definitions"}
_SCHEMA_SCHEMA_OR_BOOL = {"additionalProperties", "additionalItems"}
_RULE_FIELDS = ("rule", "message", "messageExpression", "reason", "fieldPath",
                "optionalOldSelf")


def stored_schema(schema: Any) -> Any:
    """``schema`` as kube-apiserver stores it: round-tripped through its Go type.

    What a real server then validates against, and what a GET of the CRD returns:
    ``properties: {}``, ``required: []``, ``nullable: false``, ``description: ""`` are
    gone, which changes how CEL sees a value (``_to_cel``).
    """
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_STRINGS or key in _SCHEMA_BOOLS or key in _SCHEMA_LISTS:
            if value:
                out[key] = value
        elif key in _SCHEMA_POINTERS:
            if value is not None:
                out[key] = value
        elif key in _SCHEMA_LISTS_OF_SCHEMAS:
            if value:
                out[key] = [stored_schema(v) for v in value]
        elif key in _SCHEMA_MAPS_OF_SCHEMAS:
            if value:
                out[key] = {k: stored_schema(v) for k, v in value.items()}
        elif key in _SCHEMA_SCHEMA_OR_BOOL:
            if value is not None:
                out[key] = stored_schema(value) if isinstance(value, dict) else bool(value)
        elif key == "items":
            if value is not None:
                out[key] = ([stored_schema(v) for v in value] if isinstance(value, list)
                            else stored_schema(value))
        elif key == "not":
            if value is not None:
                out[key] = stored_schema(value)
        elif key == "dependencies":
            if value:
                out[key] = {k: v if isinstance(v, list) else stored_schema(v)
                            for k, v in value.items()}
        elif key == "x-kubernetes-validations" and value:
            out[key] = [
                {f: rule[f] for f in _RULE_FIELDS
                 if f == "rule" or (f in rule and rule[f] not in ("", None))}
                for rule in value if isinstance(rule, dict)]
    return out


# -- the walk ----------------------------------------------------------------------------


def validate(schema: dict[str, Any], obj: Any, old: Any = None) -> list[Cause]:
    """Every way ``obj`` fails ``schema``, as Kubernetes reports it (empty list = valid).

    ``old`` is the object before an update (enables CEL transition rules on ``oldSelf``).
    Validate after defaulting and pruning, as the server does.
    """
    causes: list[Cause] = []
    root = obj
    if isinstance(obj, dict) and isinstance(schema.get("properties"), dict):
        # The root's apiVersion/kind/metadata are checked by the server, not the schema.
        root = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")
                or k in schema["properties"]}
    _validate_node(schema, root, "", causes)
    if any(c.reason in _BLOCKING_REASONS for c in causes):
        if _has_rules(schema):
            causes.append(Cause("<nil>", f'Invalid value: "null": {_UNCHECKED}'))
        return causes
    _run_rules(_with_object_meta(schema), root, old if old is not None else _MISSING, "",
               causes)
    return causes


def _with_object_meta(schema: dict[str, Any]) -> dict[str, Any]:
    """The root as CEL sees it: Kubernetes types ``metadata`` as name and generateName."""
    properties = schema.get("properties")
    if not isinstance(properties, dict) or "metadata" not in properties:
        return schema
    meta = {"type": "object", "properties": {"name": {"type": "string"},
                                             "generateName": {"type": "string"}}}
    return {**schema, "properties": {**properties, "metadata": meta}}


def _validate_node(schema: dict[str, Any], value: Any, path: str, causes: list[Cause]) -> None:
    if value is None:
        if schema.get("nullable"):
            return
        if schema.get("x-kubernetes-preserve-unknown-fields") and "type" not in schema:
            return
    if not _type_ok(schema, value, path, causes):
        return
    _composition(schema, value, path, causes)
    if isinstance(value, str):
        _string_checks(schema, value, path, causes)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _number_checks(schema, value, path, causes)
    if isinstance(value, list):
        _array_checks(schema, value, path, causes)
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(v if isinstance(v, str) else _go_enum(v))
                              for v in schema["enum"])
        causes.append(Cause(path, f"Unsupported value: {_go_value(value)}: supported values: "
                                  f"{supported}", "FieldValueNotSupported"))
    if isinstance(value, dict):
        _object_checks(schema, value, path, causes)


def _go_enum(value: Any) -> str:
    return _number(value) if isinstance(value, (int, float)) else json.dumps(value)


def _type_ok(schema: dict[str, Any], value: Any, path: str, causes: list[Cause]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            causes.append(Cause(path, f"Invalid value: {json.dumps(_type_name(value))}: "
                                      f"{_body_path(path)} in body must be of type "
                                      f"integer,string: {json.dumps(_type_name(value))}",
                                "FieldValueTypeInvalid"))
            return False
        return True
    wanted = schema.get("type")
    if not wanted:
        return True
    actual = _type_name(value)
    ok = {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": actual == "integer",
        "number": actual in ("integer", "number"),
    }.get(wanted, True)
    if not ok:
        causes.append(Cause(path, f"Invalid value: {json.dumps(actual)}: {_body_path(path)} in "
                                  f"body must be of type {wanted}: {json.dumps(actual)}",
                            "FieldValueTypeInvalid"))
    return ok


def _composition(schema: dict[str, Any], value: Any, path: str, causes: list[Cause]) -> None:
    name = _body_path(path)

    def passes(sub: dict[str, Any]) -> list[Cause]:
        found: list[Cause] = []
        _validate_node(sub, value, path, found)
        return found

    if "allOf" in schema:
        for sub in schema["allOf"]:
            causes.extend(passes(sub))
    if "anyOf" in schema:
        results = [passes(sub) for sub in schema["anyOf"]]
        if all(results):
            causes.append(Cause(path, f'Invalid value: "": {name} must validate at least one '
                                      "schema (anyOf)"))
            causes.extend(results[0])
    if "oneOf" in schema:
        results = [passes(sub) for sub in schema["oneOf"]]
        matched = sum(1 for r in results if not r)
        if matched != 1:
            extra = "Found none valid" if matched == 0 else f"Found {matched} valid alternatives"
            causes.append(Cause(path, f'Invalid value: "": {name} must validate one and only '
                                      f"one schema (oneOf). {extra}"))
            if matched == 0:
                causes.extend(results[0])
    if "not" in schema and not passes(schema["not"]):
        causes.append(Cause(path, f'Invalid value: "": {name} must not validate the schema (not)'))


_FORMATS: dict[str, Callable[[Any], bool]] = {
    "int32": lambda v: isinstance(v, int) and -(2**31) <= v < 2**31,
    "int64": lambda v: isinstance(v, int) and -(2**63) <= v < 2**63,
}


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


_STRING_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _is_datetime,
    "uuid": lambda v: bool(re.fullmatch(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", v)),
    "hostname": lambda v: bool(re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", v)),
}


def _string_checks(schema: dict[str, Any], value: str, path: str, causes: list[Cause]) -> None:
    name = _body_path(path)
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append(Cause(path, f"Too long: may not be longer than {schema['maxLength']}",
                            "FieldValueTooLong"))
    if "minLength" in schema and len(value) < schema["minLength"]:
        causes.append(_invalid(path, value, f"{name} in body should be at least "
                                            f"{schema['minLength']} chars long"))
    if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
        causes.append(_invalid(path, value, f"{name} in body should match '{schema['pattern']}'"))
    format_check = _STRING_FORMATS.get(schema.get("format", ""))
    if format_check is not None and not format_check(value):
        causes.append(_invalid(path, value, f"{name} in body must be of type "
                                            f"{schema['format']}: {json.dumps(value)}"))


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _number_checks(schema: dict[str, Any], value: float, path: str, causes: list[Cause]) -> None:
    name = _body_path(path)
    check = _FORMATS.get(schema.get("format", ""))
    if check is not None and isinstance(value, int) and not check(value):
        causes.append(_invalid(path, value, f"{name} in body must be of type {schema['format']}"))
    if schema.get("multipleOf"):
        quotient = value / schema["multipleOf"]
        if not math.isclose(quotient, round(quotient)):
            causes.append(_invalid(path, value, f"{name} in body should be a multiple of "
                                                f"{_number(schema['multipleOf'])}"))
    if "maximum" in schema:
        limit = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= limit:
            causes.append(_invalid(path, value, f"{name} in body should be less than "
                                                f"{_number(limit)}"))
        elif value > limit:
            causes.append(_invalid(path, value, f"{name} in body should be less than or equal "
                                                f"to {_number(limit)}"))
    if "minimum" in schema:
        limit = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= limit:
            causes.append(_invalid(path, value, f"{name} in body should be greater than "
                                                f"{_number(limit)}"))
        elif value < limit:
            causes.append(_invalid(path, value, f"{name} in body should be greater than or "
                                                f"equal to {_number(limit)}"))


def _array_checks(schema: dict[str, Any], value: list[Any], path: str,
                  causes: list[Cause]) -> None:
    name = _body_path(path)
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append(Cause(path, f"Too many: {len(value)}: must have at most "
                                  f"{schema['maxItems']} items", "FieldValueTooMany"))
    if "minItems" in schema and len(value) < schema["minItems"]:
        causes.append(_invalid(path, len(value), f"{name} in body should have at least "
                                                 f"{schema['minItems']} items"))
    if schema.get("uniqueItems") or schema.get("x-kubernetes-list-type") == "set":
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                causes.append(Cause(f"{path}[{i}]", f"Duplicate value: {_go_value(item)}",
                                    "FieldValueDuplicate"))
            seen.append(item)
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: list[tuple[Any, ...]] = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                k = tuple(item.get(key) for key in keys)
                if k in seen_keys:
                    dup = ", ".join(f'"{key}"={json.dumps(item.get(key))}' for key in keys)
                    causes.append(Cause(f"{path}[{i}]", f"Duplicate value: map[string]"
                                                        f"interface {{}}{{{dup}}}",
                                        "FieldValueDuplicate"))
                seen_keys.append(k)
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _validate_node(items, item, f"{path}[{i}]", causes)


def _object_checks(schema: dict[str, Any], value: dict[str, Any], path: str,
                   causes: list[Cause]) -> None:
    name = _body_path(path)
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        causes.append(Cause(path, f"Too many: {len(value)}: must have at most "
                                  f"{schema['maxProperties']} items", "FieldValueTooMany"))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        causes.append(_invalid(path, len(value), f"{name} in body should have at least "
                                                 f"{schema['minProperties']} properties"))
    for required in schema.get("required") or []:
        if required not in value:
            causes.append(Cause(_join(path, required), "Required value", "FieldValueRequired"))
    properties = schema.get("properties") or {}
    for key, sub in properties.items():
        if key in value:
            _validate_node(sub, value[key], _join(path, key), causes)
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        for key, item in value.items():
            if key not in properties:
                _validate_node(additional, item, f"{path}[{key}]", causes)


# -- CEL rules ---------------------------------------------------------------------------


def _has_rules(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("x-kubernetes-validations"):
        return True
    children = list((schema.get("properties") or {}).values())
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            children.append(schema[key])
    return any(_has_rules(c) for c in children)


# Kubernetes' CEL libraries beyond the CEL standard (cel-go's ext.Strings and k8s' lists),
# the ones CRD rules use most; cel-python ships the standard ones (size, matches,
# startsWith, all, exists, exists_one, map, filter, has, duration, timestamp).
_K8S_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "lowerAscii": lambda s: celpy.celtypes.StringType(str(s).lower()),
    "upperAscii": lambda s: celpy.celtypes.StringType(str(s).upper()),
    "trim": lambda s: celpy.celtypes.StringType(str(s).strip()),
    "split": lambda s, sep: celpy.celtypes.ListType(
        [celpy.celtypes.StringType(p) for p in str(s).split(str(sep))]),
    "join": lambda items, sep="": celpy.celtypes.StringType(
        str(sep).join(str(i) for i in items)),
    "indexOf": lambda s, sub: celpy.celtypes.IntType(str(s).find(str(sub))),
    "lastIndexOf": lambda s, sub: celpy.celtypes.IntType(str(s).rfind(str(sub))),
    "replace": lambda s, old, new: celpy.celtypes.StringType(str(s).replace(str(old), str(new))),
    "isSorted": lambda items: celpy.celtypes.BoolType(list(items) == sorted(items)),
    "sum": lambda items: sum(items[1:], items[0]) if items else celpy.celtypes.IntType(0),
    "min": lambda items: min(items),
    "max": lambda items: max(items),
}


@lru_cache(maxsize=512)
def _program(expression: str) -> Any:
    env = celpy.Environment(runner_class=_K8sRunner)
    return env.program(env.compile(expression), functions=_K8S_FUNCTIONS)


class _ConversionError(celpy.evaluation.CELEvalError):
    """A value the schema gives CEL no type for (Kubernetes' ``UnstructuredToVal`` error).

    It sits in the converted map or list where the value was and surfaces only when a
    rule reads it (lazily, as in Kubernetes), ``has()`` included: see ``_K8sEvaluator``.
    """


def _to_cel(schema: dict[str, Any], value: Any) -> Any:
    """JSON → CEL values typed by the schema, as Kubernetes' ``UnstructuredToVal`` does.

    A ``number`` is a double even when integral. An object whose schema has neither
    ``properties`` nor an ``additionalProperties`` schema is an empty map when it has
    ``x-kubernetes-preserve-unknown-fields: true`` and otherwise has no CEL value at all:
    reading it is the error a real server reports. Schemas here are as the server stores
    them (``stored_schema``), where ``properties: {}`` is gone.
    """
    if value is None or isinstance(value, celpy.evaluation.CELEvalError):
        return value
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return json_to_cel(value)
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return celpy.celtypes.DoubleType(float(value))
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if "properties" in schema or schema.get("x-kubernetes-embedded-resource"):
            props = props or {}
            return celpy.celtypes.MapType({
                celpy.celtypes.StringType(k): _to_cel(props.get(k) or {}, v)
                for k, v in value.items()
            })
        if isinstance(extra, dict):
            return celpy.celtypes.MapType({
                celpy.celtypes.StringType(k): _to_cel(extra, v) for k, v in value.items()})
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return celpy.celtypes.MapType({})
        return _ConversionError(_NO_OBJECT_TYPE)
    if isinstance(value, dict):  # no type (only int-or-string or preserve-unknown-fields)
        return json_to_cel(value)
    if isinstance(value, list):
        items = schema.get("items")
        return celpy.celtypes.ListType(
            [_to_cel(items if isinstance(items, dict) else {}, v) for v in value])
    return json_to_cel(value)


_NO_OBJECT_TYPE = ("invalid object type, expected either Properties or AdditionalProperties "
                   "with Allows=true and non-empty Schema")


class _K8sEvaluator(celpy.evaluation.Evaluator):
    """cel-python where it parts from cel-go on errors.

    cel-go's ``has()`` on an object field converts the field's value first, so a value
    without a CEL type makes ``has()`` fail (cel-python would call it unset); and an
    error in a ternary's condition is the ternary's result (cel-python reports a
    missing overload instead).
    """

    def macro_has_eval(self, exprlist: Any) -> Any:
        value = self.visit_children(exprlist)[0]
        if isinstance(value, _ConversionError):
            return value
        return celpy.celtypes.BoolType(not isinstance(value, celpy.evaluation.CELEvalError))

    def expr(self, tree: Any) -> Any:
        if len(tree.children) == 3:
            condition = self.visit(tree.children[0])
            if isinstance(condition, celpy.evaluation.CELEvalError):
                return condition
            if isinstance(condition, celpy.celtypes.BoolType):
                return self.visit(tree.children[1] if condition else tree.children[2])
        return super().expr(tree)


class _K8sRunner(celpy.InterpretedRunner):
    def evaluate(self, context: Any) -> Any:
        return _K8sEvaluator(ast=self.ast, activation=self.new_activation()).evaluate(context)


def _run_rules(schema: dict[str, Any], value: Any, old: Any, path: str,
               causes: list[Cause]) -> None:
    if value is None or not isinstance(schema, dict):
        return
    for rule in schema.get("x-kubernetes-validations") or []:
        _run_rule(schema, rule, value, old, path, causes)
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key)
            sub_path = _join(path, key)
            if sub is None and isinstance(additional, dict):
                sub, sub_path = additional, f"{path}[{key}]"
            if sub is not None:
                old_item = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                _run_rules(sub, item, old_item, sub_path, causes)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            # Old list items are only correlated for map/set lists; approximated as none.
            _run_rules(schema["items"], item, _MISSING, f"{path}[{i}]", causes)


def _run_rule(schema: dict[str, Any], rule: dict[str, Any], value: Any, old: Any, path: str,
              causes: list[Cause]) -> None:
    expression = rule.get("rule", "")
    transition = re.search(r"\boldSelf\b", expression) is not None
    if transition and old is _MISSING:
        return
    activation = {"self": _to_cel(schema, value)}
    if transition:
        activation["oldSelf"] = _to_cel(schema, old)
    field_path = path + (rule.get("fieldPath") or "")
    if field_path.startswith("."):
        field_path = field_path[1:]
    type_name = json.dumps(schema.get("type") or _type_name(value))
    try:
        result = _program(expression).evaluate(activation)
    except Exception as exc:  # a CEL compile or runtime error is reported, not raised
        # Kubernetes: "<error> evaluating rule: <message, or the rule when it has none>",
        # at the field the rule sits on (not its fieldPath).
        error = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        rule_name = (rule.get("message") or "").strip() or expression.strip()
        causes.append(Cause(path or "<nil>", f"Invalid value: {type_name}: {error} evaluating "
                                             f"rule: {rule_name}"))
        return
    if isinstance(result, Exception) or (result is not True and not bool(result)):
        message = rule.get("message") or f"failed rule: {expression}"
        if rule.get("messageExpression"):
            try:
                rendered = _program(rule["messageExpression"]).evaluate(activation)
                if isinstance(rendered, str) and rendered.strip():
                    message = str(rendered)
            except Exception:  # Kubernetes falls back to message on a messageExpression error
                pass
        reason = rule.get("reason") or "FieldValueInvalid"
        prefix = {
            "FieldValueForbidden": "Forbidden",
            "FieldValueRequired": "Required value",
        }.get(reason)
        text = f"{prefix}: {message}" if prefix else f"Invalid value: {type_name}: {message}"
        causes.append(Cause(field_path or "<nil>", text, reason))


def validate_manifest(schema: dict[str, Any], obj: Any, old: Any = None) -> list[Cause]:
    """What ``kubectl apply`` of ``obj`` against a real server would be refused for.

    The server's full path, against ``schema`` as the server stores it: unknown fields
    (refused under kubectl's default ``fieldValidation=Strict``; reported here as causes
    with reason ``FieldValueUnknown`` and message ``unknown field "<path>"``, where a real
    server answers 400 with ``strict decoding error: unknown field "<path>"``), then
    defaults, then ``validate``.
    """
    schema = stored_schema(schema)
    pruned, dropped = prune(schema, obj)
    unknown = [Cause(path, f'unknown field "{path}"', "FieldValueUnknown") for path in dropped]
    return unknown + validate(schema, apply_defaults(schema, pruned), old)


# -- defaulting and pruning --------------------------------------------------------------


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with every missing property that has a ``default`` filled in (a copy)."""
    value = copy.deepcopy(value)
    _default(schema, value)
    return value


def _default(schema: dict[str, Any], value: Any) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if key not in value and isinstance(sub, dict) and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            if key in properties:
                _default(properties[key], item)
            elif isinstance(schema.get("additionalProperties"), dict):
                _default(schema["additionalProperties"], item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(schema["items"], item)


def prune(schema: dict[str, Any], obj: Any) -> tuple[Any, list[str]]:
    """``obj`` without the fields ``schema`` does not declare, and those fields' paths."""
    obj = copy.deepcopy(obj)
    dropped: list[str] = []
    _prune(schema, obj, "", dropped, root=True)
    return obj, dropped


def _prune(schema: Any, value: Any, path: str, dropped: list[str], root: bool = False) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        keep = {"apiVersion", "kind", "metadata"} if (
            root or schema.get("x-kubernetes-embedded-resource")) else set()
        for key in list(value):
            if key in keep:
                continue  # apiVersion/kind/metadata belong to the server, whatever the schema says
            if key in properties:
                _prune(properties[key], value[key], _join(path, key), dropped)
            elif isinstance(additional, dict):
                _prune(additional, value[key], f"{path}[{key}]", dropped)
            elif not preserve and additional is not True and key not in keep:
                dropped.append(_join(path, key))
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _prune(schema["items"], item, f"{path}[{i}]", dropped)

"""Label and field selectors, parsed as kube-apiserver parses them.

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k`` (exists), ``!k`` (does not exist), joined by commas. Field selectors:
``metadata.name`` and ``metadata.namespace`` on every resource, plus the few
per-resource fields a real server also indexes (``status.phase`` and
``spec.nodeName`` on pods, ``involvedObject.*`` on events), with ``=``, ``==``, ``!=``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import APIError, bad_request

Predicate = Callable[[dict[str, Any]], bool]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_requirements(selector: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, dict) else {}


def parse_label_selector(selector: str | None) -> Predicate:
    """A predicate on objects, or a 400 naming the requirement that does not parse."""
    if not selector or not selector.strip():
        return lambda obj: True
    tests: list[Predicate] = []
    for requirement in _split_requirements(selector):
        tests.append(_parse_requirement(requirement))
    return lambda obj: all(t(obj) for t in tests)


def _parse_requirement(req: str) -> Predicate:
    if m := _SET_RE.match(req):
        key, op, raw = m.group(1), m.group(2), m.group(3)
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda o: key in _labels(o) and _labels(o)[key] in values
        return lambda o: key not in _labels(o) or _labels(o)[key] not in values
    if m := _EQ_RE.match(req):
        key, op, value = m.group(1), m.group(2), m.group(3)
        if op == "!=":
            return lambda o: _labels(o).get(key) != value
        return lambda o: key in _labels(o) and _labels(o)[key] == value
    if m := _EXISTS_RE.match(req):
        negate, key = m.group(1) == "!", m.group(2)
        if negate:
            return lambda o: key not in _labels(o)
        return lambda o: key in _labels(o)
    raise bad_request(
        f"unable to parse requirement: {req.strip()!r}: labelSelector must be "
        "'key=value', 'key!=value', 'key in (a,b)', 'key notin (a,b)', 'key' or '!key'"
    )


def selector_from_match_labels(selector: dict[str, Any] | None) -> str:
    """The string form of a LabelSelector (``matchLabels`` and ``matchExpressions``)."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key = expr.get("operator"), expr.get("key")
        values = ",".join(sorted(expr.get("values") or []))
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


_FIELDS_EVERYWHERE = {"metadata.name", "metadata.namespace"}
_FIELDS_BY_PLURAL: dict[str, set[str]] = {
    "pods": {"spec.nodeName", "status.phase", "spec.restartPolicy", "status.podIP"},
    "events": {
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
        "involvedObject.uid", "involvedObject.apiVersion", "reason", "type",
        "source", "reportingComponent",
    },
}


def _field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def _field_test(path: str, value: str, negate: bool) -> Predicate:
    return lambda obj: (_field_value(obj, path) == value) != negate


def parse_field_selector(selector: str | None, plural: str) -> Predicate:
    if not selector or not selector.strip():
        return lambda obj: True
    allowed = _FIELDS_EVERYWHERE | _FIELDS_BY_PLURAL.get(plural, set())
    tests: list[Predicate] = []
    for requirement in selector.split(","):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", requirement)
        if not m:
            raise bad_request(f"invalid selector: {requirement!r}; expected 'field=value'")
        path, op, value = m.groups()
        if path not in allowed:
            raise APIError(400, "BadRequest", f'"{path}" is not a known field selector: '
                           f"only {', '.join(sorted(allowed))} are supported")
        tests.append(_field_test(path, value, negate=op == "!="))
    return lambda obj: all(t(obj) for t in tests)

"""Server-side printing: the ``meta.k8s.io/v1`` Table kubectl asks for on ``kubectl get``.

kubectl sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the
columns the server chooses. Built-in kinds get the columns kube-apiserver prints
(Deployments: READY, UP-TO-DATE, AVAILABLE, AGE; Pods: READY, STATUS, RESTARTS, AGE; ...);
custom resources get NAME plus their CRD's ``additionalPrinterColumns`` (or NAME, AGE
when there are none), so ``kubectl get md`` shows what the CRD declares. Column
``jsonPath`` supports the simple dotted form (``.status.phase``, ``.spec.hostnames``)
with ``[n]`` indexes, which is what CRDs use in practice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceType
from .selectors import selector_from_match_labels

Column = tuple[str, str, int, Callable[[dict[str, Any]], Any]]  # name, type, priority, cell


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years, days = hours // (24 * 365), (hours // 24) % 365
    return f"{years}y{days}d" if hours < 24 * 365 * 8 and days else f"{years}y"


def age(timestamp: Any) -> str:
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - then).total_seconds())


def _path(obj: Any, json_path: str) -> Any:
    node = obj
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", json_path.strip().lstrip("{").rstrip("}")):
        if part.startswith("["):
            index = int(part[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return node


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _name(obj: dict[str, Any]) -> str:
    return str(_meta(obj).get("name", ""))


def _age(obj: dict[str, Any]) -> str:
    return age(_meta(obj).get("creationTimestamp"))


def _pod_status(pod: dict[str, Any]) -> str:
    if _meta(pod).get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
    return str(status.get("reason") or status.get("phase") or "Pending")


def _pod_ready(pod: dict[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for c in statuses if c.get('ready'))}/{total}"


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_path(obj, ".spec.template.spec.containers") or [])


def _ports(svc: dict[str, Any]) -> str:
    ports = (svc.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


NAME: Column = ("Name", "string", 0, _name)
AGE: Column = ("Age", "string", 0, _age)

BUILTIN_COLUMNS: dict[tuple[str, str], list[Column]] = {
    ("apps", "deployments"): [
        NAME,
        ("Ready", "string", 0, lambda d: f"{_path(d, '.status.readyReplicas') or 0}/"
                                         f"{_path(d, '.spec.replicas') or 0}"),
        ("Up-to-date", "integer", 0, lambda d: _path(d, ".status.updatedReplicas") or 0),
        ("Available", "integer", 0, lambda d: _path(d, ".status.availableReplicas") or 0),
        AGE,
        ("Containers", "string", 1, lambda d: ",".join(c.get("name", "") for c in _containers(d))),
        ("Images", "string", 1, lambda d: ",".join(c.get("image", "") for c in _containers(d))),
        ("Selector", "string", 1,
         lambda d: selector_from_match_labels(_path(d, ".spec.selector")) or "<none>"),
    ],
    ("apps", "replicasets"): [
        NAME,
        ("Desired", "integer", 0, lambda r: _path(r, ".spec.replicas") or 0),
        ("Current", "integer", 0, lambda r: _path(r, ".status.replicas") or 0),
        ("Ready", "integer", 0, lambda r: _path(r, ".status.readyReplicas") or 0),
        AGE,
    ],
    ("", "pods"): [
        NAME,
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, lambda p: str(sum(
            c.get("restartCount", 0) for c in _path(p, ".status.containerStatuses") or []))),
        AGE,
        ("IP", "string", 1, lambda p: _path(p, ".status.podIP") or "<none>"),
        ("Node", "string", 1, lambda p: _path(p, ".spec.nodeName") or "<none>"),
    ],
    ("", "services"): [
        NAME,
        ("Type", "string", 0, lambda s: _path(s, ".spec.type") or "ClusterIP"),
        ("Cluster-IP", "string", 0, lambda s: _path(s, ".spec.clusterIP") or "<none>"),
        ("External-IP", "string", 0, lambda s: "<none>"),
        ("Port(s)", "string", 0, _ports),
        AGE,
    ],
    ("", "configmaps"): [
        NAME,
        ("Data", "integer", 0, lambda c: len(c.get("data") or {}) + len(c.get("binaryData") or {})),
        AGE,
    ],
    ("", "events"): [
        ("Last Seen", "string", 0, lambda e: age(
            e.get("lastTimestamp") or e.get("eventTime") or _meta(e).get("creationTimestamp"))),
        ("Type", "string", 0, lambda e: e.get("type", "")),
        ("Reason", "string", 0, lambda e: e.get("reason", "")),
        ("Object", "string", 0, lambda e: f"{str(_path(e, '.involvedObject.kind')).lower()}/"
                                          f"{_path(e, '.involvedObject.name')}"),
        ("Message", "string", 0, lambda e: e.get("message", "")),
    ],
    ("", "namespaces"): [NAME, ("Status", "string", 0, lambda n: _path(n, ".status.phase")), AGE],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [
        NAME, ("Created At", "date", 0, lambda c: _meta(c).get("creationTimestamp")),
    ],
}


def _custom_columns(rt: ResourceType) -> list[Column]:
    if not rt.printer_columns:
        return [NAME, AGE]
    columns = [NAME]
    for spec in rt.printer_columns:
        kind, path = spec.get("type", "string"), spec.get("jsonPath", "")

        def cell(obj: dict[str, Any], kind: str = kind, path: str = path) -> Any:
            value = _path(obj, path)
            if kind == "date":
                return age(value) if value else "<unknown>"
            if isinstance(value, list):
                return ",".join(str(v) for v in value)
            return value if value is not None else "<none>"

        columns.append((spec.get("name", path), "string" if kind == "date" else kind,
                        int(spec.get("priority", 0)), cell))
    return columns


def columns_for(rt: ResourceType) -> list[Column]:
    if rt.custom:
        return _custom_columns(rt)
    return BUILTIN_COLUMNS.get((rt.group, rt.plural), [NAME, AGE])


def _row(rt: ResourceType, obj: dict[str, Any], include: str,
         columns: list[Column]) -> dict[str, Any]:
    row: dict[str, Any] = {"cells": [c[3](obj) for c in columns]}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                         "metadata": obj.get("metadata", {})}
    return row


def table(rt: ResourceType, objects: list[dict[str, Any]], list_metadata: dict[str, Any],
          include: str = "Metadata", with_columns: bool = True) -> dict[str, Any]:
    """A Table of ``objects``; watch events after the first carry no column definitions."""
    columns = columns_for(rt)
    definitions = [
        {"name": name, "type": kind, "format": "name" if name == "Name" else "",
         "description": "", "priority": priority}
        for name, kind, priority, _ in columns
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": definitions if with_columns else [],
        "rows": [_row(rt, o, include, columns) for o in objects],
    }

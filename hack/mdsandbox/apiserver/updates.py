"""What kube-apiserver does on an update of a built-in kind beyond defaults.

``carry_over`` fills in what the server allocated and an update left out (a Service's
clusterIP and clusterIPs, as ``patchAllocatedValues`` and ``normalizeClusterIPs`` do,
so a PUT or apply without them keeps the address); ``immutable_causes`` refuses changes
to fields a real server keeps fixed, with its field paths and wording:

* Deployment and ReplicaSet ``spec.selector``: ``Invalid value: v1.LabelSelector{...}:
  field is immutable`` (apps/v1; compared as Go's semantic equality, where an empty
  map equals a missing one);
* ConfigMap with ``immutable: true``: ``data``, ``binaryData`` and ``immutable`` itself,
  ``Forbidden: field is immutable when `immutable` is set``;
* Service (not ExternalName, not headless before and after): ``spec.clusterIPs[i]:
  Invalid value: []string{...}: may not change once set``, or ``primary clusterIP can
  not be unset`` (kube-apiserver since 1.20; ``spec.clusterIP: ... field is immutable``
  is the wording of older servers).

Custom resources are checked by their schema (validation.py) and by ``Cluster.replace``
(a PUT needs a resourceVersion).
"""

from __future__ import annotations

import json
from typing import Any

from .errors import Cause

IMMUTABLE = "field is immutable"
IMMUTABLE_WHEN_SET = "field is immutable when `immutable` is set"


def carry_over(group: str, plural: str, obj: dict[str, Any], old: dict[str, Any]) -> None:
    """Fill into ``obj`` (the update, before defaults) what the server allocated."""
    if group == "" and plural == "services":
        _carry_cluster_ips(obj.get("spec"), old.get("spec"))


def _needs_cluster_ip(spec: dict[str, Any]) -> bool:
    return bool(spec.get("type", "ClusterIP") != "ExternalName")


def _carry_cluster_ips(spec: Any, old_spec: Any) -> None:
    if not isinstance(spec, dict) or not isinstance(old_spec, dict):
        return
    if not (_needs_cluster_ip(spec) and _needs_cluster_ip(old_spec)):
        return
    old_ip, old_ips = old_spec.get("clusterIP") or "", old_spec.get("clusterIPs") or []
    if not spec.get("clusterIP") and old_ip:
        spec["clusterIP"] = old_ip
    if not spec.get("clusterIPs") and old_ips:
        spec["clusterIPs"] = list(old_ips)
    # normalizeClusterIPs: an old client changing only clusterIP changes clusterIPs[0].
    new_ip, new_ips = spec.get("clusterIP") or "", spec.get("clusterIPs") or []
    if new_ip != old_ip and new_ip and new_ips == old_ips:
        spec["clusterIPs"] = [new_ip]


def immutable_causes(group: str, plural: str, obj: dict[str, Any],
                     old: dict[str, Any]) -> list[Cause]:
    """The fields an update of ``old`` into ``obj`` may not change, as the server says."""
    if group == "apps" and plural in ("deployments", "replicasets"):
        return _selector_causes(obj, old)
    if group == "" and plural == "configmaps":
        return _configmap_causes(obj, old)
    if group == "" and plural == "services":
        return _cluster_ip_causes(obj.get("spec"), old.get("spec"))
    return []


def _selector_causes(obj: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    new_selector = (obj.get("spec") or {}).get("selector")
    old_selector = (old.get("spec") or {}).get("selector")
    if _semantic(new_selector) == _semantic(old_selector):
        return []
    return [Cause("spec.selector", f"Invalid value: {_go_label_selector(new_selector)}: "
                                   f"{IMMUTABLE}")]


def _semantic(value: Any) -> Any:
    """Go's semantic equality: empty and missing maps and lists are the same."""
    if isinstance(value, dict):
        return {k: _semantic(v) for k, v in value.items() if v not in (None, {}, [], "")}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


def _go_strings(values: Any) -> str:
    if not values:
        return "[]string(nil)"
    return "[]string{" + ", ".join(json.dumps(str(v)) for v in values) + "}"


def _go_label_selector(selector: Any) -> str:
    """A *metav1.LabelSelector as Go's %#v prints it (map keys sorted)."""
    selector = selector if isinstance(selector, dict) else {}
    labels = selector.get("matchLabels") or {}
    if labels:
        match_labels = "map[string]string{" + ", ".join(
            f"{json.dumps(str(k))}:{json.dumps(str(labels[k]))}" for k in sorted(labels)) + "}"
    else:
        match_labels = "map[string]string(nil)"
    expressions = selector.get("matchExpressions") or []
    if expressions:
        match_expressions = "[]v1.LabelSelectorRequirement{" + ", ".join(
            f"v1.LabelSelectorRequirement{{Key:{json.dumps(str(e.get('key', '')))}, "
            f"Operator:{json.dumps(str(e.get('operator', '')))}, "
            f"Values:{_go_strings(e.get('values'))}}}"
            for e in expressions if isinstance(e, dict)) + "}"
    else:
        match_expressions = "[]v1.LabelSelectorRequirement(nil)"
    return f"v1.LabelSelector{{MatchLabels:{match_labels}, MatchExpressions:{match_expressions}}}"


def _configmap_causes(obj: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    if old.get("immutable") is not True:
        return []
    causes = []
    if obj.get("immutable") is not True:
        causes.append(Cause("immutable", f"Forbidden: {IMMUTABLE_WHEN_SET}", "FieldValueForbidden"))
    for key in ("data", "binaryData"):
        if (obj.get(key) or {}) != (old.get(key) or {}):
            causes.append(Cause(key, f"Forbidden: {IMMUTABLE_WHEN_SET}", "FieldValueForbidden"))
    return causes


def _cluster_ip_causes(spec: Any, old_spec: Any) -> list[Cause]:
    """validateUpgradeDowngradeClusterIPs for the primary family (the sandbox is IPv4)."""
    if not isinstance(spec, dict) or not isinstance(old_spec, dict):
        return []
    if not (_needs_cluster_ip(spec) and _needs_cluster_ip(old_spec)):
        return []
    if spec.get("clusterIP") == "None" and old_spec.get("clusterIP") == "None":
        return []
    new_ips, old_ips = spec.get("clusterIPs") or [], old_spec.get("clusterIPs") or []
    shown = _go_strings(new_ips)
    if len(new_ips) == len(old_ips):
        return [Cause(f"spec.clusterIPs[{i}]", f"Invalid value: {shown}: may not change once set")
                for i, ip in enumerate(old_ips) if new_ips[i] != ip]
    if not new_ips and old_ips:
        return [Cause("spec.clusterIPs[0]",
                      f"Invalid value: {shown}: primary clusterIP can not be unset")]
    if old_ips and new_ips[0] != old_ips[0]:
        return [Cause("spec.clusterIPs[0]", f"Invalid value: {shown}: may not change once set")]
    return []

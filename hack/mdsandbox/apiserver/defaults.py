"""Defaults kube-apiserver fills into built-in objects on write.

Only the fields clients see and compare (kubectl apply's three-way diff, the
controllers' template hashing): pod template/container defaults, Deployment and
ReplicaSet spec defaults, Service defaults (a fake ClusterIP), the status a Pod and
a Namespace start with. Mirrors what deployment.json records.
"""

from __future__ import annotations

import itertools
from typing import Any

_cluster_ips = itertools.count(1)


def _container(container: dict[str, Any]) -> None:
    image = str(container.get("image", ""))
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    container.setdefault("resources", {})
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent")
    for env in container.get("env") or []:
        if isinstance(env, dict) and "valueFrom" in env:
            field_ref = env["valueFrom"].get("fieldRef")
            if isinstance(field_ref, dict):
                field_ref.setdefault("apiVersion", "v1")


def pod_spec(spec: dict[str, Any]) -> None:
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                _container(container)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")


def _template(spec: dict[str, Any]) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        metadata = template.setdefault("metadata", {})
        if isinstance(metadata, dict):
            metadata.setdefault("creationTimestamp", None)
        if isinstance(template.get("spec"), dict):
            pod_spec(template["spec"])


def apply(group: str, plural: str, obj: dict[str, Any]) -> None:
    """Fill defaults into ``obj`` in place (a no-op for types without defaults)."""
    spec = obj.get("spec")
    if group == "apps" and plural in ("deployments", "replicasets") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        _template(spec)
        if plural == "deployments":
            strategy = spec.setdefault("strategy", {})
            if isinstance(strategy, dict):
                strategy.setdefault("type", "RollingUpdate")
                if strategy["type"] == "RollingUpdate":
                    rolling = strategy.setdefault("rollingUpdate", {})
                    rolling.setdefault("maxUnavailable", "25%")
                    rolling.setdefault("maxSurge", "25%")
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
    elif group == "" and plural == "pods" and isinstance(spec, dict):
        pod_spec(spec)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    elif group == "" and plural == "services" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "port" in port:
                    port.setdefault("targetPort", port["port"])
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            n = next(_cluster_ips)
            spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
        if spec.get("clusterIP") and spec["clusterIP"] != "None":
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    elif group == "" and plural == "secrets":
        obj.setdefault("type", "Opaque")
    elif group == "" and plural == "namespaces":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            spec.setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {"phase": "Active"})
        labels = obj.setdefault("metadata", {}).setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"].get("name", "")
    elif group == "" and plural == "events":
        for key in ("firstTimestamp", "lastTimestamp", "eventTime"):
            obj.setdefault(key, None)
        obj.setdefault("reportingComponent", "")
        obj.setdefault("reportingInstance", "")


def initial_status(group: str, plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The status a built-in object starts with on create (its status subresource owns it)."""
    if group == "" and plural == "pods":
        return {"phase": "Pending", "qosClass": _qos_class(obj)}
    if group == "" and plural == "services":
        return {"loadBalancer": {}}
    if group == "" and plural == "namespaces":
        return {"phase": "Active"}
    if group == "apps":
        return {}
    return None


def _qos_class(pod: dict[str, Any]) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    resources = [c.get("resources") or {} for c in containers if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    if all(r.get("limits") and (not r.get("requests") or r["requests"] == r["limits"])
           for r in resources):
        return "Guaranteed"
    return "Burstable"

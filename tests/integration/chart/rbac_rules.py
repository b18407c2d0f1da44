"""RBAC as Kubernetes evaluates it, over requests read from the sandbox's audit log.

The sandbox's API server authorises nothing; it writes one JSON line per request
(verb, apiGroup, resource, subresource, namespace, name, code, userAgent). This module
turns those lines into the attributes an RBAC authoriser looks at, and says whether a
rendered ClusterRole or Role allows them, following the rules of
k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac (``*`` wildcards; ``resourceNames``
only match requests that name an object; a Role only covers its own namespace).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART = REPO_ROOT / "charts" / "modeldeploy"
RELEASE = "md"
RELEASE_NAMESPACE = "modeldeploy-system"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One resource request, as an RBAC authoriser sees it."""

    verb: str
    group: str
    resource: str  # "deployments" or "deployments/scale"
    namespace: str  # "" for cluster-scoped requests and all-namespace lists/watches
    name: str
    user_agent: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)

    def __str__(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace else "cluster-wide"
        named = f" {self.name}" if self.name else ""
        group = self.group or "core"
        return f"{self.verb} {group}/{self.resource}{named} ({where}; {self.user_agent})"


class AuditLog:
    """The sandbox's audit log, read from a byte offset on (so each scenario sees its own)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def requests_since(self, offset: int, agent: Callable[[str], bool]) -> list[Request]:
        """Resource requests whose User-Agent ``agent`` accepts; non-resource URLs (discovery,
        /version) are left out: every authenticated user may read them (system:discovery)."""
        with self.path.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode().splitlines()
        found: list[Request] = []
        for line in lines:
            record = json.loads(line)
            if "nonResourceURL" in record or not agent(record["userAgent"]):
                continue
            resource = record["resource"]
            if record["subresource"]:
                resource = f"{resource}/{record['subresource']}"
            found.append(Request(
                verb=record["verb"], group=record["apiGroup"], resource=resource,
                namespace=record["namespace"], name=record["name"], user_agent=record["userAgent"],
            ))
        return found


def render(values: dict[str, Any]) -> list[Manifest]:
    """Every object the chart renders with these values, through Helm's own engine."""
    with helm.Chart.load(CHART) as chart:
        rendered: dict[str, str] = chart.render(
            values, name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True
        )
    return [
        doc for path, text in rendered.items() if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text) if doc
    ]


@dataclass(frozen=True)
class Grant:
    """A (Cluster)Role's rules; ``namespace`` is None for a ClusterRole bound cluster-wide."""

    name: str
    namespace: str | None
    rules: tuple[Manifest, ...]

    @classmethod
    def of(cls, role: Manifest) -> Grant:
        namespace = role["metadata"].get("namespace") if role["kind"] == "Role" else None
        return cls(role["metadata"]["name"], namespace, tuple(role.get("rules") or ()))

    def allows(self, request: Request) -> bool:
        if self.namespace is not None and request.namespace != self.namespace:
            return False  # a Role covers its own namespace, never cluster-scoped requests
        return any(_rule_allows(rule, request) for rule in self.rules)

    def triples(self) -> set[tuple[str, str, str]]:
        """Every (apiGroup, resource, verb) the rules grant."""
        return {
            (group, resource, verb)
            for rule in self.rules
            for group in rule.get("apiGroups", [])
            for resource in rule.get("resources", [])
            for verb in rule.get("verbs", [])
        }

    def resource_names(self, triple: tuple[str, str, str]) -> set[str] | None:
        """The resourceNames limiting a grant (None when some rule grants it for any name)."""
        names: set[str] = set()
        for rule in self.rules:
            group, resource, verb = triple
            if (group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
                    and verb in rule.get("verbs", [])):
                if not rule.get("resourceNames"):
                    return None
                names.update(rule["resourceNames"])
        return names


def _matches(allowed: Iterable[str], value: str) -> bool:
    allowed = list(allowed)
    return "*" in allowed or value in allowed


def _rule_allows(rule: Manifest, request: Request) -> bool:
    if not _matches(rule.get("apiGroups", []), request.group):
        return False
    if not _matches(rule.get("verbs", []), request.verb):
        return False
    if not _matches(rule.get("resources", []), request.resource):
        return False
    names = rule.get("resourceNames") or []
    return not names or (bool(request.name) and request.name in names)


def operator_grants(objects: list[Manifest], service_account: str) -> list[Grant]:
    """The Roles and ClusterRoles bound to the operator's ServiceAccount."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    grants: list[Grant] = []
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account
                   for s in binding.get("subjects", [])):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], namespace, ref["name"])]
        grant = Grant.of(role)
        if binding["kind"] == "RoleBinding" and grant.namespace is None:
            grant = Grant(grant.name, binding["metadata"]["namespace"], grant.rules)
        grants.append(grant)
    return grants


def service_account_name(objects: list[Manifest]) -> str:
    accounts = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert len(accounts) == 1, "the chart renders one ServiceAccount for the operator"
    name: str = accounts[0]["metadata"]["name"]
    return name

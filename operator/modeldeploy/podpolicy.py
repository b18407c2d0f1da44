"""The podTemplatePolicy: pod templates that reach beyond their namespace's defaults, refused.

The operator creates each revision's Deployment with its own rights, so whoever may
create a ModelDeployment may run any pod the namespace's Pod Security level admits
(README, "Security model"). A cluster that gives ModelDeployment authors less than the
right to create Deployments turns the policy on (the chart does, by default): the
operator then refuses, at validation time, a template that

- runs as a ServiceAccount other than ``default`` (or one the chart's
  ``podTemplatePolicy.allowedServiceAccounts`` lists): its token may hold rights the
  author lacks;
- mounts a ``hostPath`` volume;
- has a privileged container (containers, initContainers, ephemeralContainers);
- shares a host namespace (``hostNetwork``, ``hostPID``, ``hostIPC``).

A refused template is reported like any invalid spec (status, condition Ready False
reason InvalidSpec, a Warning Event) and changes no running workload. Pod Security
admission still applies to the pods themselves; this policy only stops the operator
from being the way around an author's own RBAC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

POLICY_ENV = "MODELDEPLOY_POD_TEMPLATE_POLICY"
ALLOWED_SERVICE_ACCOUNTS_ENV = "MODELDEPLOY_ALLOWED_SERVICE_ACCOUNTS"
POLICIES = ("off", "restricted")
FIX = "or ask your cluster admin to change the operator's podTemplatePolicy (chart values)"


@dataclass(frozen=True)
class PodTemplatePolicy:
    enforced: bool = False
    allowed_service_accounts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_env(cls, policy: str | None, service_accounts: str | None) -> PodTemplatePolicy:
        """From MODELDEPLOY_POD_TEMPLATE_POLICY (``off``, the default, or ``restricted``) and
        MODELDEPLOY_ALLOWED_SERVICE_ACCOUNTS (comma-separated names)."""
        value = (policy or "off").strip().lower()
        if value not in POLICIES:
            raise ValueError(f"{POLICY_ENV}={policy!r}: use one of {', '.join(POLICIES)}")
        accounts = frozenset(a.strip() for a in (service_accounts or "").split(",") if a.strip())
        return cls(enforced=value == "restricted", allowed_service_accounts=accounts)

    def refusals(self, pod_spec: dict[str, Any]) -> list[str]:
        """``<field>: <problem and fix>`` for each part of the template the policy refuses."""
        if not self.enforced:
            return []
        where = "spec.template.spec"
        refused: list[str] = []
        for key in ("serviceAccountName", "serviceAccount"):
            account = pod_spec.get(key)
            if account and account != "default" and account not in self.allowed_service_accounts:
                allowed = ", ".join(sorted({"default", *self.allowed_service_accounts}))
                refused.append(
                    f"{where}.{key}: ServiceAccount {account!r} is not allowed (allowed: "
                    f"{allowed}): remove it to run as the namespace's default, {FIX}")
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod_spec.get(key) is True:
                refused.append(f"{where}.{key}: host namespaces are not allowed: remove it, {FIX}")
        for i, volume in enumerate(pod_spec.get("volumes") or []):
            if isinstance(volume, dict) and "hostPath" in volume:
                refused.append(
                    f"{where}.volumes[{i}].hostPath: hostPath volumes are not allowed: use a "
                    f"PersistentVolumeClaim or an emptyDir, {FIX}")
        for section in ("initContainers", "containers", "ephemeralContainers"):
            for i, container in enumerate(pod_spec.get(section) or []):
                context = container.get("securityContext") if isinstance(container, dict) else None
                if isinstance(context, dict) and context.get("privileged") is True:
                    refused.append(
                        f"{where}.{section}[{i}].securityContext.privileged: privileged "
                        f"containers are not allowed: remove it, {FIX}")
        return refused

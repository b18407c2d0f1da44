"""Apply and read the objects a ModelDeployment owns, through the Kubernetes API.

The official client is synchronous; every call runs in a worker thread
(``asyncio.to_thread``) so a slow API server never stalls Kopf's event loop.

Applying is create-or-patch with a JSON merge patch of the fields the operator owns,
never a replace, so fields other controllers own survive. One exception is named on
purpose: ``spec.replicas`` of a revision's Deployment is the traffic split of the
``replicas`` router, so the operator owns it; an HPA must not target these
Deployments (scale the ModelDeployment's ``spec.replicas`` instead; see README).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import importlib.metadata
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import kubernetes
from kubernetes.client import ApiClient, ApiException

from modeldeploy import spec as s

Manifest = dict[str, Any]
T = TypeVar("T")

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = f"modeldeploy-operator/{importlib.metadata.version('modeldeploy')}"


def load_api_client() -> ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube).

    The client introduces itself as ``modeldeploy-operator/<version>``, so API server audit
    logs tell the operator's requests from ``kubectl modeldeploy``'s (the kubernetes client's
    default agent, ``OpenAPI-Generator/…``); Kopf's own requests say ``kopf/<version>``.
    """
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    client = ApiClient()
    client.user_agent = USER_AGENT
    return client


def without_nulls(value: Any) -> Any:
    """Drop keys whose value is None (they mean "remove" in a patch, nothing in a create)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


class NamespaceTerminating(Exception):
    """The namespace is being deleted: the API server refuses new objects in it (403)."""


def _is_namespace_terminating(error: ApiException) -> bool:
    return error.status == 403 and "being terminated" in str(error.body or "")


class KubeClient:
    """The operator's only door to the API server for the objects it owns."""

    def __init__(self, api_client: ApiClient) -> None:
        self._api = api_client
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._apps = kubernetes.client.AppsV1Api(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as error:
            if _is_namespace_terminating(error):
                raise NamespaceTerminating(str(error.body)) from None
            raise

    # -- the ModelDeployment itself ----------------------------------------------------

    async def get_model_deployment(self, namespace: str, name: str) -> Manifest | None:
        try:
            body: Manifest = await self._call(
                self._custom.get_namespaced_custom_object,
                s.GROUP, s.VERSION, namespace, s.PLURAL, name,
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    async def write_status(self, body: Manifest, status: Manifest) -> bool:
        """Replace the whole status in one write, guarded by resourceVersion. False on a conflict.

        A replace (PUT on /status), not a merge patch: a field the engine cleared (say
        canaryRevision after a promotion) must disappear, which a merge patch would only
        do with explicit nulls. A conflict means someone (a user's `modeldeploy
        promote`, or another tick) wrote in between: the caller decides again.
        """
        meta = body["metadata"]
        updated = {**body, "status": status}
        try:
            await self._call(
                self._custom.replace_namespaced_custom_object_status,
                s.GROUP, s.VERSION, meta["namespace"], s.PLURAL, meta["name"], updated,
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    # -- owned objects ---------------------------------------------------------------

    async def list_deployments(self, namespace: str, md_name: str) -> list[Manifest]:
        result = await self._call(
            self._apps.list_namespaced_deployment,
            namespace, label_selector=f"{s.LABEL_NAME}={md_name}",
        )
        return [self._api.sanitize_for_serialization(item) for item in result.items]

    async def list_pods(self, namespace: str, md_name: str) -> list[Manifest]:
        result = await self._call(
            self._core.list_namespaced_pod, namespace, label_selector=f"{s.LABEL_NAME}={md_name}"
        )
        return [self._api.sanitize_for_serialization(item) for item in result.items]

    async def apply(self, manifest: Manifest) -> None:
        """Create the object, or patch the fields the operator owns on it.

        - Deployment: labels and replicas only. A revision's pod template never changes
          (the revision IS the template's hash), and re-sending it would restart pods
          when only a label such as the track differs.
        - Service: labels, ports and the selector; a selector key set to None is
          removed (JSON merge patch semantics), so a Service can widen again.
        - ConfigMap: immutable, never patched.
        """
        kind = manifest["kind"]
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        create, patch = self._verbs(kind)
        try:
            await self._call(create, namespace, without_nulls(manifest))
            return
        except ApiException as error:
            if error.status != 409:
                raise
        if kind == "ConfigMap":
            return
        if kind == "Deployment":
            body = {
                "metadata": {"labels": manifest["metadata"]["labels"]},
                "spec": {"replicas": manifest["spec"]["replicas"]},
            }
        else:
            body = {"metadata": {"labels": manifest["metadata"]["labels"]}, "spec": manifest["spec"]}
        await self._call(patch, name, namespace, body)

    async def get_service_selector(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            service = await self._call(self._core.read_namespaced_service, name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        selector: dict[str, str] = dict(service.spec.selector or {})
        return selector

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        await self._call(
            self._apps.patch_namespaced_deployment_scale,
            name, namespace, {"spec": {"replicas": replicas}},
        )

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        deleters: dict[str, Callable[..., Any]] = {
            "Deployment": self._apps.delete_namespaced_deployment,
            "Service": self._core.delete_namespaced_service,
            "ConfigMap": self._core.delete_namespaced_config_map,
        }
        try:
            await self._call(deleters[kind], name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    async def label_pods(self, namespace: str, selector: str, labels: dict[str, str]) -> None:
        result = await self._call(
            self._core.list_namespaced_pod, namespace, label_selector=selector
        )
        for pod in result.items:
            current = pod.metadata.labels or {}
            if any(current.get(k) != v for k, v in labels.items()):
                await self._call(
                    self._core.patch_namespaced_pod,
                    pod.metadata.name, namespace, {"metadata": {"labels": labels}},
                )

    def _verbs(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        verbs: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
            "Deployment": (
                self._apps.create_namespaced_deployment,
                self._apps.patch_namespaced_deployment,
            ),
            "Service": (
                self._core.create_namespaced_service,
                self._core.patch_namespaced_service,
            ),
            "ConfigMap": (
                self._core.create_namespaced_config_map,
                self._core.patch_namespaced_config_map,
            ),
        }
        return verbs[kind]

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None when the Secret or key is missing."""
        try:
            secret = await self._call(self._core.read_namespaced_secret, name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        encoded = (secret.data or {}).get(key)
        return None if encoded is None else base64.b64decode(encoded).decode()

    # -- HTTPRoutes (the gatewayAPI router) -------------------------------------------

    async def get_http_route(self, namespace: str, name: str) -> Manifest | None:
        try:
            body: Manifest = await self._call(
                self._custom.get_namespaced_custom_object,
                "gateway.networking.k8s.io", "v1", namespace, "httproutes", name,
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    async def apply_http_route(self, manifest: Manifest) -> None:
        await self._call(
            self._custom.create_namespaced_custom_object,
            "gateway.networking.k8s.io", "v1", manifest["metadata"]["namespace"], "httproutes",
            manifest,
        )

    async def patch_http_route(self, namespace: str, name: str, patch: Manifest) -> None:
        await self._call(
            self._custom.patch_namespaced_custom_object,
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", name, patch,
        )

    # -- events ----------------------------------------------------------------------

    async def emit_event(
        self, md_body: Manifest, event_type: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event on the ModelDeployment, as `kubectl describe md` shows them."""
        meta = md_body["metadata"]
        now = dt.datetime.now(dt.UTC)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": f"{s.GROUP}/{s.VERSION}",
                "kind": s.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "modeldeploy"},
            "reportingComponent": "modeldeploy",
            "reportingInstance": "modeldeploy-operator",
            "firstTimestamp": now.isoformat().replace("+00:00", "Z"),
            "lastTimestamp": now.isoformat().replace("+00:00", "Z"),
            "count": 1,
        }
        await self._call(self._core.create_namespaced_event, meta["namespace"], event)

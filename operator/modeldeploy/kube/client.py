"""Apply the objects a ModelDeployment owns through the Kubernetes API; read them from the cache.

Reads come from the watch-fed caches (``modeldeploy.kube.cache``). Writes use the
official client, which is synchronous: every call runs in a worker thread
(``asyncio.to_thread``) with a deadline, so a slow API server never stalls the event loop.

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
from modeldeploy.kube.cache import ClusterCache
from modeldeploy.messages import EVENT_MESSAGE_MAX, bounded

Manifest = dict[str, Any]
T = TypeVar("T")

MERGE_PATCH = "application/merge-patch+json"
# Every call has a deadline: (connect, read) seconds for each socket operation of its
# thread, and CALL_DEADLINE for the whole call as the tick awaits it, so a server that
# trickles bytes cannot hold a tick (the thread it holds is abandoned to its socket).
# MODELDEPLOY_API_CALL_DEADLINE_SECONDS sets the latter (CALL_DEADLINE is its default).
REQUEST_TIMEOUT = (10, 30)
CALL_DEADLINE = 60.0
# A 429 with Retry-After (API Priority and Fairness, a rate limit) was not processed: it is
# sent again once the wait the server asked for is over, as client-go does (its default of
# 10 tries), within CALL_DEADLINE; past either it is the caller's failure (back-off).
THROTTLED_TRIES = 10
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


def _retry_after(error: ApiException) -> float | None:
    """The wait a 429 asks for (its Retry-After seconds), or None when it is not one."""
    if error.status != 429:
        return None
    value = (error.headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from kube-apiserver; the caller's back-off applies


class NamespaceTerminating(Exception):
    """The namespace is being deleted: the API server refuses new objects in it (403)."""


def _is_namespace_terminating(error: ApiException) -> bool:
    return error.status == 403 and "being terminated" in str(error.body or "")


def _differs(cached: Manifest, desired: Manifest) -> bool:
    """True when a field the operator owns on ``desired`` differs on the cached object."""
    cached_labels = cached["metadata"].get("labels") or {}
    if any(cached_labels.get(k) != v for k, v in desired["metadata"]["labels"].items()):
        return True
    if desired["kind"] == "Deployment":
        return bool(cached["spec"].get("replicas") != desired["spec"]["replicas"])
    if desired["kind"] == "Service":
        selector = {k: v for k, v in desired["spec"]["selector"].items() if v is not None}
        if (cached["spec"].get("selector") or {}) != selector:
            return True
        ports = cached["spec"].get("ports") or []
        return len(ports) != len(desired["spec"]["ports"]) or any(
            any(have.get(k) != v for k, v in want.items())
            for have, want in zip(ports, desired["spec"]["ports"], strict=False)
        )
    return False


class NotOurs(Exception):
    """An object the operator would write exists and is not controlled by this ModelDeployment."""

    def __init__(
        self, kind: str, name: str, controller: str,
        fix: str = "delete or rename it to let the rollout use the name",
    ) -> None:
        self.kind, self.name, self.controller = kind, name, controller
        super().__init__(f"{kind} {name} exists and is controlled by {controller}, not by this "
                         f"ModelDeployment: left untouched; {fix}")


def controller_of(obj: Manifest) -> Manifest | None:
    """The ownerReference with ``controller: true`` (at most one, by API rule)."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def describe_controller(obj: Manifest) -> str:
    ref = controller_of(obj)
    if ref is None:
        return "nobody"
    return f"{ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})"


def controlled_by(obj: Manifest, uid: str | None) -> bool:
    ref = controller_of(obj)
    return uid is not None and ref is not None and ref.get("uid") == uid


class KubeClient:
    """The operator's only door to the API server for the objects it owns.

    Reads come from the watch-fed ``ClusterCache`` (no request); writes go to the API
    server only when the cached object differs from the desired one, and their answers
    are remembered in the cache.
    """

    def __init__(
        self, api_client: ApiClient, cache: ClusterCache, call_deadline: float = CALL_DEADLINE
    ) -> None:
        self._api = api_client
        self.cache = cache
        self._call_deadline = call_deadline
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._apps = kubernetes.client.AppsV1Api(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._call_deadline
        tries = 0
        while True:
            tries += 1
            try:
                return await asyncio.wait_for(
                    asyncio.to_thread(fn, *args, _request_timeout=REQUEST_TIMEOUT, **kwargs),
                    max(0.0, deadline - loop.time()),
                )
            except ApiException as error:
                if _is_namespace_terminating(error):
                    raise NamespaceTerminating(str(error.body)) from None
                wait = _retry_after(error)
                if wait is None or tries >= THROTTLED_TRIES or loop.time() + wait >= deadline:
                    raise
            await asyncio.sleep(wait)

    def _remember(self, kind: str, answer: Any) -> None:
        obj = answer if isinstance(answer, dict) else self._api.sanitize_for_serialization(answer)
        if isinstance(obj, dict) and obj.get("metadata"):
            self.cache.remember(kind, obj)

    # -- the ModelDeployment itself ----------------------------------------------------

    def get_model_deployment(self, namespace: str, name: str) -> Manifest | None:
        return self.cache.get(s.KIND, namespace, name)

    async def refresh_model_deployment(self, namespace: str, name: str) -> None:
        """Read one ModelDeployment from the API server (after a conflict) into the cache."""
        try:
            body = await self._call(
                self._custom.get_namespaced_custom_object,
                s.GROUP, s.VERSION, namespace, s.PLURAL, name,
            )
        except ApiException as error:
            if error.status == 404:
                return  # its DELETED event takes it out of the cache
            raise
        self._remember(s.KIND, body)

    async def write_status(self, body: Manifest, status: Manifest) -> bool:
        """Replace the whole status in one write, guarded by resourceVersion. False on a conflict.

        A replace (PUT on /status), not a merge patch: a field the engine cleared (say
        canaryRevision after a promotion) must disappear, which a merge patch would only
        do with explicit nulls. A conflict means someone (a user's `modeldeploy
        promote`, or another operator) wrote in between, or the cache was behind: that
        one object is read again and the caller decides again.
        """
        meta = body["metadata"]
        updated = {**body, "status": status}
        try:
            answer = await self._call(
                self._custom.replace_namespaced_custom_object_status,
                s.GROUP, s.VERSION, meta["namespace"], s.PLURAL, meta["name"], updated,
            )
        except ApiException as error:
            if error.status == 409:
                await self.refresh_model_deployment(meta["namespace"], meta["name"])
                return False
            raise
        self._remember(s.KIND, answer)
        return True

    # -- owned objects ---------------------------------------------------------------
    #
    # The ``modeldeploy.io/name`` label only narrows what the caches hold; ownership is the
    # controller ownerReference to this ModelDeployment's UID, as for a ReplicaSet and its
    # Deployment. An object that carries the label without that reference is someone
    # else's: never read as ours, never patched, scaled or deleted, only reported.

    def _uid(self, namespace: str, md_name: str) -> str | None:
        body = self.get_model_deployment(namespace, md_name)
        return None if body is None else body["metadata"].get("uid")

    def _ours(self, kind: str, namespace: str, name: str, md_name: str) -> Manifest | None:
        """The cached object when this ModelDeployment controls it, else None."""
        cached = self.cache.get(kind, namespace, name)
        if cached is None or not controlled_by(cached, self._uid(namespace, md_name)):
            return None
        return cached

    def _to_write(self, kind: str, namespace: str, name: str, md_name: str) -> Manifest | None:
        """The cached object a write may touch: None when absent; NotOurs when someone
        else controls it."""
        cached = self.cache.get(kind, namespace, name)
        if cached is not None and not controlled_by(cached, self._uid(namespace, md_name)):
            raise NotOurs(kind, name, describe_controller(cached))
        return cached

    def list_deployments(self, namespace: str, md_name: str) -> list[Manifest]:
        uid = self._uid(namespace, md_name)
        return [d for d in self.cache.owned("Deployment", namespace, md_name)
                if controlled_by(d, uid)]

    def list_pods(self, namespace: str, md_name: str) -> list[Manifest]:
        """Pods of this ModelDeployment's Deployments: controlled by a ReplicaSet
        ``<deployment>-<pod-template-hash>`` of one of them (ReplicaSets are not cached)."""
        ours = {d["metadata"]["name"] for d in self.list_deployments(namespace, md_name)}
        pods = []
        for pod in self.cache.owned("Pod", namespace, md_name):
            ref = controller_of(pod)
            if ref is not None and ref.get("kind") == "ReplicaSet" \
                    and str(ref.get("name")).rsplit("-", 1)[0] in ours:
                pods.append(pod)
        return pods

    def foreign_objects(self, namespace: str, md_name: str) -> list[NotOurs]:
        """Objects labelled with this ModelDeployment's name that it does not control."""
        found = []
        uid = self._uid(namespace, md_name)
        for kind in ("Deployment", "Service", "ConfigMap"):
            for obj in self.cache.owned(kind, namespace, md_name):
                if not controlled_by(obj, uid):
                    found.append(NotOurs(kind, obj["metadata"]["name"], describe_controller(obj)))
        return sorted(found, key=lambda c: (c.kind, c.name))

    async def apply(self, manifest: Manifest) -> None:
        """Create the object when the cache lacks it, else patch the fields the operator owns
        on it, and only those that differ: an object as desired costs no request.

        - Deployment: labels and replicas only. A revision's pod template never changes
          (the revision IS the template's hash), and re-sending it would restart pods
          when only a label such as the track differs.
        - Service: labels, ports and the selector; a selector key set to None is
          removed (JSON merge patch semantics), so a Service can widen again.
        - ConfigMap: immutable, never patched.

        An object of that name that this ModelDeployment does not control is never
        touched: ``NotOurs`` is raised for the caller to report. A create answered 409
        means an object the cache does not hold (it lacks the ``modeldeploy.io/name`` label
        the caches select by): it is read once to see whose it is; ours (a label removed
        by hand) is patched, which labels it again.
        """
        kind = manifest["kind"]
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        uid = manifest["metadata"]["ownerReferences"][0]["uid"]
        create, patch = self._verbs(kind)
        cached = self.cache.get(kind, namespace, name)
        if cached is None:
            try:
                self._remember(kind, await self._call(create, namespace, without_nulls(manifest)))
                return
            except ApiException as error:
                if error.status != 409:
                    raise
            cached = await self._read(kind, namespace, name)
            if cached is None:
                return  # deleted in between: the next reconcile creates it
        if not controlled_by(cached, uid):
            raise NotOurs(kind, name, describe_controller(cached))
        if kind == "ConfigMap" or not _differs(cached, manifest):
            return
        if kind == "Deployment":
            body = {
                "metadata": {"labels": manifest["metadata"]["labels"]},
                "spec": {"replicas": manifest["spec"]["replicas"]},
            }
        else:
            spec = dict(manifest["spec"])
            # A merge patch keeps keys it does not name: remove a selector key someone
            # added, or the Service would select fewer pods than it should.
            extra = set(cached["spec"].get("selector") or {}) - set(spec["selector"])
            spec["selector"] = {**spec["selector"], **dict.fromkeys(extra)}
            body = {"metadata": {"labels": manifest["metadata"]["labels"]}, "spec": spec}
        self._remember(kind, await self._call(patch, name, namespace, body))

    async def _read(self, kind: str, namespace: str, name: str) -> Manifest | None:
        readers: dict[str, Callable[..., Any]] = {
            "Deployment": self._apps.read_namespaced_deployment,
            "Service": self._core.read_namespaced_service,
            "ConfigMap": self._core.read_namespaced_config_map,
        }
        try:
            answer = await self._call(readers[kind], name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        obj: Manifest = self._api.sanitize_for_serialization(answer)
        return obj

    async def read_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data (None: not found), read from the API server: an evaluation's
        cases are the user's ConfigMap, not one of ours the cache holds."""
        found = await self._read("ConfigMap", namespace, name)
        return None if found is None else dict(found.get("data") or {})

    def get_service_ingress(self, namespace: str, name: str, md_name: str) -> Manifest | None:
        """The first ``status.loadBalancer.ingress`` entry of a Service this ModelDeployment
        controls, from the cache; None when it publishes none (or is not ours)."""
        service = self._ours("Service", namespace, name, md_name)
        ingress = (((service or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress")
        return dict(ingress[0]) if ingress else None

    def get_service_selector(self, namespace: str, name: str) -> dict[str, str] | None:
        """The selector of the Service ``name`` that this ModelDeployment (``name``) controls."""
        service = self._ours("Service", namespace, name, name)
        if service is None:
            return None
        return dict(service["spec"].get("selector") or {})

    async def scale_deployment(
        self, namespace: str, md_name: str, name: str, replicas: int
    ) -> None:
        """Set an owned Deployment's replicas when they differ (a missing one has nothing to
        scale; one this ModelDeployment does not control is reported, never scaled)."""
        cached = self._to_write("Deployment", namespace, name, md_name)
        if cached is None or cached["spec"].get("replicas") == replicas:
            return
        self._remember("Deployment", await self._call(
            self._apps.patch_namespaced_deployment, name, namespace,
            {"spec": {"replicas": replicas}},
        ))

    async def delete(self, kind: str, namespace: str, md_name: str, name: str) -> None:
        """Delete an owned object the cache holds, only if it is still that object (UID
        precondition); one this ModelDeployment does not control is never deleted."""
        cached = self._to_write(kind, namespace, name, md_name)
        if cached is None:
            return
        deleters: dict[str, Callable[..., Any]] = {
            "Deployment": self._apps.delete_namespaced_deployment,
            "Service": self._core.delete_namespaced_service,
            "ConfigMap": self._core.delete_namespaced_config_map,
        }
        options = {"preconditions": {"uid": cached["metadata"].get("uid")}}
        try:
            await self._call(deleters[kind], name, namespace, body=options)
        except ApiException as error:
            if error.status not in (404, 409):  # gone already, or replaced by another object
                raise

    async def label_pods(
        self, namespace: str, md_name: str, revision: str, labels: dict[str, str]
    ) -> None:
        """Label the revision's pods that lack ``labels`` (the others cost nothing)."""
        for pod in self.list_pods(namespace, md_name):
            current = pod["metadata"].get("labels") or {}
            if current.get(s.LABEL_REVISION) != revision:
                continue
            if any(current.get(k) != v for k, v in labels.items()):
                try:
                    self._remember("Pod", await self._call(
                        self._core.patch_namespaced_pod,
                        pod["metadata"]["name"], namespace, {"metadata": {"labels": labels}},
                    ))
                except ApiException as error:
                    if error.status != 404:  # a pod that just went needs no label
                        raise

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
        """One key of a Secret, decoded; None when the Secret or key is missing.

        Read from the API server when an analysis round needs it (never at rest), so a
        rotated token takes effect at the next round without watching Secrets.
        """
        try:
            secret = await self._call(self._core.read_namespaced_secret, name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        encoded = (secret.data or {}).get(key)
        return None if encoded is None else base64.b64decode(encoded).decode()

    # -- HTTPRoutes (the gatewayAPI router) -------------------------------------------

    def get_http_route(self, namespace: str, name: str) -> Manifest | None:
        return self.cache.get("HTTPRoute", namespace, name)

    async def create_http_route(self, manifest: Manifest) -> None:
        try:
            self._remember("HTTPRoute", await self._call(
                self._custom.create_namespaced_custom_object,
                "gateway.networking.k8s.io", "v1", manifest["metadata"]["namespace"], "httproutes",
                manifest,
            ))
        except ApiException as error:
            if error.status != 409:  # the cache is behind: its watch event wakes us again
                raise

    async def patch_http_route(self, namespace: str, name: str, patch: Manifest) -> None:
        self._remember("HTTPRoute", await self._call(
            self._custom.patch_namespaced_custom_object,
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", name, patch,
        ))

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
            "message": bounded(message, EVENT_MESSAGE_MAX),
            "source": {"component": "modeldeploy"},
            "reportingComponent": "modeldeploy",
            "reportingInstance": "modeldeploy-operator",
            "firstTimestamp": now.isoformat().replace("+00:00", "Z"),
            "lastTimestamp": now.isoformat().replace("+00:00", "Z"),
            "count": 1,
        }
        await self._call(self._core.create_namespaced_event, meta["namespace"], event)

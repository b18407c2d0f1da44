"""What the e2e scenarios need from a cluster, through the Kubernetes API only (the official
client): namespaces, the fake upstream, ModelDeployments, waiting on their status by watch, and
traffic sent through the API server's service proxy. Nothing here knows the local sandbox."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"
CRD_NAME = f"{PLURAL}.{GROUP}"
Body = dict[str, Any]


class Cluster:
    """A cluster reached through one kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    @staticmethod
    def readiness_problem(kubeconfig: Path) -> str:
        """Why the cluster cannot run the scenarios, or "" when it can."""
        try:
            api = config.new_client_from_config(config_file=str(kubeconfig))
            client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME)
        except ApiException as error:
            if error.status == 404:
                return (
                    f"the cluster in {kubeconfig} has no {CRD_NAME} CRD: install the chart "
                    "(hack/kind-up.sh, or helm install charts/modeldeploy)"
                )
            return f"the cluster in {kubeconfig} answered {error.status}: {error.reason}"
        except Exception as error:  # unreachable server, bad kubeconfig: say which
            return f"the cluster in {kubeconfig} is unreachable: {error}"
        return ""

    # -- namespaces -----------------------------------------------------------------------

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name, "labels": {"modeldeploy.io/e2e": "true"}}})

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name, propagation_policy="Foreground")
        except ApiException as error:
            if error.status != 404:
                raise

    # -- plain objects --------------------------------------------------------------------

    def create_deployment_and_service(self, namespace: str, deployment: Body, service: Body) -> None:
        self.apps.create_namespaced_deployment(namespace, deployment)
        self.core.create_namespaced_service(namespace, service)

    def wait_for_deployment_ready(self, namespace: str, name: str, timeout_s: int = 300) -> None:
        def ready(obj: Any) -> bool:
            status = obj.status
            return bool(
                status and status.ready_replicas and status.ready_replicas >= (obj.spec.replicas or 1)
            )

        self._wait(self.apps.list_namespaced_deployment, namespace, name, ready, timeout_s)

    # -- ModelDeployments -----------------------------------------------------------------

    def create_model_deployment(self, body: Body) -> Body:
        namespace = body["metadata"]["namespace"]
        created: Body = self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        return created

    def get_model_deployment(self, namespace: str, name: str) -> Body:
        got: Body = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return got

    def update_container_env(self, namespace: str, name: str, env: dict[str, str]) -> Body:
        """Change env vars of the first container: a new template, so a new revision."""
        body = self.get_model_deployment(namespace, name)
        container = body["spec"]["template"]["spec"]["containers"][0]
        current = [e for e in container.get("env", []) if e["name"] not in env]
        container["env"] = current + [{"name": k, "value": v} for k, v in env.items()]
        replaced: Body = self.custom.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, body
        )
        return replaced

    def replace_model_deployment_spec(self, namespace: str, name: str, spec: Body) -> Body:
        """Put a whole spec back, as `kubectl apply` of an older manifest (a git revert) does."""
        body = self.get_model_deployment(namespace, name)
        body["spec"] = spec
        replaced: Body = self.custom.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, body
        )
        return replaced

    def deployments_of(self, namespace: str, name: str) -> dict[str, Any]:
        """The Deployments a ModelDeployment owns, by revision."""
        listed = self.apps.list_namespaced_deployment(
            namespace, label_selector=f"modeldeploy.io/name={name}"
        )
        return {d.metadata.labels["modeldeploy.io/revision"]: d for d in listed.items}

    def wait_for_model_deployment(
        self, namespace: str, name: str, predicate: Callable[[Body], bool], timeout_s: int = 600
    ) -> Body:
        """Watch the ModelDeployment until `predicate` holds; fail with its last status."""

        def list_md(namespace: str, **kwargs: Any) -> Any:
            return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kwargs)

        found: Body = self._wait(list_md, namespace, name, predicate, timeout_s)
        return found

    # -- traffic through the API server's service proxy -----------------------------------

    def _http(self) -> httpx.Client:
        """An HTTP client with the kubeconfig's server, credentials and CA.

        Built from the kubernetes client's resolved configuration rather than its
        ``call_api``, whose signature changed between client versions.
        """
        conf = self.api.configuration
        headers = {"Accept": "application/json"}
        token = conf.get_api_key_with_prefix("authorization") or conf.get_api_key_with_prefix("BearerToken")
        if token:
            headers["Authorization"] = token
        verify: Any = conf.ssl_ca_cert or conf.verify_ssl
        cert = (conf.cert_file, conf.key_file) if conf.cert_file else None
        return httpx.Client(base_url=conf.host, headers=headers, verify=verify, cert=cert, timeout=60)

    def proxy(
        self, namespace: str, service: str, port: str, method: str, path: str,
        body: Body | None = None, http: httpx.Client | None = None,
    ) -> int:
        """One HTTP request to a Service through the API server; returns the status code
        (0 when nothing answered). ``http``: a client to reuse, e.g. one per traffic worker."""
        with contextlib.nullcontext(http) if http is not None else self._http() as client_:
            try:
                response = client_.request(
                    method, f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path}",
                    json=body,
                )
            except httpx.HTTPError:
                return 0
            return response.status_code

    @contextmanager
    def traffic(
        self, namespace: str, service: str, port: str, path: str, make_body: Callable[[int], Body]
    ) -> Iterator[dict[int, int]]:
        """Send requests back to back until the block ends; yields status-code counts."""
        stop = threading.Event()
        counts: dict[int, int] = {}

        def send() -> None:
            n = 0
            with self._http() as http:
                while not stop.is_set():
                    n += 1
                    code = self.proxy(namespace, service, port, "POST", path, make_body(n), http)
                    counts[code] = counts.get(code, 0) + 1

        workers = [threading.Thread(target=send, daemon=True) for _ in range(2)]
        for worker in workers:
            worker.start()
        try:
            yield counts
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=90)

    # -- watching ---------------------------------------------------------------------------

    @staticmethod
    def _wait(
        list_fn: Callable[..., Any],
        namespace: str,
        name: str,
        predicate: Callable[[Any], bool],
        timeout_s: int,
    ) -> Any:
        """List then watch one object by name until `predicate` holds or the deadline passes.
        Event-driven: no polling interval, no sleeps; an expired watch (410) lists again."""
        selector = f"metadata.name={name}"
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while True:
            listed = list_fn(namespace, field_selector=selector)
            items = listed["items"] if isinstance(listed, dict) else listed.items
            last = items[0] if items else last
            if items and predicate(items[0]):
                return items[0]
            remaining = int(deadline - time.monotonic())
            if remaining <= 0:
                status = last.get("status") if isinstance(last, dict) else getattr(last, "status", None)
                raise AssertionError(
                    f"{namespace}/{name}: condition not met in {timeout_s}s; last status: {status}"
                )
            version = (
                listed["metadata"]["resourceVersion"]
                if isinstance(listed, dict)
                else listed.metadata.resource_version
            )
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    list_fn,
                    namespace,
                    field_selector=selector,
                    resource_version=version,
                    timeout_seconds=remaining,
                ):
                    last = event["object"]
                    if event["type"] in {"ADDED", "MODIFIED"} and predicate(last):
                        stream.stop()
                        return last
            except ApiException as error:
                if error.status != 410:
                    raise

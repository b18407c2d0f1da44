"""What the e2e scenarios need from a cluster, through the Kubernetes API only (the official
client): namespaces, the fake upstream, ModelDeployments, Gateway API objects, the operator's
pods, waiting on objects by watch, and traffic sent through the API server's service proxy.
Nothing here knows the local sandbox."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"
CRD_NAME = f"{PLURAL}.{GROUP}"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_PLURAL, HTTP_ROUTE_PLURAL = "gateways", "httproutes"
GATEWAY_CRD = f"{GATEWAY_PLURAL}.{GATEWAY_API_GROUP}"
HTTP_ROUTE_CRD = f"{HTTP_ROUTE_PLURAL}.{GATEWAY_API_GROUP}"
# Where the chart runs the operator (hack/kind-up.sh's release "modeldeploy").
OPERATOR_NAMESPACE = os.environ.get("E2E_OPERATOR_NAMESPACE", "modeldeploy-system")
OPERATOR_SELECTOR = os.environ.get(
    "E2E_OPERATOR_SELECTOR", "app.kubernetes.io/name=modeldeploy,app.kubernetes.io/instance=modeldeploy"
)
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

    def deployment_of(self, namespace: str, name: str, revision: str) -> Any:
        """The Deployment of one revision of a ModelDeployment."""
        deployment = self.deployments_of(namespace, name).get(revision)
        assert deployment is not None, f"{namespace}/{name}: no Deployment of revision {revision}"
        return deployment

    def wait_for_no_pods_of(self, namespace: str, name: str, revision: str, timeout_s: int = 120) -> None:
        selector = f"modeldeploy.io/name={name},modeldeploy.io/revision={revision}"
        self._wait_for(
            self.core.list_namespaced_pod, namespace, {"label_selector": selector},
            lambda pods: not pods,
            lambda pods: f"{namespace}: pods of {name} revision {revision} still there: {sorted(pods)}",
            timeout_s,
        )

    def service_selector(self, namespace: str, name: str) -> dict[str, str]:
        selector: dict[str, str] = self.core.read_namespaced_service(name, namespace).spec.selector or {}
        return selector

    def serves_crd(self, name: str) -> bool:
        """Whether the cluster has the CustomResourceDefinition `name`."""
        try:
            client.ApiextensionsV1Api(self.api).read_custom_resource_definition(name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def create_gateway_api_object(self, plural: str, body: Body) -> None:
        """Create a gateway.networking.k8s.io/v1 object (a Gateway, an HTTPRoute)."""
        namespace = body["metadata"]["namespace"]
        self.custom.create_namespaced_custom_object(GATEWAY_API_GROUP, "v1", namespace, plural, body)

    def get_http_route(self, namespace: str, name: str) -> Body:
        got: Body = self.custom.get_namespaced_custom_object(
            GATEWAY_API_GROUP, "v1", namespace, HTTP_ROUTE_PLURAL, name
        )
        return got

    # -- the operator, as the chart runs it ------------------------------------------------

    def operator_pods(self) -> list[str]:
        """The operator's pods (E2E_OPERATOR_NAMESPACE, E2E_OPERATOR_SELECTOR); none where the
        operator runs outside the cluster (hack/e2e-on-sandbox)."""
        try:
            pods = self.core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=OPERATOR_SELECTOR)
        except ApiException as error:
            if error.status == 404:
                return []
            raise
        return sorted(p.metadata.name for p in pods.items if not p.metadata.deletion_timestamp)

    def kill_operator(self) -> list[str]:
        """Delete the operator's pods at once (grace period 0: no clean-up, as when its node
        dies); their Deployment starts new ones. The names of the killed pods."""
        killed = self.operator_pods()
        assert killed, f"no operator pod in {OPERATOR_NAMESPACE} matches {OPERATOR_SELECTOR}"
        for pod in killed:
            self.core.delete_namespaced_pod(pod, OPERATOR_NAMESPACE, grace_period_seconds=0)
        return killed

    def wait_for_new_operator(self, killed: list[str], timeout_s: int = 300) -> str:
        """Wait for a ready operator pod that is none of `killed`; its name."""

        def ready(pod: Any) -> bool:
            conditions = (pod.status and pod.status.conditions) or []
            return any(c.type == "Ready" and c.status == "True" for c in conditions)

        def new_ready(pods: dict[str, Any]) -> str | None:
            fresh = [name for name, pod in pods.items()
                     if name not in killed and not pod.metadata.deletion_timestamp and ready(pod)]
            return fresh[0] if fresh else None

        found: str = self._wait_for(
            self.core.list_namespaced_pod, OPERATOR_NAMESPACE, {"label_selector": OPERATOR_SELECTOR},
            new_ready, lambda pods: f"no new ready operator pod in {timeout_s}s: {sorted(pods)}",
            timeout_s,
        )
        return found

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

    def _request(
        self, namespace: str, service: str, port: str, method: str, path: str,
        body: Body | None, http: httpx.Client | None,
    ) -> httpx.Response | None:
        with contextlib.nullcontext(http) if http is not None else self._http() as client_:
            try:
                return client_.request(
                    method, f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path}",
                    json=body,
                )
            except httpx.HTTPError:
                return None

    def proxy(
        self, namespace: str, service: str, port: str, method: str, path: str,
        body: Body | None = None, http: httpx.Client | None = None,
    ) -> int:
        """One HTTP request to a Service through the API server; returns the status code
        (0 when nothing answered). ``http``: a client to reuse, e.g. one per traffic worker."""
        response = self._request(namespace, service, port, method, path, body, http)
        return response.status_code if response is not None else 0

    def answers_with_key(self, namespace: str, service: str, key: str, requests: int) -> Counter[int]:
        """Status codes of `requests` GETs of /openapi.json through the Service, sent with
        X-API-Key `key`. A model service (the fake upstream too) refuses any other key with
        401 when its API_KEY is set: with each revision's API_KEY set to its own name, a 200
        says a pod of revision `key` answered, a 401 that another revision's did."""
        codes: Counter[int] = Counter()
        with self._http() as http:
            http.headers["X-API-Key"] = key
            for _ in range(requests):
                response = self._request(namespace, service, "http", "GET", "openapi.json", None, http)
                codes[response.status_code if response is not None else 0] += 1
        return codes

    def wait_served_only_by(
        self, namespace: str, service: str, key: str, what: str, timeout_s: int = 120
    ) -> None:
        """Sample the Service until 20 requests in a row are answered by revision `key` alone
        (Endpoints follow a selector change, or pods turning ready, with a delay)."""
        deadline = time.monotonic() + timeout_s
        while True:
            codes = self.answers_with_key(namespace, service, key, 20)
            if codes == {200: 20}:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {namespace}/{service} answered {dict(codes)} to key "
                                     f"{key!r} after {timeout_s}s (401: another revision's pod)")

    @contextmanager
    def traffic(
        self, namespace: str, service: str, port: str, path: str, make_body: Callable[[int], Body],
        workers: int = 2,
    ) -> Iterator[dict[int, int]]:
        """Send requests back to back from `workers` threads until the block ends; yields
        status-code counts. ``make_body(n)`` gets n = 1, 2, 3... counted over all the workers,
        so a body distinct for each n is never sent twice."""
        stop = threading.Event()
        counts: dict[int, int] = {}
        lock = threading.Lock()
        numbers = itertools.count(1)

        def send() -> None:
            with self._http() as http:
                while not stop.is_set():
                    with lock:
                        n = next(numbers)
                    code = self.proxy(namespace, service, port, "POST", path, make_body(n), http)
                    with lock:
                        counts[code] = counts.get(code, 0) + 1

        threads = [threading.Thread(target=send, daemon=True) for _ in range(workers)]
        for worker in threads:
            worker.start()
        try:
            yield counts
        finally:
            stop.set()
            for worker in threads:
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
        """Watch one object by name until `predicate` holds; fail with its last status."""

        def named(objects: dict[str, Any]) -> Any:
            obj = objects.get(name)
            return obj if obj is not None and predicate(obj) else None

        def last_status(objects: dict[str, Any]) -> str:
            obj = objects.get(name)
            status = obj.get("status") if isinstance(obj, dict) else getattr(obj, "status", None)
            return f"{namespace}/{name}: condition not met in {timeout_s}s; last status: {status}"

        return Cluster._wait_for(
            list_fn, namespace, {"field_selector": f"metadata.name={name}"}, named, last_status,
            timeout_s,
        )

    @staticmethod
    def _wait_for(
        list_fn: Callable[..., Any],
        namespace: str,
        selector: dict[str, str],
        done: Callable[[dict[str, Any]], Any],
        failure: Callable[[dict[str, Any]], str],
        timeout_s: int,
    ) -> Any:
        """List then watch the objects `selector` picks until `done` (given them by name)
        returns something; fail with `failure`'s message at the deadline. Event-driven: no
        polling interval, no sleeps; an expired watch (410) lists again."""
        deadline = time.monotonic() + timeout_s
        objects: dict[str, Any] = {}
        while True:
            listed = list_fn(namespace, **selector)
            items = listed["items"] if isinstance(listed, dict) else listed.items
            objects = {_name(obj): obj for obj in items}
            found = done(objects)
            if found:
                return found
            remaining = int(deadline - time.monotonic())
            if remaining <= 0:
                raise AssertionError(failure(objects))
            version = (
                listed["metadata"]["resourceVersion"]
                if isinstance(listed, dict)
                else listed.metadata.resource_version
            )
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    list_fn, namespace, resource_version=version, timeout_seconds=remaining,
                    **selector,
                ):
                    obj = event["object"]
                    if event["type"] == "DELETED":
                        objects.pop(_name(obj), None)
                    elif event["type"] in {"ADDED", "MODIFIED"}:
                        objects[_name(obj)] = obj
                    else:
                        continue
                    found = done(objects)
                    if found:
                        stream.stop()
                        return found
            except ApiException as error:
                if error.status != 410:
                    raise


def _name(obj: Any) -> str:
    name: str = obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name
    return name

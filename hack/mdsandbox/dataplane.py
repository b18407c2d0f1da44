"""The sandbox's data plane: a local HTTP port per Service and per HTTPRoute.

Services: each Service gets its own port on 127.0.0.1, published the way a
LoadBalancer publishes its address, so kubectl, tests and the demo find it without
knowing the sandbox::

    status.loadBalancer.ingress[0] = {"ip": "127.0.0.1", "ports": [{"port": N, "protocol": "TCP"}]}

Requests are spread over the READY, not terminating pods the Service's selector
matches, in strict round-robin (pods ordered by name), so over any run of requests the
share of each Deployment equals its share of ready replicas, to within one request per
pod. The pod's port is its ``sandbox.modeldeploy.io/port`` annotation (the sandbox
gives every container one port, so ``targetPort`` needs no mapping); a Service's
several ports all lead to it.

HTTPRoutes (gateway.networking.k8s.io/v1): each gets its own port, published as the
annotation ``sandbox.modeldeploy.io/url`` (``http://127.0.0.1:N``). The data plane plays
the Gateway controller of every Gateway (gateway.networking.k8s.io/v1, any class) and
writes the route's ``status.parents`` as a real implementation does: one entry per
parentRef (``parentRef``, ``controllerName``, conditions with the route's
``observedGeneration``): ``Accepted`` True when the parentRef names an existing Gateway
(and, with a ``sectionName``, one of its listeners), else False ``NoMatchingParent``;
``ResolvedRefs`` True when every backendRef's Service exists, else False
``BackendNotFound``. A route without parentRefs is attached to nothing: no entry, no
traffic. Requests to a route's port are routed only while some parent accepts it (else
404, as a Gateway has no such route). The first rule whose ``matches`` accept the path
(PathPrefix, the default ``/``, or Exact) is used; its backendRefs are chosen by smooth
weighted round-robin (nginx's), so the split follows the weights exactly, again to
within one request per backend; inside a backend, the Service's round-robin applies. A
backend weight of 0 gets nothing.

Mirroring (the rule's ``RequestMirror`` filters, as Envoy's request_mirror_policies): a
request the rule forwards to a pod is answered as above, unchanged, and a copy of it
goes to a ready pod of each mirror filter's ``backendRef`` Service, fire and forget. The
share copied is the filter's ``percent`` (0-100), or its ``fraction`` (``numerator`` of
``denominator``, default 100), or every request when it has neither; it is exact, not
random: a per-filter accumulator copies exactly P of every 100 requests (numerator of
every denominator), evenly spread (50%: the 2nd, 4th, ...). The copy starts as a
background task once the request's body is read and is never awaited on the request
path; its answer is read and thrown away, so a slow, hanging, failing or missing mirror
backend never delays or changes the user's answer (which names the user's pod in
``X-Sandbox-Pod``, never the mirror's). As Envoy does, the copy's Host gets ``-shadow``
after the host name (``127.0.0.1-shadow:N``), and it carries
``X-Sandbox-Mirrored: true`` (the copy only). At most 256 copies are in flight; beyond that, and when the
mirror Service has no ready pod (or only pause pods), the copy is dropped and counted
(``DataPlane.mirror_counts``). A mirror backendRef's Service counts for ``ResolvedRefs``
like a backendRef's.

Answers: 503 when no pod is ready (or a chosen backend has none, as Envoy's "no
healthy upstream"), 500 for a backendRef naming no Service, 502 when the pod refuses
the connection, 504 after 10 minutes (model services are slow). Every proxied answer
carries ``X-Sandbox-Pod: <namespace>/<pod>``, like Envoy's ``x-envoy-upstream-host``.
Responses are streamed, so server-sent events pass through as they come.

Cost: every port is one listening socket of one shared aiohttp application, which
tells Services and routes apart by the local port a request came in on, so a
thousand Services cost a thousand idle sockets and nothing per request. The data plane
acts on changed Services and routes only (queued by their informers), and reads pods
at request time from its informer's per-namespace index, so nothing runs at rest.
Pods running the pause image (see kubelet.py) count as endpoints when ready, but
nothing listens there: a request picked for one gets 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from mdsandbox.controllers import is_terminating, now_iso, pod_is_ready
from mdsandbox.kubeclient import ApiError, Informer, KubeClient
from mdsandbox.kubelet import PORT_ANNOTATION, is_pause_image

log = logging.getLogger(__name__)

JSON = dict[str, Any]
URL_ANNOTATION = "sandbox.modeldeploy.io/url"
CONTROLLER_NAME = "sandbox.modeldeploy.io/gateway"
GATEWAY_GROUP = "gateway.networking.k8s.io"
HTTPROUTES = f"/apis/{GATEWAY_GROUP}/v1/httproutes"
GATEWAYS = f"/apis/{GATEWAY_GROUP}/v1/gateways"
POD_HEADER = "X-Sandbox-Pod"
# Marks a mirrored copy (the copy only: the user's request and answer never carry it).
MIRROR_HEADER = "X-Sandbox-Mirrored"
# Mirrored copies in flight at most; a copy beyond that is dropped (and counted).
MAX_MIRRORS_IN_FLIGHT = 256
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=600, connect=5)


def selector_matches(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    if not selector:
        return False  # a Service without a selector has no endpoints the sandbox manages
    return all(labels.get(key) == value for key, value in selector.items())


def is_pause_pod(pod: JSON) -> bool:
    containers = (pod.get("spec") or {}).get("containers") or []
    return bool(containers) and all(is_pause_image(c.get("image")) for c in containers)


def path_matches(rule: JSON, path: str) -> bool:
    matches = rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
    for match in matches:
        spec = match.get("path") or {"type": "PathPrefix", "value": "/"}
        value = spec.get("value", "/")
        if spec.get("type", "PathPrefix") == "Exact":
            if path == value:
                return True
        elif value == "/" or path == value or path.startswith(value.rstrip("/") + "/"):
            return True
    return False


def request_mirrors(rule: JSON) -> list[tuple[int, JSON]]:
    """The rule's RequestMirror filters: (index among its filters, the requestMirror)."""
    return [
        (index, f["requestMirror"])
        for index, f in enumerate(rule.get("filters") or [])
        if isinstance(f, dict) and f.get("type") == "RequestMirror"
        and isinstance(f.get("requestMirror"), dict)
    ]


def mirror_fraction(mirror: JSON) -> tuple[int, int]:
    """(numerator, denominator) of the requests a requestMirror copies: its ``percent``, else
    its ``fraction`` (denominator 100 by default), else all of them (Gateway API v1.2).
    A value that is no number (the real CRD would refuse it) copies nothing."""
    try:
        if mirror.get("percent") is not None:
            return max(0, min(100, int(mirror["percent"]))), 100
        fraction = mirror.get("fraction")
        if isinstance(fraction, dict):
            denominator = int(fraction.get("denominator", 100))
            if denominator <= 0:
                return 0, 1
            return max(0, min(denominator, int(fraction.get("numerator", 0)))), denominator
    except (TypeError, ValueError):
        return 0, 1
    return 1, 1


def mirror_target(mirror: JSON, route_namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of the Service a requestMirror names; None for another kind."""
    ref = mirror.get("backendRef") or {}
    if (ref.get("group") or "") != "" or (ref.get("kind") or "Service") != "Service":
        return None
    return ref.get("namespace") or route_namespace, str(ref.get("name", ""))


def shadow_host(host: str) -> str:
    """Envoy's authority for a shadow request: ``-shadow`` after the host name, before a port."""
    name, colon, port = host.rpartition(":")
    if colon and name and port.isdigit():
        return f"{name}-shadow:{port}"
    return f"{host}-shadow"


def mirror_headers(headers: dict[str, str], host: str) -> dict[str, str]:
    """The copy's headers: the user's (end-to-end ones, as forwarded), its Host shadowed,
    and the mark of a copy."""
    copied = {k: v for k, v in headers.items()
              if k.lower() not in HOP_BY_HOP and k.lower() != MIRROR_HEADER.lower()}
    return {**copied, "Host": shadow_host(host), MIRROR_HEADER: "true"}


class MirrorSampler:
    """Which requests a mirror copies: exactly ``numerator`` of every ``denominator``,
    evenly spread (an accumulator, so no randomness); a new fraction starts afresh."""

    def __init__(self) -> None:
        self.fraction = (0, 1)
        self.credit = 0

    def take(self, numerator: int, denominator: int) -> bool:
        if (numerator, denominator) != self.fraction:
            self.fraction, self.credit = (numerator, denominator), 0
        self.credit += numerator
        if self.credit >= denominator:
            self.credit -= denominator
            return True
        return False


class SmoothWeighted:
    """nginx's smooth weighted round-robin: exact proportions, evenly interleaved."""

    def __init__(self) -> None:
        self.current: dict[str, int] = {}

    def pick(self, weights: dict[str, int]) -> str | None:
        positive = {k: w for k, w in weights.items() if w > 0}
        if not positive:
            return None
        total = sum(positive.values())
        for key, weight in positive.items():
            self.current[key] = self.current.get(key, 0) + weight
        chosen = max(positive, key=lambda k: (self.current[k], k))
        self.current[chosen] -= total
        return chosen


@dataclass
class Listener:
    """One local port: a listening socket of the shared application."""

    port: int
    site: web.SockSite
    uid: str
    counters: dict[str, itertools.count[int]] = field(default_factory=dict)
    weighted: dict[int, SmoothWeighted] = field(default_factory=dict)
    # By (rule index, filter index): which requests that RequestMirror filter copies.
    mirrors: dict[tuple[int, int], MirrorSampler] = field(default_factory=dict)


class DataPlane:
    """Keeps a listener per Service and HTTPRoute and proxies requests to ready pods."""

    def __init__(self, api_url: str) -> None:
        self.client = KubeClient(api_url)
        self._wake = asyncio.Event()
        self._dirty_services: set[tuple[str, str]] = set()
        self._dirty_routes: set[tuple[str, str]] = set()
        self.services = Informer(
            self.client, "/api/v1/services", name="services",
            on_object=lambda key, _obj: self._service_changed(key),
        )
        # A Gateway coming or going changes whether the routes naming it are accepted.
        self.gateways = Informer(
            self.client, GATEWAYS, name="gateways",
            on_object=lambda _key, _obj: self._mark_routes(None),
        )
        # Pods are read when a request comes; a pod change needs no work here.
        self.pods = Informer(self.client, "/api/v1/pods", name="dataplane pods")
        self.routes = Informer(
            self.client, HTTPROUTES, name="httproutes",
            on_object=lambda key, _obj: self._mark(self._dirty_routes, key),
        )
        self.service_listeners: dict[tuple[str, str], Listener] = {}
        self.route_listeners: dict[tuple[str, str], Listener] = {}
        self._by_port: dict[int, tuple[str, tuple[str, str]]] = {}  # port -> (kind, key)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._round_robin: dict[tuple[str, str], itertools.count[int]] = {}
        # Mirrored copies in flight (held here so they are not garbage-collected).
        self._mirror_tasks: set[asyncio.Task[None]] = set()
        # started, answered, failed, dropped (too many in flight), no_pod (none ready).
        self.mirror_counts: Counter[str] = Counter()
        self._mirrors_full = False

    def _mark(self, dirty: set[tuple[str, str]], key: tuple[str, str]) -> None:
        dirty.add(key)
        self._wake.set()

    def _service_changed(self, key: tuple[str, str]) -> None:
        self._mark(self._dirty_services, key)
        self._mark_routes(key[0])  # a backend Service appearing or going resolves refs anew

    def _mark_routes(self, namespace: str | None) -> None:
        """Look at the routes again (of one namespace, or all: routes are few)."""
        routes = self.routes.values() if namespace is None else self.routes.in_namespace(namespace)
        for route in routes:
            meta = route["metadata"]
            self._mark(self._dirty_routes, (meta.get("namespace", ""), meta["name"]))

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=UPSTREAM_TIMEOUT,
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=0),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        for informer in (self.services, self.pods, self.routes, self.gateways):
            informer.start()
        self._task = asyncio.create_task(self._loop(), name="dataplane")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for informer in (self.services, self.pods, self.routes, self.gateways):
            await informer.stop()
        for task in list(self._mirror_tasks):
            task.cancel()
        await asyncio.gather(*self._mirror_tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()  # every site, and their open connections
        if self._session is not None:
            await self._session.close()
        await self.client.close()

    async def _loop(self) -> None:
        for informer in (self.services, self.pods, self.routes, self.gateways):
            await informer.synced.wait()  # no route refused for a Gateway not yet listed
        while True:
            await self._wake.wait()
            self._wake.clear()
            for kind, dirty in (("service", self._dirty_services), ("route", self._dirty_routes)):
                keys = list(dirty)
                dirty.clear()
                for key in keys:
                    try:
                        await self._sync(kind, key)
                    except asyncio.CancelledError:
                        raise
                    except Exception as err:
                        if not isinstance(err, ApiError):
                            log.exception("data plane: %s %s/%s failed", kind, *key)
                        else:
                            log.warning("publishing %s/%s: %s", key[0], key[1], err)
                        # Try that one again in a second; the rest goes on.
                        asyncio.get_running_loop().call_later(1.0, self._mark, dirty, key)

    async def _sync(self, kind: str, key: tuple[str, str]) -> None:
        informer = self.services if kind == "service" else self.routes
        listeners = self.service_listeners if kind == "service" else self.route_listeners
        obj = informer.objects.get(key)
        if obj is not None and is_terminating(obj):
            obj = None
        listener = listeners.get(key)
        if listener is not None and (obj is None or obj["metadata"].get("uid") != listener.uid):
            del listeners[key]
            self._by_port.pop(listener.port, None)
            await listener.site.stop()
            listener = None
        if obj is None:
            return
        if listener is None:
            listener = await self._listen(kind, key, obj)
            listeners[key] = listener
        if kind == "service":
            await self._publish_service(obj, listener.port)
        else:
            await self._publish_route(obj, listener.port)

    async def _listen(self, kind: str, key: tuple[str, str], obj: JSON) -> Listener:
        assert self._runner is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        site = web.SockSite(self._runner, sock)
        await site.start()
        self._by_port[port] = (kind, key)
        return Listener(port=port, site=site, uid=obj["metadata"]["uid"])

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        """The shared application's one handler: which Service or route, by local port."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        target = self._by_port.get(int(sockname[1])) if sockname else None
        if target is None:
            return error_response(404, "nothing listens here any more (Service or route gone)")
        kind, key = target
        if kind == "service":
            return await self._handle_service(key, request)
        return await self._handle_route(key, request)

    async def _publish_service(self, service: JSON, port: int) -> None:
        wanted = {"ingress": [{"ip": "127.0.0.1", "ports": [{"port": port, "protocol": "TCP"}]}]}
        if (service.get("status") or {}).get("loadBalancer") == wanted:
            return
        meta = service["metadata"]
        updated = await self.client.merge_patch(
            f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}/status",
            {"status": {"loadBalancer": wanted}},
        )
        self.services.remember(updated)

    async def _publish_route(self, route: JSON, port: int) -> None:
        meta = route["metadata"]
        group_version = HTTPROUTES.removesuffix("/httproutes")
        path = f"{group_version}/namespaces/{meta['namespace']}/httproutes/{meta['name']}"
        url = f"http://127.0.0.1:{port}"
        if (meta.get("annotations") or {}).get(URL_ANNOTATION) != url:
            updated = await self.client.merge_patch(
                path, {"metadata": {"annotations": {URL_ANNOTATION: url}}}
            )
            self.routes.remember(updated)
            route = updated or route
        parents = self.route_parents(route)
        current = (route.get("status") or {}).get("parents") or []
        if strip_times(current) == strip_times(parents):
            return
        with contextlib.suppress(ApiError):  # a CRD without the status subresource
            updated = await self.client.merge_patch(path + "/status", {"status": {"parents": parents}})
            self.routes.remember(updated)

    # -- the Gateway controller's view of a route ------------------------------------

    def parent_refusal(self, route: JSON, ref: JSON) -> str | None:
        """Why the parentRef does not accept the route (None: it does)."""
        namespace = ref.get("namespace") or route["metadata"]["namespace"]
        group, kind = ref.get("group", GATEWAY_GROUP), ref.get("kind", "Gateway")
        if group != GATEWAY_GROUP or kind != "Gateway":
            return f"parentRef {group}/{kind} is not a Gateway"
        gateway = self.gateways.get(namespace, ref.get("name", ""))
        if gateway is None or is_terminating(gateway):
            return f"no Gateway {namespace}/{ref.get('name')}"
        section = ref.get("sectionName")
        listeners = {listener.get("name") for listener in gateway.get("spec", {}).get("listeners") or []}
        if section is not None and section not in listeners:
            return f"Gateway {namespace}/{ref.get('name')} has no listener {section}"
        return None

    def missing_backends(self, route: JSON) -> list[str]:
        """The Services that backendRefs and RequestMirror filters name but do not exist."""
        namespace = route["metadata"]["namespace"]
        missing = []
        for rule in route.get("spec", {}).get("rules") or []:
            refs = [*(rule.get("backendRefs") or []),
                    *((mirror.get("backendRef") or {}) for _, mirror in request_mirrors(rule))]
            for ref in refs:
                key = (ref.get("namespace") or namespace, ref.get("name", ""))
                if ref.get("kind", "Service") == "Service" and self.services.get(*key) is None:
                    missing.append(f"Service {key[0]}/{key[1]} not found")
        return sorted(set(missing))

    def route_parents(self, route: JSON) -> list[JSON]:
        """``status.parents`` as a Gateway controller writes it: one entry per parentRef."""
        missing = self.missing_backends(route)
        parents = []
        for ref in route.get("spec", {}).get("parentRefs") or []:
            refusal = self.parent_refusal(route, ref)
            parents.append({
                "parentRef": ref,
                "controllerName": CONTROLLER_NAME,
                "conditions": [
                    route_condition(route, "Accepted", *(
                        ("True", "Accepted", "accepted by the sandbox data plane") if refusal is None
                        else ("False", "NoMatchingParent", refusal))),
                    route_condition(route, "ResolvedRefs", *(
                        ("True", "ResolvedRefs", "every backendRef resolves") if not missing
                        else ("False", "BackendNotFound", "; ".join(missing)))),
                ],
            })
        return parents

    def is_accepted(self, route: JSON) -> bool:
        return any(self.parent_refusal(route, ref) is None
                   for ref in route.get("spec", {}).get("parentRefs") or [])

    # -- proxying ----------------------------------------------------------------------

    def ready_pods(self, namespace: str, selector: dict[str, str] | None) -> list[JSON]:
        pods = [
            pod
            for pod in self.pods.in_namespace(namespace)
            if not is_terminating(pod)
            and pod_is_ready(pod)
            and (PORT_ANNOTATION in (pod["metadata"].get("annotations") or {}) or is_pause_pod(pod))
            and selector_matches(selector, pod["metadata"].get("labels") or {})
        ]
        return sorted(pods, key=lambda p: p["metadata"]["name"])

    def pick_pod(self, namespace: str, service_name: str) -> JSON | None:
        service = self.services.get(namespace, service_name)
        if service is None:
            return None
        pods = self.ready_pods(namespace, (service.get("spec") or {}).get("selector"))
        if not pods:
            return None
        counter = self._round_robin.setdefault((namespace, service_name), itertools.count())
        return pods[next(counter) % len(pods)]

    async def _handle_service(self, key: tuple[str, str], request: web.Request) -> web.StreamResponse:
        pod = self.pick_pod(*key)
        if pod is None:
            return error_response(503, f"no ready pods behind Service {key[0]}/{key[1]}")
        return await self._proxy(request, pod)

    async def _handle_route(self, key: tuple[str, str], request: web.Request) -> web.StreamResponse:
        route = self.routes.get(*key)
        listener = self.route_listeners.get(key)
        if route is None or listener is None:
            return error_response(404, f"HTTPRoute {key[0]}/{key[1]} is gone")
        if not self.is_accepted(route):
            return error_response(
                404, f"HTTPRoute {key[0]}/{key[1]} is accepted by no Gateway (see its status.parents)"
            )
        rules = route.get("spec", {}).get("rules") or []
        for index, rule in enumerate(rules):
            if not path_matches(rule, request.path):
                continue
            backends = rule.get("backendRefs") or []
            weights = {
                f"{ref.get('namespace', key[0])}/{ref.get('name')}": int(ref.get("weight", 1))
                for ref in backends
            }
            chooser = listener.weighted.setdefault(index, SmoothWeighted())
            chosen = chooser.pick(weights)
            if chosen is None:
                return error_response(500, "no backend with a positive weight")
            namespace, name = chosen.split("/", 1)
            if self.services.get(namespace, name) is None:
                return error_response(500, f"backendRef Service {chosen} does not exist")
            pod = self.pick_pod(namespace, name)
            if pod is None:
                return error_response(503, f"no healthy upstream: no ready pods behind {chosen}")
            mirrors = []
            for filter_index, mirror in request_mirrors(rule):
                sampler = listener.mirrors.setdefault((index, filter_index), MirrorSampler())
                target = mirror_target(mirror, key[0])
                if sampler.take(*mirror_fraction(mirror)) and target is not None:
                    mirrors.append(target)
            if mirrors:
                body = await request.read()  # kept by the request: _proxy reads it again
                for target in mirrors:
                    self._start_mirror(request, body, target)
            return await self._proxy(request, pod)
        return error_response(404, "no HTTPRoute rule matches this path")

    def _start_mirror(self, request: web.Request, body: bytes, target: tuple[str, str]) -> None:
        """Send a copy of the request to a ready pod of ``target`` in the background."""
        if len(self._mirror_tasks) >= MAX_MIRRORS_IN_FLIGHT:
            self.mirror_counts["dropped"] += 1
            if not self._mirrors_full:
                self._mirrors_full = True
                log.warning("%d mirrored requests in flight: dropping copies until one ends",
                            MAX_MIRRORS_IN_FLIGHT)
            return
        pod = self.pick_pod(*target)
        port = None if pod is None else (pod["metadata"].get("annotations") or {}).get(PORT_ANNOTATION)
        if pod is None or port is None:  # none ready, or a pause pod: nothing would answer
            self.mirror_counts["no_pod"] += 1
            return
        url = f"http://127.0.0.1:{port}{request.rel_url}"
        headers = mirror_headers(dict(request.headers), request.host)
        task = asyncio.create_task(
            self._mirror(request.method, url, headers, body, f"{target[0]}/{target[1]}"),
            name=f"mirror to {target[0]}/{target[1]}",
        )
        self.mirror_counts["started"] += 1
        self._mirror_tasks.add(task)
        task.add_done_callback(self._mirror_done)

    def _mirror_done(self, task: asyncio.Task[None]) -> None:
        self._mirror_tasks.discard(task)
        self._mirrors_full = False

    async def _mirror(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      service: str) -> None:
        """One mirrored copy: its answer is read and thrown away, whatever it is."""
        assert self._session is not None
        try:
            async with self._session.request(
                method, url, headers=headers, data=body or None, allow_redirects=False
            ) as upstream:
                async for _chunk in upstream.content.iter_any():
                    pass
            self.mirror_counts["answered"] += 1
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as err:
            self.mirror_counts["failed"] += 1
            log.debug("mirrored request to %s failed: %s", service, err)

    async def _proxy(self, request: web.Request, pod: JSON) -> web.StreamResponse:
        assert self._session is not None
        meta = pod["metadata"]
        port = (meta.get("annotations") or {}).get(PORT_ANNOTATION)
        if port is None:  # a pause pod: ready, but nothing listens, so it refuses
            pod_id = f"{meta['namespace']}/{meta['name']}"
            return error_response(
                502, f"upstream pod {pod_id} failed: it runs the pause image; nothing listens",
                pod_id,
            )
        url = f"http://127.0.0.1:{port}{request.rel_url}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        pod_id = f"{meta['namespace']}/{meta['name']}"
        response: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name, value in upstream.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        response.headers.add(name, value)
                response.headers[POD_HEADER] = pod_id
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as err:
            if response is not None and response.prepared:
                # The answer has begun: all that is left is to cut it short, as a proxy does.
                log.info("upstream pod %s broke off its answer: %s", pod_id, err)
                raise
            if isinstance(err, TimeoutError):
                return error_response(504, f"upstream pod {pod_id} timed out", pod_id)
            return error_response(502, f"upstream pod {pod_id} failed: {err}", pod_id)


def error_response(status: int, message: str, pod_id: str | None = None) -> web.Response:
    response = web.json_response(
        {"error": {"message": message, "type": "sandbox_dataplane", "code": status}}, status=status
    )
    if pod_id:
        response.headers[POD_HEADER] = pod_id
    return response


def route_condition(route: JSON, kind: str, status: str, reason: str, message: str) -> JSON:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": route["metadata"].get("generation", 1),
        "lastTransitionTime": now_iso(),
    }


def strip_times(parents: list[JSON]) -> list[JSON]:
    return [
        {
            **parent,
            "conditions": [
                {k: v for k, v in c.items() if k != "lastTransitionTime"}
                for c in parent.get("conditions", [])
            ],
        }
        for parent in parents
    ]

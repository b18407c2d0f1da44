"""The HTTP face of the sandbox's API server (aiohttp), and :class:`APIServer`.

Routes are parsed by hand from the path, as kube-apiserver's request-info resolver
does: ``/api/v1[/namespaces/<ns>]/<plural>[/<name>[/<subresource>]]`` and the same
under ``/apis/<group>/<version>``, plus the legacy ``/watch/`` prefix, and the Service
proxy ``/api/v1/namespaces/<ns>/services/[<scheme>:]<name>[:<port>]/proxy/<path>``
(how the e2e tier reaches a Service from outside a cluster), which forwards to the
local port the sandbox's data plane publishes for that Service. Responses are
always JSON (protobuf and ``as=Table`` are not offered; clients fall back). There is
no authentication or authorisation: every request is allowed, and the audit log
(one JSON line per request) records who asked for what, so the operator's RBAC can be
checked against what it really does. ``/mdsandbox/faults`` (outside the Kubernetes
API) sets fault injection rules; see faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import yaml
from aiohttp import web

from . import openapi, podlogs, protobuf, tables
from .cluster import APPLY_PATCH, Cluster
from .errors import APIError, bad_request, method_not_allowed
from .faults import FAULT_KEY, FaultInjector
from .resources import ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .store import Change, Watcher, translate

VERSION_INFO = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-mdsandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
DEFAULT_WATCH_SECONDS = 1800  # kube-apiserver's --min-request-timeout
BOOKMARK_EVERY_SECONDS = 60.0
DISCONNECT_CHECK_SECONDS = 5.0
INFO_KEY: web.RequestKey[Any] = web.RequestKey("info", object)
AUDITED_KEY = web.RequestKey("audited", bool)
GC_WAKE_KEY = web.AppKey("gc_wake", asyncio.Event)
GC_TASK_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("gc_task")
NOT_FOUND_BODY = APIError(404, "NotFound", "the server could not find the requested resource", {})


SERVICE_PROXY = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/services/(?P<ref>[^/]+)/proxy(?P<path>/.*)?$")
# Hop-by-hop and length headers are the proxy's own, never forwarded.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "upgrade", "proxy-connection", "te", "trailer", "content-encoding"}


@dataclass
class RequestInfo:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str
    watch_path: bool
    verb: str = ""


def _parse_path(path: str) -> RequestInfo | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    watch_path = rest[0] == "watch"
    if watch_path:
        rest = rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and not (
        group == "" and rest[2] in ("status", "finalize") and len(rest) == 3
    ):
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    return RequestInfo(group, version, rest[0], namespace, rest[1] if len(rest) > 1 else None,
                       rest[2] if len(rest) > 2 else "", watch_path)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json",
                        headers=headers)


def _error(err: APIError) -> web.Response:
    return _json(err.status(), err.code)


class _Handlers:
    def __init__(self, cluster: Cluster, audit: IO[str] | None,
                 pod_log_dir: Path | None = None) -> None:
        self.cluster = cluster
        self.audit = audit
        self.pod_log_dir = pod_log_dir
        self.faults = FaultInjector()  # rules set over /mdsandbox/faults (faults.py)

    # -- middleware: errors and the audit log ---------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        request[INFO_KEY] = None
        request[FAULT_KEY] = None
        try:
            response: web.StreamResponse = await handler(request)
        except APIError as err:
            response = _error(err)
        except web.HTTPException:
            raise
        except Exception as exc:  # an unexpected bug answers 500 with a Status, as Go does
            response = _error(APIError(500, "InternalError",
                                       f"Internal error occurred: {type(exc).__name__}: {exc}",
                                       {}))
        fault = request[FAULT_KEY]
        if fault is not None:  # a delay rule answers late (faults.py)
            response = await self.faults.deliver(request, response, fault)
        if not request.get(AUDITED_KEY):
            self._audit(request, response.status)
        return response

    def _audit(self, request: web.Request, code: int) -> None:
        if self.audit is None:
            return
        info: RequestInfo | None = request.get(INFO_KEY)
        record: dict[str, Any] = {
            "ts": time.time(),
            "verb": info.verb if info else request.method.lower(),
            "apiGroup": info.group if info else "",
            "resource": info.plural if info else "",
            "subresource": info.subresource if info else "",
            "namespace": (info.namespace or "") if info else "",
            "name": (info.name or "") if info else "",
            "code": code,
            "userAgent": request.headers.get("User-Agent", ""),
            "requestURI": str(request.rel_url),
        }
        if info is None:
            record["nonResourceURL"] = request.path
        fault = request.get(FAULT_KEY)
        if fault is not None:
            record["fault"] = fault.id
        self.audit.write(json.dumps(record) + "\n")
        self.audit.flush()

    # -- routing --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        proxied = SERVICE_PROXY.match(request.path)
        if proxied is not None:
            return await self._proxy_service(request, proxied)
        path = request.path.rstrip("/") or "/"
        discovery = self._discovery(path)
        if discovery is not None:
            if request.method != "GET":
                raise method_not_allowed()
            return discovery
        info = _parse_path(path)
        if info is None:
            raise NOT_FOUND_BODY
        rt = self.cluster.registry.get(info.group, info.version, info.plural)
        if rt is None:
            raise NOT_FOUND_BODY
        query = dict(request.query)
        info.verb = self._verb(request.method, info, query)
        request[INFO_KEY] = info
        if self.faults.rules:  # one check when no fault rule is set (faults.py)
            answer = await self.faults.intercept(request, info, rt.kind,
                                                 lambda: self._body(request))
            if answer is not None:
                return answer
        if info.subresource == "log" and rt.group == "" and rt.plural == "pods" and \
                request.method == "GET" and info.name:
            info.verb = "get"
            pod = self.cluster.get(rt, info.namespace, info.name)
            uid = pod["metadata"]["uid"]

            def still_exists() -> bool:
                current = self.cluster.store.get(rt.store_key, info.namespace or "",
                                                 str(info.name))
                return current is not None and current["metadata"]["uid"] == uid

            return await podlogs.serve(request, self.pod_log_dir, pod, still_exists)
        if info.subresource and not (
            (info.subresource == "status" and rt.status_subresource)
            or (info.subresource == "scale" and rt.scale is not None)
        ):
            raise NOT_FOUND_BODY
        if info.namespace is None and rt.namespaced and info.name is not None:
            raise NOT_FOUND_BODY
        dry_run = query.get("dryRun") == "All"
        validation = query.get("fieldValidation", "Warn")
        if validation not in ("Ignore", "Warn", "Strict"):
            raise bad_request(f"fieldValidation must be Ignore, Warn or Strict, not {validation!r}")
        namespace = info.namespace if rt.namespaced else None

        if info.verb == "watch":
            return await self._watch(request, rt, namespace, info, query)
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        include = query.get("includeObject", "Metadata")
        if info.verb == "list":
            if rt.namespaced and namespace is not None:
                self.cluster.check_namespace(rt, namespace, creating=False)
            listing = self.cluster.list(rt, namespace, query)
            if as_table:
                items = [self.cluster.view(rt, i) for i in listing["items"]]
                return _json(tables.table(rt, items, listing["metadata"], include))
            return _json(listing)
        if info.verb == "get":
            assert info.name is not None
            obj = self.cluster.get(rt, namespace, info.name)
            if info.subresource == "scale":
                return _json(self.cluster.scale(rt, obj))
            if as_table and not info.subresource:
                rendered = self.cluster.view(rt, obj)
                return _json(tables.table(rt, [rendered], {
                    "resourceVersion": obj["metadata"]["resourceVersion"]}, include))
            return _json(self.cluster.view(rt, obj))
        if info.verb == "create":
            if info.name is not None:
                raise method_not_allowed()
            result = self.cluster.create(rt, namespace, await self._body(request),
                                         dry_run=dry_run, field_validation=validation)
            return _json(result.obj, 201, self._warnings(result.warnings))
        if info.verb == "update":
            assert info.name is not None
            body = await self._body(request)
            if info.subresource == "scale":
                current = self.cluster.get(rt, namespace, info.name)
                result = self.cluster.update_scale(rt, current, body, dry_run)
            else:
                result = self.cluster.replace(rt, namespace, info.name, body,
                                              subresource=info.subresource, dry_run=dry_run,
                                              field_validation=validation)
            return _json(result.obj, 200, self._warnings(result.warnings))
        if info.verb == "patch":
            assert info.name is not None
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            existed = self.cluster.store.get(rt.store_key, namespace or "", info.name) is not None
            result = self.cluster.patch(rt, namespace, info.name, content_type,
                                        await request.read(), subresource=info.subresource,
                                        dry_run=dry_run, field_validation=validation,
                                        field_manager=query.get("fieldManager"))
            code = 201 if content_type == APPLY_PATCH and not existed else 200
            return _json(result.obj, code, self._warnings(result.warnings))
        if info.verb in ("delete", "deletecollection"):
            options = await self._delete_options(request, query)
            if info.verb == "deletecollection":
                if rt.namespaced and namespace is not None:
                    self.cluster.check_namespace(rt, namespace, creating=False)
                body = self.cluster.delete_collection(rt, namespace, query, options,
                                                      dry_run=dry_run)
            else:
                assert info.name is not None
                body = self.cluster.delete(rt, namespace, info.name, options, dry_run=dry_run)
            self._wake_gc(request)
            return _json(body)
        raise method_not_allowed()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = await self._handle(request)
        if self.cluster.gc_needed:  # a write left something for the collector
            self._wake_gc(request)
        return response

    async def _proxy_service(self, request: web.Request, match: re.Match[str]) -> web.StreamResponse:
        """services/proxy: the request, forwarded to the Service's published local port."""
        namespace, ref = match["ns"], match["ref"]
        parts = ref.split(":")
        name = parts[1] if len(parts) == 3 else parts[0]  # [scheme:]name[:port]
        verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}.get(request.method, request.method.lower())
        request[INFO_KEY] = RequestInfo("", "v1", "services", namespace, name, "proxy", False, verb)
        rt = self.cluster.registry.get("", "v1", "services")
        assert rt is not None
        service = self.cluster.get(rt, namespace, name)  # 404 NotFound as for a GET
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        ports = (ingress[0].get("ports") or []) if ingress else []
        if not ports:
            raise APIError(503, "ServiceUnavailable",
                           f'no endpoints available for service "{name}"', {})
        target = f"http://127.0.0.1:{ports[0]['port']}{match['path'] or '/'}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        timeout = aiohttp.ClientTimeout(total=600)  # model services are slow
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.request(
                request.method, target, params=request.query, headers=headers,
                data=await request.read(), allow_redirects=False,
            ) as upstream:
                body = await upstream.read()
                kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
                return web.Response(status=upstream.status, body=body, headers=kept)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise APIError(503, "ServiceUnavailable",
                           f"error trying to reach service: {type(error).__name__}: {error}",
                           {}) from None

    @staticmethod
    def _verb(method: str, info: RequestInfo, query: dict[str, str]) -> str:
        if method == "GET":
            if info.watch_path or query.get("watch") in ("1", "true", "True"):
                return "watch"
            return "get" if info.name else "list"
        if method == "DELETE":
            return "delete" if info.name else "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())

    @staticmethod
    def _warnings(warnings: list[str]) -> dict[str, str] | None:
        if not warnings:
            return None
        return {"Warning": ", ".join(f'299 - {json.dumps(w)}' for w in warnings)}

    @staticmethod
    def _wake_gc(request: web.Request) -> None:
        wake: asyncio.Event | None = request.app.get(GC_WAKE_KEY)
        if wake is not None:
            wake.set()

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        content_type = request.headers.get("Content-Type", "application/json")
        if content_type.startswith(protobuf.PROTOBUF):
            return protobuf.decode(raw)
        try:
            if "yaml" in content_type:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}") from exc

    async def _delete_options(self, request: web.Request, query: dict[str, str]) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    options = json.loads(raw)
                except ValueError as exc:
                    raise bad_request(f"DeleteOptions are not valid JSON: {exc}") from exc
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "gracePeriodSeconds" in query:
            try:
                options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
            except ValueError as exc:
                raise bad_request("gracePeriodSeconds must be a whole number") from exc
        policy = options.get("propagationPolicy")
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise bad_request(f"propagationPolicy must be Orphan, Background or Foreground, not "
                              f"{policy!r}")
        if options.get("orphanDependents") is True:
            options["propagationPolicy"] = "Orphan"
        return options

    # -- discovery ------------------------------------------------------------------------

    def _discovery(self, path: str) -> web.Response | None:
        registry = self.cluster.registry
        if path == "/version":
            return _json(VERSION_INFO)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/api":
            return _json({"kind": "APIVersions", "versions": ["v1"],
                          "serverAddressByClientCIDRs": [
                              {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        if path == "/api/v1":
            return _json(registry.resource_list("", "v1"))
        if path == "/apis":
            return _json(registry.api_group_list())
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "apis":
            group = registry.api_group(parts[1])
            if group is None:
                raise NOT_FOUND_BODY
            return _json(group)
        if len(parts) == 3 and parts[0] == "apis":
            if not registry.has_group_version(parts[1], parts[2]):
                raise NOT_FOUND_BODY
            return _json(registry.resource_list(parts[1], parts[2]))
        if parts[:2] == ["openapi", "v3"]:
            if len(parts) == 2:
                return _json(openapi.index(registry))
            gv = parts[2:]
            gv_group, gv_version = "-", "-"
            if gv[:1] == ["api"] and len(gv) == 2:
                gv_group, gv_version = "", gv[1]
            elif gv[:1] == ["apis"] and len(gv) == 3:
                gv_group, gv_version = gv[1], gv[2]
            spec = openapi.group_version_document(registry, gv_group, gv_version)
            if spec is None:
                raise NOT_FOUND_BODY
            return _json(spec)
        if parts and parts[0] == "openapi":
            raise NOT_FOUND_BODY
        return None

    # -- watch ----------------------------------------------------------------------------

    async def _watch(self, request: web.Request, rt: ResourceType, namespace: str | None,
                     info: RequestInfo, query: dict[str, str]) -> web.StreamResponse:
        label_match = parse_label_selector(query.get("labelSelector"))
        field_match = parse_field_selector(query.get("fieldSelector"), rt.plural)
        only_name = info.name  # a watch on one object's URL (client-go does not, kubectl may)

        def matches(obj: dict[str, Any]) -> bool:
            if only_name and obj["metadata"]["name"] != only_name:
                return False
            return label_match(obj) and field_match(obj)

        raw_rv = query.get("resourceVersion", "")
        since: int | None = None
        if raw_rv not in ("", "0"):
            try:
                since = int(raw_rv)
            except ValueError as exc:
                raise bad_request(f"resourceVersion {raw_rv!r} is not valid: pass the "
                                  "metadata.resourceVersion of a list or object") from exc
        timeout = DEFAULT_WATCH_SECONDS
        if query.get("timeoutSeconds"):
            try:
                timeout = max(0, int(query["timeoutSeconds"]))
            except ValueError as exc:
                raise bad_request("timeoutSeconds must be a whole number of seconds") from exc
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1", "True")
        store = self.cluster.store

        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        # A watch is audited when its stream starts (kube-apiserver's ResponseStarted stage).
        self._audit(request, 200)
        request[AUDITED_KEY] = True

        as_table = tables.wants_table(request.headers.get("Accept", ""))
        include = query.get("includeObject", "Metadata")
        first_table = [True]

        async def send(event_type: str, obj: dict[str, Any], change: Change | None = None) -> None:
            if as_table and event_type in ("ADDED", "MODIFIED", "DELETED"):
                obj = tables.table(rt, [obj], {"resourceVersion": obj["metadata"].get(
                    "resourceVersion", "")}, include, with_columns=first_table[0])
                first_table[0] = False
            elif change is not None:
                # Every JSON watcher of this resource sends the same line for a change:
                # encode it once, not once per watcher.
                cache_key = (event_type, rt.api_version)
                line = change.encoded.get(cache_key)
                if line is None:
                    line = (json.dumps({"type": event_type, "object": obj}) + "\n").encode()
                    change.encoded[cache_key] = line
                await response.write(line)
                return
            line_text = json.dumps({"type": event_type, "object": obj}) + "\n"
            await response.write(line_text.encode())

        def bookmark() -> dict[str, Any]:
            return {"kind": rt.kind, "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(store.resource_version)}}

        async def send_bookmark() -> None:
            # A bookmark promises every change up to its version was sent: send the changes
            # still queued for this watcher first, or a client resuming from it loses them.
            while not watcher.queue.empty():
                queued = watcher.queue.get_nowait()
                if queued is None:  # the stream is to end: leave that to the loop below
                    watcher.queue.put_nowait(None)
                    return
                await self._send_change(send, rt, queued, matches)
            await send("BOOKMARK", bookmark())

        # client-go's watch-list (kubectl wait, informers): the current state as ADDED
        # events, then a bookmark marking their end, then changes.
        initial_events = query.get("sendInitialEvents") in ("true", "1", "True")
        if initial_events:
            since = None
        floor = store.history_floor
        if since is not None and self.faults.expires(request):  # injected (faults.py)
            floor = max(floor, since + 1, store.resource_version)
        if since is not None and since < floor:
            expired = APIError(410, "Expired", f"too old resource version: {since} ({floor})")
            body = expired.status()
            body.pop("details", None)
            await send("ERROR", body)
            await response.write_eof()
            return response

        watcher: Watcher = Watcher(rt.store_key, namespace, matches)
        backlog = store.watch(watcher, since)
        initial = [] if since is not None else [
            o for o in store.list_objects(rt.store_key, namespace) if matches(o)]
        deadline = time.monotonic() + timeout
        opened = self.faults.watch_opened(request, info, lambda: watcher.queue.put_nowait(None))
        try:
            for obj in initial:
                await send("ADDED", self.cluster.view(rt, obj))
            if initial_events:
                end = bookmark()
                end["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
                await send("BOOKMARK", end)
            for change in backlog:
                await self._send_change(send, rt, change, matches)
            next_bookmark = time.monotonic() + BOOKMARK_EVERY_SECONDS
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                # A watch without bookmarks has no bookmark time to wake for: counting one
                # would, once it passed, make every wait zero and starve the queue.
                wake = min(deadline, now + DISCONNECT_CHECK_SECONDS)
                if bookmarks:
                    wake = min(wake, next_bookmark)
                wait = max(0.01, wake - now)
                try:
                    pending = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break  # the client hung up; stop holding a watcher for it
                    if bookmarks and time.monotonic() >= next_bookmark:
                        await send_bookmark()
                        next_bookmark = time.monotonic() + BOOKMARK_EVERY_SECONDS
                    continue
                if pending is None:  # the server is stopping
                    break
                await self._send_change(send, rt, pending, matches)
            if bookmarks and time.monotonic() >= deadline:
                await send_bookmark()
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        finally:
            store.unwatch(watcher)
            self.faults.watch_closed(opened)
        return response

    async def _send_change(self, send: Any, rt: ResourceType, change: Change,
                           matches: Any) -> None:
        event = translate(change, matches)
        if event is not None:
            await send(event[0], self.cluster.view(rt, event[1]), change)


async def _collect_garbage(cluster: Cluster, wake: asyncio.Event) -> None:
    """The garbage collector: runs after deletions, and every second while work is left.

    A pass looks at every object, so it runs only when something was deleted (or left
    for it): at rest, with thousands of objects, it costs nothing.
    """
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), 1.0 if cluster.gc_needed else None)
        wake.clear()
        # A short pause lets a burst of deletions land first, as the real GC's queue does.
        await asyncio.sleep(0.05)
        for _ in range(10):
            cluster.collect_garbage()
            if not cluster.gc_needed:
                break


def build_app(cluster: Cluster, audit: IO[str] | None = None,
              pod_log_dir: Path | None = None) -> web.Application:
    handlers = _Handlers(cluster, audit, pod_log_dir)
    app = web.Application(middlewares=[handlers.middleware], client_max_size=64 * 1024 * 1024)
    # Fault injection's admin API: outside /api and /apis, so no Kubernetes path reaches it.
    app.router.add_route("*", "/mdsandbox/faults", handlers.faults.admin)
    app.router.add_route("*", "/mdsandbox/faults/{id}", handlers.faults.admin)
    app.router.add_route("*", "/{tail:.*}", handlers.handle)

    async def start_gc(app: web.Application) -> None:
        app[GC_WAKE_KEY] = asyncio.Event()
        app[GC_TASK_KEY] = asyncio.get_running_loop().create_task(
            _collect_garbage(cluster, app[GC_WAKE_KEY]))

    async def stop_gc(app: web.Application) -> None:
        app[GC_TASK_KEY].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app[GC_TASK_KEY]

    app.on_startup.append(start_gc)
    app.on_cleanup.append(stop_gc)
    return app


class APIServer:
    """The sandbox's Kubernetes API server, serving from a background thread.

    ``APIServer(host, port=0)`` picks a free port; ``start()`` returns once it accepts
    connections; ``url`` is then ``http://host:port``; ``stop()`` ends open watches and
    the thread. ``audit_log`` (a path) gets one JSON line per request. ``pod_log_dir``
    (optional) is where the kubelet writes ``<namespace>_<pod>_<container>.log``, which
    ``kubectl logs`` then reads through ``pods/log``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 audit_log: Path | None = None, pod_log_dir: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.audit_log = audit_log
        self.pod_log_dir = pod_log_dir
        self.cluster = Cluster()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._audit_file: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("APIServer.start() was called twice; create a new APIServer")
        if self.audit_log is not None:
            self._audit_file = open(self.audit_log, "a", encoding="utf-8")  # noqa: SIM115
        self._thread = threading.Thread(target=self._serve, name="mdsandbox-apiserver",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._failure is not None:
            raise RuntimeError(f"the API server could not start: {self._failure}") \
                from self._failure
        if not self._ready.is_set():
            raise RuntimeError("the API server did not start within 30 seconds")

    def _serve(self) -> None:
        profile_dir = os.environ.get("MDSANDBOX_PROFILE")
        if profile_dir:  # see mdsandbox.scale_probe: cProfile is per thread
            profiler = cProfile.Profile()
            profiler.enable()
            try:
                self._serve_loop()
            finally:
                profiler.disable()
                profiler.dump_stats(str(Path(profile_dir) / "apiserver.prof"))
            return
        self._serve_loop()

    def _serve_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_site())
        except BaseException as exc:  # reported to start()'s caller
            self._failure = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _start_site(self) -> None:
        app = build_app(self.cluster, self._audit_file, self.pod_log_dir)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        # The port the OS picked when asked for port 0.
        self.port = int(self._runner.addresses[0][1])

    async def _shutdown(self) -> None:
        self.cluster.store.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
        if self._audit_file is not None:
            self._audit_file.close()
            self._audit_file = None

    def __enter__(self) -> APIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

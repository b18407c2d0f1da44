"""A small asynchronous client of the Kubernetes REST API, and an informer on top of it.

The sandbox's controllers, kubelet and data plane are clients of the sandbox's API
server exactly as kube-controller-manager and the kubelet are clients of a real one:
they list and watch over HTTP, create objects, and write ``/status``. Nothing here
reaches into the server's memory, so what the controllers write is what kubectl and
the operator read.

Choices:
- aiohttp (already a dependency of Kopf) rather than the ``kubernetes`` client: the
  controllers are asyncio code and need only a handful of verbs.
- Every write uses a JSON merge patch (``application/merge-patch+json``), which the
  server accepts on every resource, built-in or custom. Status writes send the whole
  new status with explicit ``null`` for keys that went away, so fields the real
  controllers leave out when zero (``readyReplicas``) really disappear.
- The informer keeps the newest version of each object it has seen (by numeric
  resourceVersion) and remembers the uids it deleted, so a controller that writes
  and immediately reconciles again does not act twice on a stale cache (the
  "expectations" real controllers keep for the same reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server, with its Status body."""

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


def object_key(obj: JSON) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return (meta.get("namespace", ""), meta.get("name", ""))


def _resource_version(obj: JSON) -> int:
    value = obj.get("metadata", {}).get("resourceVersion", "0")
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def status_merge_patch(old: JSON | None, new: JSON) -> JSON:
    """The merge patch turning ``old`` status into ``new``: keys that went away become null."""
    patch: JSON = dict(new)
    for key in old or {}:
        if key not in new:
            patch[key] = None
    return patch


class KubeClient:
    """The verbs the sandbox's controllers need, over one aiohttp session."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=None),
                connector=aiohttp.TCPConnector(limit=50),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> JSON:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self.session.request(
            method,
            self.base_url + path,
            data=data,
            headers=headers,
            params=params,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            text = await resp.text()
            try:
                payload = json.loads(text) if text else {}
            except json.JSONDecodeError:
                payload = {"message": text}
            if resp.status >= 300:
                raise ApiError(resp.status, payload, method, path)
            return payload

    async def get(self, path: str) -> JSON | None:
        try:
            return await self.request("GET", path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, patch: JSON) -> JSON | None:
        """Merge-patch an object; None when it no longer exists."""
        try:
            return await self.request("PATCH", path, patch, content_type=MERGE_PATCH)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def delete(self, path: str, grace_period_seconds: int | None = None) -> JSON | None:
        body: JSON | None = None
        if grace_period_seconds is not None:
            body = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": grace_period_seconds,
            }
        try:
            return await self.request("DELETE", path, body)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[JSON]:
        """Yield watch events (dicts with ``type`` and ``object``) until the server ends the stream."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "120",
        }
        async with self.session.get(
            self.base_url + path,
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=300),
        ) as resp:
            if resp.status >= 300:
                text = await resp.text()
                raise ApiError(resp.status, {"message": text}, "WATCH", path)
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)


ObjectKey = tuple[str, str]


def controller_ref(obj: JSON) -> JSON | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


class Informer:
    """A list+watch cache of one resource across all namespaces.

    ``on_change`` is called (with no arguments) after every change, so controllers
    can wake up and reconcile; they read ``objects`` for the current state.
    ``on_object`` (optional) is called with the key and the latest known state of each
    object a watch event or a relist touched (for a deletion, the deleted object;
    whether it is gone is ``key not in objects``), so a controller can queue just that
    key instead of looking at everything: at thousands of objects a full pass per
    event is quadratic.

    Two indexes are kept up to date on every path that changes the cache (events,
    relists, ``remember``, ``forget``): objects by namespace (``in_namespace``) and by
    the uid of their controlling owner (``owned_by``), so "the pods of this
    ReplicaSet" is a lookup, not a scan.
    """

    def __init__(
        self,
        client: KubeClient,
        path: str,
        on_change: Callable[[], None] | None = None,
        *,
        name: str | None = None,
        on_object: Callable[[ObjectKey, JSON], None] | None = None,
    ) -> None:
        self.client = client
        self.path = path
        self.name = name or path
        self.on_change = on_change
        self.on_object = on_object
        self.objects: dict[ObjectKey, JSON] = {}
        self._by_namespace: dict[str, dict[ObjectKey, JSON]] = {}
        self._by_owner: dict[str, set[ObjectKey]] = {}
        self._owner_of: dict[ObjectKey, str] = {}
        self.synced = asyncio.Event()
        self._deleted_uids: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"informer {self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def values(self) -> list[JSON]:
        return list(self.objects.values())

    def get(self, namespace: str, name: str) -> JSON | None:
        return self.objects.get((namespace, name))

    def in_namespace(self, namespace: str) -> list[JSON]:
        return list(self._by_namespace.get(namespace, {}).values())

    def owned_by(self, owner_uid: str) -> list[JSON]:
        """The cached objects whose controlling ownerReference has this uid."""
        keys = self._by_owner.get(owner_uid, ())
        return [self.objects[key] for key in keys if key in self.objects]

    def owner_uids(self) -> list[str]:
        """The uids that own (as controller) at least one cached object."""
        return list(self._by_owner)

    # -- the one place the cache changes ----------------------------------------------

    def _put(self, key: ObjectKey, obj: JSON) -> None:
        self._drop(key)
        self.objects[key] = obj
        self._by_namespace.setdefault(key[0], {})[key] = obj
        ref = controller_ref(obj)
        if ref is not None and ref.get("uid"):
            self._owner_of[key] = ref["uid"]
            self._by_owner.setdefault(ref["uid"], set()).add(key)

    def _drop(self, key: ObjectKey) -> None:
        if self.objects.pop(key, None) is None:
            return
        namespace = self._by_namespace.get(key[0])
        if namespace is not None:
            namespace.pop(key, None)
            if not namespace:
                del self._by_namespace[key[0]]
        owner = self._owner_of.pop(key, None)
        if owner is not None:
            owned = self._by_owner.get(owner)
            if owned is not None:
                owned.discard(key)
                if not owned:
                    del self._by_owner[owner]

    def _notify(self, key: ObjectKey, last: JSON) -> None:
        if self.on_object is not None:
            self.on_object(key, self.objects.get(key, last))

    def remember(self, obj: JSON | None) -> None:
        """Take an object this process just wrote into the cache, unless a newer one is there."""
        if obj is None or obj.get("metadata", {}).get("uid") in self._deleted_uids:
            return
        key = object_key(obj)
        current = self.objects.get(key)
        if current is None or _resource_version(obj) >= _resource_version(current):
            self._put(key, obj)

    def forget(self, obj: JSON) -> None:
        """Drop an object this process just deleted; late watch events for it are ignored."""
        uid = obj.get("metadata", {}).get("uid")
        if uid:
            self._deleted_uids.add(uid)
        key = object_key(obj)
        current = self.objects.get(key)
        if current is not None and current.get("metadata", {}).get("uid") == uid:
            self._drop(key)

    def _relist(self, items: list[JSON]) -> None:
        fresh: dict[ObjectKey, JSON] = {}
        for item in items:
            if item.get("metadata", {}).get("uid") not in self._deleted_uids:
                fresh[object_key(item)] = item
        gone = {key: self.objects[key] for key in set(self.objects) - set(fresh)}
        for key in gone:
            self._drop(key)
        for key, item in fresh.items():
            self._put(key, item)
        for key, last in [*gone.items(), *fresh.items()]:
            self._notify(key, last)

    async def _run(self) -> None:
        while True:
            try:
                listing = await self.client.request("GET", self.path)
                self._relist(listing.get("items", []))
                self.synced.set()
                if self.on_change is not None:
                    self.on_change()
                resource_version = listing.get("metadata", {}).get("resourceVersion", "0")
                expired = False
                while not expired:  # a watch ends on the server's timeout: resume it
                    async for event in self.client.watch(self.path, resource_version):
                        kind = event.get("type")
                        obj = event.get("object", {})
                        if kind == "ERROR":
                            expired = True  # typically 410 Expired: list again
                            break
                        new_version = obj.get("metadata", {}).get("resourceVersion")
                        if new_version:
                            resource_version = new_version
                        if kind == "BOOKMARK":
                            continue
                        key = object_key(obj)
                        if kind == "DELETED":
                            current = self.objects.get(key)
                            if current is not None and current.get("metadata", {}).get(
                                "uid"
                            ) == obj.get("metadata", {}).get("uid"):
                                self._drop(key)
                        else:
                            self.remember(obj)
                        self._notify(key, obj)
                        if self.on_change is not None:
                            self.on_change()
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if err.status != 404:  # 404: a CRD not registered yet; keep trying quietly
                    log.warning("informer %s: %s", self.name, err)
                await asyncio.sleep(1.0)
            except (aiohttp.ClientError, ConnectionError, json.JSONDecodeError) as err:
                log.debug("informer %s: watch ended: %s", self.name, err)
                await asyncio.sleep(0.2)
            except Exception:
                log.exception("informer %s failed; listing again", self.name)
                await asyncio.sleep(1.0)


class WorkQueue:
    """client-go's work queue, small: deduplicated keys, one worker per key at a time.

    ``add`` queues a key unless it is queued already; a key added while a worker
    handles it is queued again when that worker calls ``done``, so no change is lost
    and no key is handled twice at once. ``retry`` puts a key back after a per-key
    exponential back-off (``base`` doubling up to ``cap`` seconds); ``forget_failures``
    resets it after a success. Keys come out in the order they were first added, so
    due work is never starved.
    """

    def __init__(self, *, base: float = 0.05, cap: float = 10.0) -> None:
        self._queued: dict[Any, None] = {}
        self._processing: set[Any] = set()
        self._again: set[Any] = set()
        self._failures: dict[Any, int] = {}
        self._ready = asyncio.Event()
        self._base = base
        self._cap = cap

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: Any) -> None:
        if key in self._processing:
            self._again.add(key)
            return
        self._queued[key] = None
        self._ready.set()

    async def get(self) -> Any:
        while not self._queued:
            self._ready.clear()
            await self._ready.wait()
        key = next(iter(self._queued))
        del self._queued[key]
        self._processing.add(key)
        return key

    def done(self, key: Any) -> None:
        self._processing.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    def retry(self, key: Any) -> None:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self._cap, self._base * 2**failures)
        asyncio.get_running_loop().call_later(delay, self.add, key)

    def forget_failures(self, key: Any) -> None:
        self._failures.pop(key, None)

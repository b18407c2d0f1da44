"""The in-memory object store: objects, the cluster-wide resourceVersion, watch fan-out.

One counter gives every write its resourceVersion, so versions are monotonic across all
resources as in etcd. A bounded history of change events lets a watch resume from any
resourceVersion still in it; an older one is "too old" (410 Expired), as after an etcd
compaction. Everything runs on the server's single asyncio loop, so no locks are needed:
a handler's read-modify-write has no ``await`` in the middle.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

GroupResource = tuple[str, str]  # (group, plural)
ObjectKey = tuple[str, str]  # (namespace or "", name)


@dataclass
class Change:
    """One write, as watchers see it: ADDED, MODIFIED or DELETED, with the state before."""

    resource_version: int
    resource: GroupResource
    namespace: str
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None
    # The encoded watch line per (event type, apiVersion), shared by the watchers.
    encoded: dict[tuple[str, str], bytes] = field(default_factory=dict)


class Watcher:
    """One open watch: which resource and namespace, its selector, and its event queue."""

    def __init__(self, resource: GroupResource, namespace: str | None,
                 matches: Callable[[dict[str, Any]], bool]) -> None:
        self.resource = resource
        self.namespace = namespace
        self.matches = matches
        self.queue: asyncio.Queue[Change | None] = asyncio.Queue()

    def wants(self, change: Change) -> bool:
        return change.resource == self.resource and (
            self.namespace is None or change.namespace == self.namespace
        )


def translate(change: Change, matches: Callable[[dict[str, Any]], bool]) -> tuple[str, dict[str, Any]] | None:
    """The event a selector-filtered watch sees: an object leaving the selection is DELETED."""
    now = change.type != "DELETED" and matches(change.obj)
    before = change.old is not None and matches(change.old)
    if change.type == "DELETED":
        return ("DELETED", change.obj) if matches(change.obj) or before else None
    if change.type == "ADDED":
        return ("ADDED", change.obj) if now else None
    if now and before:
        return ("MODIFIED", change.obj)
    if now:
        return ("ADDED", change.obj)
    if before:
        return ("DELETED", change.obj)
    return None


class Store:
    def __init__(self, history_size: int = 10_000) -> None:
        self.resource_version = 0
        self._objects: dict[GroupResource, dict[ObjectKey, dict[str, Any]]] = {}
        self._history: deque[Change] = deque(maxlen=history_size)
        self.history_floor = 0  # a watch may resume from any resourceVersion >= this
        self._watchers: set[Watcher] = set()

    def next_version(self) -> int:
        self.resource_version += 1
        return self.resource_version

    def seal_history(self) -> None:
        """Forget history so far: a watch from before now is too old (used after bootstrap)."""
        self._history.clear()
        self.history_floor = self.resource_version

    # -- reads ----------------------------------------------------------------------------

    def get(self, resource: GroupResource, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get(resource, {}).get((namespace, name))

    def list_objects(self, resource: GroupResource, namespace: str | None = None) -> list[dict[str, Any]]:
        objects = self._objects.get(resource, {})
        keys = sorted(k for k in objects if namespace is None or k[0] == namespace)
        return [objects[k] for k in keys]

    def resources(self) -> list[GroupResource]:
        return list(self._objects)

    def all_objects(self) -> Iterator[tuple[GroupResource, dict[str, Any]]]:
        for resource, objects in list(self._objects.items()):
            for obj in list(objects.values()):
                yield resource, obj

    # -- writes ---------------------------------------------------------------------------

    def put(self, resource: GroupResource, obj: dict[str, Any], change_type: str,
            old: dict[str, Any] | None) -> None:
        """Store ``obj`` (its resourceVersion already set) and tell the watchers."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        self._objects.setdefault(resource, {})[key] = obj
        self._publish(Change(int(meta["resourceVersion"]), resource, key[0], change_type, obj, old))

    def remove(self, resource: GroupResource, obj: dict[str, Any]) -> None:
        """Delete ``obj`` (carrying the deletion's new resourceVersion) and tell the watchers."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        old = self._objects.get(resource, {}).pop(key, None)
        self._publish(Change(int(meta["resourceVersion"]), resource, key[0], "DELETED", obj, old))

    def _publish(self, change: Change) -> None:
        if len(self._history) == self._history.maxlen:
            self.history_floor = self._history[0].resource_version
        self._history.append(change)
        for watcher in list(self._watchers):
            if watcher.wants(change):
                watcher.queue.put_nowait(change)

    # -- watches --------------------------------------------------------------------------

    def watch(self, watcher: Watcher, since: int | None) -> list[Change]:
        """Register ``watcher``; return the history after ``since`` it has to replay first."""
        self._watchers.add(watcher)
        if since is None:
            return []
        return [c for c in self._history if c.resource_version > since and watcher.wants(c)]

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close_watches(self) -> None:
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)

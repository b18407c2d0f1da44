"""Kubernetes Events from the sandbox's components, so ``kubectl describe`` tells the story.

The sandbox records the events an SRE looks for first, with the real components'
names, reasons and message shapes: ScalingReplicaSet (deployment-controller),
SuccessfulCreate/SuccessfulDelete (replicaset-controller), FailedScheduling
(default-scheduler), Started, Killing and BackOff (kubelet). An event that cannot be
written is dropped: events are best-effort in Kubernetes too.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

import aiohttp

from mdsandbox.kubeclient import ApiError, KubeClient

log = logging.getLogger(__name__)

JSON = dict[str, Any]


def _suffix() -> str:
    return secrets.token_hex(8)


async def record_event(
    client: KubeClient,
    obj: JSON,
    reason: str,
    message: str,
    *,
    kind: str,
    api_version: str,
    component: str,
    event_type: str = "Normal",
) -> None:
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace") or "default"
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name', 'object')}.{_suffix()}",
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": api_version,
            "kind": kind,
            "name": meta.get("name", ""),
            "namespace": namespace,
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "type": event_type,
        "source": {"component": component, "host": "sandbox"},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": "sandbox",
    }
    with contextlib.suppress(ApiError, aiohttp.ClientError, TimeoutError):
        await client.create(f"/api/v1/namespaces/{namespace}/events", body)

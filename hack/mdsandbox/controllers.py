"""The sandbox's kube-controller-manager: Deployments, ReplicaSets and garbage collection.

Both controllers are level-triggered: any change to a Deployment, ReplicaSet or Pod
wakes them and they reconcile everything (the sandbox holds tens of objects, not
thousands), plus a resync every second so time-based conditions (the progress
deadline) are noticed without an event.

Deployment → ReplicaSet, as kube-controller-manager does it where a client can tell:
- one ReplicaSet per pod template, named ``<deployment>-<pod-template-hash>``, labelled
  and selected by ``pod-template-hash`` (a hash of the template, so re-applying an old
  template reuses its old ReplicaSet, as a real rollback does), owned by the
  Deployment, with the ``deployment.kubernetes.io/revision``, ``desired-replicas`` and
  ``max-replicas`` annotations;
- RollingUpdate, made cheap: the new ReplicaSet is scaled to ``spec.replicas`` at once
  (a surge of 100%) and the old ones are scaled down as new pods become available,
  so availability never drops below ``spec.replicas`` (maxUnavailable 0) and old
  ReplicaSets end at 0. ``Recreate`` scales the old ones to 0 first and waits for
  their pods to go. ``spec.paused`` and ``minReadySeconds`` are not supported (a pod
  is available as soon as it is ready);
- status: replicas, updatedReplicas, readyReplicas, availableReplicas,
  unavailableReplicas (zero values left out, as the real API does), observedGeneration,
  and the conditions Available (MinimumReplicasAvailable/MinimumReplicasUnavailable,
  judged against maxUnavailable) and Progressing (NewReplicaSetCreated,
  FoundNewReplicaSet, ReplicaSetUpdated, NewReplicaSetAvailable, and
  ProgressDeadlineExceeded once no progress was made for
  ``spec.progressDeadlineSeconds``), with the real controller's messages.

ReplicaSet → Pods: creates and deletes pods to match ``spec.replicas`` (deleting
unscheduled, then not-ready, then the newest pods first), and keeps the ReplicaSet's
status (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
observedGeneration). Scaling through the ``/scale`` subresource needs nothing more:
it writes ``spec.replicas``.

Garbage collection: ReplicaSets whose controlling Deployment is gone and Pods whose
controlling ReplicaSet is gone are deleted, in case the API server's own ownerReference
cascade has not done it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import math
import secrets
from datetime import UTC, datetime
from typing import Any

from mdsandbox.events import record_event
from mdsandbox.kubeclient import ApiError, Informer, KubeClient, status_merge_patch

log = logging.getLogger(__name__)

JSON = dict[str, Any]

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
DESIRED_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_ANNOTATION = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
# The alphabet Kubernetes uses for generated names (no vowels, no look-alikes).
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def safe_encode(data: bytes, length: int) -> str:
    number = int.from_bytes(data, "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, len(SAFE_ALPHABET))
        chars.append(SAFE_ALPHABET[index])
    return "".join(chars)


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(SAFE_ALPHABET) for _ in range(length))


def template_hash(template: JSON) -> str:
    """A stable hash of a pod template (its own hash label left out), 10 safe characters."""
    clean = copy.deepcopy(template)
    clean.get("metadata", {}).get("labels", {}).pop(HASH_LABEL, None)
    clean.get("metadata", {}).pop("creationTimestamp", None)
    canonical = json.dumps(clean, sort_keys=True, separators=(",", ":"))
    return safe_encode(hashlib.sha256(canonical.encode()).digest(), 10)


def controller_uid(obj: JSON, kind: str) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return ref.get("uid")  # type: ignore[no-any-return]
    return None


def is_terminating(obj: JSON) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def pod_condition(pod: JSON, kind: str) -> JSON | None:
    for condition in pod.get("status", {}).get("conditions", []) or []:
        if condition.get("type") == kind:
            return condition  # type: ignore[no-any-return]
    return None


def pod_is_ready(pod: JSON) -> bool:
    condition = pod_condition(pod, "Ready")
    return condition is not None and condition.get("status") == "True"


def pod_is_scheduled(pod: JSON) -> bool:
    condition = pod_condition(pod, "PodScheduled")
    return condition is not None and condition.get("status") == "True"


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool, default: str) -> int:
    raw = default if value is None else value
    if isinstance(raw, int):
        return raw
    text = str(raw)
    if text.endswith("%"):
        fraction = float(text[:-1]) / 100 * total
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(text)


def max_unavailable(deployment: JSON) -> int:
    spec = deployment.get("spec", {})
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate" or replicas == 0:
        return 0
    rolling = strategy.get("rollingUpdate") or {}
    surge = resolve_int_or_percent(
        rolling.get("maxSurge"), replicas, round_up=True, default="25%"
    )
    unavailable = resolve_int_or_percent(
        rolling.get("maxUnavailable"), replicas, round_up=False, default="25%"
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return min(unavailable, replicas)


def with_condition(conditions: list[JSON], new: JSON, *, touch: bool) -> list[JSON]:
    """Set one condition, keeping lastTransitionTime unless its status changed.

    ``touch`` also moves lastUpdateTime (the Progressing condition's progress clock).
    """
    result = []
    found = False
    for condition in conditions:
        if condition.get("type") != new["type"]:
            result.append(condition)
            continue
        found = True
        merged = dict(new)
        same_status = condition.get("status") == new["status"]
        merged["lastTransitionTime"] = (
            condition.get("lastTransitionTime", new["lastTransitionTime"])
            if same_status
            else new["lastTransitionTime"]
        )
        if not touch and same_status and condition.get("reason") == new.get("reason"):
            merged["lastUpdateTime"] = condition.get("lastUpdateTime", new["lastUpdateTime"])
        result.append(merged)
    if not found:
        result.append(new)
    return result


def condition(kind: str, status: str, reason: str, message: str) -> JSON:
    stamp = now_iso()
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


class ControllerManager:
    """Runs the Deployment and ReplicaSet controllers against the API server."""

    def __init__(self, api_url: str, *, resync_seconds: float = 1.0) -> None:
        self.client = KubeClient(api_url)
        self.resync_seconds = resync_seconds
        self._wake = asyncio.Event()
        self.deployments = Informer(
            self.client, "/apis/apps/v1/deployments", self._wake.set, name="deployments"
        )
        self.replicasets = Informer(
            self.client, "/apis/apps/v1/replicasets", self._wake.set, name="replicasets"
        )
        self.pods = Informer(self.client, "/api/v1/pods", self._wake.set, name="pods")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for informer in (self.deployments, self.replicasets, self.pods):
            informer.start()
        self._task = asyncio.create_task(self._loop(), name="controller-manager")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for informer in (self.deployments, self.replicasets, self.pods):
            await informer.stop()
        await self.client.close()

    async def _loop(self) -> None:
        for informer in (self.deployments, self.replicasets, self.pods):
            await informer.synced.wait()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.resync_seconds)
            self._wake.clear()
            try:
                await self.reconcile_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller reconcile failed; retrying")
                await asyncio.sleep(0.5)

    async def reconcile_all(self) -> None:
        for deployment in self.deployments.values():
            if not is_terminating(deployment):
                await self._guard(self.reconcile_deployment(deployment))
        for replicaset in self.replicasets.values():
            await self._guard(self.reconcile_replicaset(replicaset))
        await self._guard(self.collect_garbage())

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except ApiError as err:
            if err.status == 409:  # a stale write; the next round reads the new version
                self._wake.set()
            else:
                log.warning("%s", err)

    # -- Deployments -------------------------------------------------------------------

    def owned_replicasets(self, deployment: JSON) -> list[JSON]:
        uid = deployment["metadata"]["uid"]
        namespace = deployment["metadata"]["namespace"]
        return [
            rs
            for rs in self.replicasets.values()
            if rs["metadata"].get("namespace") == namespace and controller_uid(rs, "Deployment") == uid
        ]

    async def reconcile_deployment(self, deployment: JSON) -> None:
        meta = deployment["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = deployment.get("spec", {})
        desired = int(spec.get("replicas", 1))
        template = spec.get("template", {})
        pod_hash = template_hash(template)
        owned = self.owned_replicasets(deployment)
        new_rs = next((rs for rs in owned if rs["metadata"]["name"] == f"{name}-{pod_hash}"), None)
        old = [rs for rs in owned if rs is not new_rs]
        revisions = [
            int(rs["metadata"].get("annotations", {}).get(REVISION_ANNOTATION, "0") or 0)
            for rs in owned
        ]
        max_revision = max(revisions, default=0)
        created_new = False
        surge_max = desired + resolve_int_or_percent(
            ((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxSurge"),
            desired,
            round_up=True,
            default="25%",
        )
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        old_pods_remaining = any(
            rs.get("status", {}).get("replicas", 0) or rs.get("spec", {}).get("replicas", 0)
            for rs in old
        )
        new_target = 0 if recreate and old_pods_remaining else desired

        if new_rs is None:
            new_rs = await self._create_replicaset(
                deployment, template, pod_hash, max_revision + 1, new_target, surge_max
            )
            created_new = True
        else:
            current_revision = int(
                new_rs["metadata"].get("annotations", {}).get(REVISION_ANNOTATION, "0") or 0
            )
            new_rs = await self._sync_replicaset(
                deployment, new_rs, new_target, desired, surge_max,
                revision=None if current_revision == max_revision else max_revision + 1,
            )

        new_available = int(new_rs.get("status", {}).get("availableReplicas", 0))
        allowed_old = 0 if recreate else max(0, desired - new_available)
        for rs in sorted(
            old,
            key=lambda r: int(r["metadata"].get("annotations", {}).get(REVISION_ANNOTATION, "0") or 0),
            reverse=True,
        ):
            current = int(rs.get("spec", {}).get("replicas", 0))
            keep = min(current, allowed_old)
            allowed_old -= keep
            await self._sync_replicaset(deployment, rs, keep, desired, surge_max, revision=None)

        revision = new_rs["metadata"].get("annotations", {}).get(REVISION_ANNOTATION)
        if revision and meta.get("annotations", {}).get(REVISION_ANNOTATION) != revision:
            updated = await self.client.merge_patch(
                f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                {"metadata": {"annotations": {REVISION_ANNOTATION: revision}}},
            )
            self.deployments.remember(updated)
            if updated is not None:
                deployment = updated
        await self._write_deployment_status(deployment, new_rs, old, created_new)

    async def _create_replicaset(
        self, deployment: JSON, template: JSON, pod_hash: str, revision: int, replicas: int,
        surge_max: int,
    ) -> JSON:
        meta = deployment["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        rs_template = copy.deepcopy(template)
        rs_template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(deployment["spec"].get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{pod_hash}",
                "namespace": namespace,
                "labels": dict(rs_template["metadata"]["labels"]),
                "annotations": {
                    REVISION_ANNOTATION: str(revision),
                    DESIRED_ANNOTATION: str(deployment["spec"].get("replicas", 1)),
                    MAX_ANNOTATION: str(surge_max),
                },
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {"replicas": replicas, "selector": selector, "template": rs_template},
        }
        try:
            created = await self.client.create(
                f"/apis/apps/v1/namespaces/{namespace}/replicasets", body
            )
        except ApiError as err:
            if err.status != 409:
                raise
            # Exists but not in the cache yet (or owned by nobody): adopt what is there.
            created = await self.client.request(
                "GET", f"/apis/apps/v1/namespaces/{namespace}/replicasets/{name}-{pod_hash}"
            )
        self.replicasets.remember(created)
        if replicas:
            await self._deployment_event(
                deployment, "ScalingReplicaSet",
                f"Scaled up replica set {created['metadata']['name']} to {replicas}",
            )
        return created

    async def _sync_replicaset(
        self, deployment: JSON, rs: JSON, replicas: int, desired: int, surge_max: int,
        *, revision: int | None,
    ) -> JSON:
        meta = rs["metadata"]
        annotations = meta.get("annotations", {})
        patch: JSON = {}
        if int(rs.get("spec", {}).get("replicas", 0)) != replicas:
            patch["spec"] = {"replicas": replicas}
        wanted = {DESIRED_ANNOTATION: str(desired), MAX_ANNOTATION: str(surge_max)}
        if revision is not None:
            wanted[REVISION_ANNOTATION] = str(revision)
        changed = {k: v for k, v in wanted.items() if annotations.get(k) != v}
        if changed:
            patch["metadata"] = {"annotations": changed}
        if not patch:
            return rs
        updated = await self.client.merge_patch(
            f"/apis/apps/v1/namespaces/{meta['namespace']}/replicasets/{meta['name']}", patch
        )
        self.replicasets.remember(updated)
        if "spec" in patch:
            before = int(rs.get("spec", {}).get("replicas", 0))
            direction = "up" if replicas > before else "down"
            await self._deployment_event(
                deployment, "ScalingReplicaSet",
                f"Scaled {direction} replica set {meta['name']} to {replicas} from {before}",
            )
        return updated or rs

    async def _deployment_event(self, deployment: JSON, reason: str, message: str) -> None:
        await record_event(
            self.client, deployment, reason, message,
            kind="Deployment", api_version="apps/v1", component="deployment-controller",
        )

    async def _replicaset_event(self, rs: JSON, reason: str, message: str) -> None:
        await record_event(
            self.client, rs, reason, message,
            kind="ReplicaSet", api_version="apps/v1", component="replicaset-controller",
        )

    async def _write_deployment_status(
        self, deployment: JSON, new_rs: JSON, old: list[JSON], created_new: bool
    ) -> None:
        meta = deployment["metadata"]
        spec = deployment.get("spec", {})
        desired = int(spec.get("replicas", 1))
        all_rs = [new_rs, *old]

        def total(field: str, sets: list[JSON]) -> int:
            return sum(int(rs.get("status", {}).get(field, 0) or 0) for rs in sets)

        replicas = total("replicas", all_rs)
        updated = total("replicas", [new_rs])
        ready = total("readyReplicas", all_rs)
        available = total("availableReplicas", all_rs)
        unavailable = max(0, desired - available)
        counts = {
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": unavailable,
        }
        old_status = deployment.get("status", {}) or {}
        conditions: list[JSON] = list(old_status.get("conditions", []) or [])
        rs_name = new_rs["metadata"]["name"]

        if available >= desired - max_unavailable(deployment):
            available_condition = condition(
                "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
            )
        else:
            available_condition = condition(
                "Available", "False", "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        conditions = with_condition(conditions, available_condition, touch=False)

        progressing = next((c for c in conditions if c.get("type") == "Progressing"), None)
        complete = (
            updated == desired and replicas == desired and available == desired
            and total("availableReplicas", [new_rs]) == desired
        )
        progressed = any(
            int(old_status.get(field, 0) or 0) != value for field, value in counts.items()
            if field != "unavailableReplicas"
        ) or old_status.get("observedGeneration") != meta.get("generation")
        if complete:
            new_progress = condition(
                "Progressing", "True", "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
            touch = progressing is None or progressing.get("reason") != "NewReplicaSetAvailable"
        elif created_new:
            new_progress = condition(
                "Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{rs_name}"'
            )
            touch = True
        elif progressing is None:
            new_progress = condition(
                "Progressing", "True", "FoundNewReplicaSet", f'Found new replica set "{rs_name}"'
            )
            touch = True
        elif progressed:
            new_progress = condition(
                "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.'
            )
            touch = True
        else:
            new_progress = progressing
            touch = False
            deadline = spec.get("progressDeadlineSeconds", 600)
            last_update = parse_time(progressing.get("lastUpdateTime"))
            if (
                progressing.get("reason") != "ProgressDeadlineExceeded"
                and deadline is not None
                and last_update is not None
                and (datetime.now(UTC) - last_update).total_seconds() > int(deadline)
            ):
                new_progress = condition(
                    "Progressing", "False", "ProgressDeadlineExceeded",
                    f'ReplicaSet "{rs_name}" has timed out progressing.',
                )
                touch = True
        conditions = with_condition(conditions, new_progress, touch=touch)
        conditions.sort(key=lambda c: 0 if c.get("type") == "Available" else 1)

        status: JSON = {k: v for k, v in counts.items() if v}
        status["observedGeneration"] = meta.get("generation", 1)
        status["conditions"] = conditions
        if status == old_status:
            return
        updated_obj = await self.client.merge_patch(
            f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}/status",
            {"status": status_merge_patch(old_status, status)},
        )
        self.deployments.remember(updated_obj)

    # -- ReplicaSets -------------------------------------------------------------------

    def owned_pods(self, rs: JSON) -> list[JSON]:
        uid = rs["metadata"]["uid"]
        namespace = rs["metadata"]["namespace"]
        return [
            pod
            for pod in self.pods.values()
            if pod["metadata"].get("namespace") == namespace
            and controller_uid(pod, "ReplicaSet") == uid
            and not is_terminating(pod)
        ]

    async def reconcile_replicaset(self, rs: JSON) -> None:
        if is_terminating(rs):
            return
        meta = rs["metadata"]
        namespace = meta["namespace"]
        desired = int(rs.get("spec", {}).get("replicas", 1))
        pods = self.owned_pods(rs)
        if len(pods) < desired:
            for _ in range(desired - len(pods)):
                pods.append(await self._create_pod(rs))
        elif len(pods) > desired:
            # Delete the cheapest first: unscheduled, then not ready, then the newest.
            newest_first = sorted(
                pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True
            )
            ranked = sorted(newest_first, key=lambda p: (pod_is_scheduled(p), pod_is_ready(p)))
            doomed = ranked[: len(pods) - desired]
            for pod in doomed:
                await self.client.delete(
                    f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}"
                )
                self.pods.forget(pod)
                await self._replicaset_event(
                    rs, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}"
                )
            pods = [p for p in pods if p not in doomed]
        ready = sum(1 for p in pods if pod_is_ready(p))
        status: JSON = {"replicas": len(pods)}
        if pods:
            status["fullyLabeledReplicas"] = len(pods)
        if ready:
            status["readyReplicas"] = ready
            status["availableReplicas"] = ready
        status["observedGeneration"] = meta.get("generation", 1)
        old_status = rs.get("status", {}) or {}
        if status != old_status:
            updated = await self.client.merge_patch(
                f"/apis/apps/v1/namespaces/{namespace}/replicasets/{meta['name']}/status",
                {"status": status_merge_patch(old_status, status)},
            )
            self.replicasets.remember(updated)

    async def _create_pod(self, rs: JSON) -> JSON:
        meta = rs["metadata"]
        template = copy.deepcopy(rs.get("spec", {}).get("template", {}))
        template_meta = template.get("metadata", {}) or {}
        body: JSON = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{random_suffix()}",
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "labels": template_meta.get("labels", {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template.get("spec", {}),
        }
        if template_meta.get("annotations"):
            body["metadata"]["annotations"] = template_meta["annotations"]
        created = await self.client.create(f"/api/v1/namespaces/{meta['namespace']}/pods", body)
        self.pods.remember(created)
        await self._replicaset_event(
            rs, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}"
        )
        return created

    # -- Garbage collection ------------------------------------------------------------

    async def collect_garbage(self) -> None:
        deployment_uids = {d["metadata"]["uid"] for d in self.deployments.values()}
        rs_uids = {rs["metadata"]["uid"] for rs in self.replicasets.values()}
        for rs in self.replicasets.values():
            owner = controller_uid(rs, "Deployment")
            if owner is not None and owner not in deployment_uids and not is_terminating(rs):
                meta = rs["metadata"]
                await self.client.delete(
                    f"/apis/apps/v1/namespaces/{meta['namespace']}/replicasets/{meta['name']}"
                )
                self.replicasets.forget(rs)
        for pod in self.pods.values():
            owner = controller_uid(pod, "ReplicaSet")
            if owner is not None and owner not in rs_uids and not is_terminating(pod):
                meta = pod["metadata"]
                await self.client.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}")
                self.pods.forget(pod)

"""The sandbox's kube-controller-manager: Deployments, ReplicaSets and garbage collection.

Both controllers work as kube-controller-manager's do, from work queues: a change to a
Deployment queues it; a change to a ReplicaSet queues it and its owning Deployment; a
change to a Pod queues its owning ReplicaSet. A few workers per queue reconcile one key
at a time (``kubeclient.WorkQueue``: deduplicated, per-key back-off on errors), reading
owned objects from the informers' owner indexes, so the cost of an event does not grow
with the number of objects (a benchmark holds thousands). A Deployment still progressing
is queued again when its progress deadline would pass, so ProgressDeadlineExceeded is
noticed without an event; everything is queued again every five minutes; at rest only a
once-a-second look for pods whose ReplicaSet is gone runs (one step per owner).

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
from mdsandbox.kubeclient import (
    ApiError,
    Informer,
    KubeClient,
    ObjectKey,
    WorkQueue,
    controller_ref,
    status_merge_patch,
)

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


def status_condition(obj: JSON, kind: str) -> JSON | None:
    """The status condition of this type (any object with ``status.conditions``)."""
    for entry in (obj.get("status") or {}).get("conditions") or []:
        if entry.get("type") == kind:
            return entry  # type: ignore[no-any-return]
    return None


def still_progressing(deployment: JSON) -> bool:
    """Whether the Deployment's progress deadline can still run out (so it needs a clock)."""
    if is_terminating(deployment):
        return False
    for entry in (deployment.get("status") or {}).get("conditions") or []:
        if entry.get("type") == "Progressing":
            return entry.get("status") == "True" and entry.get("reason") != "NewReplicaSetAvailable"
    return True  # no status yet: not reconciled once


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

    WORKERS = 8  # per queue: enough to overlap the API round trips, few enough to stay polite
    FULL_RESYNC_SECONDS = 300.0

    def __init__(self, api_url: str, *, resync_seconds: float = 1.0) -> None:
        self.client = KubeClient(api_url)
        self.resync_seconds = resync_seconds
        self.deployment_queue = WorkQueue()
        self.replicaset_queue = WorkQueue()
        self.deployments = Informer(
            self.client, "/apis/apps/v1/deployments", name="deployments",
            on_object=self._deployment_changed,
        )
        self.replicasets = Informer(
            self.client, "/apis/apps/v1/replicasets", name="replicasets",
            on_object=self._replicaset_changed,
        )
        self.pods = Informer(
            self.client, "/api/v1/pods", name="pods", on_object=self._pod_changed
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._deadline_timers: dict[ObjectKey, asyncio.TimerHandle] = {}
        self._events: set[asyncio.Task[None]] = set()

    # -- what a change queues --------------------------------------------------------

    def _deployment_changed(self, key: ObjectKey, obj: JSON) -> None:
        self.deployment_queue.add(key)
        if key not in self.deployments.objects:  # gone: its ReplicaSets are orphans now
            for rs in self.replicasets.owned_by(obj.get("metadata", {}).get("uid", "")):
                self.replicaset_queue.add((rs["metadata"]["namespace"], rs["metadata"]["name"]))

    def _replicaset_changed(self, key: ObjectKey, obj: JSON) -> None:
        self.replicaset_queue.add(key)
        ref = controller_ref(obj)
        if ref is not None and ref.get("kind") == "Deployment":
            self.deployment_queue.add((key[0], str(ref.get("name"))))

    def _pod_changed(self, key: ObjectKey, obj: JSON) -> None:
        ref = controller_ref(obj)
        if ref is not None and ref.get("kind") == "ReplicaSet":
            self.replicaset_queue.add((key[0], str(ref.get("name"))))

    async def start(self) -> None:
        for informer in (self.deployments, self.replicasets, self.pods):
            informer.start()
        self._tasks = [asyncio.create_task(self._resync(), name="controller-manager resync")]

    async def stop(self) -> None:
        for timer in self._deadline_timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._events:
            await asyncio.wait(self._events, timeout=5.0)
        for informer in (self.deployments, self.replicasets, self.pods):
            await informer.stop()
        await self.client.close()

    async def _resync(self) -> None:
        for informer in (self.deployments, self.replicasets, self.pods):
            await informer.synced.wait()
        # Workers start once the caches are full, so nothing acts on a partial picture.
        for index in range(self.WORKERS):
            self._tasks.append(asyncio.create_task(
                self._work(self.deployment_queue, self._reconcile_deployment_key),
                name=f"deployment worker {index}"))
            self._tasks.append(asyncio.create_task(
                self._work(self.replicaset_queue, self._reconcile_replicaset_key),
                name=f"replicaset worker {index}"))
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while True:
            if loop.time() >= next_full:
                for key in list(self.deployments.objects):
                    self.deployment_queue.add(key)
                for key in list(self.replicasets.objects):
                    self.replicaset_queue.add(key)
                next_full = loop.time() + self.FULL_RESYNC_SECONDS
            try:
                await self.collect_garbage()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller garbage collection failed")
            await asyncio.sleep(self.resync_seconds)

    async def _work(self, queue: WorkQueue, reconcile: Any) -> None:
        while True:
            key = await queue.get()
            try:
                await reconcile(key)
                queue.forget_failures(key)
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if err.status != 409:  # 409: a stale write; the retry reads the new version
                    log.warning("%s", err)
                queue.retry(key)
            except Exception:
                log.exception("reconciling %s/%s failed; retrying", *key)
                queue.retry(key)
            finally:
                queue.done(key)

    async def _reconcile_deployment_key(self, key: ObjectKey) -> None:
        deployment = self.deployments.objects.get(key)
        if deployment is not None and not is_terminating(deployment):
            await self.reconcile_deployment(deployment)
        self._arm_deadline(key)

    def _arm_deadline(self, key: ObjectKey) -> None:
        """Queue the Deployment again just after its progress deadline would pass."""
        timer = self._deadline_timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        deployment = self.deployments.objects.get(key)
        if deployment is None or not still_progressing(deployment):
            return
        deadline = (deployment.get("spec") or {}).get("progressDeadlineSeconds", 600)
        progressing = status_condition(deployment, "Progressing")
        last_update = parse_time((progressing or {}).get("lastUpdateTime"))
        if deadline is None or last_update is None:
            return
        due = last_update.timestamp() + int(deadline) + 1.0 - datetime.now(UTC).timestamp()
        self._deadline_timers[key] = asyncio.get_running_loop().call_later(
            max(0.0, due), self.deployment_queue.add, key
        )

    async def _reconcile_replicaset_key(self, key: ObjectKey) -> None:
        rs = self.replicasets.objects.get(key)
        if rs is None:
            return
        owner = controller_uid(rs, "Deployment")
        if owner is not None and not is_terminating(rs):
            ref = controller_ref(rs) or {}
            deployment = self.deployments.get(key[0], str(ref.get("name")))
            if deployment is None or deployment["metadata"].get("uid") != owner:
                await self.client.delete(
                    f"/apis/apps/v1/namespaces/{key[0]}/replicasets/{key[1]}"
                )
                self.replicasets.forget(rs)
                return
        await self.reconcile_replicaset(rs)

    # -- Deployments -------------------------------------------------------------------

    def owned_replicasets(self, deployment: JSON) -> list[JSON]:
        uid = deployment["metadata"]["uid"]
        return [rs for rs in self.replicasets.owned_by(uid) if controller_uid(rs, "Deployment") == uid]

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

    def _spawn_event(self, work: Any) -> None:
        # Events are best-effort (record_event drops failures): written in the background,
        # so a reconcile does not wait a round trip per event.
        task = asyncio.create_task(work)
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _deployment_event(self, deployment: JSON, reason: str, message: str) -> None:
        self._spawn_event(record_event(
            self.client, deployment, reason, message,
            kind="Deployment", api_version="apps/v1", component="deployment-controller",
        ))

    async def _replicaset_event(self, rs: JSON, reason: str, message: str) -> None:
        self._spawn_event(record_event(
            self.client, rs, reason, message,
            kind="ReplicaSet", api_version="apps/v1", component="replicaset-controller",
        ))

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
        return [
            pod
            for pod in self.pods.owned_by(uid)
            if controller_uid(pod, "ReplicaSet") == uid and not is_terminating(pod)
        ]

    async def reconcile_replicaset(self, rs: JSON) -> None:
        if is_terminating(rs):
            return
        meta = rs["metadata"]
        namespace = meta["namespace"]
        desired = int(rs.get("spec", {}).get("replicas", 1))
        pods = self.owned_pods(rs)
        if len(pods) < desired:
            # Concurrently, as the real controller's batches: a round trip per pod, in series,
            # was most of the time it took to bring a thousand Deployments up.
            pods.extend(await asyncio.gather(
                *(self._create_pod(rs) for _ in range(desired - len(pods)))
            ))
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
        """Delete the pods whose controlling ReplicaSet is gone (ReplicaSets whose
        Deployment is gone are deleted by their worker, queued when the Deployment goes).

        Walks the pods' owner index, one entry per owner, not every pod.
        """
        rs_uids = {rs["metadata"]["uid"] for rs in self.replicasets.values()}
        for owner in [uid for uid in self.pods.owner_uids() if uid not in rs_uids]:
            for pod in self.pods.owned_by(owner):
                if controller_uid(pod, "ReplicaSet") == owner and not is_terminating(pod):
                    meta = pod["metadata"]
                    path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                    try:
                        await self.client.delete(path)
                    except ApiError as err:
                        # One pod the server will not delete must not hold every other
                        # orphan (a real collector works through a queue per object).
                        log.warning("garbage collection: DELETE %s: %s", path, err)
                        continue
                    self.pods.forget(pod)

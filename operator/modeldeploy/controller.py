"""The shell around the engine: load state, observe, decide, act, write status.

One tick for one ModelDeployment:
1. read the resource fresh from the API server (never a cached body: a tick must see
   the status the previous tick wrote, and any `modeldeploy promote` since);
2. validate it with the pydantic models; an invalid spec is reported in status and
   events once per generation, and nothing running is touched;
3. observe the Deployments and pods it owns, the router's served weight and analysis;
4. ask the pure engine for a decision;
5. apply the decision's actions through the adapters (create-or-patch, idempotent);
6. write the new status in one write guarded by resourceVersion, then post the events.

Killed between 5 and 6, the next tick sees the old status and the new objects, and the
engine (idempotent) decides the same thing again: no step is skipped or done twice.

Scheduling: each resource is ticked when a watch event wakes it, or when the engine's
``requeue_after`` (or the idle interval) is due, one tick at a time per resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modeldeploy import engine, metrics
from modeldeploy import spec as s
from modeldeploy.analysis_runner import AnalysisRunner
from modeldeploy.kube import objects
from modeldeploy.kube.client import KubeClient, NamespaceTerminating
from modeldeploy.routing import router_for

log = logging.getLogger("modeldeploy.controller")
Manifest = dict[str, Any]
Key = tuple[str, str]


@dataclass(frozen=True)
class OperatorConfig:
    """Operator settings, from environment variables (the chart sets them)."""

    tick_seconds: float = 5.0
    watch_server_timeout: int = 300
    metrics_port: int | None = 9090
    leader_election: bool = False
    lease_name: str = "modeldeploy-operator"
    lease_namespace: str = "default"
    lease_seconds: int = 15
    identity: str = ""

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            tick_seconds=float(os.environ.get("MODELDEPLOY_TICK_SECONDS", "5")),
            watch_server_timeout=int(os.environ.get("MODELDEPLOY_WATCH_TIMEOUT", "300")),
            # "off" disables the endpoint (e.g. several operators in one test process).
            metrics_port=None if os.environ.get("MODELDEPLOY_METRICS_PORT") == "off"
            else int(os.environ.get("MODELDEPLOY_METRICS_PORT", "9090")),
            leader_election=os.environ.get("MODELDEPLOY_LEADER_ELECTION", "").lower() == "true",
            lease_name=os.environ.get("MODELDEPLOY_LEASE_NAME", "modeldeploy-operator"),
            # The chart sets POD_NAMESPACE / POD_NAME from the downward API.
            lease_namespace=os.environ.get("POD_NAMESPACE", "default"),
            lease_seconds=int(os.environ.get("MODELDEPLOY_LEASE_SECONDS", "15")),
            identity=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def not_ready_reason(pods: list[Manifest]) -> str | None:
    """Why pods of a revision are not ready, in the words the cluster used."""
    for pod in pods:
        status = pod.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return f"{condition.get('reason', 'Unschedulable')}: {condition.get('message', '')}".strip()
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in {"CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff",
                                         "CreateContainerConfigError", "RunContainerError"}:
                return f"{waiting['reason']}: {waiting.get('message', '')}".strip().rstrip(":")
    return None


def observe_deployments(
    deployments: list[Manifest], pods: list[Manifest]
) -> dict[str, engine.DeploymentObservation]:
    observed: dict[str, engine.DeploymentObservation] = {}
    for deployment in deployments:
        labels = deployment["metadata"].get("labels") or {}
        revision = labels.get(s.LABEL_REVISION)
        if not revision:
            continue
        status = deployment.get("status") or {}
        revision_pods = [
            p for p in pods if (p["metadata"].get("labels") or {}).get(s.LABEL_REVISION) == revision
        ]
        observed[revision] = engine.DeploymentObservation(
            revision=revision,
            track=labels.get(s.LABEL_TRACK, "canary"),
            desired_replicas=int((deployment.get("spec") or {}).get("replicas") or 0),
            ready_replicas=int(status.get("readyReplicas") or 0),
            updated_replicas=int(status.get("updatedReplicas") or 0),
            available_replicas=int(status.get("availableReplicas") or 0),
            not_ready_reason=not_ready_reason(revision_pods),
        )
    return observed


def record_outcomes(
    namespace: str, name: str, before: s.ModelDeploymentStatus, after: s.ModelDeploymentStatus
) -> None:
    """Count finished rollouts and reverts: history entries this tick added or finished."""
    metrics.record_status(namespace, name, after)
    seen = {(h.revision, h.outcome, h.time) for h in before.history}
    for entry in after.history:
        if (entry.revision, entry.outcome, entry.time) in seen or entry.outcome == "InProgress":
            continue
        metrics.ROLLOUTS.labels(namespace, name, entry.outcome).inc()
        if entry.outcome in ("RolledBack", "Aborted"):
            metrics.ROLLBACKS.labels(namespace, name, rollback_reason(after, entry.outcome)).inc()


# The bounded `reason` label of modeldeploy_rollbacks_total, from the Degraded condition's
# reason the revert wrote (never from free text: a value or revision in a label would make
# a new series per rollback).
ROLLBACK_REASONS = {
    "RollbackIndicatorBreached": "rollback-indicator",
    "AnalysisFailed": "failure-limit",
    "AnalysisInconclusive": "inconclusive-limit",
    "RolloutAborted": "abort",
    "ProgressDeadlineExceeded": "progress-deadline",
}


def rollback_reason(status: s.ModelDeploymentStatus, outcome: str) -> str:
    degraded = next((c for c in status.conditions if c.type == "Degraded"), None)
    if degraded is not None and degraded.reason in ROLLBACK_REASONS:
        return ROLLBACK_REASONS[degraded.reason]
    return "abort" if outcome == "Aborted" else "other"


def status_dict(status: s.ModelDeploymentStatus) -> Manifest:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


class RolloutController:
    def __init__(
        self,
        kube: KubeClient,
        config: OperatorConfig,
        analysis: AnalysisRunner | None = None,
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self._kube = kube
        self._is_leader = is_leader
        self._config = config
        self._analysis = analysis or AnalysisRunner(kube)
        self._due: dict[Key, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: dict[Key, asyncio.Task[None]] = {}

    # -- scheduling ------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="modeldeploy-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._running.values()):
            task.cancel()

    def notice(self, namespace: str, name: str, gone: bool) -> None:
        key = (namespace, name)
        if gone:
            self._due.pop(key, None)
            return
        self._due[key] = 0.0
        self._wake.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._is_leader():
                # Another replica holds the Lease: keep the schedule, act on nothing, and
                # export no phase or weight (the leader's gauges are the true ones).
                metrics.forget_all()
                await asyncio.sleep(0.5)
                continue
            now = loop.time()
            for key, due in list(self._due.items()):
                if due <= now and key not in self._running:
                    self._due[key] = now + self._config.tick_seconds
                    self._running[key] = asyncio.create_task(self._tick_guarded(key))
            upcoming = [d for k, d in self._due.items() if k not in self._running]
            delay = max(0.05, min(upcoming, default=now + 1.0) - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _tick_guarded(self, key: Key) -> None:
        namespace, name = key
        try:
            requeue = await self.tick(namespace, name)
        except NamespaceTerminating:
            # Its namespace is going, and the ModelDeployment with it: nothing to rebuild.
            # A watch event (e.g. the namespace deletion being stuck and the spec edited)
            # schedules it again.
            log.info("namespace %s is being deleted: %s/%s left alone", namespace, namespace, name)
            self._due.pop(key, None)
            requeue = None
        except Exception:
            log.exception("tick of %s/%s failed; retrying in %ss", namespace, name,
                          self._config.tick_seconds)
            requeue = self._config.tick_seconds
        finally:
            self._running.pop(key, None)
        if key in self._due and requeue is not None:
            loop = asyncio.get_running_loop()
            self._due[key] = min(self._due[key], loop.time() + requeue)
            self._wake.set()

    # -- one tick --------------------------------------------------------------------

    async def tick(self, namespace: str, name: str) -> float | None:
        """One reconcile of one ModelDeployment; returns seconds until the next one."""
        body = await self._kube.get_model_deployment(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._due.pop((namespace, name), None)
            metrics.forget(namespace, name)
            return None
        now = _utcnow()
        generation = int(body["metadata"].get("generation") or 0)
        status = s.ModelDeploymentStatus.model_validate(body.get("status") or {})
        try:
            md = s.ModelDeployment.model_validate({**body, "status": None})
        except ValidationError as error:
            await self._report_invalid(body, status, generation, s.explain(error), now)
            return None  # nothing to retry until the spec changes (a new watch event)
        md.status = status
        deployments = await self._kube.list_deployments(namespace, name)
        pods = await self._kube.list_pods(namespace, name)
        router = router_for(md, self._kube)
        served: int | None = None
        if status.stable_revision:
            served = await router.served_weight(md, status.stable_revision, status.canary_revision)
        observation = engine.Observation(
            now=now,
            generation=generation,
            deployments=observe_deployments(deployments, pods),
            router_weight=served,
            analysis=await self._analysis.measure(md, status, now),
        )
        decision = engine.reconcile(md.spec, status, observation, name)
        await self._apply(md, decision.actions)
        new_status = status_dict(decision.status)
        if new_status != (body.get("status") or {}):
            written = await self._kube.write_status(body, new_status)
            if not written:
                return 0.2  # someone wrote in between: decide again on fresh state
        record_outcomes(namespace, name, status, decision.status)
        for action in decision.actions:
            if isinstance(action, engine.EmitEvent):
                await self._kube.emit_event(body, action.type, action.reason, action.message)
        if decision.requeue_after is None:
            return None
        return max(0.2, decision.requeue_after.total_seconds())

    async def _report_invalid(
        self,
        body: Manifest,
        status: s.ModelDeploymentStatus,
        generation: int,
        errors: list[str],
        now: dt.datetime,
    ) -> None:
        new_status = status_dict(engine.invalid_spec_status(status, generation, errors, now))
        old_status = body.get("status") or {}
        if json.dumps(new_status, sort_keys=True) == json.dumps(old_status, sort_keys=True):
            return  # already reported for this generation: no event storm
        if await self._kube.write_status(body, new_status):
            await self._kube.emit_event(body, "Warning", "InvalidSpec", "; ".join(errors))

    async def _apply(self, md: s.ModelDeployment, actions: list[engine.Action]) -> None:
        namespace = md.metadata.namespace
        for action in actions:
            match action:
                case engine.EnsureConfigMap(revision=revision):
                    await self._kube.apply(objects.configmap(md, revision))
                case engine.EnsureDeployment(revision=revision, track=track, replicas=replicas):
                    await self._kube.apply(objects.deployment(md, revision, track, replicas))
                    # The track moves (canary -> stable) without touching the template.
                    await self._kube.label_pods(
                        namespace,
                        f"{s.LABEL_NAME}={md.metadata.name},{s.LABEL_REVISION}={revision}",
                        {s.LABEL_TRACK: track},
                    )
                case engine.ScaleDeployment(revision=revision, replicas=replicas):
                    await self._kube.scale_deployment(
                        namespace, objects.deployment_name(md.metadata.name, revision), replicas
                    )
                case engine.DeleteDeployment(revision=revision):
                    await self._kube.delete(
                        "Deployment", namespace, objects.deployment_name(md.metadata.name, revision)
                    )
                    await self._kube.delete(
                        "ConfigMap", namespace, objects.configmap_name(md.metadata.name, revision)
                    )
                case engine.EnsureService(revision=revision):
                    await self._kube.apply(objects.service(md, md.metadata.name, revision))
                case engine.EnsurePreviewService(revision=revision):
                    await self._kube.apply(
                        objects.service(md, objects.preview_service_name(md), revision)
                    )
                case engine.SetTrafficWeight(stable_revision=stable, canary_revision=canary, weight=w):
                    await router_for(md, self._kube).set_weight(md, stable, canary, w)
                case engine.EmitEvent():
                    pass  # posted after the status write, so a lost write posts nothing

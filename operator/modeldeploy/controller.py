"""The shell around the engine: a work queue of ModelDeployments, each reconciled from caches.

One tick for one ModelDeployment (``RolloutController.tick``):
1. read the resource from the watch-fed cache (``modeldeploy.kube.cache``); the cache
   holds the answer to the previous tick's status write, and any `modeldeploy promote`
   since arrives as a watch event that queues the resource again;
2. validate it with the pydantic models; an invalid spec is reported in status and
   events once per generation, and nothing running is touched;
3. observe the Deployments and pods it owns (cached), what the router finds the data plane serving and
   analysis (the only requests a tick makes when nothing changes are Prometheus queries,
   and only while a rollout is analysed);
4. ask the pure engine for a decision;
5. apply the decision's actions (``modeldeploy.actuator``): the kube client writes only
   what differs from the cache, so a resource at rest costs no request at all;
6. write the new status, only when it changed, in one write guarded by resourceVersion
   (a conflict re-reads that one object and decides again, with back-off while
   conflicts last), then post the events and queue the webhook notifications of the
   transition just written (``modeldeploy.notify``: queued, never awaited, so a webhook
   that is down never delays a rollout).

Killed between 5 and 6, the next tick sees the old status and the new objects, and the
engine (idempotent) decides the same thing again: no step is skipped or done twice.

Scheduling (``modeldeploy.workqueue``): a resource is queued by a watch event on itself or
on an object it owns, by the engine's ``requeue_after``, by the analysis runner's next check
of the rollback indicators between rounds (at the scrape interval, while a rollout is
analysed), by a retry after a failure
(exponential back-off per resource, reset on success) and by the periodic resync
(``MODELDEPLOY_RESYNC_SECONDS``, default 10 min), which runs in a lower lane than due work.
A bounded number of workers process the queue; one resource is never ticked twice at once.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import logging
import math
import os
import random
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes.client import ApiClient, V1PodTemplateSpec
from pydantic import ValidationError

from modeldeploy import engine, metrics, notify
from modeldeploy import spec as s
from modeldeploy.actuator import apply_actions
from modeldeploy.analysis_runner import AnalysisRunner
from modeldeploy.evaluation_runner import (
    SERVICE_ADDRESSES_ENV,
    EvaluationRunner,
    ServiceAddresses,
    service_addresses_from_env,
)
from modeldeploy.kube.cache import ClusterCache, cancel_and_wait
from modeldeploy.kube.client import CALL_DEADLINE, USER_AGENT, KubeClient, NamespaceTerminating
from modeldeploy.kube.objects import quantities_as_strings
from modeldeploy.liveness import Heartbeats
from modeldeploy.messages import bounded_status
from modeldeploy.observe import observe_deployments
from modeldeploy.podpolicy import ALLOWED_SERVICE_ACCOUNTS_ENV, POLICY_ENV, PodTemplatePolicy
from modeldeploy.providers import ALLOWED_ADDRESSES_ENV, ProviderAddresses, allowed_addresses
from modeldeploy.routing import router_for
from modeldeploy.workqueue import Lane, WorkQueue

log = logging.getLogger("modeldeploy.controller")
# How often an object of someone else's that blocks a write (and that no watch sees) is
# tried again: two requests (the refused create, one read) per ModelDeployment per period.
CONFLICT_RETRY_SECONDS = 15.0
# A status write that conflicts is decided again with back-off up to this (seconds): the
# conflicts of a busy object come in bursts, and every watch event in a burst counts a
# failure, so the queue's cap (minutes) would leave the rollout idle long after it.
STATUS_CONFLICT_BACKOFF_CAP = 5.0
# Liveness (modeldeploy.liveness): a tick still running after this long is stuck (every
# call in it has a deadline), and so is a scheduling loop silent for this long.
TICK_STUCK_SECONDS = 600.0
LOOP_STUCK_SECONDS = 30.0
Manifest = dict[str, Any]
NumberT = TypeVar("NumberT", int, float)
Key = tuple[str, str]


@dataclass(frozen=True)
class OperatorConfig:
    """Operator settings, from environment variables (the chart sets them)."""

    # A resource at rest is looked at again after this long (watch events come first).
    resync_seconds: float = 600.0
    # Resources reconciled at once; Prometheus queries in flight at once, over all of them.
    workers: int = 16
    query_concurrency: int = 32
    watch_server_timeout: int = 300
    # The longest one Kubernetes API call may take, tries after a 429 included
    # (MODELDEPLOY_API_CALL_DEADLINE_SECONDS; kube/client.py says why there is one).
    api_call_deadline: float = CALL_DEADLINE
    # The namespaces to watch; empty: all (``modeldeploy-operator --namespace`` sets them).
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    metrics_port: int | None = 9090
    leader_election: bool = False
    lease_name: str = "modeldeploy-operator"
    lease_namespace: str = "default"
    lease_seconds: int = 15
    identity: str = ""
    # Metric provider addresses analysis may query (MODELDEPLOY_ALLOWED_PROVIDER_ADDRESSES,
    # comma-separated); None: any, when the variable is unset (the chart always sets it).
    allowed_provider_addresses: tuple[str, ...] | None = None
    # MODELDEPLOY_POD_TEMPLATE_POLICY / MODELDEPLOY_ALLOWED_SERVICE_ACCOUNTS (podpolicy.py).
    pod_template_policy: PodTemplatePolicy = field(default_factory=PodTemplatePolicy)
    # The webhook of resources without spec.notifications (MODELDEPLOY_DEFAULT_WEBHOOK_*,
    # modeldeploy.notify); None: none.
    default_webhook: notify.WebhookTarget | None = None
    # How evaluation steps reach a revision's Service (MODELDEPLOY_SERVICE_ADDRESSES,
    # modeldeploy.evaluation_runner): cluster DNS, or the address its status publishes.
    service_addresses: ServiceAddresses = "clusterDNS"

    @classmethod
    def from_env(cls) -> OperatorConfig:
        """The settings from the environment; a bad value stops the operator at start with a
        ValueError naming the variable, its value and what it takes."""
        env = os.environ.get
        metrics_port = env("MODELDEPLOY_METRICS_PORT")
        return cls(
            resync_seconds=env_number("MODELDEPLOY_RESYNC_SECONDS", 600.0),
            workers=env_number("MODELDEPLOY_WORKERS", 16),
            query_concurrency=env_number("MODELDEPLOY_QUERY_CONCURRENCY", 32),
            watch_server_timeout=env_number("MODELDEPLOY_WATCH_TIMEOUT", 300),
            api_call_deadline=env_number("MODELDEPLOY_API_CALL_DEADLINE_SECONDS", CALL_DEADLINE),
            namespaces=tuple(n for n in env("MODELDEPLOY_NAMESPACES", "").split(",") if n),
            # "off" disables the endpoint (e.g. several operators in one test process).
            metrics_port=None if metrics_port == "off"
            else env_number("MODELDEPLOY_METRICS_PORT", 9090),
            leader_election=env("MODELDEPLOY_LEADER_ELECTION", "").lower() == "true",
            lease_name=env("MODELDEPLOY_LEASE_NAME", "modeldeploy-operator"),
            # The chart sets POD_NAMESPACE / POD_NAME from the downward API.
            lease_namespace=env("POD_NAMESPACE", "default"),
            lease_seconds=env_number("MODELDEPLOY_LEASE_SECONDS", 15),
            identity=env("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
            allowed_provider_addresses=allowed_addresses(env(ALLOWED_ADDRESSES_ENV)),
            pod_template_policy=PodTemplatePolicy.from_env(
                env(POLICY_ENV), env(ALLOWED_SERVICE_ACCOUNTS_ENV)),
            default_webhook=notify.default_webhook_from_env(
                env(notify.DEFAULT_WEBHOOK_SECRET_ENV), env(notify.DEFAULT_WEBHOOK_FORMAT_ENV),
                env(notify.DEFAULT_WEBHOOK_EVENTS_ENV)),
            service_addresses=service_addresses_from_env(env(SERVICE_ADDRESSES_ENV)),
        )


def env_number(name: str, default: NumberT) -> NumberT:
    """A positive number from the environment variable ``name``, of ``default``'s type
    (unset or empty: ``default``). Zero or less is refused too: a deadline, a period or a
    worker count of 0 would make every call fail at once or nothing run at all."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    kind = "a whole number" if isinstance(default, int) else "a number of seconds"
    try:
        value = type(default)(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not {kind}: set {kind} above 0 "
                         f"(default {default}) or unset it") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={raw!r}: set {kind} above 0 (default {default}) or unset it")
    return value


class LeadershipLost(Exception):
    """The Lease lapsed while a tick ran: it writes nothing more."""


class ActionsFailed(Exception):
    """The API server refused or failed an action; the status says so (ActionFailed)."""


class StatusConflict(Exception):
    """The status write met a conflict (409): the object was read anew, decide again."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
    "EvaluationFailed": "evaluation",
    "EvaluationInconclusive": "inconclusive-limit",
    "RolloutAborted": "abort",
    "ProgressDeadlineExceeded": "progress-deadline",
}


def rollback_reason(status: s.ModelDeploymentStatus, outcome: str) -> str:
    degraded = next((c for c in status.conditions if c.type == "Degraded"), None)
    if degraded is not None and degraded.reason in ROLLBACK_REASONS:
        return ROLLBACK_REASONS[degraded.reason]
    return "abort" if outcome == "Aborted" else "other"


def pod_template_refusals(template: s.PodTemplate) -> list[str]:
    """``<field>: <problem>`` for what the kubernetes client's typed models refuse in the
    template (an unknown field, a wrong type): it would refuse every create of the
    revision's Deployment, so the spec is reported invalid instead of failing each tick."""
    body = copy.deepcopy(template.model_dump(by_alias=True, exclude_none=True))
    quantities_as_strings(body["spec"])  # as objects.deployment writes them
    try:
        V1PodTemplateSpec.model_validate(body)
    except ValidationError as error:
        return [
            f"{s.field_path(('spec', 'template', *item['loc']))}: "
            + ("unknown field: a Kubernetes pod template has no such field (check its spelling)"
               if item["type"] == "extra_forbidden" else item["msg"])
            for item in error.errors()
        ]
    return []


def status_dict(status: s.ModelDeploymentStatus) -> Manifest:
    """The status as written: every message within its limit (``modeldeploy.messages``)."""
    return bounded_status(status).model_dump(by_alias=True, exclude_none=True, mode="json")


class RolloutController:
    def __init__(
        self,
        api_client: ApiClient,
        config: OperatorConfig,
        is_leader: Callable[[], bool] = lambda: True,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        self._config = config
        self._is_leader = is_leader
        self.heartbeats = heartbeats or Heartbeats()
        self._queue: WorkQueue[Key] = WorkQueue()
        self.cache = ClusterCache(api_client, USER_AGENT, list(config.namespaces), self.notice,
                                  config.watch_server_timeout)
        self._kube = KubeClient(api_client, self.cache, self._config.api_call_deadline)
        self._analysis = AnalysisRunner(self._kube, config.query_concurrency,
                                        ProviderAddresses(config.allowed_provider_addresses))
        self.notifier = notify.Notifier(self._kube, user_agent=USER_AGENT)
        # A finished evaluation queues its resource: the next tick hands the result over.
        self._evaluations = EvaluationRunner(self._kube, self.notice, config.service_addresses)
        self._tasks: list[asyncio.Task[None]] = []

    # -- scheduling ------------------------------------------------------------------

    async def start(self) -> None:
        # Kube calls run in threads (the official client is synchronous; Prometheus queries
        # are async httpx now). The query slots are kept as spare threads: a call abandoned
        # at its deadline holds its thread until its socket gives up.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(self._config.workers + self._config.query_concurrency,
                               thread_name_prefix="modeldeploy-io")
        )
        await self.cache.start()
        self._tasks = [
            asyncio.create_task(self._queue.run_timers(), name="modeldeploy-timers"),
            asyncio.create_task(self._follow_leadership(), name="modeldeploy-leadership"),
            *(asyncio.create_task(self._work(), name=f"modeldeploy-worker-{i}")
              for i in range(self._config.workers)),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        await self._evaluations.stop()
        await self.notifier.stop()
        await self.cache.stop()

    def notice(self, namespace: str, name: str) -> None:
        """A watch event on the resource or an object it owns: reconcile it soon."""
        self._queue.add((namespace, name))

    async def _follow_leadership(self) -> None:
        leading = True
        while True:
            self.heartbeats.beat("controller loop", LOOP_STUCK_SECONDS)
            now_leading = self._is_leader()
            if now_leading and not leading:
                for key in self.cache.model_deployment_keys():
                    self._queue.add(key)  # nothing was reconciled while another replica led
            elif leading and not now_leading:
                # Another replica holds the Lease: act on nothing, and export no phase or
                # weight (the leader's gauges are the true ones).
                metrics.forget_all()
            leading = now_leading
            await asyncio.sleep(0.5)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            try:
                if self._is_leader():
                    with self.heartbeats.running(f"tick of {key[0]}/{key[1]}", TICK_STUCK_SECONDS):
                        await self._reconcile(key)
            finally:
                self._queue.done(key)

    def _require_leadership(self) -> None:
        """Checked before each write, not only before a tick: a tick can outlast the Lease."""
        if not self._is_leader():
            raise LeadershipLost

    async def _reconcile(self, key: Key) -> None:
        namespace, name = key
        try:
            requeue = await self.tick(namespace, name)
        except NamespaceTerminating:
            # Its namespace is going, and the ModelDeployment with it: nothing to rebuild.
            # A watch event (e.g. the namespace deletion being stuck and the spec edited)
            # queues it again.
            log.info("namespace %s is being deleted: %s/%s left alone", namespace, namespace, name)
            self._queue.forget(key)
            return
        except ActionsFailed as failure:
            delay = self._queue.failed(key)
            log.warning("%s/%s: %s; retrying in %.1fs", namespace, name, failure, delay)
            return
        except StatusConflict:
            # With back-off, as client-go requeues a conflict: a conflict that lasts (a
            # webhook, a writer that keeps winning) must not become a hot GET+PUT loop. A
            # user's write that caused it queues the resource at once by its watch event.
            delay = self._queue.failed(key, cap=STATUS_CONFLICT_BACKOFF_CAP)
            log.info("%s/%s: status write conflicted; deciding again in %.1fs", namespace, name,
                     delay)
            return
        except LeadershipLost:
            # Queued again: a worker drops it while another replica leads, and reconciles
            # it if the Lease came back before the leadership loop saw it go.
            log.info("lost the Lease during the tick of %s/%s: nothing more written", namespace, name)
            self._queue.add(key)
            return
        except Exception:
            delay = self._queue.failed(key)
            log.exception("tick of %s/%s failed; retrying in %.1fs", namespace, name, delay)
            return
        self._queue.succeeded(key)
        if self._kube.get_model_deployment(namespace, name) is None:
            self._queue.forget(key)
        elif requeue is not None:
            self._queue.add(key, after=requeue)
        else:
            # Spread resyncs so resources created together do not all come back together.
            self._queue.add(key, after=self._config.resync_seconds * random.uniform(0.9, 1.1),
                            lane=Lane.RESYNC)

    # -- one tick --------------------------------------------------------------------

    async def tick(self, namespace: str, name: str) -> float | None:
        """One reconcile of one ModelDeployment; returns seconds until the next one."""
        body = self._kube.get_model_deployment(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            metrics.forget(namespace, name)
            self._analysis.forget(namespace, name)
            self._evaluations.forget(namespace, name)
            return None
        now = _utcnow()
        generation = int(body["metadata"].get("generation") or 0)
        status = s.ModelDeploymentStatus.model_validate(body.get("status") or {})
        try:
            md = s.ModelDeployment.model_validate({**body, "status": None})
        except ValidationError as error:
            await self._report_invalid(body, status, generation, s.explain(error), now)
            return None  # nothing to retry until the spec changes (a new watch event)
        # The operator's own rules (a metric provider outside the allow-list, a pod
        # template the podTemplatePolicy or the kubernetes client refuses) are validated
        # like the spec.
        refused = [*self._config.pod_template_policy.refusals(md.spec.template.spec),
                   *self._analysis.refusals(md.spec), *pod_template_refusals(md.spec.template),
                   *engine.mirror_refusals(md.spec)]
        if refused:
            await self._report_invalid(body, status, generation, refused, now)
            return None
        md.status = status
        deployments = self._kube.list_deployments(namespace, name)
        pods = self._kube.list_pods(namespace, name)
        router = router_for(md, self._kube)
        served: engine.Served | None = None
        if status.stable_revision:
            served = await router.served(md, status.stable_revision, status.canary_revision)
        observation = engine.Observation(
            now=now,
            generation=generation,
            deployments=observe_deployments(deployments, pods),
            served=served,
            analysis=await self._analysis.measure(md, status, now),
            evaluation=self._evaluations.result(md, status),
        )
        decision = engine.reconcile(md.spec, status, observation, name)
        self._require_leadership()
        applied = await apply_actions(self._kube, md, decision.actions)
        blocked = applied.conflicts
        conflicts = {str(c) for c in [*self._kube.foreign_objects(namespace, name), *blocked]}
        decided = engine.conflict_status(decision.status, sorted(conflicts), generation, now)
        failure = applied.failure
        decided = engine.action_failure_status(
            decided, None if failure is None else (failure.reason, failure.message), generation, now)
        new_status = status_dict(decided)
        if new_status != (body.get("status") or {}):
            self._require_leadership()
            written = await self._kube.write_status(body, new_status)
            if not written:
                raise StatusConflict  # someone wrote in between: decide again on the object read anew
        record_outcomes(namespace, name, status, decided)
        # From the transition this tick wrote (the status read -> the status written), so a
        # restarted operator, which reads what its predecessor wrote, resends nothing.
        notes = notify.notifications_for(md, status, decided, now)
        if notes:
            self.notifier.enqueue(md, notify.targets_for(md, self._config.default_webhook), notes)
        for action in decision.actions:
            if isinstance(action, engine.EmitEvent):
                await self._kube.emit_event(body, action.type, action.reason, action.message)
        await self._announce_problems(body, status, decided)
        if failure is not None:
            # Reported in status (progressDeadline keeps counting); retried with back-off.
            raise ActionsFailed(failure.message)
        after = None if decision.requeue_after is None else decision.requeue_after.total_seconds()
        # Rollback indicators are also checked between analysis rounds (analysis_runner).
        check_in = self._analysis.indicator_check_in(md, decided, now)
        if check_in is not None:
            after = check_in if after is None else min(after, check_in)
        if blocked:
            # An unlabelled object in the way is not watched: look again for it to be gone.
            after = min(after or CONFLICT_RETRY_SECONDS, CONFLICT_RETRY_SECONDS)
        return None if after is None else max(0.2, after)

    async def _announce_problems(
        self, body: Manifest, before: s.ModelDeploymentStatus, after: s.ModelDeploymentStatus
    ) -> None:
        """One Warning Event per new conflict set or failure cause, not one per reconcile."""
        for kind in (engine.CONFLICT_CONDITION, engine.ACTION_FAILED_CONDITION):
            now = next((c for c in after.conditions if c.type == kind), None)
            then = next((c for c in before.conditions if c.type == kind), None)
            if now is not None and now.status == "True" and (
                    then is None or then.status != "True" or then.message != now.message):
                await self._kube.emit_event(body, "Warning", kind, now.message)

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
        self._require_leadership()
        if await self._kube.write_status(body, new_status):
            await self._kube.emit_event(body, "Warning", "InvalidSpec", "; ".join(errors))

"""Webhook notifications: a rollout started, paused, was promoted, rolled back or failed.

What is sent, and when (:func:`notifications_for`): the controller calls it once per tick,
right after its status write succeeded, with the status it read (``before``) and the one
it just wrote (``after``). A notification is a transition between those two, so each is
sent once: a restarted operator reads the status its predecessor wrote and finds no
transition in it, and a tick whose status write conflicted sends nothing (it decides
again). Delivery is at most once: an operator killed between its status write and the
delivery loses that notification rather than sending it twice.

- Started: a new ``InProgress`` history entry (a first deployment, a new revision, a retry).
- Promoted: that entry closed as ``Promoted`` (first deployments included).
- RolledBack: closed as ``RolledBack`` (analysis or an evaluation failed, a rollback
  indicator breached, inconclusive analysis with ``onInconclusive: rollback``). The last
  evaluation of the revision, if any, is one more metric (``evaluation-score``).
- Failed: closed as ``Aborted``: stopped without analysis judging it bad (``modeldeploy
  abort``, progressDeadline, a first deployment that never became ready).
- Paused: the phase became Paused, or a hold began while it was Paused: held by a person,
  by analysis (inconclusive, failed with ``rollback.automatic: false``), by an inconclusive
  evaluation, by the Gateway, or
  a pause step (or blue-green promotion) with no duration that waits for ``modeldeploy
  promote``. A timed pause step is the plan, not news, and is not announced.
- A superseded rollout sends nothing of its own; the next revision's Started follows.

Within one tick the old rollout's end comes before the new one's start.

Where it goes: ``spec.notifications.webhooks`` or, when a resource has no
``notifications``, the operator's default webhook (MODELDEPLOY_DEFAULT_WEBHOOK_SECRET,
the chart's ``notifications.defaultWebhook``). Each URL is read from its Secret at each
delivery and never written to status, events, logs or metrics (it often carries a token).

How (:class:`Notifier`): the controller only enqueues (no await, no I/O), so a webhook that
is slow or down never delays a rollout. Each (resource, webhook) pair has its own ordered
lane, so one receiver's outage delays only its own notifications; a lane holds at most
``lane_capacity`` notifications and drops the oldest (counted ``dropped``) when full.
Each POST has a 5 s timeout; a connection error, a timeout, 429 or a 5xx is tried again
after 1, 2, 4 and 8 s (5 tries; a 429's Retry-After is honoured up to 30 s). After the
last try, or at once for an answer no retry changes (another 4xx, a redirect, a missing
Secret, a value that is no http(s) URL), a Warning Event ``NotificationFailed`` names the
webhook and the reason, and ``modeldeploy_notifications_total{result="failed"}`` counts
it. A missing Secret or key gets its Event once until a delivery to that webhook succeeds
(or the problem changes), not once per notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx

from modeldeploy import engine, metrics
from modeldeploy import spec as s
from modeldeploy.messages import EVENT_MESSAGE_MAX, bounded

log = logging.getLogger("modeldeploy.notify")

Manifest = dict[str, Any]
WebhookFormat = Literal["json", "slack"]

DEFAULT_WEBHOOK_SECRET_ENV = "MODELDEPLOY_DEFAULT_WEBHOOK_SECRET"
DEFAULT_WEBHOOK_FORMAT_ENV = "MODELDEPLOY_DEFAULT_WEBHOOK_FORMAT"
DEFAULT_WEBHOOK_EVENTS_ENV = "MODELDEPLOY_DEFAULT_WEBHOOK_EVENTS"
# The name the default webhook goes by in events and in the metric's `webhook` label.
DEFAULT_WEBHOOK_NAME = "default"

PER_TRY_TIMEOUT = 5.0
BACKOFF = (1.0, 2.0, 4.0, 8.0)  # seconds before tries 2..5
RETRY_AFTER_CAP = 30.0
LANE_CAPACITY = 100
CONCURRENT_DELIVERIES = 8
# A summary or message longer than this is cut (a status message may run to 4 KiB).
SUMMARY_MAX = 1024

_PAUSE_REASONS = {
    "user": "PausedByUser",
    "inconclusive": "AnalysisInconclusive",
    "analysisFailed": "AnalysisFailed",
    "evaluationInconclusive": "EvaluationInconclusive",
    "routeNotAccepted": "RouteNotAccepted",
}
# An evaluation's result reads as one more metric of the notification (its score).
EVALUATION_METRIC = "evaluation-score"
_CLOSED_EVENTS: dict[str, s.NotificationEvent] = {
    "Promoted": "Promoted", "RolledBack": "RolledBack", "Aborted": "Failed",
}


# --------------------------------------------------------------------------- where to

@dataclass(frozen=True)
class WebhookTarget:
    """One webhook: where its URL is read, how the body is shaped, what it is sent."""

    name: str
    secret_namespace: str
    secret_name: str
    secret_key: str
    format: WebhookFormat = "json"
    events: frozenset[s.NotificationEvent] = frozenset(s.NOTIFICATION_EVENTS)

    def describe_secret(self) -> str:
        return f"Secret {self.secret_namespace}/{self.secret_name} key {self.secret_key!r}"


def default_webhook_from_env(
    secret: str | None, format_: str | None = None, events: str | None = None
) -> WebhookTarget | None:
    """The operator's default webhook from its settings; None when ``secret`` is unset.

    ``secret`` is ``<namespace>/<name>/<key>`` (MODELDEPLOY_DEFAULT_WEBHOOK_SECRET),
    ``format_`` json or slack (MODELDEPLOY_DEFAULT_WEBHOOK_FORMAT, default json), ``events``
    a comma-separated subset of the events (MODELDEPLOY_DEFAULT_WEBHOOK_EVENTS, default
    all). A bad value stops the operator at start with a ValueError naming the variable.
    """
    raw = (secret or "").strip()
    if not raw:
        return None
    parts = raw.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(
            f"{DEFAULT_WEBHOOK_SECRET_ENV}={raw!r}: set <namespace>/<secret name>/<key>, "
            "e.g. modeldeploy/rollout-webhook/url, or unset it for no default webhook")
    fmt = (format_ or "").strip() or "json"
    if fmt not in ("json", "slack"):
        raise ValueError(f"{DEFAULT_WEBHOOK_FORMAT_ENV}={fmt!r}: set json or slack (default json)")
    chosen = [e.strip() for e in (events or "").split(",") if e.strip()]
    unknown = [e for e in chosen if e not in s.NOTIFICATION_EVENTS]
    if unknown:
        raise ValueError(
            f"{DEFAULT_WEBHOOK_EVENTS_ENV}={events!r}: unknown event {', '.join(unknown)}; "
            f"list some of {', '.join(s.NOTIFICATION_EVENTS)} (comma-separated) or unset it for all")
    return WebhookTarget(
        name=DEFAULT_WEBHOOK_NAME, secret_namespace=parts[0], secret_name=parts[1],
        secret_key=parts[2], format="slack" if fmt == "slack" else "json",
        events=frozenset(e for e in s.NOTIFICATION_EVENTS if e in chosen) if chosen
        else frozenset(s.NOTIFICATION_EVENTS),
    )


def targets_for(md: s.ModelDeployment, default: WebhookTarget | None) -> list[WebhookTarget]:
    """The resource's own webhooks (its Secrets in its namespace), or else the default."""
    notifications = md.spec.notifications
    if notifications is None:
        return [] if default is None else [default]
    return [
        WebhookTarget(
            name=hook.name, secret_namespace=md.metadata.namespace,
            secret_name=hook.url_from.secret_key_ref.name, secret_key=hook.url_from.secret_key_ref.key,
            format=hook.format,
            events=frozenset(hook.events) if hook.events else frozenset(s.NOTIFICATION_EVENTS),
        )
        for hook in notifications.webhooks
    ]


# --------------------------------------------------------------------------- what

@dataclass(frozen=True)
class MetricValue:
    """The last measurement of one analysis metric, as status.analysis holds it."""

    name: str
    value: float | None
    threshold: str
    verdict: str


@dataclass(frozen=True)
class Notification:
    """One transition of one ModelDeployment, as a webhook is told about it.

    ``revision`` is the revision the event is about (the one started, paused, promoted,
    rolled back or stopped); ``stable_revision`` and ``canary_revision`` are the status
    after the event (no canary once a rollout has ended); ``canary_weight`` the weight the
    event happened at (before a revert, the weight the reverted canary had).
    """

    event: s.NotificationEvent
    namespace: str
    name: str
    revision: str | None
    phase: str | None
    reason: str
    message: str
    stable_revision: str | None
    canary_revision: str | None
    canary_weight: int | None
    time: str
    metrics: tuple[MetricValue, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        """One line for chat and for links: ``ml/song-analyzer: RolledBack revision
        a42d94e088 at 50%: rollback indicator uncached-error-rate = 0.33 breached max 0.05``."""
        line = f"{self.namespace}/{self.name}: {self.event}"
        if self.revision:
            line += f" revision {self.revision}"
        if self.canary_weight is not None:
            line += f" at {self.canary_weight}%"
        if self.message:
            line += f": {self.message}"
        return bounded(line, SUMMARY_MAX)

    def json_body(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "summary": self.summary(),
            "modelDeployment": {"namespace": self.namespace, "name": self.name},
            "revision": self.revision,
            "phase": self.phase,
            "reason": self.reason,
            "message": bounded(self.message, SUMMARY_MAX),
            "stableRevision": self.stable_revision,
            "canaryRevision": self.canary_revision,
            "canaryWeight": self.canary_weight,
            "metrics": [
                {"name": m.name, "value": _json_number(m.value), "threshold": m.threshold,
                 "verdict": m.verdict}
                for m in self.metrics
            ],
            "time": self.time,
        }

    def body(self, format_: WebhookFormat) -> dict[str, Any]:
        """The POST body: the whole notification (json) or Slack's ``{"text": ...}``."""
        return {"text": self.summary()} if format_ == "slack" else self.json_body()


def _json_number(value: float | None) -> float | None:
    # NaN and infinities are not JSON; a measurement that had no number reads as null.
    return value if value is not None and math.isfinite(value) else None


def notifications_for(
    md: s.ModelDeployment,
    before: s.ModelDeploymentStatus,
    after: s.ModelDeploymentStatus,
    now: dt.datetime,
) -> list[Notification]:
    """The transitions from ``before`` (the status read) to ``after`` (the status written).

    The one place notifications come from (module docstring: which transition is which).
    """
    namespace, name = md.metadata.namespace, md.metadata.name
    time = engine.format_time(now)
    found: list[Notification] = []

    def note(event: s.NotificationEvent, revision: str | None, reason: str, message: str,
             weight: int | None, measured: Sequence[s.MetricStatus]) -> None:
        found.append(Notification(
            event=event, namespace=namespace, name=name, revision=revision,
            phase=None if after.phase is None else after.phase.value, reason=reason,
            message=message, stable_revision=after.stable_revision,
            canary_revision=after.canary_revision, canary_weight=weight, time=time,
            metrics=tuple(MetricValue(m.name, m.value, m.threshold, m.verdict.value)
                          for m in measured) + evaluated(revision),
        ))

    def evaluated(revision: str | None) -> tuple[MetricValue, ...]:
        done = after.evaluation
        if done is None or revision is None or done.revision != revision:
            return ()
        return (MetricValue(EVALUATION_METRIC, done.score, f"min {done.min_score:g}",
                            done.verdict.value),)

    # A history entry is keyed by revision and time; closing one stamps its time anew, so
    # an entry with a key the status read did not have was opened or closed by this tick.
    was = {(h.revision, h.time) for h in before.history}
    # Ended first: a bake cut short by a newer revision is promoted, then the newer one starts.
    for entry in after.history:
        event = _CLOSED_EVENTS.get(entry.outcome)
        if event is None or (entry.revision, entry.time) in was:
            continue
        if event == "Promoted":
            reason = "RolloutCompleted"
        else:
            degraded = next((c for c in after.conditions if c.type == "Degraded"), None)
            reason = degraded.reason if degraded is not None and degraded.status == "True" else (
                "RolledBack" if event == "RolledBack" else "RolloutAborted")
        weight = 100 if event == "Promoted" else before.canary_weight
        note(event, entry.revision, reason, entry.reason, weight, after.analysis or before.analysis)
    for entry in reversed(after.history):
        if entry.outcome == "InProgress" and (entry.revision, entry.time) not in was:
            note("Started", entry.revision, "RolloutStarted", entry.reason, after.canary_weight, ())
    if _newly_paused(md, before, after):
        reason = _PAUSE_REASONS.get(after.pause_cause or "", "AwaitingPromotion")
        note("Paused", after.canary_revision, reason, after.message or "", after.canary_weight,
             after.analysis)
    return found


def _newly_paused(
    md: s.ModelDeployment, before: s.ModelDeploymentStatus, after: s.ModelDeploymentStatus
) -> bool:
    if after.phase != s.Phase.PAUSED or after.canary_revision is None:
        return False
    if after.paused_at is None:  # at a step, not held: announced unless the step is timed
        steps = engine.steps_of(md.spec)
        index = after.current_step
        if index is not None and 0 <= index < len(steps):
            step = steps[index]
            if step.kind == "pause" and step.duration is not None:
                return False
    return (before.phase != s.Phase.PAUSED
            or before.canary_revision != after.canary_revision
            or before.current_step != after.current_step
            or (after.paused_at is not None and before.paused_at != after.paused_at))


# --------------------------------------------------------------------------- how

class NotifierKube(Protocol):
    """What delivery needs of the API server (``modeldeploy.kube.client.KubeClient``)."""

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None: ...

    async def emit_event(
        self, md_body: Manifest, event_type: str, reason: str, message: str
    ) -> None: ...


@dataclass(frozen=True)
class _Delivery:
    target: WebhookTarget
    notification: Notification
    involved: Manifest  # {"metadata": {...}} of the ModelDeployment, for the Event


class _Undeliverable(Exception):
    """No try can succeed until someone fixes the configuration (Secret, URL)."""

    def __init__(self, reason: str, configuration: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # A missing Secret or a bad URL (reported once), not one receiver's answer.
        self.configuration = configuration


LaneKey = tuple[str, str, str]  # namespace, ModelDeployment, webhook name


class Notifier:
    """Delivers notifications in the background, in order per (resource, webhook)."""

    def __init__(
        self,
        kube: NotifierKube,
        *,
        user_agent: str = "modeldeploy-operator",
        per_try_timeout: float = PER_TRY_TIMEOUT,
        backoff: Sequence[float] = BACKOFF,
        lane_capacity: int = LANE_CAPACITY,
        concurrency: int = CONCURRENT_DELIVERIES,
    ) -> None:
        self._kube = kube
        self._backoff = tuple(backoff)
        self._lane_capacity = lane_capacity
        self._slots = asyncio.Semaphore(concurrency)
        # No redirects: the body goes only to the URL the Secret names, never somewhere a
        # receiver points to (a 3xx is reported, not followed).
        self._client = httpx.AsyncClient(
            timeout=per_try_timeout, follow_redirects=False,
            headers={"User-Agent": user_agent, "Content-Type": "application/json"},
        )
        self._lanes: dict[LaneKey, deque[_Delivery]] = {}
        self._drains: dict[LaneKey, asyncio.Task[None]] = {}
        # The configuration problem last reported per lane: reported once, not per notification.
        self._reported: dict[LaneKey, str] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def tries(self) -> int:
        return len(self._backoff) + 1

    def enqueue(
        self, md: s.ModelDeployment, targets: Iterable[WebhookTarget],
        notifications: Iterable[Notification],
    ) -> None:
        """Queue each notification for each target that wants it; returns at once."""
        meta = md.metadata
        involved = {"metadata": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid}}
        wanted = list(targets)
        for notification in notifications:
            for target in wanted:
                if notification.event in target.events:
                    self._add(_Delivery(target, notification, involved))

    def _add(self, delivery: _Delivery) -> None:
        n = delivery.notification
        key = (n.namespace, n.name, delivery.target.name)
        lane = self._lanes.setdefault(key, deque())
        if len(lane) >= self._lane_capacity:
            dropped = lane.popleft()
            metrics.NOTIFICATIONS.labels(n.namespace, n.name, delivery.target.name, "dropped").inc()
            log.warning("%s/%s: webhook %s is %d notifications behind: dropped the oldest (%s)",
                        n.namespace, n.name, delivery.target.name, len(lane) + 1,
                        dropped.notification.event)
        lane.append(delivery)
        self._idle.clear()
        if key not in self._drains:
            self._drains[key] = asyncio.create_task(
                self._drain(key, lane), name=f"modeldeploy-notify-{'/'.join(key)}")

    async def wait_idle(self) -> None:
        """Until every queued notification was delivered or given up (tests, shutdown)."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Drop what is still queued (delivery is at most once) and close the client."""
        drains = list(self._drains.values())
        for task in drains:
            task.cancel()
        for task in drains:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    async def _drain(self, key: LaneKey, lane: deque[_Delivery]) -> None:
        try:
            while lane:
                delivery = lane.popleft()
                async with self._slots:
                    await self._deliver(key, delivery)
        finally:
            # No await between the last `while lane` and here: nothing can be added unseen.
            self._drains.pop(key, None)
            if self._lanes.get(key) is lane and not lane:
                del self._lanes[key]
            if not self._drains:
                self._idle.set()

    async def _deliver(self, key: LaneKey, delivery: _Delivery) -> None:
        target, n = delivery.target, delivery.notification
        try:
            url = await self._url(target)
            await self._post(url, n.body(target.format))
        except _Undeliverable as problem:
            metrics.NOTIFICATIONS.labels(n.namespace, n.name, target.name, "failed").inc()
            configuration = problem.configuration
            log.warning("%s/%s: %s notification to webhook %s not delivered: %s",
                        n.namespace, n.name, n.event, target.name, problem.reason)
            if configuration and self._reported.get(key) == problem.reason:
                return  # reported once already; the metric counts each one
            if configuration:
                self._reported[key] = problem.reason
            await self._report(delivery, problem.reason)
            return
        self._reported.pop(key, None)
        metrics.NOTIFICATIONS.labels(n.namespace, n.name, target.name, "delivered").inc()
        log.info("%s/%s: %s notification delivered to webhook %s",
                 n.namespace, n.name, n.event, target.name)

    async def _url(self, target: WebhookTarget) -> str:
        """The webhook's URL from its Secret; never put in a message (it may hold a token)."""
        try:
            value = await self._kube.read_secret_key(
                target.secret_namespace, target.secret_name, target.secret_key)
        except Exception as error:  # the API server refused (403) or failed: no URL to try
            status = getattr(error, "status", None)
            raise _Undeliverable(
                f"the webhook's Secret could not be read ({target.describe_secret()}"
                + (f": the API server answered {status}" if status else f": {type(error).__name__}")
                + "); check that the operator may get it (chart value "
                "rbac.notificationSecretNames)", configuration=True) from None
        if value is None:
            raise _Undeliverable(
                f"the webhook's Secret is missing ({target.describe_secret()} not found): "
                "create it, or fix urlFrom.secretKeyRef", configuration=True)
        url = value.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Undeliverable(
                f"the value of {target.describe_secret()} is not an http(s) URL: "
                "set it to the webhook's URL, e.g. https://hooks.example.com/...",
                configuration=True)
        return url

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        """POST with retries; returns once a 2xx answered, raises _Undeliverable otherwise."""
        reason = ""
        for attempt in range(self.tries):
            wait: float | None = None
            try:
                answer = await self._client.post(url, json=body)
            except httpx.TimeoutException:
                reason = f"no answer within {self._client.timeout.read:g}s"
            except httpx.TransportError as error:
                # The type, not str(error): httpx may put the URL in its messages.
                reason = f"could not connect ({type(error).__name__})"
            else:
                if answer.is_success:
                    return
                reason = f"the receiver answered {answer.status_code} {answer.reason_phrase}".rstrip()
                if answer.status_code != 429 and answer.status_code < 500:
                    raise _Undeliverable(reason + " (not retried: only timeouts, connection "
                                         "errors, 429 and 5xx are)")
                wait = _retry_after(answer)
            if attempt + 1 < self.tries:
                delay = self._backoff[attempt]
                await asyncio.sleep(delay if wait is None else max(delay, wait))
        raise _Undeliverable(f"{reason} (after {self.tries} tries)")

    async def _report(self, delivery: _Delivery, reason: str) -> None:
        n = delivery.notification
        message = (f"webhook {delivery.target.name}: {n.event} notification"
                   + (f" for revision {n.revision}" if n.revision else "")
                   + f" not delivered: {reason}")
        try:
            await self._kube.emit_event(
                delivery.involved, "Warning", "NotificationFailed", bounded(message, EVENT_MESSAGE_MAX))
        except Exception:
            log.exception("%s/%s: could not post the NotificationFailed event", n.namespace, n.name)


def _retry_after(answer: httpx.Response) -> float | None:
    """A 429's or 503's Retry-After in seconds (a number or an HTTP date), capped."""
    raw = answer.headers.get("retry-after")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)

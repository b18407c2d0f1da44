"""The rollout state machine: (spec, status, observation) -> (actions, new status).

One call is one tick. The tick first makes at most one transition (start a
rollout, complete a step, revert, finish), then describes the resulting state
(phase, message, conditions) and lists the whole desired state as actions. All
state it needs lives in the status it returns, so an operator killed at any moment
resumes where it was.

Choices where the issue and DESIGN.md are silent:

- Time: the engine works in whole seconds (``now`` is truncated), so a time written
  to status and read back compares equal to the ``now`` it came from.
- A step never completes in the tick it starts: completing needs an observation
  made after ``stepStartedAt``. The actions of the tick that starts a step have not
  been applied when its observations were made, so this is also what makes
  replaying a tick (same status, same observation) a fixed point: nothing advances
  twice.
- Readiness gates every step, pauses and analysis included: the canary Deployment
  is at its planned replicas with all of them updated, ready and available, the
  stable Deployment is scaled to its planned replicas, and (canary strategy) the
  data plane serves the plan, compared in the router's own terms, never as two
  rounded percentages: the ready pods the Service spreads over (replicas router), or
  the backendRef weights of an HTTPRoute a Gateway accepted (gatewayAPI router).
- An HTTPRoute no Gateway accepts (Accepted False for its generation, or no
  parentRefs) holds the rollout (phase Paused, pauseCause routeNotAccepted) with the
  parent's reason; it goes on by itself once a Gateway accepts the route. A route
  whose status lags its generation, or an accepted one with unresolved backends, is
  a readiness wait (progressDeadline counts).
- progressDeadline counts from ``status.notReadySince``: set when a step starts
  and whenever readiness is lost, cleared when the canary is seen ready. So a canary
  that crash-loops in the middle of a long pause is caught too. A held (paused)
  rollout does not time out, as in Argo Rollouts.
- Phases: Pending = first deployment not ready yet (no stable to compare with);
  Progressing = setWeight steps, or waiting for readiness; Paused = a pause step, a
  blue-green await without autoPromotionSeconds, or a hold (user pause, analysis
  inconclusive, analysis failed with rollback.automatic off); Promoting = the
  implied 100% step and the bake; Succeeded = the spec's revision is stable;
  RolledBack = reverted by analysis; Degraded = aborted by the user or by
  progressDeadline, traffic on stable; Failed = the first deployment missed its
  progressDeadline (nothing to fall back to: its pods are left running so the
  crash can be inspected).
- Analysis failed with rollback.automatic off: the rollout is held where it is
  (phase Paused, condition Degraded True reason AnalysisFailed); `modeldeploy abort`
  reverts, `promote` goes on, `resume` measures again.
- Analysis inconclusive past its limit (with onInconclusive: pause): the rollout is held
  (phase Paused) and analysis keeps measuring; the first conclusive round (no gate
  inconclusive, e.g. Prometheus answers again) releases the hold by itself, and the step
  goes on counting from that round, as Flagger resumes when metrics come back. Not while
  the canary's pods are not all ready: such a canary serves few requests or none, so
  neither a hold nor onInconclusive: rollback acts on those rounds, and progressDeadline
  decides (a crash-looping canary is reverted, not held forever; breaches and failed gates
  still act).
- Known-good revision (history holds it as Promoted, e.g. a `git revert`): every
  pause, analysis and blue-green await step is skipped and so is the bake; each
  setWeight step still waits for readiness and a verified weight, and rollback
  indicators still revert.
- A timed pause counts from the step's start; holding it (user pause) does not
  extend it, and resuming restarts the current step (and its analysis counters).
- promote completes the current step whatever it waits for (readiness, a pause,
  analysis), and ends the bake when baking; promoteFull jumps to the 100% step
  (which still waits for readiness, then bakes); abort reverts to stable (phase
  Degraded) and the revision stays aborted until the spec changes or retry; retry
  restarts an aborted or rolled-back revision from step 0; pause holds and resume
  releases. A control that does not apply is cleared with a ControlIgnored event.
- A revert (abort, rollback, progressDeadline, the spec going back to stable) never
  leaves the Service without ready endpoints: ``status.revertingFrom`` keeps the
  reverted revision serving, scaled down as stable pods become ready (see
  ``revert_plan``); the phase and message say so, and a new revision waits for it.
  With dynamicStableScale the bake keeps no warm stable pods, and its message says so.
- Analysis failures and inconclusive rounds in a row count across steps (a pass resets
  them, a person's resume or promote too); an analysis step's passes count from its start.
- A new revision while a canary runs supersedes it (history outcome Superseded)
  and starts from step 0 against the same stable; the spec going back to the stable
  revision cancels the canary. A new revision during the bake first promotes the
  baking one (it already serves 100%): flipping 90% of traffic back to an older
  revision to canary a third one would be the bigger risk.
- Editing steps mid-rollout keeps status.currentStep as an index into the new list
  (clamped to the 100% step).
- The aborted revision is forgotten as soon as the spec names another revision, so
  applying it again later is a fresh attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from modeldeploy.analysis.evaluate import INDICATOR_SUFFIX
from modeldeploy.analysis.report import AnalysisReport, AnalysisRequest
from modeldeploy.engine.actions import (
    Action,
    DeleteDeployment,
    EmitEvent,
    EnsureConfigMap,
    EnsureDeployment,
    EnsurePreviewService,
    EnsureService,
    EnsureTrackServices,
    ScaleDeployment,
    SetTrafficWeight,
    Track,
)
from modeldeploy.engine.observations import Observation, ServedSplit, Unverified
from modeldeploy.engine.replicas import effective_weight, plan_replicas
from modeldeploy.engine.revision import revision_of
from modeldeploy.engine.routers import RouterCapabilities, capabilities_of
from modeldeploy.engine.steps import Step, format_duration, steps_of
from modeldeploy.messages import STATUS_MESSAGE_MAX, bounded
from modeldeploy.spec import (
    Condition,
    ControlRequest,
    EvaluationStatus,
    EvaluationStep,
    HistoryEntry,
    MetricStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    Verdict,
    parse_duration,
)

# How soon to look again while waiting on the cluster (readiness, router).
REQUEUE_WHILE_WAITING = timedelta(seconds=10)
# A history entry's step record is bounded by the CRD (HistoryEntry.steps).
MAX_STEP_RECORDS = 100

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "RolledBack")
# Set by the shell when the API server refuses an action (engine/blocked.py).
ACTION_FAILED_CONDITION = "ActionFailed"
WARNING_PHASES = frozenset({Phase.ROLLED_BACK, Phase.DEGRADED, Phase.FAILED})
HELD_PHASES = frozenset({Phase.ROLLED_BACK, Phase.DEGRADED, Phase.FAILED})
PHASE_EVENT_REASONS = {
    Phase.PENDING: "RolloutPending",
    Phase.PROGRESSING: "RolloutProgressing",
    Phase.PAUSED: "RolloutPaused",
    Phase.PROMOTING: "RolloutPromoting",
    Phase.SUCCEEDED: "RolloutCompleted",
    Phase.ROLLED_BACK: "RolledBack",
    Phase.FAILED: "RolloutFailed",
    Phase.DEGRADED: "RolloutAborted",
}

Outcome = Literal["Promoted", "RolledBack", "Aborted", "Superseded"]
PauseCause = Literal[
    "user", "inconclusive", "analysisFailed", "evaluationInconclusive", "routeNotAccepted"
]
ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Decision:
    """What one tick decided: the whole desired state, the status to write, when to look again."""

    actions: list[Action]
    status: ModelDeploymentStatus
    requeue_after: timedelta | None


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, whole seconds, as Kubernetes writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _left(delta: timedelta) -> str:
    return format_duration(max(delta, timedelta(0)))


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """The conditions with ``type_`` set; lastTransitionTime moves only when status flips."""
    previous = next((c for c in conditions if c.type == type_), None)
    since = (
        previous.last_transition_time
        if previous is not None and previous.status == status
        else format_time(now)
    )
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=bounded(message, STATUS_MESSAGE_MAX),
        last_transition_time=since,
        observed_generation=generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


def _restarted(metric: MetricStatus, fresh_counters: bool) -> MetricStatus:
    """A metric's status as a step (re)starts: passes from zero, failures too if fresh."""
    if fresh_counters:
        return metric.model_copy(update={
            "consecutive_passes": 0, "consecutive_failures": 0, "consecutive_inconclusive": 0,
        })
    return metric.model_copy(update={"consecutive_passes": 0})


@dataclass(frozen=True)
class _ConditionSet:
    ready: tuple[ConditionStatus, str]
    progressing: tuple[ConditionStatus, str]
    degraded: tuple[ConditionStatus, str]
    rolled_back: tuple[ConditionStatus, str]


def _conditions_for(phase: Phase, reason: str, cause: str | None) -> _ConditionSet:
    """The four conditions for a phase; ``reason`` names why (e.g. ProgressDeadlineExceeded)."""
    if phase == Phase.SUCCEEDED:
        return _ConditionSet(
            ("True", "RolloutCompleted"), ("True", "RolloutCompleted"),
            ("False", "Healthy"), ("False", "NotRolledBack"),
        )
    if phase == Phase.ROLLED_BACK:
        return _ConditionSet(
            ("False", reason), ("False", reason), ("True", reason), ("True", reason)
        )
    if phase in (Phase.DEGRADED, Phase.FAILED):
        return _ConditionSet(
            ("False", reason), ("False", reason), ("True", reason), ("False", "NotRolledBack")
        )
    if phase == Phase.PAUSED:
        degraded: tuple[ConditionStatus, str] = (
            ("True", "AnalysisFailed") if cause == "analysisFailed" else ("False", "Healthy")
        )
        return _ConditionSet(
            ("False", "RolloutPaused"), ("Unknown", "RolloutPaused"),
            degraded, ("False", "NotRolledBack"),
        )
    return _ConditionSet(
        ("False", "RolloutInProgress"), ("True", "RolloutInProgress"),
        ("False", "Healthy"), ("False", "NotRolledBack"),
    )


@dataclass
class _Tick:
    """One reconcile: a working copy of the status and what this tick learned."""

    spec: ModelDeploymentSpec
    observation: Observation
    name: str
    status: ModelDeploymentStatus
    now: datetime
    revision: str
    steps: list[Step]
    router: RouterCapabilities | None  # None: blue-green, which has no router
    dynamic_stable_scale: bool
    dynamic_by_gpu: bool
    events: list[EmitEvent] = field(default_factory=list)
    transition_reason: str | None = None
    waiting_for: str | None = None

    @classmethod
    def start(
        cls,
        spec: ModelDeploymentSpec,
        status: ModelDeploymentStatus,
        observation: Observation,
        name: str,
    ) -> _Tick:
        canary = spec.strategy.canary
        wants_gpu = spec.template.gpu_count() > 0
        dynamic = dynamic_by_gpu = False
        if canary is not None:
            explicit = canary.dynamic_stable_scale
            dynamic = explicit if explicit is not None else wants_gpu
            dynamic_by_gpu = explicit is None and wants_gpu
        return cls(
            spec=spec,
            observation=observation,
            name=name,
            status=status.model_copy(deep=True),
            now=observation.now.astimezone(UTC).replace(microsecond=0),
            revision=revision_of(spec),
            steps=steps_of(spec),
            router=capabilities_of(spec),
            dynamic_stable_scale=dynamic,
            dynamic_by_gpu=dynamic_by_gpu,
        )

    # ------------------------------------------------------------------ helpers

    @property
    def replicas(self) -> int:
        return self.spec.replicas

    @property
    def exact_weights(self) -> bool:
        """Whether the router sets the canary's share exactly (see RouterCapabilities)."""
        return self.router is not None and self.router.exact_weights

    @property
    def blue_green(self) -> bool:
        return self.spec.strategy.blue_green is not None

    @property
    def step_index(self) -> int:
        return min(self.status.current_step or 0, len(self.steps) - 1)

    @property
    def step(self) -> Step:
        return self.steps[self.step_index]

    def since(self, text: str | None) -> datetime:
        return parse_time(text) if text else self.now

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(EmitEvent(type=type_, reason=reason, message=message))

    def ignore(self, control: ControlRequest, why: str) -> None:
        self.event("Normal", "ControlIgnored", f"{control.action} ignored: {why}")

    def entry(self) -> HistoryEntry | None:
        """The history entry of the rollout in flight (newest first)."""
        history = self.status.history
        if (
            history
            and history[0].outcome == "InProgress"
            and history[0].revision == self.status.canary_revision
        ):
            return history[0]
        return None

    def record(self, text: str) -> None:
        entry = self.entry()
        if entry is not None:
            entry.steps = [*entry.steps, text][-MAX_STEP_RECORDS:]

    def close_entry(self, outcome: Outcome, reason: str) -> None:
        entry = self.entry()
        if entry is not None:
            entry.outcome = outcome
            entry.reason = reason
            entry.time = format_time(self.now)

    def known_good(self, revision: str) -> bool:
        return any(
            e.revision == revision and e.outcome == "Promoted" for e in self.status.history
        )

    def clear_rollout(self) -> None:
        status = self.status
        status.canary_revision = None
        status.current_step = None
        status.step_started_at = None
        status.not_ready_since = None
        status.paused_at = None
        status.pause_reason = None
        status.pause_cause = None
        status.bake_until = None
        status.fast_rollout = None

    def usable_report(self) -> AnalysisReport | None:
        """This tick's report if it is about the canary and newer than the step's start."""
        report = self.observation.analysis
        status = self.status
        if report is None or report.revision != status.canary_revision:
            return None
        started = self.since(status.step_started_at)
        if report.measured_at.astimezone(UTC) <= started:
            return None
        return report

    # ------------------------------------------------------------------ transitions

    def run(self, control: ControlRequest | None) -> None:
        status = self.status
        if status.aborted_revision is not None and status.aborted_revision != self.revision:
            status.aborted_revision = None  # the spec moved on; that revision may come back later
        self.settle_revert()
        if status.canary_revision is not None and status.canary_revision != self.revision:
            self.supersede()
        if status.canary_revision is None:
            self.idle(control)
        elif status.stable_revision is None:
            self.first_deployment(control)
        else:
            self.rollout(control)

    def keep_serving(self, reverted: str | None) -> None:
        """Revert from ``reverted``: it serves until stable is back (see revert_plan)."""
        self.status.reverting_from = reverted
        if self.revert_plan() is None:
            self.status.reverting_from = None  # stable serves at full size already

    def settle_revert(self) -> None:
        """End a revert once the reverted revision serves nothing more: stable took over."""
        status = self.status
        reverted = status.reverting_from
        if reverted is None:
            return
        if self.revert_plan() is None:
            status.reverting_from = None
            self.event("Normal", "RevertCompleted",
                       f"stable revision {status.stable_revision} serves alone again; "
                       f"revision {reverted} scaled to 0")

    def supersede(self) -> None:
        status = self.status
        old = status.canary_revision
        if status.bake_until is not None and self.revision != status.stable_revision:
            self.promote_baked(f"bake cut short: {self.revision} is newer")
            return
        why = (
            f"spec went back to stable revision {self.revision}"
            if self.revision == status.stable_revision
            else f"superseded by revision {self.revision}"
        )
        self.record(why)
        self.close_entry("Superseded", why)
        self.clear_rollout()
        if self.revision == status.stable_revision:
            self.keep_serving(old)
        self.event("Normal", "RolloutSuperseded", f"revision {old}: {why}")

    def idle(self, control: ControlRequest | None) -> None:
        status = self.status
        revision = self.revision
        if status.stable_revision is None and status.aborted_revision != revision:
            self.begin(revision, "first deployment")
            if control is not None:
                self.ignore(control, "the first deployment has no steps to control")
        elif revision == status.stable_revision:
            if control is not None:
                self.ignore(control, f"revision {revision} is already stable")
            status.phase = Phase.SUCCEEDED
        elif revision == status.aborted_revision:
            if control is not None and control.action == "retry":
                self.begin(revision, "retry requested by user")
            elif control is not None:
                self.ignore(
                    control, f"revision {revision} was stopped; `modeldeploy retry` restarts it"
                )
        elif status.reverting_from is not None:
            # Rolling out against a stable revision that is not back yet would take away
            # the pods that serve meanwhile; it starts once the revert is done.
            if control is not None:
                self.ignore(control, "a revert to the stable revision is still in progress")
        else:
            self.begin(revision, "new revision")
            if control is not None:
                self.ignore(control, "it came before the rollout started")

    def begin(self, revision: str, reason: str) -> None:
        status = self.status
        first = status.stable_revision is None
        fast = not first and self.known_good(revision)
        self.transition_reason = None  # a bake cut short by this revision is not its reason
        self.clear_rollout()
        status.aborted_revision = None
        if status.reverting_from == revision:
            status.reverting_from = None  # retried: planned as the canary again
        status.canary_revision = revision
        status.current_step = None if first else 0
        status.step_started_at = format_time(self.now)
        status.not_ready_since = format_time(self.now)
        status.fast_rollout = True if fast else None
        status.analysis = []
        status.evaluation = None
        status.mirror = None
        entry_reason = f"{reason}; known-good revision: pauses and analysis skipped" if fast else (
            reason
        )
        entry = HistoryEntry(
            revision=revision, outcome="InProgress", reason=entry_reason, time=format_time(self.now)
        )
        status.history = [entry, *status.history][: self.spec.revision_history_limit]
        if fast:
            self.skip_waits()
        source = "" if first else f" (stable: {status.stable_revision})"
        # entry_reason: a known-good rollout says so in its event too (its history entry's
        # reason is replaced by the outcome when it closes).
        self.event(
            "Normal", "RolloutStarted", f"rolling out revision {revision}{source}: {entry_reason}"
        )

    def skip_waits(self) -> None:
        """A known-good rollout passes over pause, analysis and await steps at once."""
        status = self.status
        index = self.step_index
        while self.steps[index].waits:
            self.record(f"skipped {self.steps[index].describe()}")
            index += 1
        status.current_step = index

    def first_deployment(self, control: ControlRequest | None) -> None:
        status = self.status
        if control is not None:
            self.ignore(control, "the first deployment has no steps and nothing to fall back to")
        if self.first_ready():
            if self.now > self.since(status.step_started_at):
                self.record(f"ready {self.replicas}/{self.replicas}")
                self.close_entry("Promoted", "first deployment")
                status.stable_revision = self.revision
                self.clear_rollout()
                status.phase = Phase.SUCCEEDED
            return
        if self.deadline_passed():
            message = self.deadline_message(self.waiting_for or "not ready")
            self.record(message)
            self.close_entry("Aborted", message)
            status.aborted_revision = self.revision
            self.clear_rollout()
            status.phase = Phase.FAILED
            status.message = message
            self.transition_reason = "ProgressDeadlineExceeded"

    def first_ready(self) -> bool:
        """Whether the first deployment's pods are all ready; sets waiting_for if not."""
        deployment = self.observation.deployments.get(self.status.canary_revision or "")
        if deployment is not None and deployment.is_ready_at(self.replicas):
            return True
        ready = deployment.ready_replicas if deployment is not None else 0
        reason = deployment.not_ready_reason if deployment is not None else None
        self.waiting_for = f"waiting for {ready}/{self.replicas} pods ready" + (
            f": {reason}" if reason else ""
        )
        return False

    def deadline_passed(self) -> bool:
        status = self.status
        if status.not_ready_since is None:
            status.not_ready_since = format_time(self.now)
        deadline = parse_duration(self.spec.progress_deadline)
        return self.now - self.since(status.not_ready_since) >= deadline

    def deadline_message(self, why: str) -> str:
        # A write the API server refuses (condition ActionFailed) is often the why itself.
        failed = next((c for c in self.status.conditions
                       if c.type == ACTION_FAILED_CONDITION and c.status == "True"), None)
        if failed is not None:
            why = f"{why}; {failed.message}"
        return (
            f"revision {self.status.canary_revision} not ready within progressDeadline "
            f"{self.spec.progress_deadline}: {why}"
        )

    def rollout(self, control: ControlRequest | None) -> None:
        status = self.status
        if control is not None and self.apply_control(control):
            return
        report = self.usable_report()
        if report is not None:
            measured = {m.name for m in report.metrics}
            status.analysis = [
                *report.metrics, *(m for m in status.analysis if m.name not in measured)
            ]
            if report.mirror is not None:
                status.mirror = report.mirror
            if self.judge(report):
                return
            if (status.pause_cause == "inconclusive" and report.inconclusive_exceeded is None
                    and report.verdict != Verdict.INCONCLUSIVE):
                # Measurements are conclusive again (e.g. Prometheus is back): go on.
                self.release()
                self.record("analysis conclusive again: resumed")
        evaluated = self.usable_evaluation()
        if evaluated is not None:
            status.evaluation = evaluated
            if self.judge_evaluation(evaluated):
                return
        self.follow_route()
        if status.paused_at is not None:
            return
        if not self.ready():
            if self.deadline_passed():
                message = self.deadline_message(self.waiting_for or "not ready")
                self.revert(Phase.DEGRADED, "ProgressDeadlineExceeded", message, "Aborted")
            return
        if self.now <= self.since(status.step_started_at):
            return  # a step never completes in the tick it started in
        if status.not_ready_since is not None and self.step.kind == "mirror" \
                and status.bake_until is None:
            # A mirror's duration counts from when the route mirrors (readiness verified it):
            # what analysis judges is the canary's answers to the copies.
            status.step_started_at = format_time(self.now)
            status.not_ready_since = None
            return
        status.not_ready_since = None
        if status.bake_until is not None:
            if self.now >= parse_time(status.bake_until):
                self.promote_baked(f"baked {self.spec.rollback.bake_time}")
            return
        step = self.step
        started = self.since(status.step_started_at)
        if step.kind in ("setWeight", "preview", "full"):
            self.complete_step()
        elif step.kind in ("pause", "await", "mirror"):
            if step.duration is not None and self.now >= started + step.duration:
                self.complete_step()
        elif step.kind == "evaluation":
            done = self.step_evaluation()
            if done is not None and done.verdict == Verdict.PASS:
                self.complete_step(record=f"evaluation {done.passed}/{done.cases} passed "
                                          f"(score {done.score:.2f}, ${done.cost_usd:.4f})")
        elif report is not None and report.consecutive_passes >= step.measurements:
            self.complete_step()

    def apply_control(self, control: ControlRequest) -> bool:
        """Apply a manual control; True when it ended this tick's work (a transition)."""
        status = self.status
        who = f" by {control.requested_by}" if control.requested_by else " by user"
        action = control.action
        if action == "abort":
            message = f"aborted{who}: all traffic back to stable revision {status.stable_revision}"
            self.revert(Phase.DEGRADED, "RolloutAborted", message, "Aborted")
            return True
        if action == "pause":
            self.hold("user", f"paused{who}", "`modeldeploy resume` goes on")
            return False
        if action == "resume":
            if status.paused_at is None:
                self.ignore(control, "the rollout is not paused")
                return False
            self.release()
            self.record(f"resumed{who}")
            self.restart_step(fresh_counters=True)
            return False
        if action == "promote":
            self.release()
            if status.bake_until is not None:
                self.promote_baked(f"bake ended early{who}")
            else:
                self.complete_step(f"promoted{who}")
            return True
        if action == "promoteFull":
            self.release()
            if status.bake_until is not None:
                self.promote_baked(f"bake ended early{who}")
                return True
            self.record(f"promoted to full{who}")
            status.current_step = len(self.steps) - 1
            self.restart_step(fresh_counters=True)
            return True
        self.ignore(control, "the revision is not stopped (retry restarts an aborted revision)")
        return False

    def judge(self, report: AnalysisReport) -> bool:
        """Act on analysis; True when the rollout was reverted."""
        if report.breach is not None:
            self.revert(Phase.ROLLED_BACK, "RollbackIndicatorBreached", report.breach.describe(),
                        "RolledBack")
            return True
        if report.failed is not None:
            return self.failed("AnalysisFailed", f"analysis failed: {report.failed.describe()}")
        if report.inconclusive_exceeded is not None and self.canary_pods_ready():
            # Not while the canary's pods are not ready: a canary with no ready pod serves no
            # request, so its rounds are inconclusive by construction, and a hold would stop
            # progressDeadline (a crash-looping canary held forever), as onInconclusive:
            # rollback would revert a model still loading. The deadline decides.
            message = f"analysis inconclusive: {report.inconclusive_exceeded.describe()}"
            return self.inconclusive("AnalysisInconclusive", "inconclusive", message,
                                     "resumes on its own once a round is conclusive again; "
                                     "`modeldeploy promote` goes on")
        return False

    def failed(self, reason: str, message: str) -> bool:
        """Analysis or an evaluation judged the canary bad: revert (rollback.automatic), else
        hold; True when reverted."""
        if self.spec.rollback.automatic:
            self.revert(Phase.ROLLED_BACK, reason, message, "RolledBack")
            return True
        self.hold("analysisFailed", message, "rollback.automatic is off: "
                  "`modeldeploy abort` reverts, `modeldeploy promote` goes on")
        return False

    def inconclusive(self, reason: str, cause: PauseCause, message: str, advice: str) -> bool:
        """The canary could not be judged: revert with analysis.onInconclusive rollback, else
        hold with ``advice``; True when reverted."""
        analysis = self.spec.analysis
        if analysis is not None and analysis.on_inconclusive == "rollback":
            self.revert(Phase.ROLLED_BACK, reason, message, "RolledBack")
            return True
        self.hold(cause, message, advice)
        return False

    def usable_evaluation(self) -> EvaluationStatus | None:
        """This tick's evaluation result if it ran for the current step as it is now (a
        result for a step since restarted, resumed or left is stale) and is new."""
        result = self.observation.evaluation
        if (result is None or self.step.kind != "evaluation" or self.status.bake_until is not None
                or not ran_for_step(result, self.status, self.step_index)
                or result == self.status.evaluation):
            return None
        return result

    def step_evaluation(self) -> EvaluationStatus | None:
        """The evaluation recorded in status for the current step, if it has run."""
        done = self.status.evaluation
        if done is None or self.step.kind != "evaluation" \
                or not ran_for_step(done, self.status, self.step_index):
            return None
        return done

    def judge_evaluation(self, result: EvaluationStatus) -> bool:
        """Act on an evaluation as on analysis; True when the rollout was reverted.

        Failed: revert (rollback.automatic) or hold. Inconclusive (no answer from too many
        cases, stable unreachable): revert with analysis.onInconclusive rollback, else hold
        until a person resumes (which runs it again) or promotes."""
        summary = f"evaluation of revision {result.revision}: {result.message}"
        if result.verdict == Verdict.FAIL:
            return self.failed("EvaluationFailed", summary)
        if result.verdict == Verdict.INCONCLUSIVE:
            return self.inconclusive("EvaluationInconclusive", "evaluationInconclusive", summary,
                                     "`modeldeploy resume` runs the evaluation again, "
                                     "`modeldeploy promote` goes on without it")
        return False

    def follow_route(self) -> None:
        """Hold while the data plane refuses the route (no Gateway accepted the HTTPRoute)
        and go on by itself once one does, as an inconclusive hold does; another hold
        (a user's pause) is left alone and the route is looked at again when it ends."""
        status = self.status
        served = self.observation.served
        refused = served.why if isinstance(served, Unverified) and served.refused else None
        advice = "resumes on its own once a Gateway accepts the route"
        if refused is not None and status.pause_cause == "routeNotAccepted":
            status.pause_reason = f"{refused}; {advice}"  # the route's reason as it is now
        elif refused is not None and status.paused_at is None:
            self.hold("routeNotAccepted", refused, advice)
        elif refused is None and status.pause_cause == "routeNotAccepted":
            self.release()
            self.record("route accepted: resumed")

    def hold(self, cause: PauseCause, reason: str, advice: str) -> None:
        """Hold the rollout where it is; ``reason`` goes to history, with ``advice`` to status."""
        status = self.status
        if status.pause_cause == cause:
            return  # already held for this; keep when it started
        status.paused_at = format_time(self.now)
        status.pause_cause = cause
        status.pause_reason = f"{reason}; {advice}"
        self.record(reason)

    def release(self) -> None:
        status = self.status
        status.paused_at = None
        status.pause_cause = None
        status.pause_reason = None

    def restart_step(self, fresh_counters: bool = False) -> None:
        """Start the current step again: its passes count from here.

        Failures and inconclusive rounds in a row count across the whole rollout (a pass
        resets them, a step change does not, as Flagger counts failed checks): cleared on
        every step, a gate failing every round would never reach its failureLimit in steps
        shorter than (failureLimit + 1) intervals. A person's decision (resume, promote)
        starts them afresh (``fresh_counters``). Values and stable baselines stay.
        """
        status = self.status
        status.step_started_at = format_time(self.now)
        status.not_ready_since = format_time(self.now)
        status.analysis = [_restarted(m, fresh_counters) for m in status.analysis]

    def complete_step(self, note: str | None = None, record: str | None = None) -> None:
        """Go to the next step; ``note``: a person's decision; ``record``: the history line
        when the step's own (``Step.record``) says too little."""
        status = self.status
        step = self.step
        self.record(note or record or step.record())
        index = self.step_index
        self.event(
            "Normal",
            "StepCompleted",
            f"step {index + 1}/{len(self.steps)} {step.describe()}"
            + (f": {note}" if note else " done"),
        )
        if step.kind == "full":
            self.enter_bake()
            return
        status.current_step = index + 1
        self.restart_step(fresh_counters=note is not None)  # note: promoted by a person
        if status.fast_rollout:
            self.skip_waits()

    def enter_bake(self) -> None:
        status = self.status
        bake = parse_duration(self.spec.rollback.bake_time)
        if status.fast_rollout or bake <= timedelta(0):
            self.promote_baked("known-good revision promoted without bake" if status.fast_rollout
                               else "promoted")
            return
        status.bake_until = format_time(self.now + bake)
        status.step_started_at = format_time(self.now)
        self.record(f"bake {self.spec.rollback.bake_time}")

    def promote_baked(self, note: str) -> None:
        status = self.status
        revision = status.canary_revision
        self.record(note)
        self.close_entry("Promoted", note)
        status.previous_revision = status.stable_revision
        status.stable_revision = revision
        self.clear_rollout()
        status.phase = Phase.SUCCEEDED
        self.transition_reason = "RolloutCompleted"

    def revert(self, phase: Phase, reason: str, message: str, outcome: Outcome) -> None:
        status = self.status
        self.record(message)
        self.close_entry(outcome, message)
        status.aborted_revision = status.canary_revision
        self.keep_serving(status.canary_revision)
        self.clear_rollout()
        status.phase = phase
        status.message = message
        self.transition_reason = reason

    # ------------------------------------------------------------------ planning

    def plan(self) -> tuple[int, int, int, str | None]:
        """(canary replicas, stable replicas, effective weight, Service revision) now."""
        status = self.status
        canary, stable = status.canary_revision, status.stable_revision
        n = self.replicas
        at_full = status.bake_until is not None or self.step.kind == "full"
        if self.router is None:  # blue-green: both sides at full size, the Service switches
            return n, n, 100 if at_full else 0, canary if at_full else stable
        weight = 100 if at_full else self.step.weight
        if weight == 0 and self.step.kind in ("evaluation", "mirror") and n > 0:
            # Canary pods that serve no user: one for the evaluation's cases, enough for the
            # mirrored share of requests; stable keeps every pod and the Service (narrowed
            # to stable) all users.
            pods = max(1, -(-self.step.mirror * n // 100))
            return pods, n, 0, stable
        plan = plan_replicas(weight, n, self.router, self.dynamic_stable_scale)
        observed = self.observation.deployments.get(canary or "")
        canary_ready = min(observed.ready_replicas, plan.canary) if observed else 0
        stable_replicas = plan.stable
        if not self.dynamic_stable_scale and weight < 100:
            # Surge: stable gives up pods only as canary pods become ready.
            stable_replicas = max(stable_replicas, n - canary_ready)
        selects = canary if weight == 100 and canary_ready >= n else None
        served_weight = plan.effective_weight
        if self.exact_weights and canary_ready < plan.canary:
            served_weight = self.route_weight_while_scaling(
                served_weight, canary_ready, plan.canary, stable_replicas)
        return plan.canary, stable_replicas, served_weight, selects

    def route_weight_while_scaling(
        self, planned: int, canary_ready: int, canary_pods: int, stable_pods: int
    ) -> int:
        """The canary's HTTPRoute weight while its pods come up: a weight on a backend with
        no ready pod fails those requests (a Gateway answers 503, "no healthy upstream"),
        unlike a Service, which spreads over ready pods only. So the canary's share grows
        with its ready pods up to the plan, and stable's is 0 once it has none (scaled down
        with dynamicStableScale). The step still waits for the full plan to be verified."""
        stable = self.observation.deployments.get(self.status.stable_revision or "")
        if canary_ready == 0:
            return 0
        if stable is None or min(stable.ready_replicas, stable_pods) == 0:
            return 100
        return max(1, planned * canary_ready // canary_pods)

    def revert_plan(self) -> tuple[int, int, int, str | None] | None:
        """(reverted replicas, stable replicas, weight to the reverted revision, Service
        revision) while a revert brings stable back; None once the reverted revision has no
        pod left to serve.

        A revert never leaves the Service without ready endpoints: the reverted revision
        gives up pods only as stable pods become ready (a reverse canary), and only its
        ready pods are kept (a crash-looping canary serves nothing). Within the capacity the
        template allows: with dynamicStableScale (no surge: GPUs) it gives up one pod
        first, so that a stable pod can start in its place, and the pods of both together
        stay at spec.replicas (one more with a single replica: someone has to serve while
        the stable pod starts); without it stable comes back at full size beside it, as
        the canary came up beside stable. Blue-green keeps green whole and the Service on
        it until blue is ready at full size. Traffic follows the ready pods: the Service
        selects both revisions (replicas router), the HTTPRoute's weights are the ready
        pods' ratio (gatewayAPI router).
        """
        status = self.status
        reverted, stable = status.reverting_from, status.stable_revision
        deployments = self.observation.deployments
        old = deployments.get(reverted or "")
        if old is None or stable is None or reverted == stable:
            return None
        n = self.replicas
        restored = deployments.get(stable)
        stable_ready = min(restored.ready_replicas, n) if restored is not None else 0
        serving = min(old.desired_replicas, old.ready_replicas)
        stable_replicas = n
        if self.router is None:
            keep = serving if stable_ready < n else 0
        elif self.dynamic_stable_scale:
            keep = min(serving, max(n - 1 - stable_ready, 1 if stable_ready == 0 else 0))
            stable_replicas = max(n - keep, 1) if n > 0 else 0
        else:
            keep = min(serving, max(n - stable_ready, 0))
        if keep == 0:
            return None
        if self.router is None:
            return keep, stable_replicas, 100, reverted
        weight = 100 if stable_ready == 0 else effective_weight(keep, stable_ready)
        return keep, stable_replicas, weight, None

    def ready(self) -> bool:
        """Whether the current step's desired state is reached; sets waiting_for if not."""
        status = self.status
        canary_replicas, stable_replicas, _, _ = self.plan()
        deployments = self.observation.deployments
        canary = deployments.get(status.canary_revision or "")
        stable = deployments.get(status.stable_revision or "")
        if not self.canary_pods_ready():
            ready = canary.ready_replicas if canary else 0
            reason = canary.not_ready_reason if canary else None
            track = "green" if self.blue_green else "canary"
            self.waiting_for = f"waiting for {track} {ready}/{canary_replicas} ready" + (
                f": {reason}" if reason else ""
            )
            return False
        if stable is None or stable.desired_replicas != stable_replicas:
            self.waiting_for = f"waiting for stable to scale to {stable_replicas}"
            return False
        if self.router is not None:
            unserved = self.unserved()
            if unserved is not None:
                self.waiting_for = unserved
                return False
        return True

    def canary_pods_ready(self) -> bool:
        """Whether the canary (green) has as many ready pods as the current step plans."""
        canary_replicas = self.plan()[0]
        canary = self.observation.deployments.get(self.status.canary_revision or "")
        return canary.is_ready_at(canary_replicas) if canary else canary_replicas == 0

    def planned_split(self) -> ServedSplit:
        """What the data plane should serve now, in the router's terms (see ServedSplit)."""
        canary_replicas, stable_replicas, weight, selects = self.plan()
        mirror = self.mirror_percent()
        if self.exact_weights:
            return ServedSplit(canary=weight, stable=100 - weight, mirror=mirror)
        if selects is not None and selects == self.status.stable_revision:
            return ServedSplit(canary=0, stable=stable_replicas, mirror=mirror)
        narrowed = selects is not None and selects == self.status.canary_revision
        return ServedSplit(canary=canary_replicas, stable=0 if narrowed else stable_replicas,
                           mirror=mirror)

    def mirror_percent(self) -> int:
        """The percent of requests copied to the canary now (a mirror step's, else 0)."""
        if self.status.canary_revision is None or self.status.bake_until is not None:
            return 0
        return self.step.mirror if self.step.kind == "mirror" else 0

    def unserved(self) -> str | None:
        """What the data plane still has to serve (None: it serves the plan)."""
        served = self.observation.served
        if served is None:
            return "waiting for the router to report what the data plane serves"
        if isinstance(served, Unverified):
            return f"waiting for {served.why}"
        wanted = self.planned_split()
        if served == wanted:
            return None
        if isinstance(served, ServedSplit) and served.mirror != wanted.mirror:
            return (f"waiting for the HTTPRoute to mirror {wanted.mirror}% of requests to the "
                    f"canary (accepted route mirrors {served.mirror}%)")
        if self.exact_weights:
            return (
                f"waiting for the HTTPRoute to serve canary weight {wanted.canary} "
                f"(accepted route weights: canary {served.canary}, stable {served.stable})"
            )
        return (
            f"waiting for the Service to spread requests over {wanted.canary} canary and "
            f"{wanted.stable} stable ready pods (now {served.canary} and {served.stable})"
        )

    # ------------------------------------------------------------------ description

    def describe(self, before: Phase | None) -> None:
        """Phase (in flight), message and conditions of the state the tick ended in."""
        status = self.status
        self.waiting_for = None
        reverting = self.revert_plan() if status.canary_revision is None else None
        if status.canary_revision is not None and status.stable_revision is not None:
            status.canary_weight = self.plan()[2]
        elif reverting is not None:
            status.canary_weight = reverting[2]  # the reverted revision still serves that
        else:
            status.canary_weight = None if status.stable_revision is None else 0
        if status.canary_revision is not None:
            if status.paused_at is None:
                # Readiness of the state the tick ended in, which may be a step just started.
                if status.stable_revision is None:
                    self.first_ready()
                else:
                    self.ready()
            status.phase, status.message = self.in_flight_phase_and_message()
        elif status.phase in HELD_PHASES and status.aborted_revision == self.revision:
            # Phase and message stand until released; the message is read back from the
            # history entry that the stop closed, so a passing invalid spec cannot erase it.
            stopped = next(
                (e for e in status.history
                 if e.revision == status.aborted_revision and e.outcome != "InProgress"),
                None,
            )
            if stopped is not None and self.transition_reason is None:
                status.message = stopped.reason
            if reverting is not None:
                status.message = f"{status.message}; {self.reverting_note(reverting[0])}"
        elif reverting is not None:
            status.phase = Phase.PROGRESSING
            status.message = (
                f"reverting to stable revision {status.stable_revision}: "
                f"{self.reverting_note(reverting[0])}"
            )
            if self.revision not in (status.stable_revision, status.reverting_from):
                status.message += f"; revision {self.revision} rolls out once it is done"
        else:
            status.phase = Phase.SUCCEEDED
            status.message = f"revision {status.stable_revision} is stable"
        phase = status.phase
        assert phase is not None
        reason = self.transition_reason or self.held_reason() or PHASE_EVENT_REASONS[phase]
        wanted = _conditions_for(phase, reason, status.pause_cause)
        message = status.message or ""
        generation = self.observation.generation
        for type_, (state, why) in zip(
            CONDITION_TYPES,
            (wanted.ready, wanted.progressing, wanted.degraded, wanted.rolled_back),
            strict=True,
        ):
            status.conditions = set_condition(
                status.conditions, type_, state, why, message, generation, self.now
            )
        if phase != before:
            self.event(
                "Warning" if phase in WARNING_PHASES else "Normal",
                self.transition_reason or PHASE_EVENT_REASONS[phase],
                message,
            )

    def reverting_note(self, kept: int) -> str:
        """What a revert still waits for, with the stable pods' own reason."""
        status = self.status
        restored = self.observation.deployments.get(status.stable_revision or "")
        ready = restored.ready_replicas if restored is not None else 0
        why = restored.not_ready_reason if restored is not None else None
        return (
            f"stable {ready}/{self.replicas} pods ready"
            + (f" ({why})" if why else "")
            + f"; revision {status.reverting_from} keeps serving on {kept} pod"
            + ("s" if kept != 1 else "")
            + " until stable takes over"
        )

    def held_reason(self) -> str | None:
        """Why a stopped rollout stopped, as its Degraded condition remembers it."""
        degraded = next((c for c in self.status.conditions if c.type == "Degraded"), None)
        if self.status.phase in HELD_PHASES and degraded is not None and degraded.status == "True":
            return degraded.reason
        return None

    def in_flight_phase_and_message(self) -> tuple[Phase, str]:
        status = self.status
        suffix = ""
        if status.fast_rollout:
            suffix += "; known-good revision: pauses and analysis skipped"
        if self.dynamic_by_gpu and status.stable_revision is not None:
            suffix += (
                "; dynamicStableScale on: the template requests nvidia.com/gpu, "
                "so stable scales down as canary scales up"
            )
        if status.stable_revision is None:
            text = self.waiting_for or f"revision {status.canary_revision} ready"
            return Phase.PENDING, f"first deployment of {status.canary_revision}: {text}"
        if status.bake_until is not None:
            prefix = f"baking {status.canary_revision}"
        else:
            prefix = f"step {self.step_index + 1}/{len(self.steps)} {self.step.describe()}"
        if status.paused_at is not None:
            return Phase.PAUSED, f"{prefix}: {status.pause_reason}{suffix}"
        if self.waiting_for is not None:
            return Phase.PROGRESSING, f"{prefix}: {self.waiting_for}{suffix}"
        started = self.since(status.step_started_at)
        step = self.step
        if status.bake_until is not None:
            until = parse_time(status.bake_until)
            left = f"{status.bake_until} ({_left(until - self.now)} left)"
            if self.router is not None and self.dynamic_stable_scale:
                return Phase.PROMOTING, (
                    f"{prefix} until {left}: previous revision {status.stable_revision} is "
                    f"NOT kept warm (dynamicStableScale: 0 pods); a revert starts its pods "
                    f"again and the canary serves until they are ready{suffix}"
                )
            return Phase.PROMOTING, (
                f"{prefix}: previous revision {status.stable_revision} kept until {left}, "
                f"warm at {self.replicas} pods for an instant revert{suffix}"
            )
        if step.kind == "mirror":
            assert step.duration is not None
            mirrored = status.mirror
            so_far = ""
            if mirrored is not None and mirrored.requests is not None:
                so_far = f"; {mirrored.requests:.0f} requests mirrored so far"
                if mirrored.cost_usd is not None:
                    so_far += f", extra upstream cost ${mirrored.cost_usd:.4f}"
            return Phase.PROGRESSING, (
                f"{prefix}: mirroring {step.mirror}% of requests to the canary, "
                f"{_left(started + step.duration - self.now)} left; users only see stable's "
                f"answers{so_far}{suffix}")
        if step.kind == "evaluation":
            assert step.evaluation is not None
            return Phase.PROGRESSING, (
                f"{prefix}: sending the cases of ConfigMap {step.evaluation.config_map} to "
                f"revision {status.canary_revision}{suffix}")
        if step.kind in ("pause", "await"):
            if step.duration is None:
                return Phase.PAUSED, f"{prefix}: paused until `modeldeploy promote`{suffix}"
            left = _left(started + step.duration - self.now)
            if step.kind == "await":
                return Phase.PROGRESSING, f"{prefix}: switching to green in {left}{suffix}"
            return Phase.PAUSED, f"{prefix}: {left} left{suffix}"
        if step.kind == "analysis":
            report = self.usable_report()
            # Ticks between measurements carry no report: the gates' counters in status
            # tell. A rollback indicator counts no passes whatever its verdict (one with no
            # data, or a breach not acted on, is inconclusive), so it counts nothing here.
            passes = (
                report.consecutive_passes
                if report is not None
                else min(
                    (
                        m.consecutive_passes
                        for m in status.analysis
                        if not m.name.endswith(INDICATOR_SUFFIX)
                        and (m.consecutive_passes or m.verdict != "Pass")
                    ),
                    default=0,
                )
            )
            summary = f"; {report.summary}" if report is not None and report.summary else ""
            return Phase.PROGRESSING, (
                f"{prefix}: analysis {min(passes, step.measurements)}/{step.measurements} "
                f"passed{summary}{suffix}"
            )
        phase = Phase.PROMOTING if step.kind == "full" else Phase.PROGRESSING
        return phase, f"{prefix}: ready at weight {status.canary_weight}{suffix}"

    def requeue_after(self) -> timedelta | None:
        status = self.status
        if status.canary_revision is None:
            # A revert waits on stable pods becoming ready (watch events come too).
            return REQUEUE_WHILE_WAITING if status.reverting_from is not None else None
        candidates: list[timedelta] = []
        if self.waiting_for is not None:
            candidates.append(REQUEUE_WHILE_WAITING)
        if self.spec.analysis is not None and status.stable_revision is not None:
            candidates.append(parse_duration(self.spec.analysis.interval))
        started = self.since(status.step_started_at)
        if status.bake_until is not None:
            candidates.append(parse_time(status.bake_until) - self.now)
        elif status.stable_revision is not None and self.step.duration is not None:
            candidates.append(started + self.step.duration - self.now)
        if self.now <= started:
            candidates.append(timedelta(seconds=1))  # the step's first look comes next tick
        if not candidates:
            return None
        return max(min(candidates), timedelta(seconds=1))

    # ------------------------------------------------------------------ desired state

    def actions(self) -> list[Action]:
        status = self.status
        n = self.replicas
        wanted: dict[str, tuple[Track, int]] = {}
        selects: str | None
        traffic: SetTrafficWeight | None = None
        preview: str | None = None
        stable, canary = status.stable_revision, status.canary_revision
        if stable is None:
            first = canary or status.aborted_revision or self.revision
            wanted[first] = ("stable", n)
            selects = first
        elif canary is None:
            reverting = self.revert_plan()
            wanted[stable] = ("stable", n)
            selects = stable
            traffic = SetTrafficWeight(stable, None, 0)
            preview = stable
            if reverting is not None and status.reverting_from is not None:
                serving, stable_replicas, weight, selects = reverting
                wanted[status.reverting_from] = ("canary", serving)
                wanted[stable] = ("stable", stable_replicas)
                traffic = SetTrafficWeight(stable, status.reverting_from, weight)
        else:
            canary_replicas, stable_replicas, weight, selects = self.plan()
            wanted[canary] = ("canary", canary_replicas)
            wanted[stable] = ("stable", stable_replicas)
            traffic = SetTrafficWeight(stable, canary, weight, mirror_percent=self.mirror_percent())
            preview = canary
        idle: list[tuple[str | None, Track]] = [
            (status.previous_revision, "stable"),
            (status.aborted_revision, "canary"),
        ]
        for kept, kept_track in idle:
            if kept is not None and kept not in wanted and kept in self.observation.deployments:
                wanted[kept] = (kept_track, 0)
        actions: list[Action] = []
        if self.spec.config and self.revision in wanted:
            actions.append(EnsureConfigMap(self.revision))
        for revision, (track, replicas) in wanted.items():
            if revision == self.revision:
                actions.append(EnsureDeployment(revision, track, replicas))
            else:
                actions.append(ScaleDeployment(revision, replicas))
        actions.append(EnsureService(selects))
        if stable is not None and self.router is not None and (
                self.exact_weights or any(step.kind == "evaluation" for step in self.steps)):
            actions.append(EnsureTrackServices(stable, canary or status.reverting_from))
        if self.blue_green and preview is not None:
            actions.append(EnsurePreviewService(preview))
        if not self.blue_green and traffic is not None:
            actions.append(traffic)
        actions.extend(
            DeleteDeployment(revision)
            for revision in sorted(self.observation.deployments)
            if revision not in wanted
        )
        actions.extend(self.events)
        return actions


def reconcile(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    observation: Observation,
    name: str,
) -> Decision:
    """One tick of the rollout state machine (see the module docstring)."""
    tick = _Tick.start(spec, status, observation, name)
    control = tick.status.control
    tick.status.control = None  # consumed: a control acts once
    tick.status.observed_generation = observation.generation
    tick.run(control)
    tick.describe(status.phase)
    return Decision(
        actions=tick.actions(), status=tick.status, requeue_after=tick.requeue_after()
    )


def invalid_spec_status(
    status: ModelDeploymentStatus, generation: int, errors: list[str], now: datetime
) -> ModelDeploymentStatus:
    """The status for a spec the models refused: Ready False reason InvalidSpec.

    ``errors`` are the lines of :func:`modeldeploy.spec.explain` (``<field>: <problem>``).
    The phase, the rollout state and every other condition are left as they were, and
    the shell applies no actions at all, so nothing running is touched; the next
    valid spec is reconciled as usual (and replaces the InvalidSpec condition).
    """
    updated = status.model_copy(deep=True)
    message = "spec is invalid, nothing was changed: " + "; ".join(errors)
    updated.observed_generation = generation
    updated.message = message
    updated.conditions = set_condition(
        updated.conditions, "Ready", "False", "InvalidSpec", message, generation,
        now.astimezone(UTC).replace(microsecond=0),
    )
    return updated


def analysis_request(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime
) -> AnalysisRequest | None:
    """What analysis should measure now, or None when nothing is.

    Analysis runs while a canary takes traffic (weight above 0, the bake included)
    so rollback indicators act at any step, and during analysis steps, which (for
    blue-green's prePromotionAnalysis) measure the preview before it takes traffic.
    At 100% (the full step and the bake) stable serves nothing, so relativeToStable
    checks compare with the baseline measured on stable before (see
    :mod:`modeldeploy.analysis.report`).
    """
    canary, stable = status.canary_revision, status.stable_revision
    if spec.analysis is None or canary is None or stable is None:
        return None
    steps = steps_of(spec)
    step = steps[min(status.current_step or 0, len(steps) - 1)]
    since = parse_time(status.step_started_at) if status.step_started_at else now
    at_full = status.bake_until is not None or step.kind == "full"
    canary_strategy = spec.strategy.canary is not None
    stable_serves = not at_full and not (canary_strategy and step.weight >= 100)
    if status.bake_until is None and step.kind == "analysis":
        return AnalysisRequest(
            revision=canary,
            stable_revision=stable,
            since=since,
            metrics=step.metrics,
            measurements=step.measurements,
            stable_serves_traffic=stable_serves,
        )
    # A mirror step's canary answers copies of live requests: analysis judges it on them.
    takes_traffic = at_full or (canary_strategy and (step.weight > 0 or step.kind == "mirror"))
    if not takes_traffic:
        return None
    return AnalysisRequest(
        revision=canary, stable_revision=stable, since=since, stable_serves_traffic=stable_serves,
        mirror_percent=step.mirror if step.kind == "mirror" and not at_full else 0,
    )


@dataclass(frozen=True)
class EvaluationRequest:
    """An evaluation the shell should run now (see :func:`evaluation_request`)."""

    revision: str
    stable_revision: str
    step: int
    step_started_at: str
    evaluation: EvaluationStep
    # Blue-green: green is reached through the preview Service, blue through the Service.
    blue_green: bool


def ran_for_step(result: EvaluationStatus, status: ModelDeploymentStatus, index: int) -> bool:
    """Whether an evaluation ran for step ``index`` as it is now: the canary's, and since the
    step last started (one from before a resume or a restart of the step is stale)."""
    return (result.revision == status.canary_revision and result.step == index
            and result.step_started_at == status.step_started_at)


def evaluation_request(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus
) -> EvaluationRequest | None:
    """The evaluation to run, or None: only at an evaluation step whose readiness the engine
    has seen (``notReadySince`` cleared), not held, and not yet evaluated (status.evaluation
    is for another step or step start). The result comes back as ``Observation.evaluation``
    naming the same step and step start, so one that finishes after the step moved on is
    ignored; a restarted operator runs it again."""
    canary, stable = status.canary_revision, status.stable_revision
    if canary is None or stable is None or status.bake_until is not None:
        return None
    steps = steps_of(spec)
    index = min(status.current_step or 0, len(steps) - 1)
    step = steps[index]
    if (step.kind != "evaluation" or step.evaluation is None or status.paused_at is not None
            or status.not_ready_since is not None or status.step_started_at is None):
        return None
    if status.evaluation is not None and ran_for_step(status.evaluation, status, index):
        return None
    return EvaluationRequest(canary, stable, index, status.step_started_at, step.evaluation,
                             spec.strategy.blue_green is not None)

"""What analysis tells the engine, and what the engine asks analysis to measure.

These are the types only: :mod:`modeldeploy.analysis.evaluate` produces an
:class:`AnalysisReport` per round. The engine (:mod:`modeldeploy.engine`) reads a
report and never measures anything itself.

Contract between the two:
- The shell asks :func:`modeldeploy.engine.analysis_request` what to measure (which
  revision against which stable revision, which metrics, counting from when), runs
  the providers, and hands the engine the resulting report in
  ``Observation.analysis``.
- ``consecutive_passes`` counts from ``AnalysisRequest.since``: the engine zeroes the
  passes in ``status.analysis`` whenever a step starts, so a step's N measurements are
  its own. Failures and inconclusive rounds in a row count across the whole rollout
  (a pass resets them, a step change does not, as Flagger counts failed checks), so a
  gate failing every round reaches its failureLimit however short the steps are; a
  person's resume or promote starts them afresh.
- relativeToStable once stable serves nothing (``stable_serves_traffic`` False: the
  100% step and the bake): stable has no traffic to measure, so the canary is judged
  against ``MetricStatus.stable_baseline``, the last value measured on stable while it
  still served, kept in status so a restarted operator resumes with it. Without one
  (stable never measured during this rollout) the check stays inconclusive.
- A report counts only for the revision it names, and only when it was measured
  after the current step started (``measured_at > status.stepStartedAt``), so a stale
  report never completes a step it was not measured in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from modeldeploy.spec import MetricStatus, MirrorStatus, Verdict


@dataclass(frozen=True)
class Breach:
    """A rollback indicator out of range: the engine reverts at once."""

    metric: str
    value: float | None
    threshold: str
    revision: str
    # Set when found between analysis rounds: the short window and its request count.
    window: str | None = None

    def describe(self) -> str:
        value = "no value" if self.value is None else f"{self.value:g}"
        over = f" {self.window}" if self.window else ""
        return (
            f"rollback indicator {self.metric} = {value} breached {self.threshold}{over} "
            f"(revision {self.revision})"
        )


@dataclass(frozen=True)
class AnalysisFailure:
    """A metric over its failureLimit (or inconclusiveLimit), with the reason an SRE reads."""

    metric: str
    message: str

    def describe(self) -> str:
        return f"{self.metric}: {self.message}"


@dataclass(frozen=True)
class AnalysisReport:
    """The outcome of analysis for one tick of one canary revision.

    ``verdict`` is this tick's overall verdict; ``consecutive_passes`` how many ticks
    in a row passed since the request's ``since``; ``breach`` a rollback indicator out
    of range (revert at once); ``failed`` a metric past its failureLimit (revert when
    rollback.automatic, else hold); ``inconclusive_exceeded`` a metric past its
    inconclusiveLimit (pause, or revert when analysis.onInconclusive is rollback);
    ``metrics`` the last measurement of every metric, written to status.analysis;
    ``summary`` one line for status.message ("analysis 2/3 metrics passed; ...").
    """

    revision: str
    measured_at: datetime
    verdict: Verdict
    consecutive_passes: int = 0
    metrics: tuple[MetricStatus, ...] = ()
    breach: Breach | None = None
    failed: AnalysisFailure | None = None
    inconclusive_exceeded: AnalysisFailure | None = None
    summary: str = ""
    # During a mirror step: what the canary answered of the copies, and their upstream cost.
    mirror: MirrorStatus | None = None


@dataclass(frozen=True)
class AnalysisRequest:
    """What the shell should measure this tick (see :func:`modeldeploy.engine.analysis_request`).

    ``metrics`` limits the run to these metric names (an analysis step's ``metrics``);
    None means every configured metric and preset. ``measurements`` is the number of
    consecutive passes the current step needs, None outside analysis steps (background
    analysis: only breaches, failures and inconclusive limits matter there).
    ``stable_serves_traffic`` False: the canary serves 100% (the full step, the bake),
    so relative checks compare with the stable baseline instead of querying stable.
    """

    revision: str
    stable_revision: str | None
    since: datetime
    metrics: tuple[str, ...] | None = None
    measurements: int | None = None
    stable_serves_traffic: bool = True
    # A mirror step: the percent of requests copied to the canary (its figures are measured).
    mirror_percent: int = 0

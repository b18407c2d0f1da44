"""The rollout as a flat list of steps, for canary and blue-green alike.

status.currentStep indexes this list (not spec.strategy.canary.steps alone):

- Canary: the spec's steps, each carrying the canary weight in force (a pause or
  analysis step keeps the weight of the last setWeight before it, 0 if none), then
  one implied ``full`` step at 100% (as Argo Rollouts goes to 100% after the last
  step): once the canary is ready at 100% the bake starts.
- Blue-green: ``preview`` (green at full size beside blue, the preview Service on
  green, no traffic), ``evaluation`` (only with prePromotionEvaluation), ``analysis``
  (only with prePromotionAnalysis), ``await``
  (autoPromotionSeconds after the previous step, or until `modeldeploy promote`
  when unset), then ``full``: the Service switches to green; blue stays at full size
  for rollback.bakeTime (the bake), then scales to 0.

An ``evaluation`` or ``mirror`` step keeps the weight in force too. At weight 0 it still
needs canary pods: the plan gives the canary one pod for an evaluation, and enough for the
mirrored share of requests for a mirror (see the machine's ``plan``), none of them serving
users.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from modeldeploy.spec import EvaluationStep, ModelDeploymentSpec, parse_duration

StepKind = Literal[
    "setWeight", "pause", "analysis", "evaluation", "mirror", "preview", "await", "full"
]


def format_duration(duration: timedelta) -> str:
    """``90s`` -> ``1m30s``, the way the spec writes durations."""
    total = int(duration.total_seconds())
    if total < duration.total_seconds():
        return f"{duration.total_seconds():g}s"
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{seconds}s" if seconds or not text else "")


@dataclass(frozen=True)
class Step:
    kind: StepKind
    weight: int
    duration: timedelta | None = None
    measurements: int = 0
    metrics: tuple[str, ...] | None = None
    label: str = ""
    evaluation: EvaluationStep | None = None
    # A mirror step: the percent of requests copied to the canary.
    mirror: int = 0

    @property
    def waits(self) -> bool:
        """A pause, analysis, evaluation or mirror: what a known-good rollout skips."""
        return self.kind in ("pause", "analysis", "await", "evaluation", "mirror")

    def describe(self) -> str:
        """The step's name in messages: "setWeight 10", "pause 1m", "analysis"."""
        if self.kind in ("analysis", "evaluation"):
            return self.kind
        if self.kind == "await":
            return "await promotion"
        if self.kind == "preview":
            return "preview"
        return self.record()

    def record(self) -> str:
        """How the step reads in history: "setWeight 10", "pause 1m", "analysis 3"."""
        if self.kind == "setWeight":
            return f"setWeight {self.weight}"
        if self.kind == "pause":
            return "pause" if self.duration is None else f"pause {format_duration(self.duration)}"
        if self.kind == "analysis":
            return f"analysis {self.measurements}/{self.measurements} passed"
        if self.kind == "evaluation":
            return "evaluation passed"
        if self.kind == "mirror":
            assert self.duration is not None
            return f"mirror {self.mirror}% for {format_duration(self.duration)}"
        if self.kind == "preview":
            return "preview ready"
        if self.kind == "await":
            if self.duration is None:
                return "promoted"
            return f"autoPromotion {format_duration(self.duration)}"
        return self.label or "full 100%"


def steps_of(spec: ModelDeploymentSpec) -> list[Step]:
    """The steps of the spec's strategy, the implied full step last."""
    blue_green = spec.strategy.blue_green
    if blue_green is not None:
        steps = [Step("preview", 0)]
        if blue_green.pre_promotion_evaluation is not None:
            steps.append(Step("evaluation", 0, evaluation=blue_green.pre_promotion_evaluation))
        if blue_green.pre_promotion_analysis is not None:
            analysis = blue_green.pre_promotion_analysis
            metrics = tuple(analysis.metrics) if analysis.metrics is not None else None
            steps.append(Step("analysis", 0, measurements=analysis.measurements, metrics=metrics))
        seconds = blue_green.auto_promotion_seconds
        steps.append(Step("await", 0, None if seconds is None else timedelta(seconds=seconds)))
        steps.append(Step("full", 100, label="switch to green"))
        return steps
    canary = spec.strategy.canary
    assert canary is not None  # the spec's "exactly one strategy" rule
    weight = 0
    steps = []
    for spec_step in canary.steps:
        if spec_step.set_weight is not None:
            weight = spec_step.set_weight
            steps.append(Step("setWeight", weight))
        elif spec_step.pause is not None:
            text = spec_step.pause.duration
            steps.append(Step("pause", weight, None if text is None else parse_duration(text)))
        elif spec_step.analysis is not None:
            names = spec_step.analysis.metrics
            steps.append(
                Step(
                    "analysis",
                    weight,
                    measurements=spec_step.analysis.measurements,
                    metrics=tuple(names) if names is not None else None,
                )
            )
        elif spec_step.evaluation is not None:
            steps.append(Step("evaluation", weight, evaluation=spec_step.evaluation))
        elif spec_step.mirror is not None:
            mirror = spec_step.mirror
            steps.append(Step("mirror", weight, parse_duration(mirror.duration),
                              mirror=mirror.percent))
    steps.append(Step("full", 100))
    return steps

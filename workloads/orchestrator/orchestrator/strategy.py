"""The decisions of one orchestrated query, as pure functions (no I/O, no clock).

* Model selection (FF_MODEL_SELECTION): rank the candidate models by confidence,
  highest first, the cheaper model first on equal confidence; drop models whose
  confidence is below ``min_confidence`` (unless that drops them all, so a bad
  streak never leaves the service with nothing to ask); keep the first ``top_k``.
  With the flag off every candidate is asked, in registry order.
* Validation (FF_VALIDATION): an answer is rejected when its text is missing or
  blank, or the upstream cut it off for content filtering. With the flag off any
  answer the upstream returned counts.
* Merging (FF_RESULT_MERGING): a confidence-weighted vote. Answers are grouped by
  their normalised text (case and whitespace folded); each group weighs the sum
  of its models' confidences; the heaviest group wins, and within it the answer
  of the most confident model is returned. Two models that agree therefore beat
  one more confident dissenter only when their confidences add up to more, and
  with all answers different this is simply "the highest-confidence answer".
  With the flag off the first accepted answer in selection order is returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from orchestrator.registry import ModelSpec

Outcome = Literal["success", "error", "timeout", "invalid"]


@dataclass
class ModelAnswer:
    """What one model call produced, with its accounting."""

    model: str
    outcome: Outcome
    text: str | None = None
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    error: str | None = None
    # Unix time the call ended (the service's bookkeeping; not part of a query's results).
    finished_at: float = field(default=0.0, compare=False)

    @property
    def accepted(self) -> bool:
        return self.outcome == "success"


@dataclass
class MergeResult:
    chosen: ModelAnswer
    strategy: Literal["single", "first-valid", "weighted-vote"]
    agreeing_models: list[str] = field(default_factory=list)


def select_models(
    candidates: Sequence[ModelSpec],
    confidence: Mapping[str, float],
    *,
    enabled: bool,
    top_k: int,
    min_confidence: float,
) -> list[ModelSpec]:
    if not enabled:
        return list(candidates)
    ranked = sorted(
        candidates,
        key=lambda spec: (-confidence.get(spec.id, 0.5), spec.blended_usd_per_million),
    )
    trusted = [spec for spec in ranked if confidence.get(spec.id, 0.5) >= min_confidence]
    return (trusted or ranked)[:top_k]


def rejection_reason(text: str | None, finish_reason: str | None) -> str | None:
    """Why validation rejects an answer, or ``None`` when it is acceptable."""
    if text is None:
        return "the answer has no text"
    if not text.strip():
        return "the answer is blank"
    if finish_reason == "content_filter":
        return "the answer was cut off by the content filter"
    return None


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def merge_answers(
    answers: Sequence[ModelAnswer], confidence: Mapping[str, float], *, enabled: bool
) -> MergeResult | None:
    """Pick the answer to return among accepted ones; ``None`` when none was accepted."""
    accepted = [answer for answer in answers if answer.accepted and answer.text is not None]
    if not accepted:
        return None
    if len(accepted) == 1:
        return MergeResult(accepted[0], "single", [accepted[0].model])
    if not enabled:
        return MergeResult(accepted[0], "first-valid", [accepted[0].model])
    groups: dict[str, list[ModelAnswer]] = {}
    for answer in accepted:
        groups.setdefault(normalise(answer.text or ""), []).append(answer)

    def weight(group: list[ModelAnswer]) -> tuple[float, float]:
        scores = [confidence.get(answer.model, 0.5) for answer in group]
        return (sum(scores), max(scores))

    # max() keeps the first of equal groups, i.e. selection order breaks exact ties.
    winners = max(groups.values(), key=weight)
    best = max(winners, key=lambda answer: confidence.get(answer.model, 0.5))
    return MergeResult(best, "weighted-vote", [answer.model for answer in winners])

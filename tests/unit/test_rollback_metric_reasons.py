"""modeldeploy_rollbacks_total counts reverts under a small fixed set of reasons."""

from __future__ import annotations

import pytest
from modeldeploy import metrics
from modeldeploy import spec as s
from modeldeploy.controller import record_outcomes

T = "2026-01-01T00:00:00Z"


def reverted(outcome: str, condition_reason: str, why: str) -> s.ModelDeploymentStatus:
    return s.ModelDeploymentStatus(
        history=[s.HistoryEntry(revision="abc", outcome=outcome, reason=why, time=T)],
        conditions=[s.Condition(type="Degraded", status="True", reason=condition_reason,
                                message=why, last_transition_time=T)],
    )


@pytest.mark.parametrize(
    ("outcome", "condition_reason", "why", "label"),
    [
        ("RolledBack", "RollbackIndicatorBreached",
         "rollback indicator error-rate = 0.31 breached max 0.05 (revision abc)", "rollback-indicator"),
        ("RolledBack", "AnalysisFailed", "analysis failed: error-rate: 0.03 (max 0.02)", "failure-limit"),
        ("RolledBack", "AnalysisInconclusive", "analysis inconclusive: ...", "inconclusive-limit"),
        ("Aborted", "RolloutAborted", "aborted by user: all traffic back", "abort"),
        ("Aborted", "ProgressDeadlineExceeded", "revision abc not ready within progressDeadline",
         "progress-deadline"),
    ],
    ids=["an indicator breach", "a failed analysis", "inconclusive past its limit",
         "a user abort", "a missed progress deadline"],
)
def test_a_revert_is_counted_under_its_bounded_reason_not_its_message(
    outcome: str, condition_reason: str, why: str, label: str
) -> None:
    name = f"md-{label}"
    record_outcomes("ns", name, s.ModelDeploymentStatus(), reverted(outcome, condition_reason, why))
    counted = metrics.REGISTRY.get_sample_value(
        "modeldeploy_rollbacks_total", {"namespace": "ns", "name": name, "reason": label}
    )
    assert counted == 1
    labels = {sample.labels["reason"] for family in metrics.REGISTRY.collect()
              if family.name == "modeldeploy_rollbacks" for sample in family.samples
              if sample.labels.get("name") == name}
    assert labels == {label}

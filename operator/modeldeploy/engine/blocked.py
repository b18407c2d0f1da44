"""Conditions for what keeps the operator from acting: ``ObjectConflict`` and ``ActionFailed``.

- ``ObjectConflict``: the operator acts only on objects whose controller ownerReference
  is its ModelDeployment's UID. An object with a name the rollout needs (``<name>``,
  ``<name>-<revision>``) or with the ``modeldeploy.io/name`` label but no such reference
  belongs to someone else: it is left untouched and named here, so an SRE reads in the
  status why a Deployment was not created, or why a Service does not move.
- ``ActionFailed``: the API server refused an action (an admission webhook, a quota,
  validation) or did not answer it in time. The condition carries the server's message;
  the actions after the failed one are not tried, the tick is retried with back-off,
  and, because the status is still written, ``progressDeadline`` keeps counting (a
  canary Deployment that can never be created is aborted at the deadline).

Each condition appears with the first problem and turns False once it is gone (reasons
``NoConflict``, ``ActionsApplied``); a ModelDeployment that never met one never carries it.
Messages are stable across retries (no retry delay in them), so a retry that fails the
same way writes nothing and posts no second Event.
"""

from __future__ import annotations

from datetime import UTC, datetime

from modeldeploy.engine.machine import ACTION_FAILED_CONDITION, set_condition
from modeldeploy.spec import ModelDeploymentStatus

CONFLICT_CONDITION = "ObjectConflict"
# Enough to act on; the Event and the operator's log carry every one.
MAX_NAMED_CONFLICTS = 5


def conflict_status(
    status: ModelDeploymentStatus, conflicts: list[str], generation: int, now: datetime
) -> ModelDeploymentStatus:
    """``status`` with the ObjectConflict condition for ``conflicts`` (one message each)."""
    named = sorted(set(conflicts))
    message = "; ".join(named[:MAX_NAMED_CONFLICTS])
    if len(named) > MAX_NAMED_CONFLICTS:
        message += f"; and {len(named) - MAX_NAMED_CONFLICTS} more"
    return _with_condition(
        status, CONFLICT_CONDITION, ("ObjectNotOwned", message) if named else None,
        ("NoConflict", "every object this ModelDeployment uses is its own"), generation, now,
    )


def action_failure_status(
    status: ModelDeploymentStatus, failure: tuple[str, str] | None, generation: int,
    now: datetime,
) -> ModelDeploymentStatus:
    """``status`` with the ActionFailed condition: ``failure`` is (reason, message), or None
    when every action was applied."""
    return _with_condition(
        status, ACTION_FAILED_CONDITION, failure,
        ("ActionsApplied", "the API server accepted every action of the last reconcile"),
        generation, now,
    )


def _with_condition(
    status: ModelDeploymentStatus, kind: str, problem: tuple[str, str] | None,
    cleared: tuple[str, str], generation: int, now: datetime,
) -> ModelDeploymentStatus:
    present = next((c for c in status.conditions if c.type == kind), None)
    if problem is None and present is None:
        return status
    updated = status.model_copy(deep=True)
    moment = now.astimezone(UTC).replace(microsecond=0)
    if problem is not None:
        updated.conditions = set_condition(
            updated.conditions, kind, "True", *problem, generation, moment)
    else:
        updated.conditions = set_condition(
            updated.conditions, kind, "False", *cleared, generation, moment)
    return updated

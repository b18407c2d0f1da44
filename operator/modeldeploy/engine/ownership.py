"""The ``ObjectConflict`` condition: objects in the way that this ModelDeployment does not own.

The operator acts only on objects whose controller ownerReference is its ModelDeployment's
UID. An object with a name the rollout needs (``<name>``, ``<name>-<revision>``) or with
the ``modeldeploy.io/name`` label but no such reference belongs to someone else: it is
left untouched and named here, so an SRE reads in the status why a Deployment was not
created, or why a Service does not move. The condition appears with the first conflict
and turns False (reason ``NoConflict``) once the last one is gone; a ModelDeployment
that never met one never carries it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from modeldeploy.engine.machine import set_condition
from modeldeploy.spec import ModelDeploymentStatus

CONFLICT_CONDITION = "ObjectConflict"
# Enough to act on; the Event and the operator's log carry every one.
MAX_NAMED_CONFLICTS = 5


def conflict_status(
    status: ModelDeploymentStatus, conflicts: list[str], generation: int, now: datetime
) -> ModelDeploymentStatus:
    """``status`` with the ObjectConflict condition for ``conflicts`` (one message each)."""
    present = any(c.type == CONFLICT_CONDITION for c in status.conditions)
    if not conflicts and not present:
        return status
    updated = status.model_copy(deep=True)
    moment = now.astimezone(UTC).replace(microsecond=0)
    if conflicts:
        named = sorted(set(conflicts))
        message = "; ".join(named[:MAX_NAMED_CONFLICTS])
        if len(named) > MAX_NAMED_CONFLICTS:
            message += f"; and {len(named) - MAX_NAMED_CONFLICTS} more"
        updated.conditions = set_condition(
            updated.conditions, CONFLICT_CONDITION, "True", "ObjectNotOwned", message,
            generation, moment,
        )
    else:
        updated.conditions = set_condition(
            updated.conditions, CONFLICT_CONDITION, "False", "NoConflict",
            "every object this ModelDeployment uses is its own", generation, moment,
        )
    return updated

"""The rollout engine: a pure state machine, no I/O, no clock (time comes in ``now``).

The shell (Kopf handler) calls, once per tick::

    revision_of(spec) -> str
    reconcile(spec, status, observation, name) -> Decision
    invalid_spec_status(status, generation, errors, now) -> ModelDeploymentStatus
    analysis_request(spec, status, now) -> AnalysisRequest | None
    plan_replicas(weight, replicas, router, dynamic_stable_scale) -> ReplicaPlan
        (``router``: the RouterCapabilities the engine plans by, see engine/routers.py)

A tick, as the shell runs it:

1. Validate the body into :class:`~modeldeploy.spec.ModelDeployment`. If it fails,
   write ``invalid_spec_status(status, generation, spec.explain(error), now)`` and
   apply nothing (running Deployments stay as they are).
2. Ask ``analysis_request(spec, status, now)``; when it is not None, run the
   providers and build an :class:`~modeldeploy.analysis.AnalysisReport` for it
   (stamped ``measured_at=now``).
3. Observe: the Deployments labelled modeldeploy.io/name=<name> (by revision), the
   what the router finds the data plane serving, ``now``; call ``reconcile``.
4. Apply ``decision.actions`` in order (they are the whole desired state, so
   applying them again is harmless), write ``decision.status`` in one status write
   (``status.control`` comes back cleared: the control was consumed), and look again
   after ``decision.requeue_after`` (None: on the next change only).

What ``Observation.served`` means: what the data plane serves, in the router's own
terms (:class:`ServedSplit`), or why the router cannot tell (:class:`Unverified`).
For the gatewayAPI router, the backendRef weights of an HTTPRoute a Gateway accepted
for its current generation. For the replicas router, the ready pods per track among
the pods the Service selects: at 100% the Service selects the canary revision alone
(``EnsureService(revision)``), so warm stable pods do not count.

Actions (:mod:`modeldeploy.engine.actions`) say what should exist, not how to
patch it. A revision's track is part of its desired state; the canary's Deployment
becomes ``track: stable`` at promotion, so the kube adapter should change the track
label without restarting pods (e.g. keep it out of the Deployment's selector and
label the running pods in place, or accept that the label lags on the template).

Actions (:mod:`modeldeploy.engine.actions`): EnsureConfigMap, EnsureDeployment,
ScaleDeployment, DeleteDeployment, EnsureService, EnsurePreviewService,
EnsureTrackServices, SetTrafficWeight, EmitEvent. Behaviour and the choices made where the design is
silent: :mod:`modeldeploy.engine.machine` (state machine),
:mod:`modeldeploy.engine.replicas` (rounding), :mod:`modeldeploy.engine.revision`,
:mod:`modeldeploy.engine.steps` (what status.currentStep indexes).
"""

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
from modeldeploy.engine.blocked import (
    CONFLICT_CONDITION,
    action_failure_status,
    conflict_status,
)
from modeldeploy.engine.machine import (
    ACTION_FAILED_CONDITION,
    Decision,
    EvaluationRequest,
    analysis_request,
    evaluation_request,
    format_time,
    invalid_spec_status,
    parse_time,
    reconcile,
)
from modeldeploy.engine.observations import (
    DeploymentObservation,
    Observation,
    Served,
    ServedSplit,
    Unverified,
)
from modeldeploy.engine.replicas import ReplicaPlan, effective_weight, plan_replicas
from modeldeploy.engine.revision import revision_of
from modeldeploy.engine.routers import (
    GATEWAY_API_ROUTER,
    REPLICAS_ROUTER,
    RouterCapabilities,
    capabilities_of,
    mirror_refusals,
)
from modeldeploy.engine.steps import Step, steps_of

__all__ = [
    "ACTION_FAILED_CONDITION",
    "CONFLICT_CONDITION",
    "GATEWAY_API_ROUTER",
    "REPLICAS_ROUTER",
    "Action",
    "Decision",
    "DeleteDeployment",
    "DeploymentObservation",
    "EmitEvent",
    "EnsureConfigMap",
    "EnsureDeployment",
    "EnsurePreviewService",
    "EnsureService",
    "EnsureTrackServices",
    "EvaluationRequest",
    "Observation",
    "ReplicaPlan",
    "RouterCapabilities",
    "ScaleDeployment",
    "Served",
    "ServedSplit",
    "SetTrafficWeight",
    "Step",
    "Track",
    "Unverified",
    "action_failure_status",
    "analysis_request",
    "capabilities_of",
    "conflict_status",
    "effective_weight",
    "evaluation_request",
    "format_time",
    "invalid_spec_status",
    "mirror_refusals",
    "parse_time",
    "plan_replicas",
    "reconcile",
    "revision_of",
    "steps_of",
]

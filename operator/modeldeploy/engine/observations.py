"""What the shell saw this tick: the inputs of the engine besides spec and status.

``now`` is the only clock the engine knows (it never reads one), so tests need no
sleeps and a tick replayed with the same observation gives the same decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from modeldeploy.analysis.report import AnalysisReport
from modeldeploy.spec import EvaluationStatus


@dataclass(frozen=True)
class DeploymentObservation:
    """One observed Deployment of this ModelDeployment (from its status and its pods).

    ``not_ready_reason`` is why pods are not ready, read from pod and Deployment
    conditions (``CrashLoopBackOff``, ``Unschedulable: 0/3 nodes have free
    nvidia.com/gpu``...), or None; it is what a progressDeadline abort reports.
    """

    revision: str
    track: str
    desired_replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    not_ready_reason: str | None = None

    def is_ready_at(self, replicas: int) -> bool:
        """Scaled to ``replicas`` and that many pods updated, ready and available."""
        return (
            self.desired_replicas == replicas
            and self.updated_replicas >= replicas
            and self.ready_replicas >= replicas
            and self.available_replicas >= replicas
        )


@dataclass(frozen=True)
class ServedSplit:
    """What the data plane serves now, in the terms the router sets it (never a rounded %).

    Replicas router: the READY pods the Service spreads requests over, per track (a
    Service narrowed to one revision spreads over that revision's pods alone).
    gatewayAPI router: the backendRef weights of an HTTPRoute a Gateway accepted for its
    current generation.

    ``mirror``: the percent of requests the data plane copies to the canary (answers
    thrown away), as it has it: the percent of the gatewayAPI router's RequestMirror
    filter; always 0 for the replicas router, which cannot mirror.
    """

    canary: int
    stable: int
    mirror: int = 0


@dataclass(frozen=True)
class Unverified:
    """The router cannot say what the data plane serves; ``why`` says what it waits for.

    ``refused``: the data plane refuses the route (no Gateway accepted the HTTPRoute):
    the rollout holds with ``why`` until one does, and goes on by itself then. Otherwise
    the wait is a readiness wait, which progressDeadline bounds.
    """

    why: str
    refused: bool = False


Served = ServedSplit | Unverified


@dataclass(frozen=True)
class Observation:
    """The cluster and analysis as the shell saw them at ``now`` (timezone-aware).

    ``deployments`` maps revision to its Deployment; ``served`` is what the router found
    the data plane serving (None: no router asked);
    ``analysis`` is this tick's report, None when analysis is not configured or did
    not run.
    """

    now: datetime
    generation: int
    deployments: Mapping[str, DeploymentObservation] = field(default_factory=dict)
    served: Served | None = None
    analysis: AnalysisReport | None = None
    # An evaluation that finished since the last tick (see engine.evaluation_request).
    evaluation: EvaluationStatus | None = None

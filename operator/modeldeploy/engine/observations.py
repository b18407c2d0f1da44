"""What the shell saw this tick: the inputs of the engine besides spec and status.

``now`` is the only clock the engine knows (it never reads one), so tests need no
sleeps and a tick replayed with the same observation gives the same decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from modeldeploy.analysis.report import AnalysisReport


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
class Observation:
    """The cluster and analysis as the shell saw them at ``now`` (timezone-aware).

    ``deployments`` maps revision to its Deployment; ``router_weight`` is the canary
    weight the router verified (None: not verified, or no router asked);
    ``analysis`` is this tick's report, None when analysis is not configured or did
    not run.
    """

    now: datetime
    generation: int
    deployments: Mapping[str, DeploymentObservation] = field(default_factory=dict)
    router_weight: int | None = None
    analysis: AnalysisReport | None = None

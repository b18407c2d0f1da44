"""What the engine wants to exist: a closed union of small, frozen action values.

Actions say WHAT should exist, never how to patch it; the kube and routing
adapters turn them into API calls. Every tick returns the whole desired state (not
a diff), so applying a tick's actions twice is harmless and an operator restarted
at any moment converges.

Order within a decision: ConfigMap, Deployments, Services (the per-track ones before the
weights that name them), traffic weight,
deletions, events. The shell should apply them in that order (objects exist before
traffic is sent to them; deletions come last).

Deployments:
- ``EnsureDeployment`` is only ever emitted for the revision of the current spec:
  the adapter builds it from ``spec.template`` (named ``<name>-<revision>``, pods
  labelled modeldeploy.io/name, /revision, /track) and sets its replicas.
- ``ScaleDeployment`` is for every other revision (the stable one while a canary
  runs, the previous and the aborted one): their templates are no longer in the
  spec, so the adapter only scales the Deployment that exists.
- ``DeleteDeployment`` is emitted for an observed Deployment whose revision is none
  of: the spec's, stable, canary, previous (the last stable, kept at 0 replicas so a
  `git revert` can scale it up again) and aborted (kept at 0 for inspection until the
  spec moves on). Its ConfigMap should be owned by the Deployment so it goes with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Track = Literal["stable", "canary"]


@dataclass(frozen=True)
class EnsureConfigMap:
    """The immutable ConfigMap ``<name>-<revision>`` holding spec.config exists."""

    revision: str


@dataclass(frozen=True)
class EnsureDeployment:
    """The spec's revision runs as Deployment ``<name>-<revision>`` with these replicas."""

    revision: str
    track: Track
    replicas: int


@dataclass(frozen=True)
class ScaleDeployment:
    """The existing Deployment of an older revision has these replicas (0: kept, idle)."""

    revision: str
    replicas: int


@dataclass(frozen=True)
class DeleteDeployment:
    """The Deployment (and its ConfigMap) of a revision nobody needs any more is gone."""

    revision: str


@dataclass(frozen=True)
class EnsureService:
    """The Service ``<name>`` exists and selects pods of ``revision``.

    ``revision`` None: it selects every pod of this ModelDeployment (both tracks),
    which is how the replicas router splits traffic by pod counts. A revision: only
    that revision's pods (blue-green's active side; a canary at 100%, so the stable
    pods kept warm for rollback get no traffic; steady state).
    """

    revision: str | None


@dataclass(frozen=True)
class EnsurePreviewService:
    """Blue-green's preview Service (spec.strategy.blueGreen.previewService or
    ``<name>-preview``) selects pods of ``revision``."""

    revision: str


@dataclass(frozen=True)
class EnsureTrackServices:
    """The Services ``<name>-stable`` and ``<name>-canary`` exist, each selecting one
    revision's pods: the gatewayAPI router's backends, and the way an evaluation reaches one
    revision alone. ``canary_revision`` None: both select stable."""

    stable_revision: str
    canary_revision: str | None


@dataclass(frozen=True)
class SetTrafficWeight:
    """The router sends ``weight`` percent to canary, the rest to stable.

    ``canary_revision`` None (weight 0): everything to stable. The shell asks the
    router to set it, then asks what the data plane serves (``Observation.served``);
    the engine advances only once that is its plan.
    """

    stable_revision: str
    canary_revision: str | None
    weight: int
    # The percent of requests also copied to canary, its answers thrown away (a mirror
    # step; 0: none). Only for a router whose capabilities say supports_mirror.
    mirror_percent: int = 0


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes Event on the ModelDeployment."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = (
    EnsureConfigMap
    | EnsureDeployment
    | ScaleDeployment
    | DeleteDeployment
    | EnsureService
    | EnsurePreviewService
    | EnsureTrackServices
    | SetTrafficWeight
    | EmitEvent
)

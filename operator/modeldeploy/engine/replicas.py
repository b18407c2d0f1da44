"""Replica planning: a canary weight becomes pod counts for canary and stable.

All arithmetic is on integers; ``ceil``/``floor`` below are of ``weight x replicas / 100``
and "half up" rounds .5 upwards. N is spec.replicas, w the requested weight.

A router without exact weights (replicas: one Service over both tracks, so the ratio of
ready pods IS the split):
- w = 0: canary 0, stable N.
- 0 < w < 100, surge (dynamicStableScale off): canary = ceil (at least 1 pod),
  stable = N - floor. Capacity canary + stable is N, or N + 1 when w x N / 100 is not
  whole: never below N, surge at most one pod.
- 0 < w < 100, dynamicStableScale on (no surge, for GPUs): canary = half-up, kept
  within 1..N-1 so both tracks keep a pod while N >= 2; stable = N - canary. With
  N = 1 the one pod is the canary: effective weight 100, said so in the plan.
- w = 100: canary N; stable N (kept warm, and the Service then selects the canary
  revision alone, so warm stable pods take no traffic), or 0 with dynamicStableScale.
- effective weight = half-up of 100 x canary / (canary + stable), kept within 1..99
  while both tracks have pods (one pod in a thousand still gets some traffic).

A router with exact weights (gatewayAPI: HTTPRoute weights, so effective weight = w):
- canary = ceil (at least 1 pod while w > 0);
- stable = N (surge), or with dynamicStableScale N - canary, kept at one pod or more
  while w < 100 and N >= 2 (a route weight with no endpoints behind it fails requests);
  with N = 1 that leaves stable no pod, so the effective weight is 100.

N = 0 (scaled to zero): no pods anywhere; the effective weight is the requested one.

The effective weight is what status reports; it is never what a step is verified by. The
engine verifies in the terms planned here (the machine's ``planned_split``): the ready
pod counts behind the Service (replicas router), or the accepted route's weights
(gatewayAPI), so no percentage rounded two ways ever has to match another.
"""

from __future__ import annotations

from dataclasses import dataclass

from modeldeploy.engine.routers import RouterCapabilities


@dataclass(frozen=True)
class ReplicaPlan:
    canary: int
    stable: int
    effective_weight: int


def _ceil_share(weight: int, replicas: int) -> int:
    return -(-weight * replicas // 100)


def _half_up_share(weight: int, replicas: int) -> int:
    return (2 * weight * replicas + 100) // 200


def effective_weight(canary: int, stable: int) -> int:
    """The percentage of traffic the canary gets when pods share it evenly."""
    total = canary + stable
    if total == 0:
        return 0
    percent = (200 * canary + total) // (2 * total)
    if canary > 0 and stable > 0:
        return min(99, max(1, percent))
    return percent


def plan_replicas(
    weight: int, replicas: int, router: RouterCapabilities, dynamic_stable_scale: bool
) -> ReplicaPlan:
    """Pod counts for ``weight`` percent to canary out of ``replicas`` (see module doc)."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be within 0..100, got {weight}")
    n = replicas
    if n == 0:
        return ReplicaPlan(canary=0, stable=0, effective_weight=weight)
    if weight == 0:
        return ReplicaPlan(canary=0, stable=n, effective_weight=0)
    if weight == 100:
        return ReplicaPlan(canary=n, stable=0 if dynamic_stable_scale else n, effective_weight=100)
    most_canary = n - 1 if n >= 2 else n
    if router.exact_weights:
        canary = _ceil_share(weight, n)
        if not dynamic_stable_scale:
            return ReplicaPlan(canary=canary, stable=n, effective_weight=weight)
        canary = min(canary, most_canary)
        stable = n - canary
        return ReplicaPlan(canary, stable, weight if stable > 0 else 100)
    if dynamic_stable_scale:
        canary = min(max(1, _half_up_share(weight, n)), most_canary)
        stable = n - canary
    else:
        canary = max(1, _ceil_share(weight, n))
        stable = n - weight * n // 100
    return ReplicaPlan(canary, stable, effective_weight(canary, stable))

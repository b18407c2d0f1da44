"""Replica planning: a weight becomes canary and stable pod counts, and the real split."""

from __future__ import annotations

import pytest
from modeldeploy.engine import ReplicaPlan, Router, plan_replicas

REPLICAS = range(1, 11)
WEIGHTS = (0, 1, 10, 33, 50, 99, 100)
SETUPS: list[tuple[Router, bool]] = [
    ("replicas", False),
    ("replicas", True),
    ("gatewayAPI", False),
    ("gatewayAPI", True),
]
GRID = [
    (router, dynamic, replicas, weight)
    for router, dynamic in SETUPS
    for replicas in REPLICAS
    for weight in WEIGHTS
]
GRID_IDS = [
    f"{router} router{' with dynamicStableScale' if dynamic else ''}, {n} replicas at {w}%"
    for router, dynamic, n, w in GRID
]


@pytest.mark.parametrize(("router", "dynamic", "replicas", "weight"), GRID, ids=GRID_IDS)
def test_every_plan_keeps_the_promises_users_rely_on(
    router: Router, dynamic: bool, replicas: int, weight: int
) -> None:
    plan = plan_replicas(weight, replicas, router, dynamic)
    # A canary gets at least one pod as soon as it gets any traffic, and none at 0%.
    assert (plan.canary >= 1) == (weight > 0)
    assert plan.canary <= replicas
    if dynamic:
        # No surge: never more pods than spec.replicas (GPUs are rarely spare).
        assert plan.canary + plan.stable <= replicas
    else:
        # Capacity never drops below spec.replicas.
        assert plan.canary + plan.stable >= replicas
        assert plan.canary + plan.stable <= 2 * replicas
    # The effective weight is the real split: 0 and 100 only when one side has no traffic.
    assert (plan.effective_weight == 0) == (weight == 0)
    if plan.effective_weight == 100:
        assert weight == 100 or plan.stable == 0
    if router == "replicas" and 0 < weight < 100 and plan.stable > 0:
        total = plan.canary + plan.stable
        assert abs(plan.effective_weight - 100 * plan.canary / total) <= 1


EXACT: list[tuple[str, Router, bool, int, int, ReplicaPlan]] = [
    ("4 replicas at 10% surge one canary pod beside all four stable ones",
     "replicas", False, 4, 10, ReplicaPlan(canary=1, stable=4, effective_weight=20)),
    ("10 replicas at 33% round the canary up and stable down by the whole share",
     "replicas", False, 10, 33, ReplicaPlan(canary=4, stable=7, effective_weight=36)),
    ("4 replicas at 50% split evenly without surge",
     "replicas", False, 4, 50, ReplicaPlan(canary=2, stable=2, effective_weight=50)),
    ("1 replica at 10% needs a second pod, so the real split is 50%",
     "replicas", False, 1, 10, ReplicaPlan(canary=1, stable=1, effective_weight=50)),
    ("10 replicas at 1% still give the canary one pod",
     "replicas", False, 10, 1, ReplicaPlan(canary=1, stable=10, effective_weight=9)),
    ("10 replicas at 99% keep one stable pod",
     "replicas", False, 10, 99, ReplicaPlan(canary=10, stable=1, effective_weight=91)),
    ("at 100% stable stays warm for rollback (the Service then selects canary alone)",
     "replicas", False, 4, 100, ReplicaPlan(canary=4, stable=4, effective_weight=100)),
    ("dynamicStableScale at 50% of 4 moves two pods from stable to canary",
     "replicas", True, 4, 50, ReplicaPlan(canary=2, stable=2, effective_weight=50)),
    ("dynamicStableScale at 10% of 10 moves one pod",
     "replicas", True, 10, 10, ReplicaPlan(canary=1, stable=9, effective_weight=10)),
    ("dynamicStableScale at 99% of 2 keeps one stable pod until 100%",
     "replicas", True, 2, 99, ReplicaPlan(canary=1, stable=1, effective_weight=50)),
    ("dynamicStableScale with one replica hands the only pod to canary: 100% real",
     "replicas", True, 1, 10, ReplicaPlan(canary=1, stable=0, effective_weight=100)),
    ("dynamicStableScale at 100% frees every stable pod",
     "replicas", True, 4, 100, ReplicaPlan(canary=4, stable=0, effective_weight=100)),
    ("gateway weights are exact; canary pods are the weight's share rounded up",
     "gatewayAPI", False, 10, 33, ReplicaPlan(canary=4, stable=10, effective_weight=33)),
    ("gateway at 1% of 1 replica still runs one canary pod",
     "gatewayAPI", False, 1, 1, ReplicaPlan(canary=1, stable=1, effective_weight=1)),
    ("gateway with dynamicStableScale gives stable what canary does not take",
     "gatewayAPI", True, 4, 10, ReplicaPlan(canary=1, stable=3, effective_weight=10)),
    ("gateway with dynamicStableScale and one replica can only send everything to canary",
     "gatewayAPI", True, 1, 50, ReplicaPlan(canary=1, stable=0, effective_weight=100)),
    ("weight 0 is all stable",
     "gatewayAPI", False, 3, 0, ReplicaPlan(canary=0, stable=3, effective_weight=0)),
    ("scaled to zero runs nothing at any weight",
     "replicas", False, 0, 50, ReplicaPlan(canary=0, stable=0, effective_weight=50)),
]


@pytest.mark.parametrize(
    ("router", "dynamic", "replicas", "weight", "expected"),
    [case[1:] for case in EXACT],
    ids=[case[0] for case in EXACT],
)
def test_plan_rounds_as_documented(
    router: Router, dynamic: bool, replicas: int, weight: int, expected: ReplicaPlan
) -> None:
    assert plan_replicas(weight, replicas, router, dynamic) == expected


def test_a_weight_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        plan_replicas(101, 4, "replicas", False)

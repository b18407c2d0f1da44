"""An HTTPRoute never gives weight to a revision that has no ready pod.

A Service spreads requests over ready pods only, so the replicas router is safe while pods
start. A route is not: a Gateway sends a backend its weight whether or not it has a ready
endpoint, and answers 503 ("no healthy upstream") for that share. Pods here take a minute
to become ready (a model server loading weights); every tick of a whole rollout checks
the weights the engine last wrote against the ready pods behind them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from modeldeploy.spec import Phase
from rollout_world import World, rolling, spec_of

ROUTING = {"trafficRouting": {"gatewayAPI": {"httpRoute": "song-analyzer-route"}}}
STEPS: list[dict[str, Any]] = [{"setWeight": 10}, {"setWeight": 50}, {"setWeight": 80}]


def backends_without_pods(world: World) -> list[str]:
    """The route's backends that get weight but have no ready pod."""
    route = world.cluster.route
    if route is None:
        return []
    weights = {route.stable_revision: 100 - route.weight}
    if route.canary_revision is not None:
        weights[route.canary_revision] = route.weight
    empty = []
    for revision, weight in weights.items():
        deployment = world.cluster.deployments.get(revision)
        if weight > 0 and (deployment is None or deployment.ready_replicas == 0):
            empty.append(f"{revision} at weight {weight}")
    return empty


@pytest.mark.parametrize("dynamic", [False, True], ids=["surge", "dynamicStableScale"])
def test_no_route_weight_lands_on_a_revision_without_ready_pods(dynamic: bool) -> None:
    def spec(image: str) -> Any:
        return spec_of(image, replicas=4, rollback={"bakeTime": "0s"},
                       strategy={"canary": {"steps": STEPS, "dynamicStableScale": dynamic,
                                            **ROUTING}})

    world = rolling(spec("v1"), spec("v2"))
    world.cluster.startup = timedelta(seconds=60)
    weights_seen = set()
    for _ in range(200):
        world.tick()
        assert not backends_without_pods(world), (
            f"{backends_without_pods(world)}: {world.status.message}"
        )
        if world.cluster.route is not None:
            weights_seen.add(world.cluster.route.weight)
        if world.status.phase == Phase.SUCCEEDED and world.status.canary_revision is None:
            break
    assert world.status.phase == Phase.SUCCEEDED, world.status.message
    # Every step's weight was reached on the route (the steps were not skipped).
    assert {10, 50, 80, 100} <= weights_seen, weights_seen

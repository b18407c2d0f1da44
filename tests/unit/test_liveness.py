"""Kopf's liveness probe fails while a loop of the operator is stuck, and only then.

Each loop beats with a promise to beat again within some time (``modeldeploy.liveness``);
the ``heartbeats`` probe (``modeldeploy.handlers``) raises while a promise is broken, so
Kopf's health endpoint answers 500 and the kubelet restarts the container. Time is a
monotonic clock the test moves.
"""

from __future__ import annotations

import asyncio

import kopf
import pytest
from modeldeploy.handlers import heartbeats as probe
from modeldeploy.liveness import Heartbeats


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_probe(beats: Heartbeats | None) -> dict[str, float]:
    memo = kopf.Memo()
    if beats is not None:
        memo.heartbeats = beats
    return asyncio.run(probe(memo=memo))


def test_a_loop_that_keeps_beating_is_alive_and_one_that_stops_is_stuck() -> None:
    clock = Clock()
    beats = Heartbeats(clock)
    beats.beat("controller loop", 30)
    clock.now += 29
    assert run_probe(beats) == {"controller loop": 29.0}
    beats.beat("controller loop", 30)
    clock.now += 31
    stuck = r"controller loop: no heartbeat for 31s \(expected within 30s\)"
    with pytest.raises(kopf.PermanentError, match=stuck):
        run_probe(beats)


def test_a_tick_is_stuck_once_it_runs_past_its_limit_and_forgotten_when_it_ends() -> None:
    clock = Clock()
    beats = Heartbeats(clock)
    with beats.running("tick of ml/song-analyzer", 600):
        clock.now += 600
        assert run_probe(beats) == {"tick of ml/song-analyzer": 600.0}
        clock.now += 1
        with pytest.raises(kopf.PermanentError, match="tick of ml/song-analyzer"):
            run_probe(beats)
    clock.now += 3600
    assert run_probe(beats) == {}, "an idle operator with nothing in flight is alive"


def test_a_loop_that_stopped_on_purpose_is_not_stuck() -> None:
    clock = Clock()
    beats = Heartbeats(clock)
    beats.beat("leader election", 45)
    beats.stop("leader election")
    clock.now += 3600
    assert run_probe(beats) == {}


def test_the_probe_passes_while_the_operator_is_still_starting() -> None:
    assert run_probe(None) == {}

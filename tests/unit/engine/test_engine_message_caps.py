"""However long and however hostile a reason is, the status the operator writes stays valid.

A provider's answer becomes a metric's message, the status message and every condition's
message. Kubernetes refuses a condition message over 32768 bytes (and so does the status
model), so an uncut reason used to fail every tick from then on. ``modeldeploy.messages``
is the one place text is cut and cleaned: conditions in the engine, the rest of the status
when the shell writes it (``controller.status_dict``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from modeldeploy import engine
from modeldeploy.analysis import presets
from modeldeploy.analysis_runner import judge_round
from modeldeploy.controller import status_dict
from modeldeploy.measurement import QueryError
from modeldeploy.messages import DETAIL_MAX, STATUS_MESSAGE_MAX
from modeldeploy.spec import ModelDeploymentStatus, Verdict
from rollout_world import World, rolling, spec_of

STEPS: list[dict[str, Any]] = [{"setWeight": 10}, {"analysis": {"measurements": 3}}, {"setWeight": 100}]
ESCAPES = "\x1b[2J\x1b]0;owned\x07\r\n\u202e"
# An error body far beyond Kubernetes' 32768-byte condition limit, in multi-byte characters.
HOSTILE = ("Prometheus refused the query: " + ESCAPES + "é" * 70_000)
CONTROL = [chr(c) for c in [*range(0x00, 0x20), 0x7F, 0x9B]] + ["\u202e"]


def analysing() -> World:
    world = rolling(spec_of("v1", steps=STEPS, analysis=True), spec_of("v2", steps=STEPS, analysis=True))
    world.ticks(2)
    assert world.status.current_step == 1, world.status.message
    return world


def hostile_round(world: World) -> None:
    """A tick whose analysis got the hostile reason for every query, judged as the runner does."""
    now = world.now + dt.timedelta(seconds=10)
    request = engine.analysis_request(world.spec, world.status, now)
    assert request is not None and world.spec.analysis is not None
    gates, _ = presets.resolve(world.spec.analysis)
    canary = {gate.name: QueryError(HOSTILE, now) for gate in gates}
    report = judge_round(world.spec.analysis, world.status, request, canary, {}, now)
    world.tick(analysis=report)


def test_a_huge_hostile_reason_leaves_a_status_that_kubernetes_and_the_next_tick_accept() -> None:
    world = analysing()
    for _ in range(4):  # past inconclusiveLimit: the rollout pauses, quoting the reason
        hostile_round(world)
    written = status_dict(world.status)

    assert written["phase"] == "Paused", written["message"][:200]
    assert "Prometheus refused the query:" in written["message"]
    assert len(written["message"].encode()) <= STATUS_MESSAGE_MAX
    assert all(len(c["message"].encode()) <= STATUS_MESSAGE_MAX for c in written["conditions"])
    assert all(len(m["message"].encode()) <= DETAIL_MAX for m in written["analysis"])
    assert {m["verdict"] for m in written["analysis"]} == {Verdict.INCONCLUSIVE.value}
    texts = [written["message"], *(c["message"] for c in written["conditions"]),
             *(m["message"] for m in written["analysis"]), *(h["reason"] for h in written["history"])]
    assert not any(c in text for text in texts for c in CONTROL)
    # What the next tick reads back validates, and writing it again changes nothing.
    again = ModelDeploymentStatus.model_validate(written)
    assert status_dict(again) == written
    world.tick()
    assert world.status.phase == "Paused"


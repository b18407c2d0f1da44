"""What a webhook is told: which transitions notify, in which order, with which body.

The transitions come from the real engine, driven tick by tick (tests/unit/engine's
rollout world), and ``notifications_for`` is given each tick's status read and status
written, as the controller gives them.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from modeldeploy import notify
from modeldeploy import spec as s
from modeldeploy.engine import revision_of
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from rollout_world import NAME, World, report, rolling, spec_of

NAMESPACE = "ml"


def model_deployment(spec: s.ModelDeploymentSpec) -> s.ModelDeployment:
    return s.ModelDeployment(metadata=s.ObjectMeta(name=NAME, namespace=NAMESPACE, uid="u1"), spec=spec)


def tick(world: World, seen: list[notify.Notification], **kwargs: Any) -> None:
    """One tick; what it notifies is added to ``seen``. The status read again (a restart,
    a resync with nothing new) notifies nothing."""
    before = world.status.model_copy(deep=True)
    world.tick(**kwargs)
    md = model_deployment(world.spec)
    seen += notify.notifications_for(md, before, world.status, world.now)
    assert notify.notifications_for(md, world.status, world.status, world.now) == []


def events(seen: list[notify.Notification]) -> list[tuple[str, str]]:
    return [(n.event, n.reason) for n in seen]


STEPS_TIMED = [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 100}]
STEPS_UNTIMED = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]


def test_a_first_deployment_notifies_started_then_promoted() -> None:
    world, seen = World(spec_of("v1")), []
    for _ in range(3):
        tick(world, seen)
    assert events(seen) == [("Started", "RolloutStarted"), ("Promoted", "RolloutCompleted")]
    assert seen[0].message == "first deployment"
    assert seen[1].revision == seen[1].stable_revision == revision_of(world.spec)


def test_a_canary_through_a_timed_pause_notifies_started_and_promoted_only() -> None:
    world = rolling(spec_of("v1", steps=STEPS_TIMED), spec_of("v2", steps=STEPS_TIMED))
    seen: list[notify.Notification] = []
    for _ in range(12):
        tick(world, seen)
    assert events(seen) == [("Started", "RolloutStarted"), ("Promoted", "RolloutCompleted")]
    promoted = seen[1]
    assert (promoted.revision, promoted.canary_weight, promoted.phase) == (
        revision_of(world.spec), 100, "Succeeded")


def test_a_pause_until_promote_notifies_paused_once_then_promoted_after_promote() -> None:
    world = rolling(spec_of("v1", steps=STEPS_UNTIMED), spec_of("v2", steps=STEPS_UNTIMED))
    seen: list[notify.Notification] = []
    for _ in range(5):
        tick(world, seen)
    assert events(seen) == [("Started", "RolloutStarted"), ("Paused", "AwaitingPromotion")]
    paused = seen[1]
    assert paused.canary_weight == 20 and "modeldeploy promote" in paused.message
    tick(world, seen, control="promote")
    for _ in range(4):
        tick(world, seen)
    assert events(seen)[2:] == [("Promoted", "RolloutCompleted")]


def test_a_user_pause_notifies_paused_with_the_user_as_reason() -> None:
    world = rolling(spec_of("v1", steps=STEPS_TIMED), spec_of("v2", steps=STEPS_TIMED))
    seen: list[notify.Notification] = []
    tick(world, seen)
    tick(world, seen, control="pause")
    assert events(seen) == [("Started", "RolloutStarted"), ("Paused", "PausedByUser")]


def test_a_rollback_indicator_breach_notifies_rolled_back_at_the_weight_it_had() -> None:
    old = spec_of("v1", analysis=True)
    new = spec_of("v2", analysis=True, steps=[{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}])
    world = rolling(old, new)
    seen: list[notify.Notification] = []
    for _ in range(3):
        tick(world, seen)
    tick(world, seen, analysis=report(new, world.now + timedelta(seconds=10), breach=True,
                                      verdict=s.Verdict.FAIL))
    assert events(seen)[-1] == ("RolledBack", "RollbackIndicatorBreached")
    rolled_back = seen[-1]
    assert rolled_back.revision == revision_of(new)
    assert rolled_back.canary_weight == 50
    assert rolled_back.canary_revision is None and rolled_back.stable_revision == revision_of(old)
    assert rolled_back.summary() == (
        f"ml/{NAME}: RolledBack revision {revision_of(new)} at 50%: {rolled_back.message}")
    assert "rollback indicator success-rate" in rolled_back.message
    assert [m.name for m in rolled_back.metrics] == ["success-rate"]


def test_an_abort_notifies_failed() -> None:
    world = rolling(spec_of("v1", steps=STEPS_UNTIMED), spec_of("v2", steps=STEPS_UNTIMED))
    seen: list[notify.Notification] = []
    for _ in range(3):
        tick(world, seen)
    tick(world, seen, control="abort")
    assert events(seen)[-1] == ("Failed", "RolloutAborted")


def test_a_newer_revision_during_a_pause_notifies_only_the_newer_start() -> None:
    world = rolling(spec_of("v1", steps=STEPS_UNTIMED), spec_of("v2", steps=STEPS_UNTIMED))
    seen: list[notify.Notification] = []
    for _ in range(3):
        tick(world, seen)
    world.change(spec_of("v3", steps=STEPS_UNTIMED))
    tick(world, seen)
    assert events(seen)[-1] == ("Started", "RolloutStarted")
    assert seen[-1].revision == revision_of(world.spec)
    assert "Promoted" not in [e for e, _ in events(seen)]


def test_the_json_body_and_the_slack_text() -> None:
    n = notify.Notification(
        event="RolledBack", namespace="ml", name="song-analyzer", revision="a42d94e088",
        phase="RolledBack", reason="RollbackIndicatorBreached",
        message="rollback indicator uncached-error-rate = 0.33 breached max 0.05",
        stable_revision="7c9f000000", canary_revision=None, canary_weight=50,
        time="2026-01-01T12:00:00Z",
        metrics=(notify.MetricValue("uncached-error-rate", 0.33, "max 0.05", "Fail"),
                 notify.MetricValue("latency-p95", float("nan"), "max 10", "Inconclusive")),
    )
    summary = ("ml/song-analyzer: RolledBack revision a42d94e088 at 50%: rollback indicator "
               "uncached-error-rate = 0.33 breached max 0.05")
    assert n.body("slack") == {"text": summary}
    assert n.body("json") == {
        "event": "RolledBack", "summary": summary,
        "modelDeployment": {"namespace": "ml", "name": "song-analyzer"},
        "revision": "a42d94e088", "phase": "RolledBack", "reason": "RollbackIndicatorBreached",
        "message": "rollback indicator uncached-error-rate = 0.33 breached max 0.05",
        "stableRevision": "7c9f000000", "canaryRevision": None, "canaryWeight": 50,
        "metrics": [
            {"name": "uncached-error-rate", "value": 0.33, "threshold": "max 0.05", "verdict": "Fail"},
            {"name": "latency-p95", "value": None, "threshold": "max 10", "verdict": "Inconclusive"},
        ],
        "time": "2026-01-01T12:00:00Z",
    }


def test_a_summary_stays_one_bounded_line() -> None:
    n = notify.Notification(
        event="Paused", namespace="ml", name="x", revision="r", phase="Paused", reason="r",
        message="line one\nline two " + "x" * 5000, stable_revision=None, canary_revision="r",
        canary_weight=None, time="t")
    assert "\n" not in n.summary() and len(n.summary().encode()) <= notify.SUMMARY_MAX


# --------------------------------------------------------------------------- where to

HOOK = {"name": "team-chat", "urlFrom": {"secretKeyRef": {"name": "hooks", "key": "chat"}}}
DEFAULT = notify.WebhookTarget("default", "modeldeploy", "rollout-webhook", "url")


@pytest.mark.parametrize(
    ("notifications", "expected"),
    [
        pytest.param(None, [DEFAULT], id="a resource without notifications gets the default"),
        pytest.param({"webhooks": []}, [], id="an empty list turns the default off"),
        pytest.param(
            {"webhooks": [{**HOOK, "format": "slack", "events": ["RolledBack", "Failed"]}]},
            [notify.WebhookTarget("team-chat", NAMESPACE, "hooks", "chat", "slack",
                                  frozenset({"RolledBack", "Failed"}))],
            id="a resource's own webhooks replace the default and read its own namespace",
        ),
    ],
)
def test_targets(notifications: dict[str, Any] | None, expected: list[notify.WebhookTarget]) -> None:
    spec = spec_of("v1", **({} if notifications is None else {"notifications": notifications}))
    assert notify.targets_for(model_deployment(spec), DEFAULT) == expected


@pytest.mark.parametrize(
    ("webhooks", "complaint"),
    [
        pytest.param([HOOK, HOOK], "names must be unique (repeated: team-chat)", id="a repeated name"),
        pytest.param([{**HOOK, "name": "Team_Chat"}], "webhooks[0].name", id="a name that is no DNS label"),
        pytest.param([{**HOOK, "events": ["Deployed"]}], "webhooks[0].events[0]", id="an unknown event"),
        pytest.param([{**HOOK, "events": ["Paused", "Paused"]}], "Paused more than once",
                     id="an event listed twice"),
        pytest.param([{**HOOK, "format": "teams"}], "webhooks[0].format", id="an unknown format"),
        pytest.param([{"name": "x", "url": "https://example.com"}], "webhooks[0].url",
                     id="a URL written in the spec instead of a Secret"),
    ],
)
def test_invalid_webhooks_are_explained_naming_the_field(webhooks: list[Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as refused:
        spec_of("v1", notifications={"webhooks": webhooks})
    assert complaint in "\n".join(s.explain(refused.value)), s.explain(refused.value)


def test_the_default_webhook_setting() -> None:
    assert notify.default_webhook_from_env(None) is None
    assert notify.default_webhook_from_env(" ") is None
    target = notify.default_webhook_from_env("modeldeploy/rollout-webhook/url", "slack", "RolledBack,Failed")
    assert target == notify.WebhookTarget("default", "modeldeploy", "rollout-webhook", "url", "slack",
                                          frozenset({"RolledBack", "Failed"}))


@pytest.mark.parametrize(
    ("secret", "format_", "events", "variable"),
    [
        ("rollout-webhook", None, None, "MODELDEPLOY_DEFAULT_WEBHOOK_SECRET='rollout-webhook'"),
        ("ns//url", None, None, "MODELDEPLOY_DEFAULT_WEBHOOK_SECRET='ns//url'"),
        ("ns/hook/url", "teams", None, "MODELDEPLOY_DEFAULT_WEBHOOK_FORMAT='teams'"),
        ("ns/hook/url", None, "Started,Deployed", "MODELDEPLOY_DEFAULT_WEBHOOK_EVENTS='Started,Deployed'"),
    ],
)
def test_a_bad_default_webhook_setting_stops_the_operator_naming_the_variable(
    secret: str, format_: str | None, events: str | None, variable: str,
) -> None:
    with pytest.raises(ValueError) as refused:
        notify.default_webhook_from_env(secret, format_, events)
    assert str(refused.value).startswith(variable)


EVALUATION_STEPS: list[dict[str, Any]] = [
    {"evaluation": {"configMap": "songs-eval", "path": "/analyze", "minScore": 0.9}},
    {"setWeight": 100},
]


def evaluation_result(world: World, verdict: s.Verdict, passed: int) -> s.EvaluationStatus:
    status = world.status
    assert status.canary_revision and status.step_started_at and status.current_step is not None
    return s.EvaluationStatus(
        revision=status.canary_revision, step=status.current_step,
        step_started_at=status.step_started_at, finished_at="2026-01-01T12:05:00Z",
        verdict=verdict, score=passed / 50, min_score=0.9, cases=50, passed=passed,
        message=f"{passed}/50 cases passed")


@pytest.mark.parametrize(("verdict", "passed", "expected"), [
    (s.Verdict.FAIL, 20, ("RolledBack", "EvaluationFailed")),
    (s.Verdict.INCONCLUSIVE, 0, ("Paused", "EvaluationInconclusive")),
])
def test_an_evaluation_that_does_not_pass_notifies_with_its_score(
    verdict: s.Verdict, passed: int, expected: tuple[str, str],
) -> None:
    world = rolling(spec_of("v1", steps=EVALUATION_STEPS), spec_of("v2", steps=EVALUATION_STEPS))
    seen: list[notify.Notification] = []
    for _ in range(2):
        tick(world, seen)
    tick(world, seen, evaluation=evaluation_result(world, verdict, passed))
    assert events(seen) == [("Started", "RolloutStarted"), expected]
    score = next(m for m in seen[1].metrics if m.name == notify.EVALUATION_METRIC)
    assert (score.value, score.threshold, score.verdict) == (passed / 50, "min 0.9", verdict.value)
    assert f"{passed}/50 cases passed" in seen[1].message

"""What `modeldeploy status`, `history` and `list` show an SRE at 3 a.m."""

from __future__ import annotations

import datetime as dt
from typing import Any

from modeldeploy import cli

NOW = dt.datetime(2026, 11, 23, 3, 0, 0, tzinfo=dt.UTC)


def body() -> dict[str, Any]:
    return {
        "metadata": {"name": "song-analyzer", "namespace": "ml"},
        "spec": {
            "replicas": 4,
            "template": {"spec": {"containers": [{"name": "app", "image": "modeldeploy/song-analyzer:2"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]}},
        },
        "status": {
            "phase": "Paused",
            "message": "step 2/4 pause: paused until `modeldeploy promote`",
            "stableRevision": "7c9f12ab34",
            "canaryRevision": "41ab98cd01",
            "canaryWeight": 20,
            "currentStep": 1,
            "analysis": [{
                "name": "error-rate", "value": 0.0123, "threshold": "max 0.02", "verdict": "Pass",
                "time": "2026-11-23T02:59:48Z",
            }],
            "history": [
                {"revision": "41ab98cd01", "outcome": "InProgress", "time": "2026-11-23T02:58:00Z"},
                {"revision": "7c9f12ab34", "outcome": "Promoted", "reason": "first deployment",
                 "time": "2026-11-23T01:00:00Z"},
            ],
            "conditions": [{"type": "Ready", "status": "False", "reason": "RolloutInProgress",
                            "message": "paused", "lastTransitionTime": "2026-11-23T02:58:00Z"}],
        },
    }


DEPLOYMENTS = [
    {"metadata": {"labels": {"modeldeploy.io/revision": "7c9f12ab34"}}, "spec": {"replicas": 4},
     "status": {"readyReplicas": 4}},
    {"metadata": {"labels": {"modeldeploy.io/revision": "41ab98cd01"}}, "spec": {"replicas": 1},
     "status": {"readyReplicas": 0}},
]


def test_status_shows_phase_step_weights_revisions_and_readiness() -> None:
    text = cli.render_status(body(), DEPLOYMENTS, [], NOW)
    assert "Phase:      Paused" in text
    assert "paused until `modeldeploy promote`" in text
    assert "canary, step 2/4" in text
    assert "  -> 2. pause" in text
    assert "canary 20% / stable 80%" in text
    assert "7c9f12ab34 (4/4 ready)" in text
    assert "41ab98cd01 (0/1 ready)" in text


def test_status_shows_each_metric_against_its_threshold() -> None:
    text = cli.render_status(body(), DEPLOYMENTS, [], NOW)
    row = next(line for line in text.splitlines() if "error-rate" in line)
    assert "0.0123" in row and "max 0.02" in row and "Pass" in row and "12s ago" in row


def test_status_lists_recent_events_in_order() -> None:
    events = [
        {"lastTimestamp": "2026-11-23T02:59:00Z", "type": "Normal", "reason": "RolloutPaused"},
        {"lastTimestamp": "2026-11-23T02:58:00Z", "type": "Normal", "reason": "RolloutStarted"},
    ]
    text = cli.render_status(body(), DEPLOYMENTS, sorted(events, key=lambda e: e["lastTimestamp"]), NOW)
    assert text.index("RolloutStarted") < text.index("RolloutPaused")


def test_history_lists_revisions_newest_first_with_reasons() -> None:
    lines = cli.render_history(body(), NOW).splitlines()
    assert lines[0].split() == ["REVISION", "OUTCOME", "WHEN", "REASON"]
    assert lines[1].startswith("41ab98cd01") and "InProgress" in lines[1]
    assert "first deployment" in lines[2]


def test_list_shows_one_row_per_resource() -> None:
    lines = cli.render_list([body()]).splitlines()
    assert lines[1].split()[:6] == ["ml", "song-analyzer", "Paused", "20", "7c9f12ab34", "41ab98cd01"]



def test_status_shows_the_last_evaluation_with_its_failing_cases_and_a_mirror() -> None:
    shown = body()
    shown["spec"]["strategy"]["canary"]["steps"] = [
        {"evaluation": {"configMap": "songs-eval", "path": "/analyze", "minScore": 0.9}},
        {"setWeight": 100}]
    shown["status"]["evaluation"] = {
        "revision": "41ab98cd01", "step": 0, "stepStartedAt": "2026-11-23T02:58:00Z",
        "finishedAt": "2026-11-23T02:59:00Z", "verdict": "Fail", "score": 0.6, "minScore": 0.9,
        "cases": 50, "passed": 30, "unanswered": 1, "tokens": 12345, "costUsd": 0.0521,
        "failures": [{"id": "song-07", "reason": "$.score = 91 is above 72"}],
        "message": "30/50 cases passed (score 0.60, minScore 0.9): below minScore",
    }
    shown["status"]["mirror"] = {"revision": "41ab98cd01", "percent": 50,
                                 "since": "2026-11-23T02:50:00Z", "requests": 812.0,
                                 "costUsd": 0.4061}
    shown["status"]["currentStep"] = 0
    text = cli.render_status(shown, DEPLOYMENTS, [], NOW)
    assert "  -> 1. evaluation" in text
    assert ("Evaluation: Fail for 41ab98cd01 (60s ago): 30/50 passed, score 0.60 (min 0.9), "
            "1 unanswered, 12345 tokens, $0.0521") in text
    assert "below minScore" in text
    case_line = next(line for line in text.splitlines() if "song-07" in line)
    assert "$.score = 91 is above 72" in case_line
    assert ("Mirror:     50% of requests copied to 41ab98cd01 since 10m ago: 812 answered, "
            "extra upstream cost $0.4061") in text

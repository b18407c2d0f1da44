"""`modeldeploy status|history|list` print no control character from the cluster.

Status and Events hold text from outside (a provider's error body, a user's spec); the
CLI prints it to a terminal, where an escape sequence could clear the screen, recolour or
retitle it, or fake lines of output. Whatever the operator stored, the CLI cleans again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from modeldeploy import cli

NOW = dt.datetime(2026, 11, 23, 3, 0, 0, tzinfo=dt.UTC)
HOSTILE = "boom\x1b[2J\x1b]0;pwned\x07\r\nPhase:      Succeeded\u202e"
CONTROL = [chr(c) for c in [*range(0x00, 0x0A), *range(0x0B, 0x20), 0x7F, 0x9B]] + ["\u202e"]


def body() -> dict[str, Any]:
    return {
        "metadata": {"name": "song-analyzer", "namespace": "ml"},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [{"name": "app", "image": "modeldeploy/song-analyzer:2"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 10}, {"setWeight": 100}]}},
        },
        "status": {
            "phase": "Paused",
            "message": HOSTILE,
            "stableRevision": "7c9f12ab34",
            "canaryRevision": "41ab98cd01",
            "canaryWeight": 10,
            "currentStep": 0,
            "analysis": [{"name": "error-rate", "verdict": "Inconclusive", "message": HOSTILE,
                          "time": "2026-11-23T02:59:48Z"}],
            "history": [{"revision": "41ab98cd01", "outcome": "Aborted", "reason": HOSTILE,
                         "time": "2026-11-23T02:58:00Z"}],
            "conditions": [{"type": "Ready", "status": "False", "reason": "AnalysisInconclusive",
                            "message": HOSTILE, "lastTransitionTime": "2026-11-23T02:58:00Z"}],
        },
    }


EVENTS = [{"type": "Warning", "reason": "AnalysisInconclusive", "message": HOSTILE,
           "lastTimestamp": "2026-11-23T02:59:00Z"}]


def assert_clean(text: str) -> None:
    assert not [c for c in CONTROL if c in text], repr(text)
    assert "boom" in text, "the message itself is still shown"


def test_status_prints_messages_conditions_and_events_without_control_characters() -> None:
    text = cli.render_status(body(), [], EVENTS, NOW)
    assert_clean(text)
    assert [line for line in text.splitlines() if line.startswith("Phase:")] == ["Phase:      Paused"], (
        "a line break in a message cannot fake a line of the output"
    )


def test_history_and_list_print_without_control_characters() -> None:
    assert_clean(cli.render_history(body(), NOW))
    assert_clean(cli.render_list([body()]))

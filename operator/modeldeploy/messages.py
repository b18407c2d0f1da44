"""Text the operator writes for people: bounded in size, free of control characters.

Base layer (like spec.py): the engine, the shells and the adapters all use it, so every
message the operator writes goes through :func:`bounded`, the one place text is cut:

- ``status.message`` and every condition's message: :data:`STATUS_MESSAGE_MAX` (4 KiB).
  Kubernetes refuses a condition message over 32768 bytes (the CRD says so too), and a
  ModelDeployment has a status message and four conditions that usually repeat it; 4 KiB
  keeps the whole status far below the limit and still reads in `kubectl describe`.
- per-metric messages (``status.analysis[].message``), history reasons and steps, the
  pause reason: :data:`DETAIL_MAX` (1 KiB).
- Event messages: :data:`EVENT_MESSAGE_MAX` (1 KiB), what the API server keeps of one.
- text reflected from a metric provider (an error body, series labels):
  :data:`REFLECTED_MAX` (256 bytes). Status is readable by the `view` role, so text from
  outside the cluster is kept to what an SRE needs to recognise the problem.

Limits count UTF-8 bytes, as Kubernetes does; a cut never splits a character and says
how much was cut. Control characters (C0, DEL, C1, and the bidirectional overrides a
terminal would obey) never reach status, Events or the CLI's output: tabs and line breaks
become spaces, the rest is dropped, so a hostile error body cannot rewrite a terminal
(`modeldeploy status`, `kubectl describe`) or break a table into lines.

Both functions are idempotent, so status written from bounded text compares equal to the
same status bounded again on the next tick (no write at rest).
"""

from __future__ import annotations

import re

from modeldeploy import spec as s

STATUS_MESSAGE_MAX = 4096
DETAIL_MAX = 1024
EVENT_MESSAGE_MAX = 1024
REFLECTED_MAX = 256

_SPACES = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]")
# C0 (without the spaces above), DEL, C1, and the bidi embeddings/overrides/isolates.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` without control characters: line breaks and tabs become spaces."""
    return _CONTROL.sub("", _SPACES.sub(" ", text))


def bounded(text: str, limit: int) -> str:
    """``text`` made printable and cut to at most ``limit`` UTF-8 bytes, saying what was cut."""
    text = printable(text)
    data = text.encode()
    if len(data) <= limit:
        return text
    marker = f"… (cut from {len(data)} bytes)"
    room = limit - len(marker.encode())
    if room <= 0:
        return data[:limit].decode(errors="ignore")
    return data[:room].decode(errors="ignore").rstrip() + marker


def bounded_status(status: s.ModelDeploymentStatus) -> s.ModelDeploymentStatus:
    """``status`` with every message for people within its limit (what the operator writes)."""

    def cut(text: str | None, limit: int) -> str | None:
        return None if text is None else bounded(text, limit)

    return status.model_copy(update={
        "message": cut(status.message, STATUS_MESSAGE_MAX),
        "pause_reason": cut(status.pause_reason, DETAIL_MAX),
        "conditions": [
            c.model_copy(update={"message": bounded(c.message, STATUS_MESSAGE_MAX)})
            for c in status.conditions
        ],
        "analysis": [
            m.model_copy(update={"message": bounded(m.message, DETAIL_MAX)}) for m in status.analysis
        ],
        "history": [
            h.model_copy(update={
                "reason": bounded(h.reason, DETAIL_MAX),
                "steps": [bounded(step, DETAIL_MAX) for step in h.steps],
            })
            for h in status.history
        ],
    })

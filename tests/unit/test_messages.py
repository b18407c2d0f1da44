"""The one place text for people is cut and cleaned (``modeldeploy.messages``)."""

from __future__ import annotations

import pytest
from modeldeploy.messages import EVENT_MESSAGE_MAX, bounded, printable

CONTROL = [chr(c) for c in [*range(0x00, 0x20), 0x7F, 0x9B]] + ["\u202e", "\u2066"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text stays", "plain text stays"),
        ("line\nbreaks\r\nand\ttabs", "line breaks  and tabs"),
        ("\x1b[2J\x1b[31mred\x1b[0m", "[2J[31mred[0m"),
        ("bell\x07 and nul\x00", "bell and nul"),
        ("\u202etxt.exe", "txt.exe"),
        ("naïve café ✓", "naïve café ✓"),
    ],
    ids=["plain text is unchanged", "line breaks and tabs become spaces", "terminal escapes lose ESC",
         "other C0 controls are dropped", "bidi overrides are dropped", "non-ASCII text is kept"],
)
def test_printable_text_cannot_drive_a_terminal(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_a_long_text_is_cut_to_the_byte_limit_on_a_character_boundary_saying_so() -> None:
    text = "é" * 5000  # 10,000 bytes
    cut = bounded(text, EVENT_MESSAGE_MAX)
    assert len(cut.encode()) <= EVENT_MESSAGE_MAX
    assert cut.startswith("é" * 400) and cut.endswith("(cut from 10000 bytes)")
    cut.encode().decode()  # whole characters only


@pytest.mark.parametrize("text", ["short", "x" * 5000, "\x1b" * 3000 + "y" * 3000, "é" * 1023],
                         ids=["short", "long", "long once cleaned", "multi-byte at the limit"])
def test_bounding_twice_changes_nothing(text: str) -> None:
    """Status written from bounded text must compare equal on the next tick (no write at rest)."""
    once = bounded(text, 1024)
    assert bounded(once, 1024) == once
    assert not any(c in once for c in CONTROL)

"""Every value of the chart is documented, and the strict schema describes exactly those values."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from chart_harness import CHART

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(?P<rest>.*)$")


def undocumented_keys(text: str) -> list[str]:
    """Dotted paths of values with no `# --` comment on them or on an enclosing key.

    A key whose children are maps of their own (``image:``) needs no comment when every child
    has one; any other key (a leaf, or a map given as a default like ``resources:``) must carry
    a ``# --`` comment block right above it, or sit inside a key that does.
    """
    lines = text.splitlines()
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    missing: list[str] = []
    for number, line in enumerate(lines):
        match = KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inherited = any(documented for _, _, documented in stack)
        comment: list[str] = []
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#"):
            comment.insert(0, lines[above].strip())
            above -= 1
        documented = bool(comment) and comment[0].startswith("# --")
        path = ".".join([k for _, k, _ in stack] + [match["key"]])
        has_children = match["rest"].strip() == "" and _next_key_indent(lines, number) > indent
        if not (documented or inherited or has_children):
            missing.append(path)
        stack.append((indent, match["key"], documented or inherited))
    return missing


def _next_key_indent(lines: list[str], number: int) -> int:
    for line in lines[number + 1 :]:
        if line.strip() and not line.strip().startswith("#"):
            return len(line) - len(line.lstrip(" "))
    return -1


def test_every_value_has_a_doc_comment() -> None:
    assert undocumented_keys(VALUES_TEXT) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("# -- documented\na: 1\n", [], id="a leaf with a doc comment passes"),
        pytest.param("a: 1\n", ["a"], id="a bare leaf is reported"),
        pytest.param("# plain comment\na: 1\n", ["a"], id="a comment without the marker is reported"),
        pytest.param(
            "p:\n  # -- doc\n  b: 1\n  c: {}\n",
            ["p.c"],
            id="an undocumented child of an undocumented parent is reported",
        ),
        pytest.param("# -- doc\np:\n  b: 1\n", [], id="children of a documented default pass"),
    ],
)
def test_the_doc_checker_itself_catches_missing_comments(text: str, expected: list[str]) -> None:
    assert undocumented_keys(text) == expected


def _schema_mismatches(values: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    props: dict[str, Any] = schema.get("properties", {})
    problems: list[str] = []
    declared = set(props) - {"global"}
    for key in sorted(set(values) ^ declared):
        where = "values.yaml only" if key in values else "schema only"
        problems.append(f"{path}{key} ({where})")
    for key in sorted(set(values) & declared):
        child = props[key]
        if "properties" in child and isinstance(values[key], dict):
            problems += _schema_mismatches(values[key], child, f"{path}{key}.")
    return problems


def test_schema_describes_exactly_the_values_in_values_yaml() -> None:
    assert _schema_mismatches(VALUES, SCHEMA, "") == []


def _strict_objects(schema: dict[str, Any], path: str) -> list[str]:
    """Paths of schema objects with declared properties that still allow unknown keys."""
    lax = []
    if "properties" in schema and schema.get("additionalProperties") is not False:
        lax.append(path or "<root>")
    for key, child in schema.get("properties", {}).items():
        lax += _strict_objects(child, f"{path}.{key}" if path else key)
    return lax


def test_schema_rejects_unknown_keys_at_every_declared_level() -> None:
    assert _strict_objects(SCHEMA, "") == []


def test_every_schema_property_is_described() -> None:
    def undescribed(schema: dict[str, Any], path: str) -> list[str]:
        out = []
        for key, child in schema.get("properties", {}).items():
            where = f"{path}.{key}" if path else key
            if not child.get("description"):
                out.append(where)
            out += undescribed(child, where)
        return out

    assert undescribed(SCHEMA, "") == []

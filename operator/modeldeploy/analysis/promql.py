"""PromQL templates: {{name}}, {{namespace}}, {{revision}}, {{stableRevision}}, {{interval}}.

Values are inserted safely: the identity placeholders are meant to sit inside a label
matcher's double quotes (``modeldeploy_revision="{{revision}}"``) and are escaped as
PromQL string literals; ``{{interval}}`` is a duration already checked against the
duration pattern. Unknown placeholders are refused when the spec is validated
(spec.Metric), so none can reach a query; ``render`` refuses them again, loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modeldeploy import spec as s

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


@dataclass(frozen=True)
class QueryContext:
    name: str
    namespace: str
    revision: str
    stable_revision: str
    interval: str


def escape_label_value(value: str) -> str:
    """Escape a value for a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(template: str, context: QueryContext) -> str:
    if not re.fullmatch(s.DURATION_PATTERN, context.interval):
        raise ValueError(f"interval {context.interval!r} is not a duration")
    values = {
        "name": escape_label_value(context.name),
        "namespace": escape_label_value(context.namespace),
        "revision": escape_label_value(context.revision),
        "stableRevision": escape_label_value(context.stable_revision),
        "interval": context.interval,
    }

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ValueError(f"unknown placeholder {{{{{key}}}}} in query")
        return values[key]

    return _PLACEHOLDER.sub(substitute, template)

"""The API server's audit log, read back: who asked for what, counted by user agent.

The sandbox's API server writes ``<dir>/audit.log``, one JSON object a line per
request: ``ts`` (Unix seconds), ``verb``, ``apiGroup``, ``resource``, ``subresource``,
``namespace``, ``name``, ``code``, ``userAgent``, ``requestURI`` (plus
``nonResourceURL`` for discovery and health paths). A watch is logged once, when its
stream opens. ::

    from mdsandbox.audit import read_audit, summarize
    records = read_audit(".sandbox/audit.log", since=time.time() - 60,
                         user_agent_prefix="modeldeploy-operator/")
    summarize(records)["modeldeploy-operator/0.3.0"]["writes"]

``hack/sandbox audit [--dir DIR] [--since SECONDS_AGO] [--agent PREFIX] [--json]``
prints the same as a table. The operator's user agent is
``modeldeploy-operator/<version>``; kubectl's ``kubectl/<version> (...)``; the
sandbox's own components send aiohttp's default (``Python/3.x aiohttp/...``).

Counting: reads are ``get`` and ``list``, writes are ``create``, ``update``, ``patch``,
``delete`` and ``deletecollection``, watches are watch opens; anything else (a Service
proxy's other methods) is ``other``. Non-resource requests (``/version``, discovery)
are GETs, so reads, as kube-apiserver's audit counts them. Each summary also has
``total`` and one count per verb.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

READ_VERBS = frozenset({"get", "list"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
WATCH_VERBS = frozenset({"watch"})
COLUMNS = ("reads", "writes", "watches", "other", "total")


def read_audit(
    path: str | Path,
    since: float | None = None,
    until: float | None = None,
    user_agent_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """The records of ``path`` with ``since <= ts < until`` (Unix seconds; None: no
    bound) whose userAgent starts with ``user_agent_prefix``, in the file's order.

    A line that is not a JSON object (the last one, while the server writes it) is
    skipped. A missing file is an error: the path is likely wrong.
    """
    records: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            ts = record.get("ts")
            if not isinstance(ts, int | float):
                continue
            if since is not None and ts < since:
                continue
            if until is not None and ts >= until:
                continue
            if user_agent_prefix and not str(record.get("userAgent", "")).startswith(
                user_agent_prefix
            ):
                continue
            records.append(record)
    return records


def verb_class(verb: str) -> str:
    """``reads``, ``writes``, ``watches`` or ``other``."""
    if verb in READ_VERBS:
        return "reads"
    if verb in WRITE_VERBS:
        return "writes"
    if verb in WATCH_VERBS:
        return "watches"
    return "other"


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{user_agent: {"reads", "writes", "watches", "other", "total", <verb>: n}}``."""
    summary: dict[str, dict[str, int]] = {}
    for record in records:
        agent = str(record.get("userAgent", ""))
        verb = str(record.get("verb", ""))
        counts = summary.setdefault(agent, dict.fromkeys(COLUMNS, 0))
        counts[verb_class(verb)] += 1
        counts["total"] += 1
        counts[verb] = counts.get(verb, 0) + 1
    return summary


def format_table(summary: dict[str, dict[str, int]]) -> str:
    """The summary as a text table, busiest user agent first, with a total row."""
    width = max([len("USER AGENT"), *(len(agent or "(none)") for agent in summary)])
    header = f"{'USER AGENT':<{width}}" + "".join(f"  {c.upper():>7}" for c in COLUMNS)
    lines = [header]
    ordered = sorted(summary.items(), key=lambda item: (-item[1]["total"], item[0]))
    for agent, counts in ordered:
        lines.append(f"{agent or '(none)':<{width}}" + "".join(f"  {counts[c]:>7}" for c in COLUMNS))
    totals = {c: sum(counts[c] for counts in summary.values()) for c in COLUMNS}
    lines.append(f"{'TOTAL':<{width}}" + "".join(f"  {totals[c]:>7}" for c in COLUMNS))
    return "\n".join(lines)

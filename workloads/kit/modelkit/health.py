"""Health checks: each returns a :class:`Check`; the worst one decides the status.

``ok`` everywhere → healthy (200); any ``degraded`` → degraded (200: still routable);
any ``failing`` (or a check that raises) → unhealthy (503).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger("modelkit.health")

CheckStatus = Literal["ok", "degraded", "failing"]
HealthCheck = Callable[[], "Check | Awaitable[Check]"]


@dataclass(frozen=True)
class Check:
    status: CheckStatus
    detail: str = ""

    @classmethod
    def ok(cls, detail: str = "") -> Check:
        return cls("ok", detail)

    @classmethod
    def degraded(cls, detail: str) -> Check:
        return cls("degraded", detail)

    @classmethod
    def failing(cls, detail: str) -> Check:
        return cls("failing", detail)


async def run_checks(checks: Mapping[str, HealthCheck]) -> tuple[int, dict[str, Any]]:
    """Run every check; return the HTTP status and the /health body."""
    results: dict[str, Check] = {}
    for name, check in checks.items():
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            results[name] = result
        except Exception as error:  # a broken check must not break /health
            log.exception("health check raised", extra={"fields": {"check": name}})
            results[name] = Check.failing(f"check raised {type(error).__name__}: {error}")
    statuses = {result.status for result in results.values()}
    if "failing" in statuses:
        overall, code = "unhealthy", 503
    elif "degraded" in statuses:
        overall, code = "degraded", 200
    else:
        overall, code = "healthy", 200
    body = {
        "status": overall,
        "checks": {name: {"status": r.status, "detail": r.detail} for name, r in results.items()},
    }
    return code, body

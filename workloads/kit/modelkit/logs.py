"""Structured logs: one JSON object per line on stderr.

Extra fields go in ``extra={"fields": {...}}``; the current request id (set by the app's
middleware in a context variable) is added to every line logged while serving a request.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "modelkit_request_id", default=None
)


# What a provider's error text may carry that must not be kept, even in a log: API keys
# (OpenAI's sk-/sk-proj-/rk- forms, masked or not), bearer tokens, key=value credentials.
_SECRETS = re.compile(
    r"(?P<key>\b(?:sk|rk|pk|sess)-[A-Za-z0-9_\-*.]{4,})"
    r"|(?P<bearer>\b[Bb]earer\s+)[A-Za-z0-9_\-.=+/*]+"
    r"|(?P<pair>\b(?:api[_-]?key|token|secret|password)\b\s*[:=]\s*)[^\s,;&]+",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
REDACTED = "[redacted]"


def redact(text: str, *, limit: int = 500) -> str:
    """``text`` fit for a log line: credentials replaced, control characters folded, capped."""

    def replace(match: re.Match[str]) -> str:
        if match.group("key"):
            return REDACTED
        return (match.group("bearer") or match.group("pair") or "") + REDACTED

    cleaned = _CONTROL.sub(" ", _SECRETS.sub(replace, text))
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            line["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger (uvicorn's included) through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The kit logs each request itself, with the request id; uvicorn's access log would repeat it.
    logging.getLogger("uvicorn.access").disabled = True

"""OpenAI-shaped errors: ``{"error": {"message", "type", "code", "param"}}``.

A handler raises :class:`ServiceError` (or one of the helpers below); the app factory turns
it into the JSON body, the status code and headers, and counts the request under the
error's ``outcome``. When ``outcome`` is not given it follows the status code: 2xx success,
504 timeout, other 4xx rejected (the caller's fault), 5xx error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "rate_limit_error",
    "upstream_error",
    "timeout_error",
    "not_found_error",
    "server_error",
]
Outcome = Literal["success", "error", "timeout", "rejected"]


def error_body(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


def outcome_for_status(status: int) -> Outcome:
    """Default outcome of a response by status code (DESIGN.md's metric contract)."""
    if status < 400:
        return "success"
    if status in (408, 504):
        return "timeout"
    if status < 500:
        return "rejected"
    return "error"


class ServiceError(Exception):
    """An error answered to the caller in the OpenAI shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: ErrorType,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        outcome: Outcome | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.outcome: Outcome = outcome or outcome_for_status(status)

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.code, self.param)


def invalid_request(
    message: str, *, param: str | None = None, code: str | None = None
) -> ServiceError:
    """400 invalid_request_error; ``message`` should start with the field name."""
    return ServiceError(
        400, message, error_type="invalid_request_error", code=code or "invalid_value", param=param
    )


def not_found(message: str) -> ServiceError:
    return ServiceError(404, message, error_type="not_found_error", code="not_found")


def rate_limited(
    message: str, *, retry_after_s: int, code: str = "rate_limited", outcome: Outcome | None = None
) -> ServiceError:
    """429 rate_limit_error with Retry-After (whole seconds, at least 1)."""
    return ServiceError(
        429,
        message,
        error_type="rate_limit_error",
        code=code,
        headers={"Retry-After": str(max(1, int(retry_after_s)))},
        outcome=outcome,
    )


def upstream_error(message: str, *, code: str = "upstream_error") -> ServiceError:
    """502 upstream_error: the model provider failed or answered something unusable."""
    return ServiceError(502, message, error_type="upstream_error", code=code, outcome="error")


def upstream_timeout(message: str) -> ServiceError:
    """504 timeout_error: the model provider did not answer within the configured timeout."""
    return ServiceError(
        504, message, error_type="timeout_error", code="upstream_timeout", outcome="timeout"
    )

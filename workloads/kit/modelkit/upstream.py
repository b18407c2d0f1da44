"""Mapping openai SDK exceptions to the caller-facing error and the metric outcome.

=================================  ======  =====================  ===============
upstream failure                   status  error type             outcome
=================================  ======  =====================  ===============
APITimeoutError                    504     timeout_error          timeout
RateLimitError (upstream 429)      429     rate_limit_error       error
APIStatusError 400/413/422         400     invalid_request_error  rejected
APIStatusError other (401, 5xx..)  502     upstream_error         error
APIConnectionError                 502     upstream_error         error
any other openai error             502     upstream_error         error
=================================  ======  =====================  ===============

An upstream 429 is counted as ``error``, not ``rejected``: the caller did nothing wrong, the
service could not deliver (a canary whose new model id hits a lower rate limit must show up in
its error rate). An upstream 400 is the caller's content being refused (e.g. a content policy
on a prompt), so it is ``rejected``. An upstream 401/403/404 is the service's own
misconfiguration (key, model id) and is an ``error``.
"""

from __future__ import annotations

import openai

from modelkit.errors import ServiceError, rate_limited, upstream_error, upstream_timeout

_CALLER_FAULT_STATUSES = frozenset({400, 413, 422})


def _retry_after_seconds(error: openai.APIStatusError, default: int = 1) -> int:
    raw = error.response.headers.get("retry-after") if error.response is not None else None
    try:
        return max(1, int(float(raw))) if raw is not None else default
    except ValueError:
        return default


def _upstream_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return str(error.message)


def service_error_from_openai(error: openai.OpenAIError, *, model: str) -> ServiceError:
    """The OpenAI-shaped error to answer for a failed upstream call to ``model``."""
    if isinstance(error, openai.APITimeoutError):
        return upstream_timeout(f"the model provider did not answer in time (model {model})")
    if isinstance(error, openai.RateLimitError):
        return rate_limited(
            f"the model provider is rate limiting model {model}; retry later",
            retry_after_s=_retry_after_seconds(error),
            code="upstream_rate_limited",
            outcome="error",
        )
    if isinstance(error, openai.APIStatusError):
        detail = _upstream_message(error)
        if error.status_code in _CALLER_FAULT_STATUSES:
            return ServiceError(
                400,
                f"the model provider refused the request: {detail}",
                error_type="invalid_request_error",
                code="upstream_rejected",
                outcome="rejected",
            )
        return upstream_error(
            f"the model provider answered {error.status_code} for model {model}: {detail}",
            code=f"upstream_status_{error.status_code}",
        )
    if isinstance(error, openai.APIConnectionError):
        return upstream_error(
            f"could not reach the model provider for model {model}", code="upstream_unreachable"
        )
    return upstream_error(f"the model provider call failed for model {model}: {error}")


def upstream_outcome(error: ServiceError) -> str:
    """model_upstream_requests_total's outcome label for a failed call: timeout or error."""
    return "timeout" if error.outcome == "timeout" else "error"

"""Calling the model provider: the client, the overall deadline, and mapping its failures.

=================================  ======  =====================  ========  ========================
upstream failure                   status  error type             outcome   code
=================================  ======  =====================  ========  ========================
no answer within the deadline      504     timeout_error          timeout   upstream_timeout
RateLimitError (upstream 429)      429     rate_limit_error       error     upstream_rate_limited
APIStatusError 400/413/422         400     invalid_request_error  rejected  upstream_rejected
APIStatusError 401/403/404         502     upstream_error         error     upstream_status_<n>
APIStatusError other (5xx..)       502     upstream_error         error     upstream_status_<n>
APIConnectionError                 502     upstream_error         error     upstream_unreachable
an answer that is not the schema   502     upstream_error         error     invalid_upstream_answer
any other openai error             502     upstream_error         error     upstream_error
=================================  ======  =====================  ========  ========================

An upstream 429 is counted as ``error``, not ``rejected``: the caller did nothing wrong, the
service could not deliver (a canary whose new model id hits a lower rate limit must show up in
its error rate). An upstream 400 is the caller's content being refused (e.g. a content policy
on a prompt), so it is ``rejected``. An upstream 401/403/404 is the service's own
misconfiguration (key, model id) and is an ``error``.

The caller gets a fixed message per class (:data:`UPSTREAM_MESSAGES`, naming only the model
the service called) and the request id (``X-Request-ID`` and ``error.request_id``); the
provider's own text can carry secrets (``Incorrect API key provided: sk-proj-…``), internal
names or the prompts of others, so it goes to the service log only, redacted
(:func:`modelkit.logs.redact`), under that request id.

:func:`upstream_client` is the one way services build their openai client: no SDK retries (a
retry would multiply the timeout and hide failures from the canary's metrics) and strict
response validation, so an answer that is not what the API defines (a text/html 200, a
``usage.prompt_tokens`` of null) is an ``APIResponseValidationError`` — a 502 — instead of an
object that fails later as a 500. :func:`upstream_deadline` bounds a whole call: the SDK's
timeout is per read, so a provider trickling a byte a second would otherwise never time out.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

from modelkit.errors import ServiceError, rate_limited, upstream_error, upstream_timeout
from modelkit.jsonbody import find_unforwardable, shown_path
from modelkit.logs import redact

if TYPE_CHECKING:
    import openai

AnswerT = TypeVar("AnswerT")

log = logging.getLogger("modelkit.upstream")

_CALLER_FAULT_STATUSES = frozenset({400, 413, 422})
_MISCONFIGURATION_STATUSES = frozenset({401, 403, 404})

# One message per class of failure; ``{model}`` is the model the service called.
UPSTREAM_MESSAGES: dict[str, str] = {
    "timeout": "the model provider did not answer within the service's deadline (model "
    "{model}); retry later",
    "rate_limited": "the model provider is rate limiting model {model}; retry after "
    "Retry-After seconds",
    "rejected": "the model provider refused the request for model {model}; change its "
    "content (the provider's usage policies apply)",
    "misconfigured": "the model provider refused this service's credentials or model id "
    "(model {model}); its operators must fix its configuration",
    "failed": "the model provider failed to answer for model {model}; retry later",
    "unreachable": "could not reach the model provider for model {model}; retry later",
    "invalid_answer": "the model provider's answer for model {model} was not usable; "
    "retry later",
}


def upstream_message(failure: str, model: str) -> str:
    """The fixed caller-facing message of a failure class (a key of UPSTREAM_MESSAGES)."""
    return UPSTREAM_MESSAGES[failure].format(model=model)


def upstream_client(*, base_url: str | None, api_key: str, timeout_s: float) -> openai.AsyncOpenAI:
    """The openai client of a service: no retries, strict response validation (see above)."""
    import openai  # here, not at the top: a service with no provider (fake-upstream, a
    # pod started in the sandbox) should not pay the SDK's second of import time

    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        timeout=timeout_s,
        max_retries=0,
        _strict_response_validation=True,
    )


@asynccontextmanager
async def upstream_deadline(timeout_s: float, *, model: str) -> AsyncIterator[None]:
    """Bound the whole upstream call in the block to ``timeout_s``: 504 after it."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError:
        log.warning(
            "upstream call passed its deadline",
            extra={"fields": {"model": model, "deadline_s": timeout_s}},
        )
        raise upstream_timeout(upstream_message("timeout", model)) from None


def invalid_answer(model: str, problem: str) -> ServiceError:
    """The 502 for an answer the service cannot use; ``problem`` goes to the log only."""
    log.warning(
        "unusable upstream answer", extra={"fields": {"model": model, "problem": redact(problem)}}
    )
    return upstream_error(upstream_message("invalid_answer", model), code="invalid_upstream_answer")


def forwardable(answer: AnswerT, *, model: str) -> AnswerT:
    """``answer`` (or what the service built from it) when JSON in UTF-8 can carry it all;
    else a 502: a provider's ``1e999`` or lone surrogate would otherwise fail as a 500 while
    the service encodes its own answer."""
    path = find_unforwardable(answer)
    if path is not None:
        raise invalid_answer(
            model, f"{shown_path(path) or 'the answer'}: not encodable as JSON in UTF-8"
        )
    return answer


def _retry_after_seconds(error: openai.APIStatusError, default: int = 1) -> int:
    raw = error.response.headers.get("retry-after") if error.response is not None else None
    try:
        return max(1, int(float(raw))) if raw is not None else default
    except (ValueError, OverflowError):  # "inf" overflows int()
        return default


def _provider_text(error: openai.OpenAIError) -> str:
    """What the provider said, for the log (never for the caller)."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return str(getattr(error, "message", None) or error)


def _log_failure(error: openai.OpenAIError, model: str, mapped: ServiceError) -> None:
    import openai  # loaded already: ``error`` is one of its exceptions

    response = getattr(error, "response", None)
    fields: dict[str, object] = {
        "model": model,
        "failure": type(error).__name__,
        "code": mapped.code,
        "provider_message": redact(_provider_text(error)),
    }
    if isinstance(error, openai.APIStatusError | openai.APIResponseValidationError):
        fields["upstream_status"] = error.status_code
    if response is not None and response.headers.get("x-request-id"):
        fields["upstream_request_id"] = redact(response.headers["x-request-id"], limit=128)
    log.warning("upstream call failed", extra={"fields": fields})


def as_openai_error(error: BaseException) -> openai.OpenAIError | None:
    """``error`` when it is the openai SDK's, else None (without importing the SDK: no
    SDK error can exist where it was never imported)."""
    sdk = sys.modules.get("openai")
    return error if sdk is not None and isinstance(error, sdk.OpenAIError) else None


def service_error_from_openai(error: openai.OpenAIError, *, model: str) -> ServiceError:
    """The OpenAI-shaped error to answer for a failed upstream call to ``model``.

    The provider's text is logged (redacted), never put in the answer.
    """
    mapped = _map(error, model)
    _log_failure(error, model, mapped)
    return mapped


def _map(error: openai.OpenAIError, model: str) -> ServiceError:
    import openai  # loaded already: ``error`` is one of its exceptions

    if isinstance(error, openai.APITimeoutError):
        return upstream_timeout(upstream_message("timeout", model))
    if isinstance(error, openai.RateLimitError):
        return rate_limited(
            upstream_message("rate_limited", model),
            retry_after_s=_retry_after_seconds(error),
            code="upstream_rate_limited",
            outcome="error",
        )
    if isinstance(error, openai.APIStatusError):
        if error.status_code in _CALLER_FAULT_STATUSES:
            return ServiceError(
                400,
                upstream_message("rejected", model),
                error_type="invalid_request_error",
                code="upstream_rejected",
                outcome="rejected",
            )
        failure = "misconfigured" if error.status_code in _MISCONFIGURATION_STATUSES else "failed"
        return upstream_error(
            upstream_message(failure, model), code=f"upstream_status_{error.status_code}"
        )
    if isinstance(error, openai.APIConnectionError):
        return upstream_error(upstream_message("unreachable", model), code="upstream_unreachable")
    if isinstance(error, openai.APIResponseValidationError):
        return upstream_error(
            upstream_message("invalid_answer", model), code="invalid_upstream_answer"
        )
    return upstream_error(upstream_message("failed", model))


def upstream_outcome(error: ServiceError) -> str:
    """model_upstream_requests_total's outcome label for a failed call: timeout or error."""
    return "timeout" if error.outcome == "timeout" else "error"

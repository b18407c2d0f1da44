"""modelkit: what every model service repeats (see workloads/kit/README.md for the API)."""

from modelkit.app import ServiceMiddleware, create_app, metrics_of
from modelkit.errors import (
    ErrorType,
    Outcome,
    ServiceError,
    error_body,
    invalid_request,
    not_found,
    outcome_for_status,
    rate_limited,
    upstream_error,
    upstream_timeout,
)
from modelkit.health import Check, HealthCheck
from modelkit.jsonbody import decode_json, request_json
from modelkit.limits import ConcurrencyLimiter
from modelkit.logs import configure_logging, redact, request_id_var
from modelkit.metrics import DURATION_BUCKETS, OTHER_MODEL, ServiceMetrics, UpstreamHealth
from modelkit.pricing import TOKEN_PRICES, TokenPrice, cost_usd, price_for
from modelkit.runner import run, serve
from modelkit.settings import (
    ConfigurationError,
    ServiceSettings,
    load_settings,
    parse_settings,
)
from modelkit.upstream import (
    UPSTREAM_MESSAGES,
    service_error_from_openai,
    upstream_client,
    upstream_deadline,
    upstream_message,
)
from modelkit.usage import (
    COST_HEADER,
    TOKENS_HEADER,
    RequestUsage,
    current_usage,
    request_usage_var,
)

__all__ = [
    "COST_HEADER",
    "DURATION_BUCKETS",
    "OTHER_MODEL",
    "TOKENS_HEADER",
    "TOKEN_PRICES",
    "UPSTREAM_MESSAGES",
    "Check",
    "ConcurrencyLimiter",
    "ConfigurationError",
    "ErrorType",
    "HealthCheck",
    "Outcome",
    "RequestUsage",
    "ServiceError",
    "ServiceMetrics",
    "ServiceMiddleware",
    "ServiceSettings",
    "TokenPrice",
    "UpstreamHealth",
    "configure_logging",
    "cost_usd",
    "create_app",
    "current_usage",
    "decode_json",
    "error_body",
    "invalid_request",
    "load_settings",
    "metrics_of",
    "not_found",
    "outcome_for_status",
    "parse_settings",
    "price_for",
    "rate_limited",
    "redact",
    "request_id_var",
    "request_json",
    "request_usage_var",
    "run",
    "serve",
    "service_error_from_openai",
    "upstream_client",
    "upstream_deadline",
    "upstream_error",
    "upstream_message",
    "upstream_timeout",
]

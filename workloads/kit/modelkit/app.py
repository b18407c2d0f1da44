"""The app factory: a FastAPI app with the routes, errors, limits and metrics every service shares.

What :func:`create_app` adds, in the order a request meets it (one pure-ASGI middleware,
no ``BaseHTTPMiddleware``, so streaming and cancellation behave):

1. a request id: the incoming ``X-Request-ID`` when it is sane (≤ 128 printable ASCII
   characters), a new one otherwise; echoed on every response and put on every log line;
2. ``X-API-Key`` auth when ``API_KEY`` is set (not on /health, /metrics): 401
   authentication_error;
3. the request size limit (``MAX_REQUEST_BYTES``): 413 from Content-Length at once, or while
   reading a chunked body (the body is buffered up to the limit and replayed to the app);
4. the route itself, with FastAPI's errors rewritten in the OpenAI shape (422 → 400
   invalid_request_error naming the field, 404 not_found_error, 405 with Allow);
5. a catch-all: an unexpected exception is logged with its traceback and answered 500
   ``server_error`` without one (the only error type outside DESIGN.md's six, as the
   OpenAI API itself does for its own bugs);
6. timing and counting in ``model_requests_total``/``model_request_duration_seconds`` under
   the route template (``/items/{id}``, not the raw path; ``unmatched`` for unknown paths),
   and one JSON log line per request. /health, /metrics and the service's own
   ``uncounted_paths`` (a health alias, a stats page) are logged but never counted: they
   are not model requests, and probe or scrape successes would dilute the error rate the
   canary analysis judges (and make a preview with no real traffic look healthy).
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelkit.errors import ErrorType, ServiceError, error_body, outcome_for_status
from modelkit.health import HealthCheck, run_checks
from modelkit.logs import request_id_var
from modelkit.metrics import ServiceMetrics
from modelkit.settings import ServiceSettings

access_log = logging.getLogger("modelkit.access")
log = logging.getLogger("modelkit.app")

UNAUTHENTICATED_PATHS = frozenset({"/health", "/metrics"})
UNCOUNTED_PATHS = frozenset({"/health", "/metrics"})
OUTCOME_STATE_KEY = "modelkit_outcome"
_METHODS_WITHOUT_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_BODY_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def _sane_request_id(value: str | None) -> str | None:
    if value and len(value) <= 128 and value.isascii() and value.isprintable():
        return value
    return None


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


class ServiceMiddleware:
    """Request id, auth, size limit, catch-all, timing and counting (see module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        uncounted_paths: frozenset[str] = UNCOUNTED_PATHS,
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.uncounted_paths = uncounted_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        request_id = _sane_request_id(headers.get("x-request-id")) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        state: dict[str, Any] = scope.setdefault("state", {})
        response_status = 0

        async def send_with_request_id(message: Message) -> None:
            nonlocal response_status
            if message["type"] == "http.response.start":
                response_status = int(message["status"])
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            early_error = self._authenticate(scope, headers)
            replay: Receive | None = None
            if early_error is None:
                early_error, replay = await self._read_limited_body(scope, headers, receive)
            if early_error is not None:
                state[OUTCOME_STATE_KEY] = early_error.outcome
                await _error_response(early_error)(scope, receive, send_with_request_id)
            else:
                await self.app(scope, replay or receive, send_with_request_id)
        except Exception:
            log.exception(
                "unhandled exception while serving a request",
                extra={"fields": {"method": scope.get("method"), "path": scope.get("path")}},
            )
            state[OUTCOME_STATE_KEY] = "error"
            if response_status == 0:
                response = JSONResponse(
                    error_body("internal error; see the service log", "server_error",
                               "internal_error"),
                    status_code=500,
                )  # fmt: skip
                await response(scope, receive, send_with_request_id)
        finally:
            self._record(scope, state, response_status, time.perf_counter() - started, request_id)
            request_id_var.reset(token)

    def _authenticate(self, scope: Scope, headers: Headers) -> ServiceError | None:
        expected = self.settings.api_key
        if expected is None or scope.get("path") in UNAUTHENTICATED_PATHS:
            return None
        given = headers.get("x-api-key")
        if given is not None and hmac.compare_digest(given.encode(), expected.encode()):
            return None
        message = (
            "X-API-Key header is missing; send the service's API key in X-API-Key"
            if given is None
            else "X-API-Key header is not the service's API key"
        )
        return ServiceError(
            401, message, error_type="authentication_error", code="invalid_api_key"
        )

    async def _read_limited_body(
        self, scope: Scope, headers: Headers, receive: Receive
    ) -> tuple[ServiceError | None, Receive | None]:
        """Buffer the body up to the limit; return an error or a receive that replays it."""
        if scope.get("method") in _METHODS_WITHOUT_BODY and "content-length" not in headers:
            return None, None
        limit = self.settings.max_request_bytes
        too_large = ServiceError(
            413,
            f"request body is larger than the limit of {limit} bytes (MAX_REQUEST_BYTES)",
            error_type="invalid_request_error",
            code="request_too_large",
        )
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return too_large, None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, None  # client went away; let the app see the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large, None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, replay

    def _record(
        self, scope: Scope, state: dict[str, Any], status: int, duration_s: float, request_id: str
    ) -> None:
        path = scope.get("path", "")
        outcome = state.get(OUTCOME_STATE_KEY) or outcome_for_status(status or 500)
        route = _route_label(scope)
        if path not in self.uncounted_paths:
            self.metrics.observe_request(route, outcome, duration_s)
        access_log.info(
            "request",
            extra={
                "fields": {
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "path": path,
                    "route": route,
                    "status": status,
                    "outcome": outcome,
                    "duration_ms": round(duration_s * 1000, 1),
                }
            },
        )


def _validation_error(errors: Sequence[Any]) -> ServiceError:
    """FastAPI's 422 as a 400 naming the field(s): ``messages: field required``."""
    parts: list[str] = []
    first_param: str | None = None
    for item in errors[:5]:
        loc = [str(p) for p in item.get("loc", ())]
        if loc and loc[0] in _BODY_LOCATIONS:
            loc = loc[1:]
        if item.get("type") == "json_invalid":
            detail = (item.get("ctx") or {}).get("error", "")
            parts.append(f"request body is not valid JSON ({detail}); send a JSON object")
            continue
        param = ".".join(loc) if loc else None
        first_param = first_param or param
        msg = str(item.get("msg", "invalid value"))
        msg = msg[:1].lower() + msg[1:]
        parts.append(f"{param or 'request body'}: {msg}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return ServiceError(
        400,
        "; ".join(parts) or "invalid request",
        error_type="invalid_request_error",
        code="invalid_value",
        param=first_param,
    )


def _http_error(request: Request, exc: StarletteHTTPException) -> ServiceError:
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        return ServiceError(
            404,
            f"no route {request.method} {request.url.path}; see the service's README for its routes"
            if exc.detail == "Not Found"
            else str(exc.detail),
            error_type="not_found_error",
            code="not_found",
        )
    if exc.status_code == 405:
        allowed = headers.get("Allow") or headers.get("allow") or "?"
        return ServiceError(
            405,
            f"method {request.method} is not allowed on {request.url.path}; use {allowed}",
            error_type="invalid_request_error",
            code="method_not_allowed",
            headers=headers,
        )
    error_type: ErrorType = (
        "invalid_request_error" if exc.status_code < 500 else "server_error"
    )
    return ServiceError(
        exc.status_code, str(exc.detail), error_type=error_type, headers=headers
    )


def _error_and_outcome(request: Request, error: ServiceError) -> JSONResponse:
    request.state.modelkit_outcome = error.outcome
    return _error_response(error)


def create_app(
    settings: ServiceSettings,
    *,
    service: str,
    models: Sequence[str] = (),
    checks: Mapping[str, HealthCheck] | None = None,
    upstream_check: bool = True,
    metrics: ServiceMetrics | None = None,
    uncounted_paths: Sequence[str] = (),
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app with /health, /metrics, the middleware and the error handlers.

    ``models`` get ``model_info{model, version=APP_VERSION} 1``. ``checks`` are the service's
    health checks; ``upstream_check`` adds one reporting consecutive upstream failures.
    ``uncounted_paths`` are the service's own routes that are not model requests (a health
    alias, a stats page): like /health and /metrics they stay out of ``model_requests_total``.
    The app's ``state`` holds ``settings``, ``metrics`` (a :class:`ServiceMetrics` with its own
    registry) and ``health_checks`` (a dict the service may add to later).
    """
    metrics = metrics or ServiceMetrics()
    for model in models:
        metrics.set_model_info(model, settings.app_version)
    fastapi_kwargs.setdefault("docs_url", None)
    fastapi_kwargs.setdefault("redoc_url", None)
    app = FastAPI(title=service, version=settings.app_version, **fastapi_kwargs)
    health_checks: dict[str, HealthCheck] = {}
    if upstream_check:
        health_checks["upstream"] = metrics.upstream_health.check
    health_checks.update(checks or {})
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.health_checks = health_checks
    app.state.service = service

    async def on_service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return _error_and_outcome(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _error_and_outcome(request, _validation_error(exc.errors()))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return _error_and_outcome(request, _http_error(request, exc))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_middleware(ServiceMiddleware, settings=settings, metrics=metrics,
                       uncounted_paths=UNCOUNTED_PATHS | frozenset(uncounted_paths))

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        code, body = await run_checks(app.state.health_checks)
        return JSONResponse(body, status_code=code)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def metrics_of(request: Request) -> ServiceMetrics:
    """The app's :class:`ServiceMetrics` from inside a route."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics

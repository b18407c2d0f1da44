"""The app factory: a FastAPI app with the routes, errors, limits and metrics every service shares.

What :func:`create_app` adds, in the order a request meets it (one pure-ASGI middleware,
no ``BaseHTTPMiddleware``, so streaming and cancellation behave):

1. a request id: the incoming ``X-Request-ID`` when it is sane (≤ 128 printable ASCII
   characters), a new one otherwise; echoed on every response, put on every log line and
   in every error body (``error.request_id``), so a caller can quote it and an operator
   find the details the message leaves out;
2. ``X-API-Key`` auth when ``API_KEY`` is set (not on /health, /metrics): 401
   authentication_error;
3. the rate limit per client (:mod:`modelkit.ratelimit`, ``RATE_LIMIT_PER_MINUTE``, off by
   default): a token bucket per API key (``X-API-Key`` or ``Authorization: Bearer``, kept as
   a hash), else per client address (never ``X-Forwarded-For``); beyond it, 429
   rate_limit_error code ``rate_limit_exceeded`` with Retry-After at once, before the body is
   read or a place taken (not for /health, /metrics, the service's ``uncounted_paths`` and
   ``OPTIONS``);
4. admission (:mod:`modelkit.limits`, ``MAX_CONCURRENT_REQUESTS``/``MAX_QUEUED_REQUESTS``):
   over capacity, 429 rate_limit_error with Retry-After at once (not for /health, /metrics
   and the service's ``uncounted_paths``, which are never queued behind model requests);
5. the request body, buffered and replayed to the app: 413 over ``MAX_REQUEST_BYTES`` (from
   Content-Length at once, or while reading a chunked body), 408 when it has not all
   arrived within ``REQUEST_BODY_TIMEOUT_S``; a JSON body is decoded strictly
   (:mod:`modelkit.jsonbody`: 400 for what could not be forwarded, such as ``1e999``);
6. the wait, in arrival order, for a run slot; then the route itself, with FastAPI's errors
   rewritten in the OpenAI shape (422 → 400 invalid_request_error naming the field, 404
   not_found_error, 405 with Allow). Under a limit, a client that disconnects while queued
   is dropped, and one that disconnects while served has its route cancelled (upstream
   call included); either is logged with status 499 and counted as ``rejected``. With no
   limit (``MAX_CONCURRENT_REQUESTS=0``, an app that is not a model service) the route
   sees the disconnect itself, as before;
7. a catch-all: an unexpected exception is logged with its traceback and answered 500
   ``server_error`` without one (the only error type outside DESIGN.md's six, as the
   OpenAI API itself does for its own bugs);
8. the per-request usage headers (:mod:`modelkit.usage`): a fresh accumulator in a context
   variable before the route runs; on an answer that is not streamed (one with a
   ``Content-Length``), ``X-Model-Tokens`` (input + output tokens the request caused,
   upstream or local) when tokens were recorded and ``X-Model-Cost-USD`` (a plain decimal)
   when a cost was, summed over all that ``ServiceMetrics`` recorded during this request
   (a cache hit: both ``0``); a streamed answer's headers go before its usage is known;
9. timing and counting in ``model_requests_total``/``model_request_duration_seconds`` under
   the route template (``/items/{id}``, not the raw path; ``unmatched`` for unknown paths),
   and one JSON log line per request. /health, /metrics and the service's own
   ``uncounted_paths`` (a health alias, a stats page) are logged but never counted: they
   are not model requests, and probe or scrape successes would dilute the error rate the
   canary analysis judges (and make a preview with no real traffic look healthy).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelkit.errors import ErrorType, ServiceError, outcome_for_status
from modelkit.health import HealthCheck, run_checks
from modelkit.jsonbody import DECODED_JSON_STATE_KEY, decode_json, is_json_content_type
from modelkit.limits import ConcurrencyLimiter
from modelkit.logs import request_id_var
from modelkit.metrics import ServiceMetrics
from modelkit.ratelimit import ClientRateLimiter, client_of
from modelkit.settings import ServiceSettings
from modelkit.usage import RequestUsage, add_usage_headers, request_usage_var

access_log = logging.getLogger("modelkit.access")
log = logging.getLogger("modelkit.app")

UNAUTHENTICATED_PATHS = frozenset({"/health", "/metrics"})
UNCOUNTED_PATHS = frozenset({"/health", "/metrics"})
OUTCOME_STATE_KEY = "modelkit_outcome"
# Nginx's status for "the client closed the connection before the answer": logged, never sent.
CLIENT_CLOSED_REQUEST = 499
_BODY_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def _sane_request_id(value: str | None) -> str | None:
    if value and len(value) <= 128 and value.isascii() and value.isprintable():
        return value
    return None


def _route_label(scope: Scope, router: Router | None = None) -> str:
    """The route template the request was served by; for a request answered before routing
    (401, 429, 413...), the template it would have reached; ``unmatched`` when none."""
    route = scope.get("route")
    if route is None and router is not None:
        route = next((r for r in router.routes if r.matches(scope)[0] == Match.FULL), None)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _error_response(error: ServiceError) -> JSONResponse:
    body = error.body()
    # The id under which the service logged the details the message leaves out.
    body["error"]["request_id"] = request_id_var.get()
    return JSONResponse(body, status_code=error.status, headers=error.headers)


async def _until_disconnect(receive: Receive) -> None:
    """Return once the client is gone (or, on some servers, once the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the buffered body once, then the server's own messages."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class ServiceMiddleware:
    """Request id, auth, rate limit, admission, body limits, catch-all, usage headers,
    timing and counting (see module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        limiter: ConcurrencyLimiter | None = None,
        rate_limiter: ClientRateLimiter | None = None,
        router: Router | None = None,
        uncounted_paths: frozenset[str] = UNCOUNTED_PATHS,
    ) -> None:
        self.app = app
        self.router = router
        self.settings = settings
        self.metrics = metrics
        self.limiter = limiter or ConcurrencyLimiter(
            settings.max_concurrent_requests, settings.max_queued_requests
        )
        self.rate_limiter = rate_limiter or ClientRateLimiter(settings.rate_limit_per_minute)
        self.uncounted_paths = uncounted_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        request_id = _sane_request_id(headers.get("x-request-id")) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        # A mutable accumulator: the route may run in a task (a copy of this context).
        usage = RequestUsage()
        usage_token = request_usage_var.set(usage)
        state: dict[str, Any] = scope.setdefault("state", {})
        response_status = 0
        response_complete = False
        # Probes, scrapes and the service's own pages are never queued behind model requests;
        # with no limit (an app that is not a model service) nothing is queued or cancelled.
        limiter = (
            None
            if scope.get("path") in self.uncounted_paths or self.limiter.unlimited
            else self.limiter
        )
        # Only model requests spend a client's budget; a CORS preflight is not one.
        rate_limit_applies = not (
            self.rate_limiter.unlimited
            or scope.get("path") in self.uncounted_paths
            or scope.get("method") == "OPTIONS"
        )
        admitted = False
        run_started: float | None = None

        async def send_with_request_id(message: Message) -> None:
            nonlocal response_status, response_complete
            if message["type"] == "http.response.start":
                response_status = int(message["status"])
                response_headers = MutableHeaders(scope=message)
                response_headers["X-Request-ID"] = request_id
                add_usage_headers(response_headers, usage)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                response_complete = True
            await send(message)

        try:
            early_error = self._authenticate(scope, headers)
            if early_error is None and rate_limit_applies:
                early_error = self.rate_limiter.take(client_of(scope, headers))
            if early_error is None and limiter is not None:
                early_error = limiter.admit()
                admitted = early_error is None
            body: bytes | None = None
            if early_error is None:
                early_error, body = await self._read_limited_body(scope, headers, receive)
            if early_error is None and body:
                early_error = self._decode_json_body(headers, body, state)
            if early_error is not None:
                state[OUTCOME_STATE_KEY] = early_error.outcome
                await _error_response(early_error)(scope, receive, send_with_request_id)
            elif body is not None and limiter is None:
                await self.app(scope, _replay(body, receive), send_with_request_id)
            elif body is not None and limiter is not None:
                watch = asyncio.ensure_future(_until_disconnect(receive))
                try:
                    if not await self._wait_for_slot(limiter, watch):
                        body = None
                    else:
                        run_started = time.perf_counter()
                        if not await self._run_app(scope, body, send_with_request_id, watch,
                                                   lambda: response_complete):  # fmt: skip
                            body = None
                finally:
                    watch.cancel()
            if body is None and early_error is None:
                # The client left (while sending, queued or served): its work is dropped.
                # Nginx's 499; counted as rejected, since nobody was there to be failed.
                response_status = CLIENT_CLOSED_REQUEST
                state[OUTCOME_STATE_KEY] = "rejected"
        except Exception:
            log.exception(
                "unhandled exception while serving a request",
                extra={"fields": {"method": scope.get("method"), "path": scope.get("path")}},
            )
            state[OUTCOME_STATE_KEY] = "error"
            if response_status == 0:
                await _error_response(
                    ServiceError(500, "internal error; see the service log",
                                 error_type="server_error", code="internal_error")
                )(scope, receive, send_with_request_id)  # fmt: skip
        finally:
            if admitted and limiter is not None:
                run_s = None if run_started is None else time.perf_counter() - run_started
                limiter.finish(started=run_started is not None, run_s=run_s)
            self._record(scope, state, response_status, time.perf_counter() - started, request_id)
            request_usage_var.reset(usage_token)
            request_id_var.reset(token)

    @staticmethod
    async def _wait_for_slot(limiter: ConcurrencyLimiter, watch: asyncio.Future[None]) -> bool:
        """Wait for a run slot; False when the client left first (its turn is given up)."""
        if limiter.try_start():  # a free slot: no wait (nor the tasks a wait costs)
            return True
        turn = asyncio.ensure_future(limiter.start())
        await asyncio.wait({turn, watch}, return_when=asyncio.FIRST_COMPLETED)
        if turn.done():
            turn.result()
            return True
        turn.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await turn
        return False

    async def _run_app(
        self,
        scope: Scope,
        body: bytes,
        send: Send,
        watch: asyncio.Future[None],
        response_complete: Callable[[], bool],
    ) -> bool:
        """Run the route; cancel it when the client leaves first (False then)."""
        gone = asyncio.Event()
        watch.add_done_callback(lambda _: gone.set())

        async def until_gone() -> Message:
            await gone.wait()
            return {"type": "http.disconnect"}

        serving = asyncio.ensure_future(self.app(scope, _replay(body, until_gone), send))
        await asyncio.wait({serving, watch}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done() or response_complete():
            await serving  # re-raises the route's exception, if any
            return True
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        return False

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
    ) -> tuple[ServiceError | None, bytes | None]:
        """The whole body, or the error to answer; (None, None) when the client left."""
        limit = self.settings.max_request_bytes

        def too_large() -> ServiceError:  # built only when needed: most bodies fit
            return ServiceError(
                413,
                f"request body is larger than the limit of {limit} bytes (MAX_REQUEST_BYTES)",
                error_type="invalid_request_error",
                code="request_too_large",
            )

        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return too_large(), None
        chunks: list[bytes] = []
        size = 0
        timeout_s = self.settings.request_body_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return None, None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        return too_large(), None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            # A trickled body holds a place in the queue; it must not hold it for ever.
            return ServiceError(
                408,
                f"the request body did not arrive within {timeout_s:g} s "
                "(REQUEST_BODY_TIMEOUT_S); send it at once",
                error_type="invalid_request_error",
                code="request_timeout",
                outcome="rejected",
            ), None
        return None, b"".join(chunks)

    @staticmethod
    def _decode_json_body(
        headers: Headers, body: bytes, state: dict[str, Any]
    ) -> ServiceError | None:
        """Refuse a JSON body that could not be forwarded (see :mod:`modelkit.jsonbody`)."""
        if not is_json_content_type(headers.get("content-type")):
            return None
        try:
            state[DECODED_JSON_STATE_KEY] = decode_json(body)
        except ServiceError as error:
            return error
        return None

    def _record(
        self, scope: Scope, state: dict[str, Any], status: int, duration_s: float, request_id: str
    ) -> None:
        path = scope.get("path", "")
        outcome = state.get(OUTCOME_STATE_KEY) or outcome_for_status(status or 500)
        route = _route_label(scope, self.router)
        if path not in self.uncounted_paths:
            self.metrics.observe_request(route, outcome, duration_s)
        if not access_log.isEnabledFor(logging.INFO):
            return  # LOG_LEVEL above INFO: no line, so no fields to gather either
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
    metric_models: Sequence[str] = (),
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app with /health, /metrics, the middleware and the error handlers.

    ``models`` get ``model_info{model, version=APP_VERSION} 1``; they and ``metric_models``
    are the only values the metrics' ``model`` label takes (any other model is counted as
    ``other``: a caller choosing the model must not be able to grow the series without
    bound). ``checks`` are the service's health checks; ``upstream_check`` adds one reporting
    consecutive upstream failures, and a ``capacity`` check reports the admission limiter.
    ``uncounted_paths`` are the service's own routes that are not model requests (a health
    alias, a stats page): like /health and /metrics they stay out of ``model_requests_total``
    and out of the limiter. The app's ``state`` holds ``settings``, ``metrics`` (a
    :class:`ServiceMetrics` with its own registry), ``limiter`` (the
    :class:`~modelkit.limits.ConcurrencyLimiter`), ``rate_limiter`` (the
    :class:`~modelkit.ratelimit.ClientRateLimiter`) and ``health_checks`` (a dict the service
    may add to later).
    """
    metrics = metrics or ServiceMetrics()
    metrics.allow_model_labels([*models, *metric_models])
    for model in models:
        metrics.set_model_info(model, settings.app_version)
    limiter = ConcurrencyLimiter(settings.max_concurrent_requests, settings.max_queued_requests)
    rate_limiter = ClientRateLimiter(settings.rate_limit_per_minute)
    fastapi_kwargs.setdefault("docs_url", None)
    fastapi_kwargs.setdefault("redoc_url", None)
    app = FastAPI(title=service, version=settings.app_version, **fastapi_kwargs)
    health_checks: dict[str, HealthCheck] = {}
    if upstream_check:
        health_checks["upstream"] = metrics.upstream_health.check
    health_checks["capacity"] = limiter.check
    health_checks.update(checks or {})
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.limiter = limiter
    app.state.rate_limiter = rate_limiter
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
    uncounted = UNCOUNTED_PATHS | frozenset(uncounted_paths)
    app.add_middleware(ServiceMiddleware, settings=settings, metrics=metrics, limiter=limiter,
                       rate_limiter=rate_limiter, router=app.router, uncounted_paths=uncounted)

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        code, body = await run_checks(app.state.health_checks)
        return JSONResponse(body, status_code=code)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        # The service's routes are all declared by the first scrape.
        metrics.count_routes(
            path for route in app.routes
            if isinstance(path := getattr(route, "path", None), str) and path not in uncounted
        )
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def metrics_of(request: Request) -> ServiceMetrics:
    """The app's :class:`ServiceMetrics` from inside a route."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics

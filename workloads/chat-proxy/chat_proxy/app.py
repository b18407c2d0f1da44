"""chat-proxy: an OpenAI-compatible front to an upstream chat model, validating input.

Routes (``/v1/...`` are aliases of ``/api/v1/...`` so the openai SDK works with
``base_url=http://host/api/v1`` or ``http://host/v1``):

* ``POST /api/v1/chat/completions``: validated (see :mod:`chat_proxy.validation`),
  then forwarded as the openai SDK sends it (:mod:`chat_proxy.forward`: over the proxy's
  own keep-alive HTTP/1.1 client for a plain ``http://`` upstream, through the SDK
  otherwise); the upstream's completion is returned as is. An
  upstream 200 whose body is not a chat completion (JSON cut short, no ``choices`` or
  ``choices: []``, a gateway's HTML page, a field off the API's schema) is a 502
  ``upstream_error`` (code ``invalid_upstream_answer``) naming what was wrong, counted as an
  ``error`` in ``model_requests_total`` and ``model_upstream_requests_total`` (see
  :mod:`chat_proxy.answers`).
* ``GET /api/v1/models``: the upstream's model list.
* ``GET /api/v1/health``: the kit's ``/health`` body and status code, plus the fields the
  deployment guide asks for: ``timestamp`` (ISO 8601, UTC), ``models_loaded`` (every
  configured model is in the upstream's list), ``model_count`` (models the upstream lists)
  and ``api_keys_configured`` (a count, never a key). Kubernetes probes should use
  ``/health`` (never behind ``API_KEY``);
  ``/api/v1/health`` is for API clients and, like every ``/api`` route, needs
  ``X-API-Key`` when one is configured. Neither is counted in ``model_requests_total``:
  a probe is not a model request, and its successes would dilute the error rate.

Health: ``upstream_models`` lists the upstream's models with a short timeout
(``HEALTH_UPSTREAM_TIMEOUT_S``, 2 s) and caches the answer for
``HEALTH_CACHE_S`` (10 s), so probes do not hammer the provider; a failed list is
``degraded``, not ``unhealthy``: an outage of the provider is not fixed by taking
the proxy out of rotation or restarting it. The kit's ``upstream`` check adds the
run of consecutive failed completions.

Request bodies are JSON objects, decoded strictly by the kit (:mod:`modelkit.jsonbody`):
``NaN``/``Infinity`` literals, numbers beyond the float range (``1e999``) and lone
surrogate escapes are refused with a 400 naming the field, wherever they are (free-form
``response_format``, ``tools``, ``tool_choice`` and ``tool_calls`` included), because the
upstream call could not encode them: what cannot be forwarded is the caller's fault, never
a 500. Upstream calls are not retried (the SDK's ``max_retries=0``): a retry would hide the
failure from the canary's metrics and double the latency seen by the caller (the one
exception: a kept-alive connection the upstream closed before answering anything is
replaced by a fresh one, see :mod:`chat_proxy.forward`); each upstream call has an overall
deadline of ``UPSTREAM_TIMEOUT_S``.

Exhaustion: at most ``MAX_CONCURRENT_REQUESTS`` (8) requests are served at once and
``MAX_QUEUED_REQUESTS`` (8) wait; any more get 429 with Retry-After. Bodies are buffered
whole (images are checked before paying for them), so the memory held by request bodies is
at most (8 + 8) x ``MAX_REQUEST_BYTES`` (64 MiB) = 1 GiB by default: size the pod, or
lower these, accordingly. The ``model`` metric label is ``DEFAULT_MODEL`` or one of
``METRIC_MODELS``; any other model a caller names is forwarded and counted as ``other``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import openai
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from modelkit.app import create_app
from modelkit.errors import invalid_request
from modelkit.health import Check, run_checks
from modelkit.jsonbody import DECODED_JSON_STATE_KEY, request_json
from modelkit.settings import ServiceSettings
from modelkit.upstream import (
    service_error_from_openai,
    upstream_client,
    upstream_deadline,
)
from pydantic import Field, field_validator
from pydantic_settings import NoDecode
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chat_proxy.answers import read_completion
from chat_proxy.forward import ChatForwarder
from chat_proxy.validation import (
    MAX_IMAGE_BYTES_DEFAULT,
    InvalidRequest,
    ValidationLimits,
    parse_chat_request,
)

SERVICE = "chat-proxy"
API_HEALTH_PATH = "/api/v1/health"


class ChatProxySettings(ServiceSettings):
    # A few 10 MB images, base64-encoded (4/3 larger), fit under 64 MiB.
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    # Bodies are buffered whole: (8 + 8) x 64 MiB bounds what they can hold in memory.
    max_concurrent_requests: int = Field(default=8, ge=1)
    max_queued_requests: int = Field(default=8, ge=0)
    upstream_base_url: str | None = Field(default=None, description="Upstream …/v1 URL.")
    # The deployment guide's completion timeout: long answers of large models take minutes.
    upstream_timeout_s: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    default_model: str = Field(default="gpt-4o-mini", min_length=1)
    metric_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated models, besides DEFAULT_MODEL, with their own metric "
        "label; any other model is counted as `other`.",
    )
    max_image_bytes: int = Field(default=MAX_IMAGE_BYTES_DEFAULT, ge=1)
    health_cache_s: float = Field(default=10.0, ge=0, allow_inf_nan=False)
    health_upstream_timeout_s: float = Field(default=2.0, gt=0, allow_inf_nan=False)

    @field_validator("upstream_base_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("metric_models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [model.strip() for model in value.split(",") if model.strip()]
        return value


@dataclass(frozen=True)
class ModelListing:
    """One look at the upstream's model list: the health check it makes and the ids listed."""

    check: Check
    model_ids: frozenset[str] = frozenset()
    # Every configured model (DEFAULT_MODEL, METRIC_MODELS) is among model_ids.
    configured_models_listed: bool = False


class UpstreamModelsCheck:
    """Health check: can the upstream list its models, the configured ones among them?
    Cached for ``ttl_s``."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        timeout_s: float,
        ttl_s: float,
        configured_models: Sequence[str],
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.configured_models = tuple(dict.fromkeys(configured_models))
        self._cached: tuple[float, ModelListing] | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> Check:
        return (await self.listing()).check

    async def listing(self) -> ModelListing:
        async with self._lock:  # concurrent probes share one upstream call
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.ttl_s:
                return self._cached[1]
            listing = await self._probe()
            self._cached = (time.monotonic(), listing)
            return listing

    async def _probe(self) -> ModelListing:
        try:
            async with asyncio.timeout(self.timeout_s):
                page = await self.client.models.list(timeout=self.timeout_s)
        except (TimeoutError, openai.APITimeoutError):
            return ModelListing(
                Check.degraded(f"upstream did not list its models within {self.timeout_s} s")
            )
        except openai.APIStatusError as error:
            return ModelListing(Check.degraded(f"upstream answered {error.status_code} to a model list"))
        except openai.OpenAIError as error:
            return ModelListing(Check.degraded(f"upstream unreachable: {type(error).__name__}"))
        model_ids = frozenset(model.id for model in page.data)
        missing = [model for model in self.configured_models if model not in model_ids]
        if missing:
            # Requests for them would fail upstream: still routable (other models work), so
            # degraded, and the detail says which setting names the missing model.
            check = Check.degraded(
                f"upstream lists {len(model_ids)} models but not the configured "
                f"{', '.join(missing)} (DEFAULT_MODEL, METRIC_MODELS)"
            )
        else:
            check = Check.ok(f"upstream lists {len(model_ids)} models")
        return ModelListing(check, model_ids, configured_models_listed=not missing)


def configured_api_key_count(settings: ChatProxySettings) -> int:
    """How many API keys the proxy holds: API_KEY (callers) and OPENAI_API_KEY (upstream),
    the latter unless it is the kit's placeholder default."""
    placeholder = ServiceSettings.model_fields["openai_api_key"].default
    return int(settings.api_key is not None) + int(settings.openai_api_key != placeholder)


class _AsgiEndpoint:
    """An ASGI callable that Starlette's ``Route`` serves as it is (not as a request handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def build_app(settings: ChatProxySettings) -> FastAPI:
    client = upstream_client(
        base_url=settings.upstream_base_url,
        api_key=settings.openai_api_key,
        timeout_s=settings.upstream_timeout_s,
    )
    models_check = UpstreamModelsCheck(
        client,
        settings.health_upstream_timeout_s,
        settings.health_cache_s,
        configured_models=[settings.default_model, *settings.metric_models],
    )
    api_key_count = configured_api_key_count(settings)
    forwarder = ChatForwarder(client, settings.upstream_timeout_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        forwarder.close()
        await client.close()

    app = create_app(
        settings,
        service=SERVICE,
        models=[settings.default_model],
        metric_models=settings.metric_models,
        checks={"upstream_models": models_check},
        uncounted_paths=[API_HEALTH_PATH],
        lifespan=lifespan,
    )
    limits = ValidationLimits(max_image_bytes=settings.max_image_bytes)

    metrics = app.state.metrics
    timeout_s = settings.upstream_timeout_s
    default_model = settings.default_model

    async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
        # A plain ASGI endpoint: FastAPI's per-request machinery (dependency solving, the
        # endpoint wrapper) would cost more than validating the request. Errors raised here
        # are the kit's ServiceErrors, answered by the app's handlers as from any route.
        state = scope.get("state") or {}
        body = (state[DECODED_JSON_STATE_KEY] if DECODED_JSON_STATE_KEY in state
                else await request_json(Request(scope, receive)))  # fmt: skip
        try:
            chat = parse_chat_request(body, limits)
        except InvalidRequest as error:
            raise invalid_request(error.message, param=error.param) from None
        kwargs = chat.upstream_kwargs(default_model)
        model = kwargs["model"]
        async with metrics.upstream_call_within(model, timeout_s):
            # Sent as the SDK would send it, over the proxy's own keep-alive client for a plain
            # http upstream (see chat_proxy.forward: the SDK's machinery was most of the
            # proxy's time per request); failures are the SDK's exceptions, mapped by the kit.
            content_type, content = await forwarder.forward(kwargs)
            # A body that is not a chat completion is a 502 naming what was wrong.
            completion = read_completion(model, content_type, content)
            if completion.prompt_tokens is not None and completion.completion_tokens is not None:
                # Labelled by the requested model (as the upstream call was), not the snapshot
                # id the upstream may answer with, so the metrics of one request line up.
                metrics.record_usage(model, completion.prompt_tokens, completion.completion_tokens)
        await Response(completion.body, media_type="application/json")(scope, receive, send)

    async def list_models() -> JSONResponse:
        # Not counted in model_upstream_requests_total: its model label is for chat models.
        timeout_s = settings.upstream_timeout_s
        try:
            async with upstream_deadline(timeout_s, model="(model list)"):
                page = await client.models.list(timeout=timeout_s)
        except openai.OpenAIError as error:
            raise service_error_from_openai(error, model="(model list)") from error
        return JSONResponse({"object": "list", "data": [m.model_dump(mode="json") for m in page.data]})

    async def api_health(request: Request) -> JSONResponse:
        # One model listing serves both the check and the model fields, so they agree.
        listing = await models_check.listing()
        checks = {**request.app.state.health_checks, "upstream_models": lambda: listing.check}
        code, body = await run_checks(checks)
        body.update(
            timestamp=datetime.now(UTC).isoformat(timespec="milliseconds"),
            models_loaded=listing.configured_models_listed,
            model_count=len(listing.model_ids),
            # A count only: a key, or any part of one, must never reach a response.
            api_keys_configured=api_key_count,
        )
        return JSONResponse(body, status_code=code)

    for prefix in ("/api/v1", "/v1"):
        app.router.routes.append(
            Route(f"{prefix}/chat/completions", _AsgiEndpoint(chat_completions), methods=["POST"])
        )
        app.add_api_route(f"{prefix}/models", list_models, methods=["GET"])
    app.add_api_route(API_HEALTH_PATH, api_health, methods=["GET"])

    return app

"""The textgen HTTP service: ``POST /generate`` on the shared kit (modelkit).

Choices the design leaves open, written down here:

* The response's ``text`` is only the generated characters, never the prompt.
* ``seed`` is an integer in [0, 2**63 - 1]; ``temperature`` is in (0, 2]; ``num_chars`` is
  in [1, TEXTGEN_MAX_CHARS]; ``prompt`` (optional, default empty) is at most
  TEXTGEN_MAX_CHARS printable ASCII characters or newlines. Types are strict: ``"5"`` is not
  a number and ``true`` is not a seed. Unknown fields are rejected (a typo such as
  ``num_char`` should not silently fall back to a default).
* Metrics: ``model_tokens_total{direction="output"}`` counts generated characters (this
  model's tokens are characters) and ``direction="input"`` counts prompt characters;
  ``model_cost_usd_total`` stays at 0 (the series exists so cost dashboards see the model);
  each answer says so per request: ``X-Model-Tokens`` (prompt + generated characters) and
  ``X-Model-Cost-USD: 0`` (see :mod:`modelkit.usage`);
  each generation counts once in ``model_upstream_requests_total`` with the model as the
  "provider" (it runs in-process), so the same upstream panels work for every service.
* Generations run on a single worker thread, the batcher (:mod:`textgen.batcher`), which
  decodes up to TEXTGEN_MAX_BATCH_SIZE (8) requests together, one character each per step;
  a request joins a running batch at the next step and leaves it when done, and its text
  never depends on its batch (:mod:`textgen.engine`). The model is not shared between
  threads and the event loop stays free for /health and /metrics. Requests beyond the batch
  wait in the kit's queue (``MAX_CONCURRENT_REQUESTS`` is the batch size;
  ``MAX_QUEUED_REQUESTS`` 8; any more get 429 with Retry-After), in arrival order, so the
  queue is bounded and a request whose client disconnects while it waits is dropped without
  running. A generation already running when its client leaves, or when
  TEXTGEN_REQUEST_TIMEOUT_S (default 30 s) has passed since its turn came, is stopped
  cooperatively: its :class:`StopSignal` is checked once per generated character, so the
  worker computes at most one more step for a client that is gone or was answered (504
  timeout_error, counted ``outcome="timeout"``).
* CORS (CORS_ALLOW_ORIGINS, default ``*`` as the deployment guide's ``CORS(app)``) wraps
  the kit's middleware from outside: a preflight is answered there, without an API key,
  and is never counted, rate-limited or queued as a model request; every other answer,
  401 and 429 included, carries Access-Control-Allow-Origin for an allowed origin, so a
  browser can read the error.
* Determinism: the same request gives the same text on the same device (and torch
  build). CPU and GPU may differ, since float rounding differs.
* /health runs no inference per probe: it reports the result of a one-character
  generation done at start-up, with the device and the weights file.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import FastAPI, Request
from modelkit import (
    Check,
    ServiceError,
    ServiceMetrics,
    ServiceSettings,
    create_app,
    error_body,
    invalid_request,
    metrics_of,
    request_id_var,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

from textgen.batcher import Batcher, RequestStopped, Stoppable
from textgen.engine import DEFAULT_LANES
from textgen.model import START_CHAR
from textgen.weights import LoadedModel, load_weights, packaged_weights_path

log = logging.getLogger("textgen")

MODEL_NAME = "textgen-chargpt"
SERVICE_NAME = "textgen"
MAX_SEED = 2**63 - 1
MAX_TEMPERATURE = 2.0
DeviceSetting = Literal["auto", "cpu", "cuda"]
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+")
# Request headers a browser page may send (beyond the CORS-safelisted ones), and response
# headers it may read: the request id to quote in a report, Retry-After on a 429.
CORS_ALLOW_HEADERS = ("X-API-Key", "Content-Type", "X-Request-ID")
CORS_EXPOSE_HEADERS = ("X-Request-ID", "Retry-After", "X-Model-Tokens", "X-Model-Cost-USD")
CORS_ALLOW_METHODS = ("GET", "POST")


class TextgenSettings(ServiceSettings):
    """The kit's settings plus TEXTGEN_MAX_CHARS, TEXTGEN_DEVICE and TEXTGEN_WEIGHTS."""

    textgen_max_chars: int = Field(
        default=2000, ge=1, le=100_000, description="Largest num_chars (and prompt) accepted."
    )
    textgen_device: DeviceSetting = Field(
        default="auto", description="auto: cuda when torch sees a GPU, else cpu."
    )
    textgen_weights: Path | None = Field(
        default=None, description="A weights file from `python -m textgen.train`; default: packaged."
    )
    # Requests running at once are those in the batcher: as many as one batch holds, so that
    # the rest wait in the kit's queue, in its sight (where a request whose client left is
    # dropped without running). Derived from TEXTGEN_MAX_BATCH_SIZE (_concurrency_is_the_batch).
    max_concurrent_requests: int = Field(default=DEFAULT_LANES, ge=1)
    max_queued_requests: int = Field(default=8, ge=0)
    textgen_max_batch_size: int = Field(
        default=DEFAULT_LANES,
        ge=1,
        le=64,
        description="Requests decoded together, one character each per step (the batch's lanes).",
    )
    textgen_batch_window_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        allow_inf_nan=False,
        description="How long an idle batcher waits after a request for others to start with it.",
    )
    # 30 s: over 20 times the longest default generation (2000 characters, about 1.3 s on
    # two CPU cores), yet under the 60 s read timeout of common proxies and load balancers
    # (ingress-nginx, AWS ALB), so a caller gets this service's OpenAI-shaped 504 rather
    # than the proxy's page while the worker still computes for nobody.
    textgen_request_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Longest a generation may run once its turn comes (504 timeout_error after).",
    )
    cors_allow_origins: str = Field(
        default="*",
        description="Comma-separated origins a browser may call from; * for any, empty for none.",
    )

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins_must_be_origins(cls, value: str) -> str:
        origins = [o.strip().lower() for o in value.split(",") if o.strip()]
        for origin in origins:
            # A browser's Origin is scheme://host[:port], nothing after: "https://a.example/"
            # would never match, so refuse it at start-up rather than fail in the browser.
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin; use scheme://host[:port] with no path or "
                    "trailing slash (https://app.example.com), or * for any origin"
                )
        return ",".join(origins)

    def cors_origins(self) -> list[str]:
        """The allowed origins; empty when CORS is off."""
        return [o for o in self.cors_allow_origins.split(",") if o]

    @field_validator("textgen_device", mode="before")
    @classmethod
    def _lower_device(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("textgen_device")
    @classmethod
    def _cuda_must_exist(cls, value: DeviceSetting) -> DeviceSetting:
        if value == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "cuda was asked for but torch.cuda.is_available() is False; "
                "use auto (cuda when present, else cpu) or cpu"
            )
        return value

    @field_validator("textgen_weights", mode="before")
    @classmethod
    def _empty_weights_is_default(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("textgen_weights")
    @classmethod
    def _weights_must_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(
                f"no file at {value}; point it at a file written by `python -m textgen.train` "
                "or leave it unset for the packaged weights"
            )
        return value

    @model_validator(mode="after")
    def _concurrency_is_the_batch(self) -> TextgenSettings:
        """MAX_CONCURRENT_REQUESTS is TEXTGEN_MAX_BATCH_SIZE here: one setting, not two that
        must agree. More would wait in the batcher, out of the queue's sight; fewer would
        leave lanes idle. A different value set by hand is refused, naming both."""
        batch = self.textgen_max_batch_size
        if "max_concurrent_requests" in self.model_fields_set and self.max_concurrent_requests != batch:
            raise ValueError(
                f"MAX_CONCURRENT_REQUESTS ({self.max_concurrent_requests}) must not differ from "
                f"TEXTGEN_MAX_BATCH_SIZE ({batch}): textgen runs as many requests as one batch "
                "holds; unset MAX_CONCURRENT_REQUESTS and set TEXTGEN_MAX_BATCH_SIZE alone"
            )
        self.max_concurrent_requests = batch
        return self

    def device(self) -> torch.device:
        if self.textgen_device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.textgen_device)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    seed: Annotated[int, Field(ge=0, le=MAX_SEED, description="Same seed, same text.")]
    temperature: Annotated[
        float, Field(gt=0, le=MAX_TEMPERATURE, allow_inf_nan=False, description="Sampling heat.")
    ]
    num_chars: Annotated[int, Field(ge=1, description="Characters to generate.")]
    prompt: Annotated[str, Field(description="Text to continue; printable ASCII.")] = ""


class GenerateResponse(BaseModel):
    text: str
    num_chars: int
    seed: int
    device: str
    model: str


class GenerationStopped(Exception):
    """Raised on the worker, before a step, when the request's :class:`StopSignal` fired."""


class StopSignal:
    """One request's cooperative stop: its deadline, plus a flag the event loop sets when it
    has answered (504) or the client has left.

    This is the hook between the HTTP side and whatever runs a request's steps: call
    :meth:`should_stop` once per generated character and drop the request when it is True
    (raising :class:`GenerationStopped` to its waiter). The batcher (:mod:`textgen.batcher`)
    checks each request's signal before every step and drops the lanes whose signal fired,
    leaving the other requests of the batch running.
    """

    def __init__(self, limit_s: float, request_id: str | None = None) -> None:
        # time.monotonic is the clock asyncio.timeout uses, so both sides share the deadline.
        self.deadline = time.monotonic() + limit_s
        self.request_id = request_id
        self.steps = 0  # steps run for this request (one character each) before it stopped
        self.reason: str | None = None
        self._stopped = threading.Event()

    def stop(self, reason: str) -> None:
        if not self._stopped.is_set():
            self.reason = reason
            self._stopped.set()

    def should_stop(self) -> bool:
        if self._stopped.is_set():
            return True
        if time.monotonic() >= self.deadline:
            self.stop("deadline")
            return True
        return False


class Generator:
    """Owns the model and its batcher (one worker thread that decodes requests together)."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        *,
        max_batch_size: int = DEFAULT_LANES,
        batch_window_s: float = 0.002,
    ) -> None:
        self.loaded = loaded
        self.device = device
        self.start_id = loaded.tokenizer.encode(START_CHAR)[0]
        self._batcher = Batcher(
            loaded.model,
            max_batch_size=max_batch_size,
            window_s=batch_window_s,
            start_id=self.start_id,
            on_stopped=self._log_stopped,
        )

    def generate_blocking(
        self, prompt: str, num_chars: int, seed: int, temperature: float, stop: StopSignal | None = None
    ) -> str:
        """Generate from any thread but the event loop's (start-up's self-test)."""
        future = self._batcher.submit(
            self.loaded.tokenizer.encode(prompt), num_chars, seed=seed, temperature=temperature, stop=stop
        )
        try:
            ids = future.result()
        except RequestStopped:
            raise self._stopped(num_chars, stop) from None
        return self.loaded.tokenizer.decode(ids)

    async def generate(
        self, prompt: str, num_chars: int, seed: int, temperature: float, stop: StopSignal | None = None
    ) -> str:
        try:
            ids = await self._batcher.generate(
                self.loaded.tokenizer.encode(prompt), num_chars, seed=seed, temperature=temperature, stop=stop
            )
        except RequestStopped:
            raise self._stopped(num_chars, stop) from None
        return self.loaded.tokenizer.decode(ids)

    @staticmethod
    def _stopped(num_chars: int, stop: StopSignal | None) -> GenerationStopped:
        return GenerationStopped(stop.reason if stop is not None else None)

    @staticmethod
    def _log_stopped(stop: Stoppable, num_chars: int) -> None:
        # Runs on the batcher's worker, which checks each request's StopSignal before every
        # step and drops the lane of one that fired, the rest of its batch running on.
        assert isinstance(stop, StopSignal)
        log.warning(
            "generation stopped",
            extra={
                "fields": {
                    "request_id": stop.request_id,
                    "reason": stop.reason,
                    "generated_chars": stop.steps,
                    "num_chars": num_chars,
                }
            },
        )

    def shutdown(self) -> None:
        self._batcher.close()


def _validate_limits(body: GenerateRequest, settings: TextgenSettings, gen: Generator) -> None:
    max_chars = settings.textgen_max_chars
    if body.num_chars > max_chars:
        raise invalid_request(
            f"num_chars: {body.num_chars} is above this service's limit of {max_chars} "
            "(TEXTGEN_MAX_CHARS); ask for fewer characters",
            param="num_chars",
        )
    if len(body.prompt) > max_chars:
        raise invalid_request(
            f"prompt: {len(body.prompt)} characters is above this service's limit of "
            f"{max_chars} (TEXTGEN_MAX_CHARS); send a shorter prompt",
            param="prompt",
        )
    unknown = gen.loaded.tokenizer.unknown_chars(body.prompt)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10])
        raise invalid_request(
            f"prompt: characters outside the model's alphabet ({shown}); "
            "use printable ASCII characters and newlines only",
            param="prompt",
            code="unknown_characters",
        )


def _timed_out(limit_s: float) -> ServiceError:
    return ServiceError(
        504,
        f"the generation did not finish within {limit_s:g} s (TEXTGEN_REQUEST_TIMEOUT_S) and "
        "was stopped; ask for fewer characters (num_chars) or retry when the service is less busy",
        error_type="timeout_error",
        code="request_timeout",
        outcome="timeout",
    )


class TextgenCORSMiddleware(CORSMiddleware):
    """Starlette's CORSMiddleware, answering a refused preflight in the OpenAI error shape
    (Starlette's own is a plain-text 400)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        # Starlette's text is "Disallowed CORS origin, method, headers": keep what was refused.
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        message = (
            f"CORS preflight refused: this {refused} is not allowed (allowed: the origins in "
            f"CORS_ALLOW_ORIGINS, methods {', '.join(CORS_ALLOW_METHODS)}, request headers "
            f"{', '.join(CORS_ALLOW_HEADERS)})"
        )
        headers = {
            key: value
            for key, value in response.headers.items()
            if key not in ("content-length", "content-type")
        }
        return JSONResponse(
            error_body(message, "invalid_request_error", "cors_not_allowed"),
            status_code=response.status_code,
            headers=headers,
        )


def add_cors(app: FastAPI, settings: TextgenSettings) -> None:
    """Wrap the app (the kit's middleware included) in CORS, unless CORS_ALLOW_ORIGINS is empty.

    Added after create_app, so it is the outermost middleware: a preflight is answered here
    and never meets the kit's API key check, rate limit, queue or request counting; every
    other answer, 401 and 429 included, passes back through here on its way out.
    """
    origins = settings.cors_origins()
    if not origins:
        return
    app.add_middleware(
        TextgenCORSMiddleware,
        allow_origins=origins,
        allow_methods=CORS_ALLOW_METHODS,
        allow_headers=CORS_ALLOW_HEADERS,
        expose_headers=CORS_EXPOSE_HEADERS,
        # The key travels in X-API-Key, never in a cookie: no credentialed requests, which
        # also keeps "*" valid (browsers refuse "*" with credentials).
        allow_credentials=False,
    )


def build_app(settings: TextgenSettings, loaded: LoadedModel | None = None) -> FastAPI:
    """Load the weights onto the configured device and build the app."""
    device = settings.device()
    weights_path = settings.textgen_weights or packaged_weights_path()
    loaded = loaded or load_weights(weights_path, device=device)
    gen = Generator(
        loaded,
        device,
        max_batch_size=settings.textgen_max_batch_size,
        batch_window_s=settings.textgen_batch_window_ms / 1000,
    )
    # One character at start-up proves the whole path (weights, device, kernels) works.
    try:
        gen.generate_blocking("", 1, seed=0, temperature=1.0)
        self_test = Check.ok(
            f"{loaded.model.num_parameters()} parameters on {device}; weights {weights_path.name}"
        )
    except Exception as error:  # reported by /health (503) rather than a crash loop
        log.exception("start-up generation failed")
        self_test = Check.failing(f"start-up generation failed: {type(error).__name__}: {error}")

    metrics = ServiceMetrics()
    # Create the series at 0 so dashboards and the analysis see them before any request.
    metrics.cost.labels(model=MODEL_NAME)
    for direction in ("input", "output"):
        metrics.tokens.labels(model=MODEL_NAME, direction=direction)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        gen.shutdown()

    app = create_app(
        settings,
        service=SERVICE_NAME,
        models=[MODEL_NAME],
        checks={"model": lambda: self_test},
        upstream_check=False,
        metrics=metrics,
        lifespan=lifespan,
    )
    app.state.generator = gen
    add_cors(app, settings)
    limit_s = settings.textgen_request_timeout_s

    @app.post("/generate", response_model=GenerateResponse)
    async def generate(body: GenerateRequest, request: Request) -> GenerateResponse:
        _validate_limits(body, settings, gen)
        service_metrics = metrics_of(request)
        # The limit starts when the request's turn comes: the kit's queue before it is
        # bounded on its own (MAX_QUEUED_REQUESTS).
        stop = StopSignal(limit_s, request_id_var.get())
        try:
            async with asyncio.timeout(limit_s):
                text = await gen.generate(body.prompt, body.num_chars, body.seed, body.temperature, stop=stop)
        except (TimeoutError, GenerationStopped):
            # Answer now; the worker drops the request before its next step.
            stop.stop("deadline")
            service_metrics.upstream_requests.labels(model=MODEL_NAME, outcome="timeout").inc()
            raise _timed_out(limit_s) from None
        except asyncio.CancelledError:
            # The kit cancels the route when the client leaves: compute nothing more for it.
            stop.stop("client left")
            raise
        except Exception:
            service_metrics.upstream_requests.labels(model=MODEL_NAME, outcome="error").inc()
            raise  # the kit answers 500 server_error and logs the traceback
        service_metrics.upstream_requests.labels(model=MODEL_NAME, outcome="success").inc()
        service_metrics.record_tokens(MODEL_NAME, len(body.prompt), len(text))
        # Local inference has a known price of nothing: the answer says X-Model-Cost-USD: 0.
        service_metrics.record_cost(MODEL_NAME, 0.0)
        return GenerateResponse(
            text=text,
            num_chars=len(text),
            seed=body.seed,
            device=device.type,
            model=MODEL_NAME,
        )

    return app

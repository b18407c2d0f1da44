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
  each generation counts once in ``model_upstream_requests_total`` with the model as the
  "provider" (it runs in-process), so the same upstream panels work for every service.
* Generations run one at a time on a single worker thread: the model is not shared
  between threads and the event loop stays free for /health and /metrics. Requests wait
  in the kit's queue (``MAX_CONCURRENT_REQUESTS`` 1, ``MAX_QUEUED_REQUESTS`` 8; any more
  get 429 with Retry-After), in arrival order, so the queue is bounded and a request whose
  client disconnects while it waits is dropped without running. A generation already
  running when its client leaves finishes on the worker thread (it cannot be interrupted)
  but its answer is discarded; work per request is bounded by TEXTGEN_MAX_CHARS, so
  nothing can hang.
* Determinism: the same request gives the same text on the same device (and torch
  build). CPU and GPU may differ, since float rounding differs.
* /health runs no inference per probe: it reports the result of a one-character
  generation done at start-up, with the device and the weights file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import FastAPI, Request
from modelkit import (
    Check,
    ServiceMetrics,
    ServiceSettings,
    create_app,
    invalid_request,
    metrics_of,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator

from textgen.model import START_CHAR, generate_ids
from textgen.weights import LoadedModel, load_weights, packaged_weights_path

log = logging.getLogger("textgen")

MODEL_NAME = "textgen-chargpt"
SERVICE_NAME = "textgen"
MAX_SEED = 2**63 - 1
MAX_TEMPERATURE = 2.0
DeviceSetting = Literal["auto", "cpu", "cuda"]


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
    # One worker thread generates: more at once would only queue there, out of the kit's
    # sight (where a request whose client left cannot be dropped).
    max_concurrent_requests: int = Field(default=1, ge=1)
    max_queued_requests: int = Field(default=8, ge=0)

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


class Generator:
    """Owns the model and its single worker thread."""

    def __init__(self, loaded: LoadedModel, device: torch.device) -> None:
        self.loaded = loaded
        self.device = device
        self.start_id = loaded.tokenizer.encode(START_CHAR)[0]
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textgen")

    def generate_blocking(self, prompt: str, num_chars: int, seed: int, temperature: float) -> str:
        ids = generate_ids(
            self.loaded.model,
            self.loaded.tokenizer.encode(prompt),
            num_chars,
            seed=seed,
            temperature=temperature,
            mode="cached",
            start_id=self.start_id,
        )
        return self.loaded.tokenizer.decode(ids)

    async def generate(self, prompt: str, num_chars: int, seed: int, temperature: float) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self.generate_blocking, prompt, num_chars, seed, temperature
        )

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


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


def build_app(settings: TextgenSettings, loaded: LoadedModel | None = None) -> FastAPI:
    """Load the weights onto the configured device and build the app."""
    device = settings.device()
    weights_path = settings.textgen_weights or packaged_weights_path()
    loaded = loaded or load_weights(weights_path, device=device)
    gen = Generator(loaded, device)
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

    @app.post("/generate", response_model=GenerateResponse)
    async def generate(body: GenerateRequest, request: Request) -> GenerateResponse:
        _validate_limits(body, settings, gen)
        service_metrics = metrics_of(request)
        try:
            text = await gen.generate(body.prompt, body.num_chars, body.seed, body.temperature)
        except Exception:
            service_metrics.upstream_requests.labels(model=MODEL_NAME, outcome="error").inc()
            raise  # the kit answers 500 server_error and logs the traceback
        service_metrics.upstream_requests.labels(model=MODEL_NAME, outcome="success").inc()
        service_metrics.tokens.labels(model=MODEL_NAME, direction="input").inc(len(body.prompt))
        service_metrics.tokens.labels(model=MODEL_NAME, direction="output").inc(len(text))
        return GenerateResponse(
            text=text,
            num_chars=len(text),
            seed=body.seed,
            device=device.type,
            model=MODEL_NAME,
        )

    return app

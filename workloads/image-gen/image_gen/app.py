"""image-gen: POST /submit turns a prompt into one image through ``images.generate``.

Choices the design leaves open:

- ``size`` and ``quality`` are checked against what the configured model accepts
  (:data:`image_gen.config.MODEL_OPTIONS`), so a request that would fail upstream is a 400
  naming the field and the accepted values. For a model not in that table only the shape of
  ``size`` (``WxH`` or ``auto``) and the union of known qualities are checked.
- ``dall-e-*`` models are asked for ``b64_json`` (their URLs expire within the hour);
  ``gpt-image-*`` always answer ``b64_json``. A URL answer is passed through as ``url``.
- Over ``MAX_CONCURRENT_REQUESTS`` (formerly ``IMAGE_MAX_CONCURRENCY``, still read; 4)
  requests in flight, with ``MAX_QUEUED_REQUESTS`` (0) waiting, a request is answered at
  once with 429 rate_limit_error and ``Retry-After`` = the recent mean request time (≥ 1 s),
  by the kit's limiter. It is counted as ``rejected``: the limit is the service's published
  capacity, and a slower canary is caught by the latency gate, not by shed load.
- The SDK's retries are off (``max_retries=0``) and IMAGE_TIMEOUT_S is an overall deadline
  on the call, answer included: the SDK's own timeout is per read, so a provider trickling
  its answer would otherwise hold the request for ever.
- Cost: token-billed models (gpt-image-1) by their ``usage`` and modelkit's price table;
  dall-e models by the per-image price of (quality, size).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import openai
from fastapi import FastAPI, Request
from modelkit import (
    Check,
    create_app,
    invalid_request,
    metrics_of,
    upstream_client,
    upstream_error,
)
from modelkit.upstream import forwardable
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from image_gen.config import MODEL_OPTIONS, ImageGenSettings

PROMPT_MAX_CHARS = 4000
_SIZE_SHAPE = re.compile(r"^(auto|\d{2,4}x\d{2,4})$")

Prompt = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                          max_length=PROMPT_MAX_CHARS)]  # fmt: skip
Quality = Literal["low", "medium", "high", "auto", "standard", "hd"]


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Prompt = Field(description="What to draw; 1 to 4000 characters.")
    size: str | None = Field(default=None, description="WxH, one the model accepts.")
    quality: Quality | None = Field(default=None, description="A quality the model accepts.")


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None


class SubmitResponse(BaseModel):
    model: str
    image: ImageData
    revised_prompt: str | None = None


def _validate_options(body: SubmitRequest, model: str) -> tuple[str | None, str | None]:
    options = MODEL_OPTIONS.get(model)
    if options is None:
        if body.size is not None and not _SIZE_SHAPE.match(body.size):
            raise invalid_request(
                f"size: {body.size!r} is not WIDTHxHEIGHT (e.g. 1024x1024) or auto", param="size"
            )
        return body.size, body.quality
    if body.size is not None and body.size not in options.sizes:
        raise invalid_request(
            f"size: {body.size!r} is not accepted by {model}; use one of "
            + ", ".join(options.sizes),
            param="size",
        )
    if body.quality is not None and body.quality not in options.qualities:
        raise invalid_request(
            f"quality: {body.quality!r} is not accepted by {model}; use one of "
            + ", ".join(options.qualities),
            param="quality",
        )
    return body.size, body.quality


def build_app(settings: ImageGenSettings) -> FastAPI:
    model = settings.image_model
    client = upstream_client(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
        timeout_s=settings.image_timeout_s,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await client.close()

    app = create_app(
        settings,
        service="image-gen",
        models=[model],
        checks={
            "config": lambda: Check.ok(f"model {model}, timeout {settings.image_timeout_s:g}s"),
        },
        lifespan=lifespan,
    )

    @app.post("/submit", response_model_exclude_none=True)
    async def submit(body: SubmitRequest, request: Request) -> SubmitResponse:
        size, quality = _validate_options(body, model)
        return await _generate(
            request, client, model, body.prompt, size, quality, settings.image_timeout_s
        )

    return app


async def _generate(
    request: Request,
    client: openai.AsyncOpenAI,
    model: str,
    prompt: str,
    size: str | None,
    quality: str | None,
    timeout_s: float,
) -> SubmitResponse:
    metrics = metrics_of(request)
    options = MODEL_OPTIONS.get(model)
    arguments: dict[str, Any] = {"model": model, "prompt": prompt, "n": 1}
    if size is not None:
        arguments["size"] = size
    if quality is not None:
        arguments["quality"] = quality
    if model.startswith("dall-e"):
        arguments["response_format"] = "b64_json"
    async with metrics.upstream_call_within(model, timeout_s):
        result = await client.images.generate(**arguments)
        if not result.data or not (result.data[0].b64_json or result.data[0].url):
            raise upstream_error(
                f"the model provider answered no image for model {model}", code="empty_answer"
            )
        image = result.data[0]
        # The SDK's validation lets a lone surrogate through: it would fail our answer as a 500.
        forwardable([image.b64_json, image.url, image.revised_prompt], model=model)
    if result.usage is not None:
        metrics.record_usage(model, result.usage.input_tokens, result.usage.output_tokens)
    elif options is not None and options.per_image_usd is not None:
        key = (quality or options.default_quality or "", size or options.sizes[0])
        metrics.record_cost(model, options.per_image_usd.get(key, 0.0))
    return SubmitResponse(
        model=model,
        image=ImageData(b64_json=image.b64_json, url=None if image.b64_json else image.url),
        revised_prompt=image.revised_prompt,
    )


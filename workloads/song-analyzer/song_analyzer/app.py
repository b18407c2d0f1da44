"""song-analyzer: POST /analyze scores lyrics with a (fine-tuned) chat model.

Choices the design leaves open:

- The model is asked for ``response_format={"type": "json_object"}`` and its answer is
  validated by :class:`song_analyzer.scoring.ModelAnswer`; invalid JSON, a missing key, a
  score outside 0-100, an empty answer or a refusal is a 502 upstream_error with code
  ``invalid_model_output``, counted as outcome ``error`` (upstream and request).
- Tokens and cost are counted from ``usage`` with modelkit's price table: a fine-tuned
  ``ft:gpt-4o-mini-...`` is priced as a gpt-4o-mini fine-tune ($0.30 / $1.20 per 1M
  tokens); an ``ft:`` model of another base by that base (see modelkit.pricing).
- Only good answers are cached. A cache hit makes no upstream call and counts no tokens.
- LLM_TIMEOUT is an overall deadline on an analysis's upstream work, answers included (the
  SDK's own timeout is per read: a provider trickling its answer would otherwise never time
  out), across retries: an upstream 429 or 5xx is retried with exponential back-off and
  jitter, honouring Retry-After, by :mod:`song_analyzer.upstream_calls` (the SDK's own
  retries are off, ``max_retries=0``). Each try is one ``model_upstream_requests_total``.
- At most ``UPSTREAM_MAX_CONCURRENCY`` (16) upstream calls are in flight; a slot is taken
  after the cache lookup, so a cache hit never waits for one.
- The caller never sees the model's words when its answer is unusable: the 502 says which
  class of problem it was, and the log (redacted, under the request id) says the rest.
- At most ``MAX_CONCURRENT_REQUESTS`` (32) analyses run at once and ``MAX_QUEUED_REQUESTS``
  (64) wait; any more get 429 with Retry-After (the kit's limiter).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Request
from modelkit import (
    Check,
    ServiceError,
    create_app,
    metrics_of,
    redact,
    upstream_client,
    upstream_error,
)
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from song_analyzer.cache import LruCache, cache_key
from song_analyzer.config import SongAnalyzerSettings
from song_analyzer.scoring import SYSTEM_PROMPT, ModelAnswer, user_message
from song_analyzer.upstream_calls import RetryPolicy, UpstreamSlots, call_with_retries

log = logging.getLogger("song_analyzer")

LYRICS_MAX_CHARS = 20_000
NAME_MAX_CHARS = 200

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                        max_length=NAME_MAX_CHARS)]  # fmt: skip
Lyrics = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                          max_length=LYRICS_MAX_CHARS)]  # fmt: skip


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    artist: Name = Field(description="Who performs the song; 1 to 200 characters.")
    title: Name = Field(description="The song's title; 1 to 200 characters.")
    lyrics: Lyrics = Field(description="The full lyrics; 1 to 20,000 characters.")


class Analysis(BaseModel):
    score: int = Field(ge=0, le=100)
    verdict: str
    references: list[str]
    model: str


class AnalyzeResponse(Analysis):
    cached: bool


def _invalid_output(model: str, problem: str, detail: str, content: str | None) -> ServiceError:
    log.warning(
        "invalid model output",
        extra={"fields": {"model": model, "problem": redact(detail),
                          "content": redact(content or "")}},
    )  # fmt: skip
    return upstream_error(f"the answer of model {model} {problem}", code="invalid_model_output")


def parse_answer(content: str | None, model: str) -> ModelAnswer:
    """The model's answer as a :class:`ModelAnswer`, or a 502 saying what class of problem
    it had (the details, which quote the model, go to the log only)."""
    if not content:
        raise upstream_error(f"model {model} gave an empty answer", code="invalid_model_output")
    try:
        decoded = json.loads(content)
    except (json.JSONDecodeError, RecursionError) as error:
        raise _invalid_output(model, "is not JSON", str(error), content) from None
    try:
        # pydantic refuses a str holding a lone surrogate: no text that cannot be sent on passes.
        answer = ModelAnswer.model_validate(decoded)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        # The schema's own words (field and rule), never the model's: safe to answer.
        problem = f"does not fit the scoring schema ({where}: {first['msg']})"
        raise _invalid_output(model, problem, problem, content) from None
    return answer


def build_app(settings: SongAnalyzerSettings) -> FastAPI:
    model = settings.llm_model
    client = upstream_client(
        base_url=settings.llm_api_base_url,
        api_key=settings.openai_api_key,
        timeout_s=settings.llm_timeout,
    )
    cache: LruCache[Analysis] = LruCache(settings.cache_max_entries)
    slots = UpstreamSlots(settings.upstream_max_concurrency)
    retry_policy = RetryPolicy(
        max_retries=settings.upstream_max_retries,
        base_delay_s=settings.upstream_retry_base_delay_s,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await client.close()

    app = create_app(
        settings,
        service="song-analyzer",
        models=[model],
        checks={
            "config": lambda: Check.ok(f"model {model}, timeout {settings.llm_timeout:g}s"),
            "cache": lambda: Check.ok(f"{len(cache)} of {cache.max_entries} entries"),
            "upstream_slots": slots.check,
        },
        lifespan=lifespan,
    )

    @app.post("/analyze")
    async def analyze(body: AnalyzeRequest, request: Request) -> AnalyzeResponse:
        metrics = metrics_of(request)
        key = cache_key(body.artist, body.title, body.lyrics, model)
        hit = cache.get(key)
        metrics.record_cache(hit is not None)
        if hit is not None:
            return AnalyzeResponse(**hit.model_dump(), cached=True)

        prompt = user_message(body.artist, body.title, body.lyrics)

        async def score_once(seconds_left: float) -> ModelAnswer:
            async with metrics.upstream_call_within(model, seconds_left):
                completion = await client.chat.completions.create(
                    model=model,
                    messages=[
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": prompt},
                    ],
                    temperature=settings.llm_temperature,
                    max_tokens=settings.llm_max_tokens,
                    response_format={"type": "json_object"},
                )
                if completion.usage is not None:
                    metrics.record_usage(
                        model, completion.usage.prompt_tokens, completion.usage.completion_tokens
                    )
                choice = completion.choices[0] if completion.choices else None
                return parse_answer(choice.message.content if choice else None, model)

        answer = await call_with_retries(
            score_once, model=model, policy=retry_policy, slots=slots,
            timeout_s=settings.llm_timeout,
        )  # fmt: skip
        analysis = Analysis(**answer.model_dump(), model=model)
        cache.put(key, analysis)
        return AnalyzeResponse(**analysis.model_dump(), cached=False)

    return app

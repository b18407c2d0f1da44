"""One orchestrated query: cache, selection, fan-out, validation, merging, bookkeeping.

Execution (FF_PARALLEL_EXECUTION): on, every selected model is asked at once
(``asyncio.gather``); off, one after another, and when merging is also off the
models form a fallback chain: the first accepted answer ends the query, so the
later models are only paid for when the earlier ones fail. Each call has an
overall deadline (ORCH_TIMEOUT_S, the kit's ``upstream_call_within``: the SDK's own
timeout is per read, so a trickled answer would never time out); the SDK does not
retry (a retry would hide the failure from the canary's metrics).

A query with no accepted answer is answered 504 ``timeout_error`` when every
model timed out, 502 ``upstream_error`` otherwise, naming each model's outcome.
Only answered queries are cached. A failed model's ``error`` in ``results`` is the
kit's fixed message for its class of failure, never the provider's own text (which
can hold secrets and would be cached and served to every later caller); the
provider's text is in the log, redacted, under the request id.

Every model call (not a cache hit) is folded into the model's confidence and appended
as one line to the performance history (:mod:`orchestrator.history`), with the query's
id and the request's hash, never its prompt. Both files are written off the event loop
after the calls; failing to write either never fails the query (``last_save_error``,
``last_history_error`` feed ``/health``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Annotated, Any

import openai
from modelkit.errors import ServiceError, invalid_request, upstream_error, upstream_timeout
from modelkit.metrics import ServiceMetrics
from modelkit.upstream import forwardable
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from orchestrator.cache import TTLCache
from orchestrator.confidence import ConfidenceStore
from orchestrator.config import OrchestratorSettings
from orchestrator.costs import CostLedger
from orchestrator.history import CallRecord, PerformanceHistory, rfc3339
from orchestrator.registry import ModelSpec
from orchestrator.strategy import (
    ModelAnswer,
    merge_answers,
    rejection_reason,
    select_models,
)

log = logging.getLogger("orchestrator")

_INVALID_ANSWER = "invalid_answer"


class QueryRequest(BaseModel):
    """POST /query. ``models`` narrows the registered models for this query."""

    model_config = ConfigDict(strict=True, extra="forbid")

    prompt: Annotated[str, StringConstraints(min_length=1, max_length=32_000)]
    models: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(default=None, min_length=1)
    system: Annotated[str, StringConstraints(max_length=32_000)] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, gt=0, le=16_384)

    def cache_key(self) -> str:
        canonical = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class Orchestrator:
    def __init__(
        self,
        settings: OrchestratorSettings,
        metrics: ServiceMetrics,
        client: openai.AsyncOpenAI,
        confidence: ConfidenceStore,
        history: PerformanceHistory,
    ) -> None:
        self.settings = settings
        self.registry = settings.models
        self.metrics = metrics
        self.client = client
        self.confidence = confidence
        self.history = history
        self.cache: TTLCache[dict[str, Any]] = TTLCache(
            settings.orch_cache_ttl_s, settings.orch_cache_max_entries
        )
        self.costs = CostLedger()
        self.last_save_error: str | None = None
        self.last_history_error: str | None = None
        self.queries = 0
        self.cache_hits = 0
        self.cache_misses = 0

    # --- the query -----------------------------------------------------------------

    def candidates(self, request: QueryRequest) -> list[ModelSpec]:
        enabled = self.settings.enabled_models
        if request.models is None:
            return list(enabled.values())
        seen: set[str] = set()
        for index, model in enumerate(request.models):
            if model not in self.registry:
                raise invalid_request(
                    f"models[{index}]: {model!r} is not a registered model; choose from "
                    + ", ".join(enabled),
                    param=f"models[{index}]",
                    code="model_not_registered",
                )
            if model not in enabled:
                raise invalid_request(
                    f"models[{index}]: {model!r} is disabled (ORCH_DISABLED_MODELS); choose from "
                    + ", ".join(enabled),
                    param=f"models[{index}]",
                    code="model_disabled",
                )
            if model in seen:
                raise invalid_request(
                    f"models[{index}]: {model!r} is listed twice; list each model once",
                    param=f"models[{index}]",
                )
            seen.add(model)
        return [self.registry[model] for model in request.models]

    async def query(self, request: QueryRequest) -> dict[str, Any]:
        candidates = self.candidates(request)
        self.queries += 1
        key = request.cache_key()
        if self.cache.enabled:
            cached = self.cache.get(key)
            self.metrics.record_cache(hit=cached is not None)
            if cached is not None:
                self.cache_hits += 1
                # This query cost nothing; "results" still describe the calls that were cached.
                return {**cached, "cached": True, "cost_usd": 0.0}
            self.cache_misses += 1

        scores = {spec.id: self.confidence.confidence(spec.id) for spec in candidates}
        selected = select_models(
            candidates,
            scores,
            enabled=self.settings.ff_model_selection,
            top_k=self.settings.orch_select_top_k,
            min_confidence=self.settings.orch_min_confidence,
        )
        query_id = f"orch-{uuid.uuid4().hex}"
        answers = await self._execute(selected, request)
        records = [
            self._history_record(answer, self.confidence.record(answer.model, answer.accepted),
                                 query_id=query_id, request_hash=key)
            for answer in answers
        ]
        await asyncio.gather(self._persist_confidence(), self._persist_history(records))

        merged = merge_answers(answers, scores, enabled=self.settings.ff_result_merging)
        if merged is None:
            raise self._no_answer_error(answers)
        response: dict[str, Any] = {
            "id": query_id,
            "object": "orchestration.result",
            "answer": merged.chosen.text,
            "model": merged.chosen.model,
            "strategy": merged.strategy,
            "agreeing_models": merged.agreeing_models,
            "cached": False,
            "flags": self.settings.flags(),
            "results": [self._describe(answer) for answer in answers],
            "usage": {
                "input_tokens": sum(answer.input_tokens for answer in answers),
                "output_tokens": sum(answer.output_tokens for answer in answers),
            },
            "cost_usd": round(sum(answer.cost_usd for answer in answers), 10),
        }
        self.cache.put(key, response)
        return response

    async def _execute(self, selected: Sequence[ModelSpec], request: QueryRequest) -> list[ModelAnswer]:
        if self.settings.ff_parallel_execution:
            return list(await asyncio.gather(*(self._ask(spec, request) for spec in selected)))
        answers: list[ModelAnswer] = []
        for spec in selected:
            answer = await self._ask(spec, request)
            answers.append(answer)
            if answer.accepted and not self.settings.ff_result_merging:
                break
        return answers

    async def _ask(self, spec: ModelSpec, request: QueryRequest) -> ModelAnswer:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["max_tokens"] = request.max_tokens
        timeout_s = self.settings.orch_timeout_s
        answer = ModelAnswer(model=spec.id, outcome="success")
        started = time.perf_counter()
        try:
            async with self.metrics.upstream_call_within(spec.id, timeout_s):
                completion = await self.client.chat.completions.create(
                    model=spec.id,
                    messages=messages,  # type: ignore[arg-type]
                    timeout=timeout_s,
                    **options,
                )
                self._account(spec, completion, answer)
                choice = completion.choices[0] if completion.choices else None
                text = choice.message.content if choice is not None else None
                # The SDK's validation lets a lone surrogate through; it would fail (or be
                # cached into) every answer that quotes it.
                answer.text = forwardable(text, model=spec.id)
                answer.finish_reason = choice.finish_reason if choice is not None else None
                reason = rejection_reason(answer.text, answer.finish_reason)
                if self.settings.ff_validation and reason is not None:
                    raise upstream_error(f"model {spec.id}: {reason}", code=_INVALID_ANSWER)
        except ServiceError as error:
            answer.outcome = (
                "timeout"
                if error.outcome == "timeout"
                else "invalid"
                if error.code == _INVALID_ANSWER
                else "error"
            )
            answer.error = error.message
        except Exception as error:
            # An answer the SDK parsed into something unexpected: one model's failure, not
            # the whole query's (the kit has already counted it as an upstream error).
            log.exception("model call failed unexpectedly", extra={"fields": {"model": spec.id}})
            answer.outcome = "error"
            answer.error = f"unexpected {type(error).__name__} from model {spec.id}"
        answer.latency_s = time.perf_counter() - started
        answer.finished_at = time.time()
        return answer

    def _account(self, spec: ModelSpec, completion: Any, answer: ModelAnswer) -> None:
        usage = getattr(completion, "usage", None)
        answer.input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        answer.output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        answer.cost_usd = spec.cost_usd(answer.input_tokens, answer.output_tokens)
        # Priced by the registry, not the kit's table: tokens and cost counted apart (both
        # also go into the query's X-Model-Tokens / X-Model-Cost-USD headers).
        self.metrics.record_tokens(spec.id, answer.input_tokens, answer.output_tokens)
        self.metrics.record_cost(spec.id, answer.cost_usd)
        self.costs.add(spec.id, answer.cost_usd)

    def _describe(self, answer: ModelAnswer) -> dict[str, Any]:
        described = asdict(answer)
        del described["finished_at"]
        described["latency_s"] = round(answer.latency_s, 4)
        described["confidence"] = round(self.confidence.confidence(answer.model), 4)
        return described

    @staticmethod
    def _no_answer_error(answers: Sequence[ModelAnswer]) -> ServiceError:
        details = "; ".join(f"{a.model}: {a.outcome}" for a in answers)
        if answers and all(answer.outcome == "timeout" for answer in answers):
            return upstream_timeout(f"no model answered in time: {details}")
        return upstream_error(f"no model gave a usable answer: {details}", code="no_answer")

    async def _persist_confidence(self) -> None:
        # The file is bookkeeping: failing to write it must not fail the query.
        try:
            await asyncio.to_thread(self.confidence.save, self.confidence.snapshot())
        except OSError as error:
            if self.last_save_error is None:
                log.error("cannot write the confidence file: %s", error)
            self.last_save_error = str(error)
        else:
            self.last_save_error = None

    @staticmethod
    def _history_record(
        answer: ModelAnswer, confidence: float, *, query_id: str, request_hash: str
    ) -> CallRecord:
        return CallRecord(
            timestamp=rfc3339(answer.finished_at or time.time()),
            model=answer.model,
            outcome=answer.outcome,
            accepted=answer.accepted,
            latency_s=round(answer.latency_s, 4),
            cost_usd=round(answer.cost_usd, 10),
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            confidence=round(confidence, 4),
            error=answer.error,
            query_id=query_id,
            request_hash=request_hash,
        )

    async def _persist_history(self, records: Sequence[CallRecord]) -> None:
        # Bookkeeping too: a read-only volume or a full disk must not fail the query.
        if not self.history.enabled or not records:
            return
        try:
            await asyncio.to_thread(self.history.append, records)
        except (OSError, ValueError) as error:  # ValueError: a value JSON cannot hold
            if self.last_history_error is None:
                log.error("cannot write the performance history: %s", error)
            self.last_history_error = str(error)
        else:
            self.last_history_error = None

    # --- /stats ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        lookups = self.cache_hits + self.cache_misses
        snapshot = self.confidence.snapshot()
        history = self.history.summary()
        models: dict[str, Any] = {}
        for model_id, spec in self.registry.items():
            entry = snapshot.models.get(model_id)
            models[model_id] = {
                "enabled": model_id not in self.settings.disabled_models,
                "confidence": round(entry.confidence, 4) if entry else None,
                "successes": entry.successes if entry else 0,
                "failures": entry.failures if entry else 0,
                "history_calls": history[model_id].calls if model_id in history else 0,
                "last_call_at": history[model_id].last_call_at if model_id in history else None,
                "input_usd_per_million": spec.input_usd_per_million,
                "output_usd_per_million": spec.output_usd_per_million,
            }
        return {
            **self.costs.summary(),
            "queries": self.queries,
            "cache": {
                "entries": len(self.cache),
                "max_entries": self.cache.max_entries,
                "ttl_s": self.cache.ttl_s,
                "hits": self.cache_hits,
                "misses": self.cache_misses,
                "hit_rate": round(self.cache_hits / lookups, 4) if lookups else None,
            },
            "flags": self.settings.flags(),
            "models": models,
        }

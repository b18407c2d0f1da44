"""orchestrator: fans a prompt out to registered models (see README.md).

Routes: ``POST /query`` (:class:`orchestrator.service.QueryRequest`), ``GET /stats``
(cost so far, cost-per-hour estimate, cache and per-model confidence), plus the
kit's ``/health`` and ``/metrics``. ``/stats`` is a monitoring page, not a model
request: like /health and /metrics it stays out of ``model_requests_total``, so a
dashboard polling it never dilutes the error rate the canary analysis judges.

Health checks: the kit's ``upstream`` (consecutive failed model calls) and
``data_dir``: degraded while the confidence file or the performance history
(:mod:`orchestrator.history`) cannot be written, naming each failure (answers
still flow; what is learned is lost on restart). Four more are always ``ok`` and
say what is running, in the kit's shape (``/stats`` has the same as numbers):
``cache`` (entries of capacity, TTL, hits and misses), ``models`` (each registered
model, enabled or disabled), ``history`` (per registered model, the calls the
performance history holds, counted again from the files at start, and the last
call's time) and ``config`` (which settings came from config.json, which from the
environment).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from modelkit.app import create_app
from modelkit.health import Check
from modelkit.upstream import upstream_client

from orchestrator.confidence import ConfidenceStore
from orchestrator.config import OrchestratorSettings
from orchestrator.history import PerformanceHistory
from orchestrator.service import Orchestrator, QueryRequest

log = logging.getLogger("orchestrator")

SERVICE = "orchestrator"
STATS_PATH = "/stats"


def build_app(settings: OrchestratorSettings) -> FastAPI:
    client = upstream_client(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
        timeout_s=settings.orch_timeout_s,
    )
    confidence = ConfidenceStore.open(settings.orch_data_dir, settings.models)
    history = PerformanceHistory.open(settings.orch_data_dir, settings.orch_history_max_bytes)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Here rather than in build_app: logging is configured by now.
        log.info("configuration: %s", settings.config_sources.describe())
        yield
        await client.close()

    app = create_app(settings, service=SERVICE, models=list(settings.models),
                     uncounted_paths=[STATS_PATH], lifespan=lifespan)
    orchestrator = Orchestrator(settings, app.state.metrics, client, confidence, history)
    app.state.orchestrator = orchestrator

    def data_dir_check() -> Check:
        failures = []
        if orchestrator.last_save_error is not None:
            failures.append(f"cannot write the confidence file: {orchestrator.last_save_error}")
        if orchestrator.last_history_error is not None:
            failures.append(f"cannot write the performance history: {orchestrator.last_history_error}")
        if failures:
            return Check.degraded("; ".join(failures))
        if not history.enabled:
            return Check.ok(f"confidence file {confidence.path}; no performance history")
        return Check.ok(f"confidence file {confidence.path}, performance history {history.path}")

    def cache_check() -> Check:
        cache = orchestrator.cache
        if not cache.enabled:
            return Check.ok(
                f"disabled (ORCH_CACHE_TTL_S={cache.ttl_s:g}, ORCH_CACHE_MAX_ENTRIES={cache.max_entries})"
            )
        return Check.ok(
            f"{len(cache)} of {cache.max_entries} entries, TTL {cache.ttl_s:g} s, "
            f"{orchestrator.cache_hits} hits, {orchestrator.cache_misses} misses"
        )

    def models_check() -> Check:
        disabled = settings.disabled_models
        return Check.ok(", ".join(
            f"{model} ({'disabled' if model in disabled else 'enabled'})" for model in settings.models
        ))

    def history_check() -> Check:
        if not history.enabled:
            return Check.ok("disabled (ORCH_HISTORY_MAX_BYTES=0)")
        recorded = history.summary()
        parts = []
        for model in settings.models:
            entry = recorded.get(model)
            if entry is None or entry.calls == 0:
                parts.append(f"{model}: no calls recorded")
            else:
                parts.append(f"{model}: {entry.calls} calls recorded, last at {entry.last_call_at}")
        return Check.ok(f"{'; '.join(parts)} (rotated at {history.max_bytes} bytes)")

    def config_check() -> Check:
        return Check.ok(settings.config_sources.describe())

    app.state.health_checks["data_dir"] = data_dir_check
    app.state.health_checks["cache"] = cache_check
    app.state.health_checks["models"] = models_check
    app.state.health_checks["history"] = history_check
    app.state.health_checks["config"] = config_check

    @app.post("/query")
    async def query(request: QueryRequest) -> dict[str, Any]:
        return await orchestrator.query(request)

    @app.get(STATS_PATH)
    async def stats() -> dict[str, Any]:
        return orchestrator.stats()

    return app

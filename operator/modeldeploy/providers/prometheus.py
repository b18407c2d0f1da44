"""Prometheus as a metric provider, on prometheus-api-client.

- The client is blocking (requests); every query runs in a worker thread so a slow
  Prometheus never stalls Kopf's event loop.
- Each query has the spec's timeout; transport errors are retried a bounded number
  of times (urllib3 Retry inside the client), then reported as a QueryError.
- A result is usable only if it is exactly one series with a finite value: no series,
  NaN or ±Inf is NoData (inconclusive); several series is a QueryError telling the
  user to aggregate, since picking one would judge an arbitrary pod.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from modeldeploy import spec as s
from modeldeploy.measurement import Measurement, NoData, QueryError, QueryResult
from modeldeploy.providers import ProviderSecrets, register

RETRIES = 2


def interpret(result: Any, now: dt.datetime) -> QueryResult:
    """Turn an instant-query result (a vector or a scalar) into one measurement."""
    sample: Any
    if isinstance(result, list) and result and isinstance(result[0], dict):
        if len(result) > 1:
            labels = ", ".join(str(series.get("metric", {})) for series in result[:3])
            return QueryError(
                f"query returned {len(result)} series ({labels}{', ...' if len(result) > 3 else ''}); "
                "aggregate it to one, e.g. sum(...) or max(...)",
                now,
            )
        sample = result[0].get("value")
    elif isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        sample = result  # a scalar: [time, "value"]
    elif isinstance(result, list) and not result:
        return NoData("query returned no series (no traffic yet, or labels that match nothing)", now)
    else:
        return QueryError(f"unexpected answer from Prometheus: {result!r:.200}", now)
    try:
        value = float(sample[1])
    except (TypeError, ValueError, IndexError):
        return QueryError(f"unexpected sample from Prometheus: {sample!r:.200}", now)
    if math.isnan(value):
        return NoData("value is NaN (e.g. 0/0: no requests in the window)", now)
    if math.isinf(value):
        return NoData(f"value is {'+Inf' if value > 0 else '-Inf'} (a division by zero)", now)
    return Measurement(value, now)


class PrometheusProvider:
    def __init__(self, settings: s.PrometheusProvider, secrets: ProviderSecrets) -> None:
        headers = {"Authorization": f"Bearer {secrets.bearer_token}"} if secrets.bearer_token else None
        self._timeout = s.parse_duration(settings.timeout).total_seconds()
        session = requests.Session()
        # The client ignores disable_ssl when it is given a session: verification is the
        # session's alone (off, a CA bundle from a Secret, or the system's CAs).
        if settings.insecure_skip_verify:
            session.verify = False
        elif secrets.ca_bundle_path:
            session.verify = secrets.ca_bundle_path
        self._client = PrometheusConnect(
            url=settings.address,
            headers=headers,
            # Retries are ours (bounded, no back-off sleeps in a worker thread).
            retry=Retry(total=0, connect=0, read=0, status=0),
            session=session,
        )
        self.address = settings.address

    def _query(self, promql: str) -> Any:
        return self._client.custom_query(promql, timeout=self._timeout)

    async def query(self, promql: str) -> QueryResult:
        last_error = ""
        for _ in range(1 + RETRIES):
            try:
                result = await asyncio.to_thread(self._query, promql)
            except PrometheusApiClientException as error:
                # Prometheus answered with an error (bad PromQL...): retrying won't help.
                return QueryError(f"Prometheus refused the query: {error}", _utcnow())
            except Exception as error:  # transport: connection refused, timeout, DNS
                last_error = f"{type(error).__name__}: {error}"
                continue
            return interpret(result, _utcnow())
        return QueryError(f"Prometheus at {self.address} unreachable: {last_error:.300}", _utcnow())


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


register("prometheus")(PrometheusProvider)

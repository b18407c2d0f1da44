"""Prometheus as a metric provider: its HTTP API's instant query, on httpx's async client.

- One deadline per query: the spec's ``timeout`` bounds the whole query, every try and
  every byte of it, from connecting to the last byte of the answer. (A blocking client's
  timeout, such as requests', bounds each socket read only: a server that trickles a byte
  now and then would hold the query, the tick and a worker thread forever.) The query is
  a coroutine, so the deadline cancels it and closes its connection: nothing is left
  running. (prometheus-api-client, used before, is built on requests and cannot do this.)
- Transport errors (connection refused, reset, DNS) are tried again at once, at most
  ``RETRIES`` more times, within the same deadline; an answer other than 200 is not
  (bad PromQL stays bad). Both are reported as a QueryError, never raised.
- A result is usable only if it is exactly one series with a finite value: no series,
  NaN or ±Inf is NoData (inconclusive); several series is a QueryError telling the
  user to aggregate, since picking one would judge an arbitrary pod.
- Text from Prometheus (an error body, series labels) reaches status only cut to
  ``REFLECTED_MAX`` bytes and without control characters (``modeldeploy.messages``), and
  never with the bearer token in it: a proxy in front of Prometheus may echo the
  ``Authorization`` header it refused, and status is read by far more people than the
  Secret. The token is replaced in the answer's text before anything reads it.
- Redirects are not followed: the allow-list of addresses (``ProviderAddresses``)
  holds for every request the operator sends, and the token goes nowhere else.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import ssl
from typing import Any

import httpx

from modeldeploy import spec as s
from modeldeploy.measurement import Measurement, NoData, QueryError, QueryResult
from modeldeploy.messages import REFLECTED_MAX, bounded
from modeldeploy.providers import ProviderSecrets, ResourceKey, register

RETRIES = 2
# Series named in a "several series" error, each cut to this many bytes of labels.
NAMED_SERIES = 3
SERIES_LABELS_MAX = 80


def reflected(text: str) -> str:
    """Text that came from Prometheus, as short as status should carry it."""
    return bounded(text, REFLECTED_MAX)


def interpret(result: Any, now: dt.datetime) -> QueryResult:
    """Turn an instant-query result (a vector or a scalar) into one measurement."""
    sample: Any
    if isinstance(result, list) and result and isinstance(result[0], dict):
        if len(result) > 1:
            labels = ", ".join(
                bounded(json.dumps(series.get("metric", {}), sort_keys=True), SERIES_LABELS_MAX)
                for series in result[:NAMED_SERIES]
            )
            more = ", ..." if len(result) > NAMED_SERIES else ""
            return QueryError(
                f"query returned {len(result)} series ({reflected(labels + more)}); "
                "aggregate it to one, e.g. sum(...) or max(...)",
                now,
            )
        sample = result[0].get("value")
    elif isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        sample = result  # a scalar: [time, "value"]
    elif isinstance(result, list) and not result:
        return NoData("query returned no series (no traffic yet, or labels that match nothing)", now)
    else:
        return QueryError(f"unexpected answer from Prometheus: {reflected(repr(result))}", now)
    try:
        value = float(sample[1])
    except (TypeError, ValueError, IndexError):
        return QueryError(f"unexpected sample from Prometheus: {reflected(repr(sample))}", now)
    if math.isnan(value):
        return NoData("value is NaN (e.g. 0/0: no requests in the window)", now)
    if math.isinf(value):
        return NoData(f"value is {'+Inf' if value > 0 else '-Inf'} (a division by zero)", now)
    return Measurement(value, now)


def refusal(status_code: int, text: str) -> str:
    """Why Prometheus did not answer 200: its ``errorType: error`` when it says, else the body."""
    try:
        body = json.loads(text)
        detail = f"{body['errorType']}: {body['error']}"
    except (ValueError, KeyError, TypeError):
        detail = text
    return f"Prometheus refused the query: HTTP {status_code}: {reflected(detail)}"


class PrometheusProvider:
    def __init__(self, settings: s.PrometheusProvider, secrets: ProviderSecrets) -> None:
        self._token = secrets.bearer_token
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        self._timeout = s.parse_duration(settings.timeout).total_seconds()
        self._timeout_text = settings.timeout
        # Verification: off when asked, a CA bundle from a Secret, or the default CAs.
        verify: bool | ssl.SSLContext = True
        if settings.insecure_skip_verify:
            verify = False
        elif secrets.ca_bundle_path:
            verify = ssl.create_default_context(cafile=secrets.ca_bundle_path)
        self.address = settings.address.rstrip("/")
        self._client = httpx.AsyncClient(
            headers=headers, verify=verify, follow_redirects=False,
            # The deadline below is the one that counts; this only keeps httpx's own
            # default (5 s per operation) from cutting a query that the spec allows.
            timeout=httpx.Timeout(self._timeout),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def query(self, promql: str) -> QueryResult:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._query(promql)
        except TimeoutError:
            return QueryError(
                f"Prometheus at {self.address} did not answer within the provider's timeout "
                f"({self._timeout_text}, all tries together)",
                _utcnow(),
            )

    async def _query(self, promql: str) -> QueryResult:
        last_error = ""
        for _ in range(1 + RETRIES):
            try:
                response = await self._client.get(f"{self.address}/api/v1/query", params={"query": promql})
            except httpx.TimeoutException:
                raise TimeoutError from None  # httpx's own timeout: the same deadline, reached
            except httpx.TransportError as error:  # connection refused, reset, DNS, TLS
                last_error = f"{type(error).__name__}: {error}"
                continue
            text = response.text.replace(self._token, "[redacted]") if self._token else response.text
            if response.status_code != 200:
                return QueryError(refusal(response.status_code, text), _utcnow())
            try:
                result = json.loads(text)["data"]["result"]
            except (ValueError, KeyError, TypeError):
                return QueryError(f"unexpected answer from Prometheus: {reflected(text)}", _utcnow())
            return interpret(result, _utcnow())
        return QueryError(f"Prometheus at {self.address} unreachable: {reflected(last_error)}", _utcnow())

    async def scrape_intervals(self) -> dict[ResourceKey, dt.timedelta] | None:
        """From the targets API (active targets only), within the provider's timeout; None
        on any failure: the indicators are then judged at analysis rounds only."""
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.get(f"{self.address}/api/v1/targets",
                                                  params={"state": "active"})
            if response.status_code != 200:
                return None
            return scrape_intervals_of(response.json().get("data"))
        except (TimeoutError, httpx.HTTPError, ValueError, AttributeError):
            return None


def scrape_intervals_of(targets: Any) -> dict[ResourceKey, dt.timedelta]:
    """The slowest scrape interval per ModelDeployment, from ``/api/v1/targets``' data.

    A target belongs to a resource by the labels the metric contract relabels every model
    pod's series with (``namespace``, ``modeldeploy_name``); other targets are ignored, and
    so is an interval this parser cannot read (days, weeks: no fast path for those).
    """
    found: dict[ResourceKey, dt.timedelta] = {}
    active = targets.get("activeTargets") if isinstance(targets, dict) else None
    for target in active if isinstance(active, list) else []:
        labels = target.get("labels") if isinstance(target, dict) else None
        if not isinstance(labels, dict):
            continue
        namespace, name = labels.get("namespace"), labels.get("modeldeploy_name")
        interval = target.get("scrapeInterval")
        if not (isinstance(namespace, str) and isinstance(name, str) and isinstance(interval, str)):
            continue
        try:
            every = s.parse_duration(interval)
        except ValueError:
            continue
        key = (namespace, name)
        found[key] = max(found.get(key, every), every)
    return found


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


register("prometheus")(PrometheusProvider)

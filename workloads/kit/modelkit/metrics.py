"""The metric contract of DESIGN.md, one :class:`ServiceMetrics` per app.

Each app gets its own ``CollectorRegistry`` so tests can build several apps in one process.
Requests to /health and /metrics are not counted in ``model_requests_total``: probes and
scrapes would dilute the error rates the canary analysis reads.

The ``model`` label takes only the models the app declared (``create_app``'s ``models`` and
``metric_models``); any other model (chat-proxy forwards whatever model a caller names) is
counted as ``other``, so callers cannot create series without bound. Its tokens are still
priced by its real id.

Whatever ``record_tokens``, ``record_usage``, ``record_cost`` and ``record_cache(hit=True)``
count while a request is served is also added to that request's
:class:`~modelkit.usage.RequestUsage`, which the kit's middleware answers as the
``X-Model-Tokens`` and ``X-Model-Cost-USD`` headers (see :mod:`modelkit.usage`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelkit.errors import Outcome, ServiceError
from modelkit.health import Check
from modelkit.pricing import TokenPrice, cost_usd
from modelkit.upstream import (
    as_openai_error,
    service_error_from_openai,
    upstream_deadline,
    upstream_outcome,
)
from modelkit.usage import current_usage

log = logging.getLogger("modelkit.metrics")

OTHER_MODEL = "other"

# Model calls take from a fraction of a second (chat) to minutes (image generation).
# Neighbouring edges differ by at most 1.5x from 50 ms up (2.5x and 2x below it): a p95
# estimated by histogram_quantile interpolates inside one bucket, so with edges 2.5x apart
# a revision 1.7x slower than stable landed in stable's bucket and a "within 1.2x of stable"
# gate passed it. Thirty buckets per route is a few hundred series at most.
DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0,
    5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 150.0, 180.0, 240.0, 300.0,
)  # fmt: skip


class UpstreamHealth:
    """Consecutive upstream failures, for the /health "upstream" check.

    One failure does not make a service degraded (a canary must stay routable after a single
    timeout); ``degraded_after`` failures in a row do. It never reports failing: an outage of
    the provider is not fixed by restarting the pod.
    """

    def __init__(self, degraded_after: int = 5) -> None:
        self.degraded_after = degraded_after
        self.consecutive_failures = 0
        self.last_outcome: str | None = None
        self._lock = threading.Lock()

    def record(self, outcome: str) -> None:
        with self._lock:
            self.last_outcome = outcome
            self.consecutive_failures = 0 if outcome == "success" else self.consecutive_failures + 1

    def check(self) -> Check:
        if self.last_outcome is None:
            return Check.ok("no upstream calls yet")
        detail = (
            f"last call {self.last_outcome}; {self.consecutive_failures} consecutive failures"
        )
        if self.consecutive_failures >= self.degraded_after:
            return Check.degraded(detail)
        return Check.ok(detail)


class ServiceMetrics:
    """The contract's metrics in one registry, with helpers for upstream calls."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        prices: dict[str, TokenPrice] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.prices = prices
        self.upstream_health = UpstreamHealth()
        self._unpriced_models: set[str] = set()
        self._counted_routes: set[str] = set()
        # None until the app declares its models: until then every label passes (tests).
        self._label_models: frozenset[str] | None = None
        r = self.registry
        self.requests = Counter(
            "model_requests_total", "Requests served, by route and outcome.",
            ["route", "outcome"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "model_request_duration_seconds", "Wall time per request.", ["route"],
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_requests = Counter(
            "model_upstream_requests_total", "Calls to the model provider.",
            ["model", "outcome"], registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "model_tokens_total", "Tokens used.", ["model", "direction"], registry=r
        )
        self.cost = Counter(
            "model_cost_usd_total", "Money spent upstream, in USD.", ["model"], registry=r
        )
        self.cache_requests = Counter(
            "model_cache_requests_total", "Cache lookups.", ["result"], registry=r
        )
        self.info = Gauge("model_info", "What is running (=1).", ["model", "version"], registry=r)
        # Labelled children by label values: prometheus_client's labels() checks and locks on
        # every call, a measurable share of a fast request. Bounded like the series are (the
        # label values are routes, outcomes and declared models), and never stale: no child is
        # ever removed.
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def allow_model_labels(self, models: Iterable[str]) -> None:
        """Declare the models that get their own ``model`` label (adds to earlier ones)."""
        self._label_models = (self._label_models or frozenset()) | frozenset(models)

    def model_label(self, model: str) -> str:
        """``model`` when declared (or nothing is declared yet), else ``other``."""
        if self._label_models is None or model in self._label_models:
            return model
        return OTHER_MODEL

    def set_model_info(self, model: str, version: str) -> None:
        self.info.labels(model=model, version=version).set(1)

    def count_routes(self, routes: Iterable[str]) -> None:
        """Every outcome of each model route exported from 0 before it first happens.

        A series that appears with its first error has one sample, and ``rate()`` needs two:
        a canary's first failures would be invisible to an error-rate check for one more
        scrape interval. Started at 0, the first error shows at the first scrape after it.
        """
        for route in routes:
            if route in self._counted_routes:
                continue
            self._counted_routes.add(route)
            for outcome in get_args(Outcome):
                self.requests.labels(route=route, outcome=outcome)

    def observe_request(self, route: str, outcome: str, duration_s: float) -> None:
        self._child(self.requests, route, outcome).inc()
        self._child(self.request_duration, route).observe(duration_s)

    def record_upstream(self, model: str, outcome: str) -> None:
        self._child(self.upstream_requests, self.model_label(model), outcome).inc()
        self.upstream_health.record(outcome)

    def record_cache(self, hit: bool) -> None:
        """Count a cache lookup; a hit makes the request's usage headers 0 tokens, 0 USD
        (an answer from the cache is known to cost nothing)."""
        self.cache_requests.labels(result="hit" if hit else "miss").inc()
        if hit and (usage := current_usage()) is not None:
            usage.add_tokens(0)
            usage.add_cost(0.0)

    def record_cost(self, model: str, usd: float) -> None:
        """Count money spent (0 is a known price of nothing: it shows in the request's
        ``X-Model-Cost-USD`` as 0)."""
        if usd > 0:
            self._child(self.cost, self.model_label(model)).inc(usd)
        if (usage := current_usage()) is not None:
            usage.add_cost(usd)

    def record_tokens(self, model: str, input_tokens: int, output_tokens: int) -> None:
        """Count tokens without pricing them (a local model, or a service with its own
        prices, which then calls :meth:`record_cost`); negative counts count as 0."""
        input_tokens, output_tokens = max(0, input_tokens), max(0, output_tokens)
        label = self.model_label(model)
        self._child(self.tokens, label, "input").inc(input_tokens)
        self._child(self.tokens, label, "output").inc(output_tokens)
        if (usage := current_usage()) is not None:
            usage.add_tokens(input_tokens + output_tokens)

    def record_usage(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """Count tokens and their cost by the price table; returns the cost (None if unpriced)."""
        input_tokens, output_tokens = max(0, input_tokens), max(0, output_tokens)
        self.record_tokens(model, input_tokens, output_tokens)
        label = self.model_label(model)
        usd = cost_usd(model, input_tokens, output_tokens, self.prices)
        if usd is None:
            # Warned once per label, so caller-chosen model ids cannot grow this set either.
            if label not in self._unpriced_models:
                self._unpriced_models.add(label)
                log.warning(
                    "no price known for model; tokens are counted, cost is not",
                    extra={"fields": {"model": model}},
                )
            return None
        self.record_cost(model, usd)
        return usd

    @contextmanager
    def upstream_call(self, model: str) -> Iterator[None]:
        """Count one call to the model provider and translate its failures.

        Inside the block, an openai exception becomes the matching :class:`ServiceError`
        (see :mod:`modelkit.upstream`); a ServiceError raised by the caller (e.g. a malformed
        answer) is counted as its outcome and re-raised. Success is counted on a clean exit.
        A cancelled call (client went away) is not counted.
        """
        try:
            yield
        except ServiceError as error:
            self.record_upstream(model, upstream_outcome(error))
            raise
        except Exception as error:
            sdk_error = as_openai_error(error)
            if sdk_error is None:
                self.record_upstream(model, "error")
                raise
            mapped = service_error_from_openai(sdk_error, model=model)
            self.record_upstream(model, upstream_outcome(mapped))
            raise mapped from error
        else:
            self.record_upstream(model, "success")

    @asynccontextmanager
    async def upstream_call_within(self, model: str, timeout_s: float) -> AsyncIterator[None]:
        """:meth:`upstream_call` with an overall deadline: the whole block, answer included,
        must finish within ``timeout_s`` (504 timeout after it; see
        :func:`modelkit.upstream.upstream_deadline`)."""
        with self.upstream_call(model):
            async with upstream_deadline(timeout_s, model=model):
                yield

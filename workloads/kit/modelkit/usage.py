"""What one request cost: the per-request usage headers ``X-Model-Tokens`` and ``X-Model-Cost-USD``.

The kit's middleware (:class:`modelkit.app.ServiceMiddleware`) gives every request a fresh
:class:`RequestUsage` in :data:`request_usage_var` before it runs the route, and
:class:`~modelkit.metrics.ServiceMetrics` adds to it whatever it counts while the request
runs (``record_tokens``/``record_usage`` the tokens, ``record_cost``/``record_usage`` the
USD, ``record_cache(hit=True)`` a free answer). The route may run in another task (the
kit's limiter runs it in one, and a service may fan out with ``asyncio.gather`` or
``asyncio.to_thread``): each copies the context, so the variable holds a mutable object
that all of them add to, under a lock.

The response headers, on every answer whose headers go out after its work is done (one
with a ``Content-Length``; errors included, since a request that failed after an upstream
call still spent it):

- ``X-Model-Tokens: <int>``: input + output tokens this request caused, upstream or in the
  service's own model, summed over all its calls (retries, fan-out); present only when
  tokens were recorded (a call that reported 0 tokens gives ``0``).
- ``X-Model-Cost-USD: <decimal>``: what those calls cost in USD, a plain decimal (``0.000123``,
  never ``1.23e-04``, at most 12 decimals); present only when some cost was recorded, i.e.
  a price was known. Tokens of a model with no known price add nothing to it.
- A cache hit costs nothing and this is known for certain: it sets both headers to ``0``
  (unless the request also made calls, which are then summed as usual).
- A streamed answer (no ``Content-Length``: a ``StreamingResponse``, server-sent events)
  carries neither: its headers are sent before its usage is known.
"""

from __future__ import annotations

import contextvars
import math
import threading

from starlette.datastructures import MutableHeaders

TOKENS_HEADER = "X-Model-Tokens"
COST_HEADER = "X-Model-Cost-USD"


class RequestUsage:
    """Tokens and USD recorded during one request (thread-safe)."""

    __slots__ = ("_lock", "cost_recorded", "cost_usd", "tokens", "tokens_recorded")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tokens = 0
        self.cost_usd = 0.0
        self.tokens_recorded = False
        self.cost_recorded = False

    def add_tokens(self, tokens: int) -> None:
        with self._lock:
            self.tokens += max(0, tokens)
            self.tokens_recorded = True

    def add_cost(self, usd: float) -> None:
        with self._lock:
            if usd > 0 and math.isfinite(usd):
                self.cost_usd += usd
            self.cost_recorded = True

    def headers(self) -> dict[str, str]:
        """The usage headers this request has earned so far (see the module docstring)."""
        with self._lock:
            headers: dict[str, str] = {}
            if self.tokens_recorded:
                headers[TOKENS_HEADER] = str(self.tokens)
            if self.cost_recorded:
                headers[COST_HEADER] = format_usd(self.cost_usd)
            return headers


request_usage_var: contextvars.ContextVar[RequestUsage | None] = contextvars.ContextVar(
    "modelkit_request_usage", default=None
)


def current_usage() -> RequestUsage | None:
    """The usage of the request being served; None outside one (a background task, a test)."""
    return request_usage_var.get()


def format_usd(usd: float) -> str:
    """A plain decimal with at most 12 decimals: ``0.000123``, ``0`` (never an exponent)."""
    return f"{max(0.0, usd):.12f}".rstrip("0").rstrip(".") or "0"


def add_usage_headers(headers: MutableHeaders, usage: RequestUsage | None) -> None:
    """Put ``usage``'s headers on a response that is not streamed (see the module docstring)."""
    if usage is None or "content-length" not in headers:
        return
    for name, value in usage.headers().items():
        headers[name] = value

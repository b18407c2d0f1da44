"""The Prometheus provider against a real HTTP server that misbehaves (``hostile_http``).

A query has one deadline, the provider's timeout, for all its tries and every byte of
them: a server that trickles bytes costs one timeout, its connection is closed, and no
thread is left behind. Text that comes back (an error body, series labels) reaches the
result short and without control characters, whatever its size.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hostile_http import HUGE_ERROR_BYTES, hostile_server
from mdsandbox.testing import wait_until
from modeldeploy import spec as s
from modeldeploy.measurement import QueryError
from modeldeploy.messages import REFLECTED_MAX
from modeldeploy.providers.prometheus import PrometheusProvider

T = TypeVar("T")
# How long a query may take before the test calls it hung: far beyond its 1 s timeout.
HUNG = 30.0
CONTROL = [chr(c) for c in [*range(0x00, 0x20), 0x7F, 0x9B]] + ["\u202e"]


@dataclass(frozen=True)
class Secrets:
    bearer_token: str | None = None
    ca_bundle_path: str | None = None


def provider(address: str, timeout: str = "1s") -> PrometheusProvider:
    return PrometheusProvider(s.PrometheusProvider(address=address, timeout=timeout), Secrets())


def unless_hung(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine in its own thread and loop; fail, without hanging the test, if it has
    not returned after ``HUNG`` seconds (the thread is then left to the server's end)."""
    answer: list[T] = []
    thread = threading.Thread(target=lambda: answer.append(asyncio.run(make())), daemon=True)
    thread.start()
    thread.join(HUNG)
    assert answer, f"the query had not returned after {HUNG:.0f}s: it hangs"
    return answer[0]


@pytest.mark.parametrize("behaviour", ["trickle-headers", "trickle-body"],
                         ids=["headers a byte at a time", "a body a byte at a time"])
def test_a_trickling_prometheus_costs_one_timeout_and_its_connection_is_closed(behaviour: str) -> None:
    with hostile_server(behaviour) as server:
        result = unless_hung(lambda: provider(server.url).query("up"))
        assert isinstance(result, QueryError), result
        assert "did not answer within the provider's timeout (1s, all tries together)" in result.reason
        assert len(server.requests) == 1, "a timeout is not tried again: the deadline covers every try"
        wait_until(lambda: server.clients_gone >= 1, timeout=10,
                   what="the provider to close the trickling connection")


def test_a_huge_error_body_is_reflected_short_and_printable() -> None:
    with hostile_server("huge-error") as server:
        result = unless_hung(lambda: provider(server.url).query("up"))
    assert isinstance(result, QueryError), result
    assert result.reason.startswith("Prometheus refused the query: HTTP 400: bad_data: bad_data:")
    assert len(result.reason.encode()) < REFLECTED_MAX + 100 < HUGE_ERROR_BYTES
    assert "cut from" in result.reason, "the reader learns the text was longer"
    assert not any(c in result.reason for c in CONTROL), repr(result.reason)


def test_series_labels_are_reflected_short_and_printable() -> None:
    with hostile_server("many-series") as server:
        result = unless_hung(lambda: provider(server.url).query("up"))
    assert isinstance(result, QueryError), result
    assert "query returned 5 series" in result.reason and "aggregate" in result.reason
    assert "pod-0" in result.reason, "the first series is named, so the user sees what to aggregate"
    assert len(result.reason.encode()) < REFLECTED_MAX + 150
    assert not any(c in result.reason for c in CONTROL), repr(result.reason)

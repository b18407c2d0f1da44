"""Driving a running fake upstream from tests and the demo."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx


class FakeUpstreamClient:
    """Sets faults and reads stats over the fake upstream's /admin API.

    ``base_url`` may be the server root or its OpenAI base URL (ending in /v1).
    """

    def __init__(self, base_url: str, *, timeout_s: float = 5.0) -> None:
        root = base_url.rstrip("/")
        self.root = root.removesuffix("/v1")
        self._http = httpx.Client(base_url=self.root, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FakeUpstreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ok(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise ValueError(f"fake upstream answered {response.status_code}: {response.text}")
        body: dict[str, Any] = response.json()
        return body

    def set_fault(
        self,
        model: str,
        *,
        latency_s: float = 0.0,
        latency_jitter: float = 0.0,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        malformed_rate: float = 0.0,
        malformed_body_rate: float = 0.0,
        status_code: int = 500,
        hang_s: float | None = None,
        retry_after_s: int | None = None,
        score_offset: int = 0,
    ) -> dict[str, Any]:
        """Replace ``model``'s fault (``*`` for every model without its own); restarts its count.

        ``latency_jitter`` j spreads each delay over ``latency_s`` x [1 - j, 1 + j].
        ``malformed_rate`` garbles the content of a valid completion; ``malformed_body_rate``
        answers 200 with a body that is not a chat completion (see :mod:`fakeupstream.faults`).
        ``score_offset`` N shifts every song-score answer's ``score`` by N, clamped to 0..100
        (valid JSON, wrong scores: a regressed fine-tune).
        """
        fault: dict[str, Any] = {
            "latency_s": latency_s,
            "latency_jitter": latency_jitter,
            "error_rate": error_rate,
            "timeout_rate": timeout_rate,
            "malformed_rate": malformed_rate,
            "malformed_body_rate": malformed_body_rate,
            "status_code": status_code,
            "score_offset": score_offset,
        }
        if hang_s is not None:
            fault["hang_s"] = hang_s
        if retry_after_s is not None:
            fault["retry_after_s"] = retry_after_s
        return self._ok(self._http.put(f"/admin/faults/{model}", json=fault))

    def clear_fault(self, model: str) -> None:
        self._ok(self._http.delete(f"/admin/faults/{model}"))

    def reset(self) -> None:
        """Remove every fault."""
        self._ok(self._http.delete("/admin/faults"))

    def faults(self) -> dict[str, Any]:
        faults: dict[str, Any] = self._ok(self._http.get("/admin/faults"))["faults"]
        return faults

    def stats(self) -> dict[str, dict[str, int]]:
        """Request counts by model and outcome (success, error, timeout, malformed: malformed
        content and malformed bodies alike)."""
        stats: dict[str, dict[str, int]] = self._ok(self._http.get("/admin/stats"))["models"]
        return stats

    def reset_stats(self) -> None:
        """Zero the counts; the peaks in :meth:`concurrency` restart from what is in flight."""
        self._ok(self._http.delete("/admin/stats"))

    def concurrency(self, model: str) -> tuple[int, int]:
        """(requests to ``model`` in flight now, the most at once since stats were reset)."""
        models = self._ok(self._http.get("/admin/concurrency"))["models"]
        counts = models.get(model, {"in_flight": 0, "peak": 0})
        return int(counts["in_flight"]), int(counts["peak"])


@contextmanager
def running_fake_upstream(
    env: Mapping[str, str] | None = None, *, timeout_s: float = 20.0
) -> Iterator[str]:
    """Start ``python -m fakeupstream`` on a free loopback port; yield its base URL (…/v1)."""
    from modelkit.testing import running_module

    with running_module("fakeupstream", {"LOG_LEVEL": "WARNING", **(env or {})},
                        timeout_s=timeout_s) as service:  # fmt: skip
        yield service.base_url + "/v1"

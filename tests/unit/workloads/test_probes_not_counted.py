"""Health, metrics and monitoring routes are never model requests, in every service.

Each service runs as a real process (``python -m <service>``) in front of the session's
fake upstream. One real model request proves the counters count; then probes, scrapes
and monitoring calls (including chat-proxy's ``/api/v1/health`` alias, which its
example once used as the readiness probe) must leave ``model_requests_total`` and
``model_request_duration_seconds`` exactly where they were: a probe's success counted
as a model request dilutes the error rate the canary analysis judges, and can make a
blue-green preview with no real traffic look healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from modelkit.testing import MetricSamples, running_module, scrape

# Probed many times, as kubelet and Prometheus would between two analysis rounds.
PROBES_PER_ROUTE = 5


@dataclass(frozen=True)
class Service:
    module: str
    env: dict[str, str]
    model_route: str
    model_body: dict[str, Any]
    # Routes that are not model requests, besides the kit's /health and /metrics.
    own_uncounted: tuple[str, ...] = ()
    start_timeout_s: float = 20.0


SERVICES = [
    pytest.param(Service("image_gen", {"IMAGE_MODEL": "gpt-image-1", "IMAGE_TIMEOUT_S": "5"},
                         "/submit", {"prompt": "a lighthouse"}), id="image-gen"),
    pytest.param(Service("song_analyzer", {"LLM_MODEL": "ft:gpt-4o-mini:acme:songs:v1",
                                           "LLM_TIMEOUT": "5"},
                         "/analyze", {"artist": "A", "title": "T", "lyrics": "la la la"}),
                 id="song-analyzer"),
    pytest.param(Service("chat_proxy", {"UPSTREAM_TIMEOUT_S": "5"}, "/api/v1/chat/completions",
                         {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                         own_uncounted=("/api/v1/health",)), id="chat-proxy"),
    pytest.param(Service("orchestrator", {"ORCH_MODELS": "gpt-4o-mini", "ORCH_TIMEOUT_S": "5"},
                         "/query", {"prompt": "hello"}, own_uncounted=("/stats",)),
                 id="orchestrator"),
    pytest.param(Service("textgen", {"TEXTGEN_DEVICE": "cpu", "PYTHONWARNINGS": "ignore"},
                         "/generate", {"seed": 1, "temperature": 1.0, "num_chars": 4},
                         start_timeout_s=90), id="textgen"),
]


def counted(metrics: MetricSamples) -> tuple[float, float]:
    """All model requests counted so far, and all request durations observed."""
    return (metrics.value("model_requests_total"),
            metrics.value("model_request_duration_seconds_count"))


@pytest.mark.parametrize("service", SERVICES)
def test_probes_scrapes_and_monitoring_calls_are_not_model_requests(
    service: Service, fake_upstream_url: str, tmp_path: Path
) -> None:
    upstream_env = {
        "OPENAI_BASE_URL": fake_upstream_url, "LLM_API_BASE_URL": fake_upstream_url,
        "UPSTREAM_BASE_URL": fake_upstream_url, "OPENAI_API_KEY": "placeholder",
        "ORCH_DATA_DIR": str(tmp_path), "LOG_LEVEL": "WARNING",
    }
    with running_module(service.module, {**upstream_env, **service.env},
                        timeout_s=service.start_timeout_s) as process:
        answer = httpx.post(process.base_url + service.model_route, json=service.model_body,
                            timeout=30)
        assert answer.status_code == 200, answer.text
        after_request = counted(scrape(process.base_url))
        assert after_request == (1.0, 1.0), "the model request itself is counted once"

        for route in ("/health", "/metrics", *service.own_uncounted):
            for _ in range(PROBES_PER_ROUTE):
                assert httpx.get(process.base_url + route, timeout=10).status_code == 200, route

        assert counted(scrape(process.base_url)) == after_request

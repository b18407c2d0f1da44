"""song-analyzer's calls to its provider, as a real process against the real fake upstream:
retries with back-off on 429 and 5xx (and on nothing else), one deadline for all tries, the
bound on upstream calls in flight, and the counters the operator's gates read.

The fake upstream's faults follow a deterministic schedule (hack/fakeupstream/faults.py): with
``error_rate`` r, the n-th request since the fault was set fails when ⌊n·r⌋ > ⌊(n-1)·r⌋. So
0.5 fails the 2nd request and not the 3rd, 0.75 fails the 2nd to 4th and not the 5th; a test
spends the 1st request on another song (:func:`first_request_passes`) to line its own tries up.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import httpx2  # the HTTP client the openai SDK is built on (its errors carry its responses)
import openai
import pytest
from fakeupstream import FakeUpstreamClient
from modeldeploy.analysis.presets import BUILTIN_QUERIES
from modeldeploy.analysis.promql import QueryContext, render
from modelkit import ServiceError, upstream_error
from modelkit.testing import MetricSamples, ServiceProcess, running_module, scrape, wait_for
from song_analyzer.upstream_calls import RetryPolicy, retry_after_s

API_KEY = "song-key"
HEADERS = {"X-API-Key": API_KEY}
# A model of its own, so the fake upstream's per-model counts are this file's alone.
MODEL = "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:retries"
LYRICS = "Under the neon rain\nI call your name again\n" * 4
UPSTREAM_MAX_CONCURRENCY = 2
ANALYSES = "/analyze"


def service_env(fake_upstream_url: str, **overrides: str) -> dict[str, str]:
    return {
        "LLM_API_BASE_URL": fake_upstream_url,
        "LLM_MODEL": MODEL,
        "API_KEY": API_KEY,
        "CACHE_MAX_ENTRIES": "100",
        "UPSTREAM_MAX_CONCURRENCY": str(UPSTREAM_MAX_CONCURRENCY),
        "UPSTREAM_MAX_RETRIES": "3",
        # Tiny back-off keeps the tests quick; a provider's Retry-After still sets the floor.
        "UPSTREAM_RETRY_BASE_DELAY_S": "0.01",
        "LOG_LEVEL": "INFO",
        **overrides,
    }


@pytest.fixture(scope="module")
def service(fake_upstream_url: str) -> Iterator[ServiceProcess]:
    """A deadline far beyond any test's tries: only the tries and the slots decide."""
    with running_module("song_analyzer", service_env(fake_upstream_url, LLM_TIMEOUT="60")) as up:
        yield up


@pytest.fixture
def upstream(fake_upstream: FakeUpstreamClient) -> FakeUpstreamClient:
    """The shared fake upstream with no faults and its counts at zero."""
    fake_upstream.reset_stats()
    return fake_upstream


def song(title: str) -> dict[str, str]:
    return {"artist": "Retry", "title": title, "lyrics": LYRICS}


def analyze(service: ServiceProcess, body: dict[str, str], request_id: str | None = None) -> httpx.Response:
    headers = {**HEADERS, **({"X-Request-ID": request_id} if request_id else {})}
    return httpx.post(service.base_url + ANALYSES, json=body, headers=headers, timeout=90)


def first_request_passes(service: ServiceProcess, title: str) -> None:
    """Spend the fault schedule's 1st request (which no rate below 1 fails) on another song."""
    response = analyze(service, song(f"{title} (first of the schedule)"))
    assert response.status_code == 200, response.text


class Deltas:
    """What a service's counters moved by since it was made."""

    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.before = scrape(service.base_url)

    def of(self, name: str, **labels: str) -> float:
        return scrape(self.service.base_url).value(name, **labels) - self.before.value(name, **labels)

    def upstream(self, outcome: str) -> float:
        return self.of("model_upstream_requests_total", model=MODEL, outcome=outcome)

    def requests(self, outcome: str) -> float:
        return self.of("model_requests_total", route=ANALYSES, outcome=outcome)


def log_lines(service: ServiceProcess, request_id: str, message: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("request_id") == request_id and line.get("message") == message]


# --- retries ---------------------------------------------------------------------------------


def test_an_upstream_429_is_retried_after_its_retry_after_and_the_song_is_scored(
    service: ServiceProcess, upstream: FakeUpstreamClient
) -> None:
    upstream.set_fault(MODEL, error_rate=0.5, status_code=429)  # Retry-After: 1
    first_request_passes(service, "Rate limited once")
    upstream.reset_stats()
    deltas = Deltas(service)

    response = analyze(service, song("Rate limited once"), request_id="retry-429-then-ok")

    assert response.status_code == 200, response.text
    assert response.json()["cached"] is False
    assert upstream.stats()[MODEL] == {"error": 1, "success": 1}
    assert (deltas.upstream("error"), deltas.upstream("success")) == (1, 1), "each try counted"
    assert (deltas.requests("success"), deltas.requests("error")) == (1, 0)
    retries = log_lines(service, "retry-429-then-ok", "retrying the upstream call")
    assert [(line["code"], line["retry"]) for line in retries] == [("upstream_rate_limited", 1)]
    # The planned wait, not a measured one: the provider's Retry-After of 1 s beats the
    # 0.01 s back-off.
    assert retries[0]["wait_s"] >= 1


def test_three_503s_then_an_answer_succeed_on_the_fourth_try(
    service: ServiceProcess, upstream: FakeUpstreamClient
) -> None:
    upstream.set_fault(MODEL, error_rate=0.75, status_code=503)
    first_request_passes(service, "Three outages")
    upstream.reset_stats()
    deltas = Deltas(service)

    response = analyze(service, song("Three outages"))

    assert response.status_code == 200, response.text
    assert upstream.stats()[MODEL] == {"error": 3, "success": 1}
    assert (deltas.upstream("error"), deltas.upstream("success")) == (3, 1)
    assert (deltas.requests("success"), deltas.requests("error")) == (1, 0)


def test_a_persistent_503_is_a_502_after_one_try_and_three_retries(
    service: ServiceProcess, upstream: FakeUpstreamClient
) -> None:
    upstream.set_fault(MODEL, error_rate=1.0, status_code=503)
    deltas = Deltas(service)

    response = analyze(service, song("Always down"))

    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_status_503")
    assert "injected fault" not in response.text, "the provider's text stays in the log"
    assert upstream.stats()[MODEL] == {"error": 4}
    assert deltas.upstream("error") == 4
    assert (deltas.requests("error"), deltas.requests("success")) == (1, 0)


@pytest.mark.parametrize(
    ("upstream_status", "status", "code", "outcome"),
    [
        pytest.param(400, 400, "upstream_rejected", "rejected", id="400 content refused"),
        pytest.param(401, 502, "upstream_status_401", "error", id="401 bad key"),
        pytest.param(404, 502, "upstream_status_404", "error", id="404 unknown model"),
        pytest.param(422, 400, "upstream_rejected", "rejected", id="422 unprocessable"),
    ],
)
def test_an_upstream_4xx_other_than_429_is_answered_after_one_try(
    service: ServiceProcess,
    upstream: FakeUpstreamClient,
    upstream_status: int,
    status: int,
    code: str,
    outcome: str,
) -> None:
    upstream.set_fault(MODEL, error_rate=1.0, status_code=upstream_status)
    deltas = Deltas(service)

    response = analyze(service, song(f"Refused with {upstream_status}"))

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert upstream.stats()[MODEL] == {"error": 1}, "never retried"
    assert deltas.upstream("error") == 1
    assert deltas.requests(outcome) == 1


def test_a_retry_after_beyond_the_deadline_is_not_waited_out(
    service: ServiceProcess, upstream: FakeUpstreamClient
) -> None:
    # An hour is past the service's 60 s deadline: it answers the 429 now, not a 504 later.
    upstream.set_fault(MODEL, error_rate=1.0, status_code=429, retry_after_s=3600)
    deltas = Deltas(service)

    response = analyze(service, song("Come back in an hour"))

    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "upstream_rate_limited"
    assert response.headers["Retry-After"] == "3600", "the provider's wait, passed on"
    assert upstream.stats()[MODEL] == {"error": 1}
    assert (deltas.requests("error"), deltas.requests("timeout")) == (1, 0)


def test_an_upstream_timeout_is_a_504_counted_as_timeout_and_not_retried(
    fake_upstream_url: str, upstream: FakeUpstreamClient
) -> None:
    # The built-in timeout-rate gate reads exactly this outcome.
    assert 'outcome="timeout"' in BUILTIN_QUERIES["timeout-rate"]
    env = service_env(fake_upstream_url, LLM_TIMEOUT="1")
    with running_module("song_analyzer", env) as hasty:
        upstream.set_fault(MODEL, timeout_rate=1.0, hang_s=60)
        deltas = Deltas(hasty)

        response = analyze(hasty, song("Never answered"))

        assert response.status_code == 504, response.text
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("timeout_error", "upstream_timeout")
        assert MODEL in error["message"]
        assert (deltas.requests("timeout"), deltas.requests("error")) == (1, 0)
        assert (deltas.upstream("timeout"), deltas.upstream("error")) == (1, 0)
    # The fake counts its hang when the service has hung up on it.
    wait_for(lambda: upstream.stats().get(MODEL, {}).get("timeout") == 1, timeout_s=30,
             what="the fake upstream to count the abandoned try")  # fmt: skip
    assert upstream.stats()[MODEL] == {"timeout": 1}, "the deadline left no time for a retry"


# --- bounded concurrency to the upstream ------------------------------------------------------


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Wait for ``condition`` (blocking, so run in a thread) to hold, or fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await asyncio.to_thread(condition):
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


def upstream_slots(service: ServiceProcess) -> str:
    health = httpx.get(service.base_url + "/health", timeout=10).json()
    return str(health["checks"]["upstream_slots"]["detail"])


def test_upstream_calls_in_flight_never_exceed_the_bound(
    service: ServiceProcess, upstream: FakeUpstreamClient
) -> None:
    upstream.set_fault(MODEL, latency_s=0.2)
    titles = [f"Crowd {n}" for n in range(3 * UPSTREAM_MAX_CONCURRENCY)]

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=service.base_url, headers=HEADERS,
                                     timeout=90) as client:  # fmt: skip
            return await asyncio.gather(*(client.post(ANALYSES, json=song(t)) for t in titles))

    responses = asyncio.run(all_at_once())

    assert [r.status_code for r in responses] == [200] * len(titles), "every one waited its turn"
    assert upstream.stats()[MODEL] == {"success": len(titles)}
    _, peak = upstream.concurrency(MODEL)
    assert peak <= UPSTREAM_MAX_CONCURRENCY


def test_a_cache_hit_is_answered_while_every_upstream_slot_is_taken(
    service: ServiceProcess, upstream: FakeUpstreamClient
) -> None:
    cached = song("Already scored")
    assert analyze(service, cached).status_code == 200
    upstream.set_fault(MODEL, timeout_rate=1.0, hang_s=120)  # every call hangs
    upstream.reset_stats()
    deltas = Deltas(service)
    full = (f"{UPSTREAM_MAX_CONCURRENCY} of {UPSTREAM_MAX_CONCURRENCY} upstream calls in flight"
            " (UPSTREAM_MAX_CONCURRENCY)")  # fmt: skip

    def in_flight_at_the_fake() -> int:
        return upstream.concurrency(MODEL)[0]

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(base_url=service.base_url, headers=HEADERS,
                                     timeout=90) as client:  # fmt: skip
            # One more miss than there are slots: two hang at the provider, one waits.
            misses = [asyncio.ensure_future(client.post(ANALYSES, json=song(f"Stuck {n}")))
                      for n in range(UPSTREAM_MAX_CONCURRENCY + 1)]  # fmt: skip
            try:
                await until(lambda: upstream_slots(service) == f"{full}, 1 waiting",
                            "both slots taken and one miss waiting")  # fmt: skip
                await until(lambda: in_flight_at_the_fake() == UPSTREAM_MAX_CONCURRENCY,
                            "the fake upstream to hold both calls")  # fmt: skip
                hit = await client.post(ANALYSES, json=cached)
                # Still full and still one waiting: the hit went past them all.
                assert upstream_slots(service) == f"{full}, 1 waiting"
                assert in_flight_at_the_fake() == UPSTREAM_MAX_CONCURRENCY
                # Judged here, while the callers are still there: once they leave, a slot
                # freed by a cancelled call may go to the waiting miss before the service has
                # read that miss's own hang-up, while the fake still counts the cancelled
                # call until it notices its connection closed (a count of 3 at the fake for
                # 2 at the service).
                assert upstream.concurrency(MODEL)[1] == UPSTREAM_MAX_CONCURRENCY, "never a third"
                return hit
            finally:
                for miss in misses:  # the callers leave: the service drops their calls
                    miss.cancel()
                await asyncio.gather(*misses, return_exceptions=True)

    hit = asyncio.run(scenario())

    assert hit.status_code == 200, hit.text
    assert hit.json()["cached"] is True
    assert deltas.of("model_cache_requests_total", result="hit") == 1
    assert deltas.of("model_cache_requests_total", result="miss") == UPSTREAM_MAX_CONCURRENCY + 1
    idle = full.replace(f"{UPSTREAM_MAX_CONCURRENCY} of", "0 of", 1) + ", 0 waiting"
    wait_for(lambda: upstream_slots(service) == idle, timeout_s=30,
             what="the abandoned calls to give their slots back")  # fmt: skip
    wait_for(lambda: in_flight_at_the_fake() == 0, timeout_s=30,
             what="the fake upstream to see the abandoned calls hang up")  # fmt: skip


# --- the cache-hit-rate gate ------------------------------------------------------------------

SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)(=~|!~|!=|=)"([^"]*)"')
# Prometheus attaches these to every series it scrapes from a pod (DESIGN.md); the service
# itself does not export them.
TARGET_LABELS = frozenset({"namespace", "modeldeploy_name", "modeldeploy_revision"})


def increase(selector: str, before: MetricSamples, after: MetricSamples) -> float:
    """How much the series a PromQL selector picks grew between two scrapes."""
    match = SELECTOR.search(selector)
    assert match is not None, selector
    name, matchers = match.group(1), MATCHER.findall(match.group(2))
    wanted = {label: value for label, op, value in matchers if label not in TARGET_LABELS}
    assert all(op == "=" for label, op, _ in matchers if label not in TARGET_LABELS), matchers

    def total(samples: MetricSamples) -> float:
        return samples.value(name, **wanted)

    return total(after) - total(before)


def test_the_cache_hit_rate_gate_is_computable_over_what_the_service_exports(
    service: ServiceProcess,
) -> None:
    # As the operator sends it to Prometheus for one revision.
    context = QueryContext(name="song-analyzer", namespace="ml", revision="r2",
                           stable_revision="r1", interval="30s")  # fmt: skip
    numerator, denominator = render(BUILTIN_QUERIES["cache-hit-rate"], context).split(" / ")
    before = scrape(service.base_url)

    for title in ("Gate A", "Gate A", "Gate A", "Gate B"):  # a miss, two hits, a miss
        assert analyze(service, song(title)).status_code == 200
    after = scrape(service.base_url)

    assert after.has("model_cache_requests_total", result="hit")
    assert after.has("model_cache_requests_total", result="miss")
    assert increase(numerator, before, after) == 2, "the hits the gate counts"
    assert increase(denominator, before, after) == 4, "every lookup"
    assert increase(numerator, before, after) / increase(denominator, before, after) == 0.5


# --- the retry policy, without a server ---------------------------------------------------------


def provider_error(status: int, headers: dict[str, str] | None = None) -> ServiceError:
    """The kit's mapped error raised from the SDK's, as ``metrics.upstream_call`` raises it."""
    request = httpx2.Request("POST", "https://provider.invalid/v1/chat/completions")
    response = httpx2.Response(status, headers=headers, request=request)
    sdk_error = openai.APIStatusError("provider said no", response=response, body=None)
    mapped = upstream_error("mapped")
    mapped.__cause__ = sdk_error
    return mapped


def sdk_error_of(error: ServiceError) -> openai.APIStatusError:
    assert isinstance(error.__cause__, openai.APIStatusError)
    return error.__cause__


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        pytest.param({"retry-after": "2"}, 2.0, id="whole seconds"),
        pytest.param({"retry-after": "0.5"}, 0.5, id="fractional seconds"),
        pytest.param({"retry-after-ms": "250", "retry-after": "9"}, 0.25, id="ms first"),
        pytest.param({"retry-after": "-3"}, 0.0, id="a negative wait is none"),
        pytest.param({"retry-after": "inf"}, float("inf"), id="infinity: no deadline allows it"),
        pytest.param({"retry-after": "nan"}, None, id="nan is no answer"),
        pytest.param({"retry-after": "soon"}, None, id="unreadable"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_retry_after_is_read_as_the_provider_meant_it(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_s(sdk_error_of(provider_error(429, headers))) == seconds


def test_retry_after_as_an_http_date_is_the_seconds_until_then() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    waited = retry_after_s(sdk_error_of(provider_error(503, {"retry-after": later})))
    assert waited is not None and 100 < waited <= 120


def test_the_back_off_doubles_with_jitter_and_never_undercuts_retry_after() -> None:
    policy = RetryPolicy(max_retries=3, base_delay_s=0.5)
    waits = [policy.wait_before_retry(provider_error(503), retry) for retry in range(4)]
    assert waits[3] is None, "at most three retries"
    for retry, wait in enumerate(waits[:3]):
        step = 0.5 * 2**retry
        assert wait is not None and step <= wait <= 2 * step
    asked = policy.wait_before_retry(provider_error(429, {"retry-after": "7"}), 0)
    assert asked is not None and 7 <= asked <= 7.5


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_no_4xx_but_429_is_retried(status: int) -> None:
    assert RetryPolicy(max_retries=3, base_delay_s=0.5).wait_before_retry(provider_error(status), 0) is None


def test_a_failure_the_sdk_did_not_raise_is_not_retried() -> None:
    # A timeout, an unusable answer: the kit's error carries no provider status.
    assert (
        RetryPolicy(max_retries=3, base_delay_s=0.5).wait_before_retry(upstream_error("unusable"), 0) is None
    )

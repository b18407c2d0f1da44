"""modelkit's admission control over real HTTP: a bounded number of requests run, a bounded
number wait in arrival order, the rest get 429 with Retry-After; a client that leaves has
its work dropped; a body that trickles in is cut off."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from modelkit import ServiceSettings, create_app
from modelkit.limits import ConcurrencyLimiter
from modelkit.testing import scrape, serve_app, wait_for
from pydantic import BaseModel


class Work(BaseModel):
    name: str


@dataclass
class Demo:
    """A service whose one route runs until the test releases it, noting what ran."""

    url: str
    limiter: ConcurrencyLimiter
    release: threading.Event = field(default_factory=threading.Event)
    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4))

    def post(self, name: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + "/work", json={"name": name}, timeout=10, **kwargs)

    def post_later(self, name: str) -> Future[httpx.Response]:
        return self.pool.submit(self.post, name)

    def raw_client(self, name: str, *, body_bytes: int | None = None) -> socket.socket:
        """A client on a plain socket (so the test can hang up): the whole request, or its
        headers and only ``body_bytes`` of its body."""
        body = json.dumps({"name": name}).encode()
        host, port = self.url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=10)
        head = (f"POST /work HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
        sock.sendall(head + (body if body_bytes is None else body[:body_bytes]))
        return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (with Content-Length) read off ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines
                   if line.lower().startswith("content-length:")), 0)  # fmt: skip
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), body


def build_demo(settings: ServiceSettings, demo_state: dict[str, Demo]) -> FastAPI:
    app = create_app(settings, service="demo", models=["demo-model"])

    @app.post("/work")
    async def work(body: Work) -> dict[str, str]:
        demo = demo_state["demo"]
        demo.started.append(body.name)
        try:
            while not demo.release.is_set():  # the fake's own wait, until the test says
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            demo.cancelled.append(body.name)
            raise
        demo.finished.append(body.name)
        return {"done": body.name}

    return app


@pytest.fixture
def demo() -> Iterator[Demo]:
    settings = ServiceSettings(max_concurrent_requests=1, max_queued_requests=1,
                               request_body_timeout_s=0.5)  # fmt: skip
    holder: dict[str, Demo] = {}
    app = build_demo(settings, holder)
    with serve_app(app) as url:
        holder["demo"] = Demo(url, app.state.limiter)
        try:
            yield holder["demo"]
        finally:
            holder["demo"].release.set()
            holder["demo"].pool.shutdown(wait=True)


def _running(demo: Demo, name: str) -> None:
    wait_for(lambda: demo.started[-1:] == [name], timeout_s=10, what=f"{name} to run")


def test_over_capacity_a_request_gets_a_429_with_retry_after_and_the_queue_runs_in_order(
    demo: Demo,
) -> None:
    first = demo.post_later("A")
    _running(demo, "A")
    second = demo.post_later("B")
    wait_for(lambda: demo.limiter.waiting == 1, timeout_s=10, what="B to wait in the queue")

    refused = demo.post("C", headers={"X-Request-ID": "req-c"})
    health = httpx.get(demo.url + "/health", timeout=5)  # probes are never queued
    demo.release.set()

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["request_id"]) == (
        "rate_limit_error", "capacity_exceeded", "req-c")  # fmt: skip
    assert "MAX_CONCURRENT_REQUESTS" in error["message"]
    assert health.status_code == 200
    assert health.json()["checks"]["capacity"]["detail"].startswith("2 of 2 places taken")
    assert first.result().status_code == 200 and second.result().status_code == 200
    assert demo.started == ["A", "B"] and "C" not in demo.started
    metrics = scrape(demo.url)
    assert metrics.value("model_requests_total", route="/work", outcome="rejected") == 1
    assert metrics.value("model_requests_total", route="/work", outcome="success") == 2


def test_a_queued_request_whose_client_left_never_runs(demo: Demo) -> None:
    first = demo.post_later("A")
    _running(demo, "A")
    leaving = demo.raw_client("B")
    wait_for(lambda: demo.limiter.waiting == 1, timeout_s=10, what="B to wait in the queue")
    leaving.close()
    wait_for(lambda: demo.limiter.admitted == 1, timeout_s=10, what="B to leave the queue")
    demo.release.set()

    assert first.result().status_code == 200
    assert demo.post("D").status_code == 200
    assert demo.started == ["A", "D"]
    metrics = scrape(demo.url)
    assert metrics.value("model_requests_total", route="/work", outcome="rejected") == 1
    assert metrics.value("model_requests_total", route="/work", outcome="error") == 0


def test_a_request_whose_client_left_while_it_ran_is_cancelled_and_frees_its_slot(
    demo: Demo,
) -> None:
    leaving = demo.raw_client("A")
    _running(demo, "A")
    leaving.close()
    wait_for(lambda: demo.cancelled == ["A"], timeout_s=10, what="A to be cancelled")
    wait_for(lambda: demo.limiter.admitted == 0, timeout_s=10, what="A's slot to be free")

    demo.release.set()
    assert demo.post("B").status_code == 200
    assert demo.finished == ["B"]
    metrics = scrape(demo.url)
    assert metrics.value("model_requests_total", route="/work", outcome="rejected") == 1
    assert metrics.value("model_requests_total", route="/work", outcome="error") == 0


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_frees_its_place(demo: Demo) -> None:
    stalled = demo.raw_client("A", body_bytes=5)
    status, body = read_response(stalled)  # the service answers at its deadline: no sleep
    stalled.close()

    assert status == 408, body
    error = json.loads(body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")
    assert "REQUEST_BODY_TIMEOUT_S" in error["message"]
    wait_for(lambda: demo.limiter.admitted == 0, timeout_s=10, what="the place to be free")
    assert demo.started == []
    assert scrape(demo.url).value("model_requests_total", route="/work", outcome="rejected") == 1

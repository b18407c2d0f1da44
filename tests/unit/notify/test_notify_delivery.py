"""Delivery to a real HTTP receiver on 127.0.0.1: order, retries, a receiver that is down.

The receiver is an aiohttp server in the test's own event loop; the Secrets and Events the
notifier reads and posts go to a small in-memory stand-in for the API server. Nothing
waits by sleeping: each test waits for the notifier to go idle, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from modeldeploy import metrics, notify
from modeldeploy import spec as s

DEADLINE = 10.0
FAST_BACKOFF = (0.01, 0.02, 0.04, 0.08)
TOKEN = "T0KEN-in-the-url"


@dataclass
class ApiServer:
    """Secrets by (namespace, name) and the Events posted, as the notifier sees the API."""

    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        return self.secrets.get((namespace, name), {}).get(key)

    async def emit_event(self, md_body: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        self.events.append((event_type, reason, message))


@dataclass
class Receiver:
    """Answers each POST with the next scripted status (200 once the script is used up)."""

    script: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    release: asyncio.Event | None = None  # when set: hold every answer until it is set

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.release is not None:
            await self.release.wait()
        status = self.script.pop(0) if self.script else 200
        if status == 200:
            self.bodies.append(json.loads(await request.read()))
        return web.Response(status=status)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(test: Callable[[Receiver, str, ApiServer, notify.Notifier], Awaitable[None]],
        receiver: Receiver | None = None, **notifier_options: Any) -> None:
    async def main() -> None:
        got = receiver or Receiver()
        app = web.Application()
        app.router.add_post("/hook/{token}", got.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        api = ApiServer()
        options = {"backoff": FAST_BACKOFF, "per_try_timeout": 2.0, **notifier_options}
        notifier = notify.Notifier(api, **options)
        try:
            await test(got, f"http://127.0.0.1:{port}/hook/{TOKEN}", api, notifier)
        finally:
            await notifier.stop()
            await runner.cleanup()

    asyncio.run(main())


def model_deployment(name: str, webhooks: list[dict[str, Any]]) -> s.ModelDeployment:
    return s.ModelDeployment.model_validate({
        "metadata": {"name": name, "namespace": "ml", "uid": "u1"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x"}]}},
                 "notifications": {"webhooks": webhooks}},
    })


HOOK = {"name": "chat", "urlFrom": {"secretKeyRef": {"name": "hooks", "key": "chat"}}}


def note(
    md: s.ModelDeployment, event: s.NotificationEvent, revision: str = "a42d94e088"
) -> notify.Notification:
    return notify.Notification(
        event=event, namespace=md.metadata.namespace, name=md.metadata.name, revision=revision,
        phase="Progressing", reason="RolloutStarted", message="new revision", stable_revision="7c9f",
        canary_revision=revision, canary_weight=10, time="2026-01-01T12:00:00Z")


def counted(md: s.ModelDeployment, webhook: str, result: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "modeldeploy_notifications_total",
        {"namespace": md.metadata.namespace, "name": md.metadata.name, "webhook": webhook, "result": result})
    return value or 0.0


async def idle(notifier: notify.Notifier) -> None:
    await asyncio.wait_for(notifier.wait_idle(), DEADLINE)


def deliver(md: s.ModelDeployment, notifier: notify.Notifier, *events: s.NotificationEvent) -> float:
    """Enqueue; returns the seconds the enqueue itself took."""
    started = time.monotonic()
    notifier.enqueue(md, notify.targets_for(md, None), [note(md, e) for e in events])
    return time.monotonic() - started


def test_notifications_arrive_in_order_and_are_counted() -> None:
    md = model_deployment("in-order", [HOOK])

    async def check(receiver: Receiver, url: str, api: ApiServer, notifier: notify.Notifier) -> None:
        api.secrets[("ml", "hooks")] = {"chat": url}
        deliver(md, notifier, "Started", "Paused", "Promoted")
        await idle(notifier)
        assert [b["event"] for b in receiver.bodies] == ["Started", "Paused", "Promoted"]
        assert receiver.bodies[0]["summary"] == (
            "ml/in-order: Started revision a42d94e088 at 10%: new revision")
        assert counted(md, "chat", "delivered") == 3 and api.events == []

    run(check)


def test_a_slack_webhook_gets_the_summary_as_text_and_only_the_events_it_asked_for() -> None:
    md = model_deployment("slack", [{**HOOK, "format": "slack", "events": ["RolledBack"]}])

    async def check(receiver: Receiver, url: str, api: ApiServer, notifier: notify.Notifier) -> None:
        api.secrets[("ml", "hooks")] = {"chat": url}
        deliver(md, notifier, "Started", "RolledBack")
        await idle(notifier)
        assert receiver.bodies == [{"text": "ml/slack: RolledBack revision a42d94e088 at 10%: new revision"}]

    run(check)


def test_a_receiver_answering_503_twice_gets_it_on_the_third_try() -> None:
    md = model_deployment("flaky", [HOOK])

    async def check(receiver: Receiver, url: str, api: ApiServer, notifier: notify.Notifier) -> None:
        api.secrets[("ml", "hooks")] = {"chat": url}
        deliver(md, notifier, "Started")
        await idle(notifier)
        assert receiver.hits == 3 and [b["event"] for b in receiver.bodies] == ["Started"]
        assert counted(md, "chat", "delivered") == 1 and counted(md, "chat", "failed") == 0

    run(check, Receiver(script=[503, 503]))


def test_a_receiver_that_is_down_ends_in_failed_without_blocking_the_caller() -> None:
    md = model_deployment("down", [HOOK])

    async def check(receiver: Receiver, url: str, api: ApiServer, notifier: notify.Notifier) -> None:
        closed = f"http://127.0.0.1:{free_port()}/hook/{TOKEN}"  # nothing listens there
        api.secrets[("ml", "hooks")] = {"chat": closed}
        took = deliver(md, notifier, "Started", "RolledBack")
        assert took < 0.05, f"enqueue took {took:.3f}s"
        await idle(notifier)
        assert counted(md, "chat", "failed") == 2 and counted(md, "chat", "delivered") == 0
        assert [(t, r) for t, r, _ in api.events] == [("Warning", "NotificationFailed")] * 2
        message = api.events[1][2]
        assert message.startswith("webhook chat: RolledBack notification for revision a42d94e088 "
                                  "not delivered: could not connect"), message
        assert "after 5 tries" in message and TOKEN not in message and "127.0.0.1" not in message

    run(check)


def test_a_404_is_not_retried() -> None:
    md = model_deployment("gone", [HOOK])

    async def check(receiver: Receiver, url: str, api: ApiServer, notifier: notify.Notifier) -> None:
        api.secrets[("ml", "hooks")] = {"chat": url}
        deliver(md, notifier, "Started")
        await idle(notifier)
        assert receiver.hits == 1 and counted(md, "chat", "failed") == 1
        assert "the receiver answered 404 Not Found (not retried" in api.events[0][2]

    run(check, Receiver(script=[404]))


def test_a_receiver_slower_than_the_timeout_is_tried_again_and_given_up() -> None:
    md = model_deployment("slow", [HOOK])
    held = Receiver()

    async def check(receiver: Receiver, url: str, api: ApiServer, notifier: notify.Notifier) -> None:
        receiver.release = asyncio.Event()  # never set: no answer at all
        api.secrets[("ml", "hooks")] = {"chat": url}
        deliver(md, notifier, "Started")
        await idle(notifier)
        assert receiver.hits == 5
        assert "no answer within 0.2s (after 5 tries)" in api.events[0][2]
        receiver.release.set()  # let the held handlers end before the server stops

    run(check, held, per_try_timeout=0.2)


def test_a_missing_secret_is_reported_once_and_delivery_resumes_once_it_exists() -> None:
    md = model_deployment("no-secret", [HOOK])

    async def check(receiver: Receiver, url: str, api: ApiServer, notifier: notify.Notifier) -> None:
        deliver(md, notifier, "Started", "Paused")
        await idle(notifier)
        assert counted(md, "chat", "failed") == 2
        assert len(api.events) == 1
        assert "the webhook's Secret is missing (Secret ml/hooks key 'chat' not found)" in api.events[0][2]
        api.secrets[("ml", "hooks")] = {"chat": "not a url " + TOKEN}
        deliver(md, notifier, "Promoted")
        await idle(notifier)
        assert "is not an http(s) URL" in api.events[1][2] and TOKEN not in api.events[1][2]
        api.secrets[("ml", "hooks")] = {"chat": url}
        deliver(md, notifier, "Started")
        await idle(notifier)
        assert [b["event"] for b in receiver.bodies] == ["Started"] and len(api.events) == 2

    run(check)


def test_a_full_lane_drops_the_oldest_and_counts_it() -> None:
    md = model_deployment("behind", [HOOK])

    async def check(receiver: Receiver, url: str, api: ApiServer, notifier: notify.Notifier) -> None:
        receiver.release = asyncio.Event()
        api.secrets[("ml", "hooks")] = {"chat": url}
        deliver(md, notifier, "Started")
        await asyncio.wait_for(_until(lambda: receiver.hits == 1), DEADLINE)  # in flight
        deliver(md, notifier, "Paused", "Promoted", "RolledBack")  # room for two
        receiver.release.set()
        await idle(notifier)
        assert [b["event"] for b in receiver.bodies] == ["Started", "Promoted", "RolledBack"]
        assert counted(md, "chat", "dropped") == 1

    run(check, lane_capacity=2)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)

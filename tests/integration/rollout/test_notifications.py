"""Webhook notifications from the real operator process: in order, and never in the way.

A receiver (an HTTP server in the test, on 127.0.0.1) is named by one webhook; a second
webhook's Secret names a port nothing listens on. The receiver gets Started then Promoted
for the first deployment and for a canary, in that order, while the webhook that is down
delays nothing: both rollouts finish before its first notification has used up its tries
(1 + 2 + 4 + 8 s of back-off), and then it is reported as a NotificationFailed Event that
names the webhook, never its URL.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from operator_process import OperatorProcess, free_port
from scenario import (
    User,
    deploy_first,
    entry_of,
    md_events,
    model_deployment,
    start_rollout,
    template,
    wait_event,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "notified"
TOKEN = "s3cret-token"
STEPS = [{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 100}]


class Receiver:
    """Records the JSON bodies POSTed to it, in arrival order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with received._lock:
                    received.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{TOKEN}"

    def seen(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(b["event"], b["revision"]) for b in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver()
    thread = threading.Thread(target=got.server.serve_forever, daemon=True)
    thread.start()
    yield got
    got.server.shutdown()
    got.server.server_close()


def test_a_receiver_gets_each_transition_in_order_and_a_dead_one_delays_nothing(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess, receiver: Receiver,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hooks/{TOKEN}"  # nothing listens there
    kube.create({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "rollout-hooks", "namespace": namespace},
        "data": {key: base64.b64encode(url.encode()).decode()
                 for key, url in (("live", receiver.url), ("dead", dead))},
    })
    notifications = {"webhooks": [
        {"name": "live-hook", "urlFrom": {"secretKeyRef": {"name": "rollout-hooks", "key": "live"}}},
        {"name": "dead-hook", "urlFrom": {"secretKeyRef": {"name": "rollout-hooks", "key": "dead"}}},
    ]}
    user = User(sandbox, namespace)

    def manifest(mark: str) -> dict[str, Any]:
        return model_deployment(NAME, namespace, template(mark), steps=STEPS, bake_time="1s",
                                notifications=notifications)

    first = deploy_first(user, kube, manifest("v1"))
    canary = start_rollout(user, kube, manifest("v2"))
    done = wait_status(kube, namespace, NAME,
                       lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == canary,
                       "the canary to be promoted")
    assert entry_of(done, canary)["outcome"] == "Promoted"
    # Both rollouts are done before the dead webhook's first notification gave up: it held
    # nothing up (its tries take 15 s of back-off alone).
    assert [e for e in md_events(kube, namespace, NAME) if e["reason"] == "NotificationFailed"] == []

    expected = [("Started", first), ("Promoted", first), ("Started", canary), ("Promoted", canary)]
    wait_until(lambda: receiver.seen() == expected or None, timeout=30,
               what=f"the receiver to get {expected} (got {receiver.seen()})")
    promoted = receiver.bodies[-1]
    assert promoted["modelDeployment"] == {"namespace": namespace, "name": NAME}
    assert promoted["summary"].startswith(f"{namespace}/{NAME}: Promoted revision {canary} at 100%")
    assert (promoted["stableRevision"], promoted["canaryRevision"]) == (canary, None)

    failed = wait_event(kube, namespace, NAME, "NotificationFailed", "webhook dead-hook: Started", 60)
    assert failed["type"] == "Warning"
    assert "could not connect" in failed["message"] and "after 5 tries" in failed["message"]
    for event in md_events(kube, namespace, NAME):
        assert TOKEN not in event.get("message", "") and dead not in event.get("message", "")
    assert TOKEN not in operator.log_path.read_text()
    assert "live-hook" not in " ".join(
        e["message"] for e in md_events(kube, namespace, NAME) if e["reason"] == "NotificationFailed")

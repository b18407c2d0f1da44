"""A real HTTP server that misbehaves the ways a metric provider or an API server can.

``HostileServer`` listens on 127.0.0.1 and answers each request by the first behaviour
whose key appears in the request's query string (the PromQL of a Prometheus query), else
with ``default``:

- ``trickle-headers``: the status line, then one byte of a header every ``interval``, never
  finishing the headers;
- ``trickle-body``: complete headers announcing a large body, then one byte of it every
  ``interval``;
- ``huge-error``: HTTP 400 with a Prometheus error whose text is ``HUGE_ERROR_BYTES`` long,
  full of terminal escapes and line breaks;
- ``many-series``: HTTP 200 with five series whose label values are long and hold escapes;
- ``vector``: HTTP 200 with one series of value 1;
- ``slow-vector``: the same, after ``slow_seconds``;
- ``lease``: a coordination.k8s.io Lease API that never has the Lease (a read is 404)
  and accepts every create, so an elector takes and keeps it.

``default`` may be changed while the server runs (a healthy server that starts trickling).

A trickle stops when the client goes away (recorded in ``clients_gone``), when the server
closes, or after ``give_up_after`` seconds, so a client that never gives up is freed when
the test ends. Every request is recorded (method, target, Authorization header).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HUGE_ERROR_BYTES = 100_000
ESCAPES = "\x1b[2J\x1b[31m\r\n\x07\u202e"


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    authorization: str | None


class HostileServer:
    BEHAVIOURS = ("trickle-headers", "trickle-body", "huge-error", "many-series", "slow-vector", "vector",
                  "lease")

    def __init__(
        self, default: str = "vector", interval: float = 0.1, give_up_after: float = 120.0,
        slow_seconds: float = 3.0,
    ) -> None:
        assert default in self.BEHAVIOURS
        self.default = default
        self.interval = interval
        self.slow_seconds = slow_seconds
        self.give_up_after = give_up_after
        self.requests: list[Request] = []
        self.clients_gone = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _client_gone(self) -> None:
        with self._lock:
            self.clients_gone += 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads server.requests

            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def do_PUT(self) -> None:
                self.do_POST()

            def _answer(self, body: bytes) -> None:
                server._record(Request(self.command, self.path, self.headers.get("Authorization")))
                query = self.path.partition("?")[2]
                behaviour = next((b for b in server.BEHAVIOURS if b in query), server.default)
                if behaviour == "trickle-headers":
                    self._trickle(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 1_000_000)
                elif behaviour == "trickle-body":
                    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 1000000\r\n\r\n")
                    start = b'{"status":"success","data":{"resultType":"vector","result":['
                    self._trickle(head, start + b" " * (1_000_000 - len(start)))
                elif behaviour == "huge-error":
                    text = ("bad_data: " + ESCAPES) * (HUGE_ERROR_BYTES // 20)
                    self._json(400, {"status": "error", "errorType": "bad_data", "error": text})
                elif behaviour == "many-series":
                    result = [{"metric": {"pod": f"pod-{i}{ESCAPES}" + "x" * 5000}, "value": [0, "1"]}
                              for i in range(5)]
                    self._json(200, {"status": "success", "data": {"resultType": "vector", "result": result}})
                elif behaviour == "lease" and self.command == "GET":
                    self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "NotFound", "code": 404})
                elif behaviour == "lease":
                    lease = json.loads(body)
                    lease["metadata"]["resourceVersion"] = str(len(server.requests))
                    self._json(201, lease)
                else:
                    if behaviour == "slow-vector":
                        server._closing.wait(server.slow_seconds)  # the answer's own delay
                    result = [{"metric": {}, "value": [time.time(), "1"]}]
                    self._json(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

            def _json(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _trickle(self, head: bytes, rest: bytes) -> None:
                self.close_connection = True
                gives_up = time.monotonic() + server.give_up_after
                try:
                    self.wfile.write(head)
                    for i in range(len(rest)):
                        # Pacing the server's own bytes (the behaviour under test), not
                        # synchronising the test.
                        if server._closing.wait(server.interval) or time.monotonic() > gives_up:
                            return
                        self.wfile.write(rest[i:i + 1])
                except OSError:  # the client closed the connection: it gave up
                    server._client_gone()

        return Handler


@contextmanager
def hostile_server(default: str = "vector", **settings: Any) -> Iterator[HostileServer]:
    server = HostileServer(default, **settings).start()
    try:
        yield server
    finally:
        server.close()

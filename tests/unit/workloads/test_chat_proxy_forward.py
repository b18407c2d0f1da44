"""chat-proxy's own upstream client (chat_proxy.forward): what it sends, how it reads what
comes back (framing, keep-alive, a stale connection) and that every failure is the openai
SDK's exception, as when the SDK sent the request, so the kit maps it the same way."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable

import openai
import pytest
from chat_proxy import forward
from chat_proxy.forward import ChatForwarder, _plain_http_target
from modelkit.upstream import upstream_client

COMPLETION = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "hi"}}]}  # fmt: skip
KWARGS = {"model": "m", "messages": [{"role": "user", "content": "hé"}]}

Answer = Callable[[int, bytes], bytes]  # (request number, request) -> raw answer


def answer(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    head = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    if "Transfer-Encoding" not in (headers or {}):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Upstream:
    """A scripted HTTP/1.1 server on loopback recording what it received."""

    def __init__(self, respond: Answer, *, close_after_each: bool = False) -> None:
        self.respond = respond
        self.close_after_each = close_after_each
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))  # fmt: skip
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                writer.write(self.respond(len(self.requests), request))
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def run(self, test: Callable[[str], Awaitable[None]]) -> None:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            await test(f"http://127.0.0.1:{self.port}/v1")


def forwarder(base_url: str, key: str = "sk-test") -> ChatForwarder:
    return ChatForwarder(upstream_client(base_url=base_url, api_key=key, timeout_s=5), 5)


def run(upstream: Upstream, test: Callable[[str], Awaitable[None]]) -> None:
    asyncio.run(upstream.run(test))


def test_it_posts_the_body_as_the_sdk_would_to_the_configured_url_with_the_key() -> None:
    upstream = Upstream(lambda n, r: answer(200, json.dumps(COMPLETION).encode(),
                                            {"Content-Type": "application/json"}))  # fmt: skip

    async def test(url: str) -> None:
        content_type, body = await forwarder(url).forward(KWARGS)
        assert content_type == "application/json"
        assert json.loads(body) == COMPLETION

    run(upstream, test)
    head, _, body = upstream.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{upstream.port}"
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("AsyncOpenAI/Python")
    assert json.loads(body) == KWARGS  # compact UTF-8 JSON, as the SDK encodes it
    assert body == json.dumps(KWARGS, ensure_ascii=False, separators=(",", ":")).encode()


def test_connections_are_kept_alive_and_reused() -> None:
    upstream = Upstream(lambda n, r: answer(200, b"{}"))

    async def test(url: str) -> None:
        sender = forwarder(url)
        for _ in range(3):
            assert (await sender.forward(KWARGS))[1] == b"{}"

    run(upstream, test)
    assert len(upstream.requests) == 3 and upstream.connections == 1


async def three_in_turn(url: str) -> None:
    """Three completions one after another; the pause lets a server's close reach the client
    first (whether it does or not, each request must get its answer)."""
    sender = forwarder(url)
    for _ in range(3):
        assert (await sender.forward(KWARGS))[1] == b"{}"
        await asyncio.sleep(0.01)


def test_a_connection_the_server_closed_is_not_reused_and_connection_close_is_honoured() -> None:
    closing = Upstream(lambda n, r: answer(200, b"{}", {"Connection": "close"}))
    dropping = Upstream(lambda n, r: answer(200, b"{}"), close_after_each=True)
    for upstream in (closing, dropping):
        run(upstream, three_in_turn)
        assert len(upstream.requests) == 3 and upstream.connections == 3


def test_a_reused_connection_closed_as_it_was_used_is_retried_once_on_a_fresh_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server closes each connection after its answer, and the closed connection still
    # looks usable (as when the close crosses the next request on the wire).
    monkeypatch.setattr(forward._Connection, "usable", lambda self, now: True)
    upstream = Upstream(lambda n, r: answer(200, b"{}"), close_after_each=True)
    run(upstream, three_in_turn)
    assert len(upstream.requests) == 3 and upstream.connections == 3


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(answer(200, b"", {"Transfer-Encoding": "chunked"}) + b"2\r\n{}\r\n0\r\n\r\n",
                     id="chunked"),
        pytest.param(answer(200, gzip.compress(b"{}"), {"Content-Encoding": "gzip"}), id="gzip"),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(200, b"{}"), id="after a 100"),
    ],
)  # fmt: skip
def test_framings_and_codings_httpx_reads_are_read(raw: bytes) -> None:
    upstream = Upstream(lambda n, r: raw)

    async def test(url: str) -> None:
        assert (await forwarder(url).forward(KWARGS))[1] == b"{}"

    run(upstream, test)


def test_a_204_has_no_body_whatever_its_headers_and_keeps_the_connection() -> None:
    upstream = Upstream(lambda n, r: b"HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\n\r\n")

    async def test(url: str) -> None:
        sender = forwarder(url)
        for _ in range(2):
            assert await asyncio.wait_for(sender.forward(KWARGS), 5) == ("application/json", b"")

    run(upstream, test)
    assert upstream.connections == 1


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (429, {"Retry-After": "7"}, openai.RateLimitError),
        (400, {}, openai.BadRequestError),
        (401, {}, openai.AuthenticationError),
        (404, {}, openai.NotFoundError),
        (503, {}, openai.InternalServerError),
    ],
)
def test_an_error_status_is_the_sdks_own_exception_with_the_answer(
    status: int, headers: dict[str, str], error: type[openai.APIStatusError]
) -> None:
    body = b'{"error": {"message": "sk-secret went wrong", "type": "x"}}'
    upstream = Upstream(lambda n, r: answer(status, body, {**headers, "Content-Type": "application/json"}))

    async def test(url: str) -> None:
        with pytest.raises(error) as raised:
            await forwarder(url).forward(KWARGS)
        assert raised.value.status_code == status
        assert raised.value.body == {"message": "sk-secret went wrong", "type": "x"}
        if "Retry-After" in headers:
            assert raised.value.response.headers["retry-after"] == "7"

    run(upstream, test)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"garbage\r\n\r\n", id="not HTTP"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", id="cut short"),
        pytest.param(b"", id="closed without an answer"),
    ],
)
def test_a_broken_answer_is_a_connection_error(raw: bytes) -> None:
    upstream = Upstream(lambda n, r: raw, close_after_each=True)

    async def test(url: str) -> None:
        with pytest.raises(openai.APIConnectionError):
            await forwarder(url).forward(KWARGS)

    run(upstream, test)


def test_an_unreachable_upstream_is_a_connection_error() -> None:
    async def test() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(openai.APIConnectionError):
            await forwarder(f"http://127.0.0.1:{port}/v1").forward(KWARGS)

    asyncio.run(test())


def test_a_redirect_is_left_to_the_sdk_which_follows_it() -> None:
    def respond(n: int, request: bytes) -> bytes:
        if request.startswith(b"POST /v1/chat/completions "):
            return answer(307, b"", {"Location": "/v2/chat/completions"})
        return answer(200, b"{}", {"Content-Type": "application/json"})

    upstream = Upstream(respond)

    async def test(url: str) -> None:
        assert await forwarder(url).forward(KWARGS) == ("application/json", b"{}")

    run(upstream, test)
    assert upstream.requests[-1].startswith(b"POST /v2/chat/completions ")


def test_only_a_plain_http_upstream_without_a_proxy_gets_the_proxys_own_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert _plain_http_target("http://upstream:9000/v1") == ("upstream", 9000, "/v1")
    assert _plain_http_target("http://upstream/v1/") == ("upstream", 80, "/v1")
    assert _plain_http_target("https://api.openai.com/v1") is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    assert _plain_http_target("http://upstream:9000/v1") is None
    monkeypatch.setenv("NO_PROXY", "upstream")
    assert _plain_http_target("http://upstream:9000/v1") == ("upstream", 9000, "/v1")

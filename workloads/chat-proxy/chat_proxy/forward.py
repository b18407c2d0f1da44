"""Sending a validated chat completion upstream: the proxy's hot path.

The openai SDK's request machinery (options, headers, auth hooks, httpx2's client layers,
anyio) cost about 2.5 ms of CPU per call, half of everything the proxy did per request. A
plain ``http://`` upstream without a proxy in the environment (the in-cluster case, and the
fake upstream) is therefore called over a small keep-alive HTTP/1.1 client of its own,
:class:`PlainHttpUpstream`, which sends what the SDK would (its headers, computed once,
the bearer key, the body as compact JSON) to the same ``<base URL>/chat/completions``.
Everything else (``https://``, an ``HTTP_PROXY``-style proxy, a redirect) goes through the
SDK as before.

Failures stay the SDK's exceptions, so the kit maps them exactly as it did
(:mod:`modelkit.upstream`): a 4xx/5xx becomes the SDK's own status error (built by the SDK
from the answer: ``RateLimitError`` with its ``Retry-After``, ``AuthenticationError``...);
a refused, reset or garbled connection becomes ``APIConnectionError``. The overall deadline
is the kit's (``upstream_call_within``); a call cut short by it, or by the client leaving,
closes its connection, which is never reused half-read. Like the SDK (``max_retries=0``), a
failed call is not retried, with one exception: a kept-alive connection that the upstream
closed as it was reused, before answering a byte (the keep-alive race every HTTP client
meets), is replaced by a fresh one once; idle connections are dropped after 4 s, under the
usual 5 s keep-alive of servers, so that race is rare.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai

CHAT_PATH = "/chat/completions"
# Idle connections kept for reuse, and how long: under the usual 5 s keep-alive of servers
# (uvicorn's), so a connection is dropped here before the server closes it mid-request.
MAX_IDLE_CONNECTIONS = 100
IDLE_EXPIRY_S = 4.0
_MAX_HEAD_BYTES = 64 * 1024


class _Redirected(Exception):
    """A 3xx answer: left to the SDK, which follows redirects."""


class _Stale(Exception):
    """A reused connection closed by the server before it answered: retried once, fresh."""


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and now - self.idle_since < IDLE_EXPIRY_S
        )

    def close(self) -> None:
        self.writer.close()


def _plain_http_target(base_url: str) -> tuple[str, int, str] | None:
    """(host, port, path prefix) when ``base_url`` can be served by :class:`PlainHttpUpstream`:
    plain http, no proxy configured for it in the environment; else None."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
        return None
    if parts.username or parts.password:
        return None
    proxies = urllib.request.getproxies()
    if ("http" in proxies or "all" in proxies) and not urllib.request.proxy_bypass(parts.hostname):
        return None
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


class PlainHttpUpstream:
    """POST JSON to one plain-http origin over kept-alive HTTP/1.1 connections."""

    def __init__(self, host: str, port: int, path: str, headers: Mapping[str, str]) -> None:
        self.host = host
        self.port = port
        self.path = path
        self._idle: list[_Connection] = []
        host_header = host if port == 80 else f"{host}:{port}"
        if ":" in host and not host.startswith("["):  # an IPv6 literal
            host_header = f"[{host}]" if port == 80 else f"[{host}]:{port}"
        lines = [f"POST {path} HTTP/1.1", f"Host: {host_header}"]
        skip = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
        lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() not in skip]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    async def post(self, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """(status, headers, body) of the answer to a POST of ``body``."""
        # Head and body written apart: a body of images (up to MAX_REQUEST_BYTES) is not
        # copied once more to join them.
        head = b"%b%d\r\n\r\n" % (self._head, len(body))
        connection = self._take_idle()
        if connection is not None:
            try:
                return await self._exchange(connection, head, body, reused=True)
            except _Stale:
                pass  # the server closed it as we sent: nothing was answered, send it afresh
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(_Connection(reader, writer), head, body, reused=False)

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable(now):
                return connection
            connection.close()
        return None

    def _give_back(self, connection: _Connection) -> None:
        if len(self._idle) < MAX_IDLE_CONNECTIONS:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    async def _exchange(
        self, connection: _Connection, head: bytes, body: bytes, *, reused: bool
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        keep = False
        try:
            connection.writer.write(head)
            connection.writer.write(body)
            try:
                answer_head = await connection.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as error:
                if reused and not error.partial:
                    raise _Stale from error
                raise
            except ConnectionResetError as error:
                if reused:
                    raise _Stale from error
                raise
            status, headers, keep_alive = _parse_head(answer_head)
            while 100 <= status < 200:  # interim answers (none is asked for): skip them
                answer_head = await connection.reader.readuntil(b"\r\n\r\n")
                status, headers, keep_alive = _parse_head(answer_head)
            if status in (204, 304):  # never a body, whatever the headers say
                content, framed = b"", True
            else:
                content, framed = await _read_body(connection.reader, headers)
            content = _decoded_body(headers, content)
            keep = keep_alive and framed
            return status, headers, content
        finally:
            if keep:
                self._give_back(connection)
            else:
                connection.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _parse_head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]], bool]:
    if len(head) > _MAX_HEAD_BYTES:
        raise ValueError("response head too large")
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1."):
        raise ValueError("not an HTTP/1.x response")
    status = int(rest[:3])
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise ValueError("malformed response header")
        headers.append((name.lower(), value.strip()))
    connection = b",".join(v for n, v in headers if n == b"connection").lower()
    keep_alive = (b"close" not in connection) if version == b"HTTP/1.1" else (b"keep-alive" in connection)
    return status, headers, keep_alive


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    values = [value for key, value in headers if key == name]
    return b",".join(values) if values else None


async def _read_body(
    reader: asyncio.StreamReader, headers: list[tuple[bytes, bytes]]
) -> tuple[bytes, bool]:
    """The body and whether its end was framed (so the connection may be reused)."""
    encoding = _header(headers, b"transfer-encoding")
    if encoding is not None and encoding.lower().split(b",")[-1].strip() == b"chunked":
        chunks: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(chunks), True
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("malformed chunk")
    length = _header(headers, b"content-length")
    if length is not None:
        lengths = {part.strip() for part in length.split(b",")}
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise ValueError("bad content-length")
        return await reader.readexactly(int(next(iter(lengths)))), True
    return await reader.read(), False  # delimited by the close


def _decoded_body(headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """Undo a gzip/deflate content coding (none is asked for; httpx would undo it too)."""
    coding = (_header(headers, b"content-encoding") or b"").strip().lower()
    if coding in (b"gzip", b"x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if coding == b"deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    return body


class ChatForwarder:
    """Sends a chat completion's arguments to the upstream; answers (content type, body) of a
    2xx, or raises the SDK's exception for what the SDK would have raised."""

    def __init__(self, client: openai.AsyncOpenAI, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._target = _plain_http_target(str(client.base_url))
        self._plain: PlainHttpUpstream | None = None
        self._url = str(client.base_url).rstrip("/") + CHAT_PATH

    def _sdk_headers(self) -> dict[str, str]:
        """What the SDK sends with a request to this upstream (no per-request ids)."""
        headers: dict[str, str] = {}
        for name, value in {**self.client.default_headers, **self.client.auth_headers}.items():
            if isinstance(value, str):
                headers[name] = value
        headers["X-Stainless-Retry-Count"] = "0"
        headers["X-Stainless-Read-Timeout"] = str(self.timeout_s)
        return headers

    async def forward(self, kwargs: dict[str, Any]) -> tuple[str | None, bytes]:
        if self._target is not None:
            if self._plain is None:
                host, port, prefix = self._target
                self._plain = PlainHttpUpstream(host, port, prefix + CHAT_PATH, self._sdk_headers())
            body = json.dumps(kwargs, ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False).encode()  # fmt: skip
            try:
                status, headers, content = await self._plain.post(body)
            except (OSError, EOFError, ValueError, asyncio.LimitOverrunError, _Stale,
                    zlib.error) as error:  # fmt: skip
                raise openai.APIConnectionError(
                    request=httpx2.Request("POST", self._url)
                ) from error
            if status >= 400:
                # The body is decoded already: its content coding must not be undone twice.
                response = httpx2.Response(
                    status, headers=[(n, v) for n, v in headers if n != b"content-encoding"],
                    content=content,
                    request=httpx2.Request("POST", self._url),
                )  # fmt: skip
                raise self.client._make_status_error_from_response(response)
            if not 300 <= status < 400:
                content_type = _header(headers, b"content-type")
                return (content_type.decode("latin-1") if content_type is not None else None,
                        content)  # fmt: skip
            # A redirect: the SDK's client follows it.
        raw = await self.client.post(CHAT_PATH, body=kwargs, cast_to=httpx2.Response,
                                     options={"timeout": self.timeout_s})  # fmt: skip
        return raw.headers.get("content-type"), raw.content

    def close(self) -> None:
        if self._plain is not None:
            self._plain.close()

"""What the model services must survive, shared by their tests: hostile JSON bodies (with
infinities, huge numbers and lone surrogates) and a hostile upstream (one that leaks a key
in its error text, trickles its answer, or answers something that is not the API)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from hypothesis import strategies as st
from modelkit.testing import serve_app

# --- hostile JSON ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RawNumber:
    """A JSON number written exactly as given: ``1e999``, a 5000-digit integer."""

    text: str


def encode(value: Any) -> bytes:
    """JSON as a hostile caller writes it: an infinite float as ``1e999`` (valid JSON that
    Python reads back as infinity), a :class:`RawNumber` verbatim, strings ASCII-escaped (so
    lone surrogates travel as ``\\ud800``)."""

    def parts(item: Any) -> Iterator[str]:
        if isinstance(item, RawNumber):
            yield item.text
        elif isinstance(item, float) and math.isinf(item):
            yield "1e999" if item > 0 else "-1e999"
        elif isinstance(item, dict):
            yield "{"
            for index, (key, child) in enumerate(item.items()):
                yield ("," if index else "") + json.dumps(str(key)) + ":"
                yield from parts(child)
            yield "}"
        elif isinstance(item, list):
            yield "["
            for index, child in enumerate(item):
                if index:
                    yield ","
                yield from parts(child)
            yield "]"
        else:
            yield json.dumps(item)

    return "".join(parts(value)).encode()


# Strings that have broken services before: empty, blank, NUL, lone surrogates, astral.
edge_strings = st.sampled_from(["", " ", "\x00", "\ud800", "a\udfffb", "\U0001f642"])
huge_numbers = st.sampled_from([
    RawNumber("1e999"), RawNumber("-1e999"), RawNumber("1E+400"), RawNumber("1e308"),
    RawNumber("1" + "0" * 5000),  # over Python's 4300-digit limit for int()
    RawNumber("-" + "9" * 4000), RawNumber("1e-999"), RawNumber("123456789" * 40),
])  # fmt: skip
# Extremes as often as ordinary numbers: they are what breaks services.
numbers = (
    st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=True)
    | st.sampled_from([math.inf, -math.inf, 1.7976931348623157e308])
    | huge_numbers
)
json_scalars = (
    edge_strings
    | st.none()
    | st.booleans()
    | numbers
    # Any code point, lone surrogates included (JSON can escape them).
    | st.text(st.characters(exclude_categories=()), max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def near_valid(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Bodies with a service's own field names, each plausible or hostile, sometimes extra
    fields, sometimes not an object at all: examples reach the deep checks."""
    # Mostly plausible (three times in four), so that bodies get past the first check.
    hostile = json_values | edge_strings | numbers

    def mostly(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.integers(0, 3).flatmap(lambda n: plausible if n else hostile)

    hostile_fields = {name: mostly(strategy) for name, strategy in fields.items()}
    others = (
        st.fixed_dictionaries({}, optional=hostile_fields)
        | st.dictionaries(st.sampled_from([*fields, "extra"]), json_values, max_size=4)
        | json_values
    )
    return st.integers(0, 2).flatmap(
        lambda n: st.fixed_dictionaries(hostile_fields) if n else others
    )


# --- a hostile upstream ------------------------------------------------------------------------

LEAKED_KEY = "sk-proj-abcd****wxyz"
LEAKY_MESSAGE = (
    f"Incorrect API key provided: {LEAKED_KEY}. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
PNG_1X1 = base64.b64encode(
    base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    )
).decode()
SONG_ANSWER = json.dumps({"score": 50, "verdict": "fine", "references": []})
# What each misbehaviour is; "ok" answers as the API does.
BEHAVIOURS = ("ok", "leaky_401", "trickle", "html", "null_usage", "lone_surrogate",
              "infinite_logprob")


def _chat(model: str, content: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-hostile", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": usage,
    }  # fmt: skip


def _image(b64: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {"created": 0, "data": [{"b64_json": b64}], "usage": usage}


def _image_usage(tokens: int | None) -> dict[str, Any]:
    return {"input_tokens": tokens, "output_tokens": 10, "total_tokens": 20,
            "input_tokens_details": {"text_tokens": 10, "image_tokens": 0}}  # fmt: skip


def answer(path: str, model: str, behaviour: str) -> dict[str, Any]:
    """The JSON answer of a behaviour that answers 200 JSON (ok, trickle, null_usage,
    lone_surrogate), as the API's schema has it except where the behaviour breaks it."""
    usage: dict[str, Any] = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    if path.endswith("/images/generations"):
        if behaviour == "null_usage":
            return _image(PNG_1X1, _image_usage(None))
        return _image("\ud800" if behaviour == "lone_surrogate" else PNG_1X1, _image_usage(10))
    if behaviour == "null_usage":
        usage = {**usage, "prompt_tokens": None}
    content = SONG_ANSWER
    if behaviour == "lone_surrogate":
        # The song answer, its verdict holding a lone surrogate (escaped on the wire).
        content = '{"score": 50, "verdict": "\ud800 fine", "references": []}'
    chat = _chat(model, content, usage)
    if behaviour == "infinite_logprob":  # within the schema (a float), beyond JSON's numbers
        chat["choices"][0]["logprobs"] = {"content": [
            {"token": "a", "logprob": float("-inf"), "bytes": [97], "top_logprobs": []}],
            "refusal": None}  # fmt: skip
    return chat


class HostileUpstream:
    """An OpenAI-compatible upstream whose behaviour per model the test sets
    (``behaviours[model]``, ``"*"`` for any other model)."""

    def __init__(self, trickle_s: float = 8.0) -> None:
        self.behaviours: dict[str, str] = {"*": "ok"}
        self.trickle_s = trickle_s
        self.app = self._build()

    def behaviour(self, model: str) -> str:
        return self.behaviours.get(model, self.behaviours["*"])

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [
                {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "hostile"}]}

        @app.post("/v1/{operation:path}")
        async def call(operation: str, request: Request) -> Response:
            body = await request.json()
            model = str(body.get("model", ""))
            behaviour = self.behaviour(model)
            path = request.url.path
            if behaviour == "leaky_401":
                error = {"message": LEAKY_MESSAGE, "type": "invalid_request_error",
                         "param": None, "code": "invalid_api_key"}  # fmt: skip
                return JSONResponse({"error": error}, status_code=401)
            if behaviour == "html":
                return Response("<html><body>502 Bad Gateway</body></html>", media_type="text/html")
            if behaviour == "trickle":
                return StreamingResponse(self._trickle(path, model), media_type="application/json")
            return Response(encode(answer(path, model, behaviour)), media_type="application/json")

        return app

    async def _trickle(self, path: str, model: str) -> AsyncIterator[bytes]:
        # One byte of leading whitespace (valid JSON) every 0.2 s: never idle long enough
        # for a per-read timeout, then a good answer, so only an overall deadline stops it.
        loop = asyncio.get_running_loop()
        until = loop.time() + self.trickle_s
        while loop.time() < until:
            yield b" "
            await asyncio.sleep(0.2)
        yield json.dumps(answer(path, model, "ok")).encode()


@contextmanager
def running_hostile_upstream() -> Iterator[tuple[HostileUpstream, str]]:
    """A :class:`HostileUpstream` on a free loopback port; yields it and its base URL (…/v1)."""
    upstream = HostileUpstream()
    with serve_app(upstream.app) as url:
        yield upstream, url + "/v1"

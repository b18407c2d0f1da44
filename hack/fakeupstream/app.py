"""The fake OpenAI-compatible upstream: /v1 for the services, /admin for tests and the demo.

Answers are deterministic functions of the request:

- chat completions: ``content`` is ``"[<model>] <first 200 chars of the last user text>"``;
  ``usage.prompt_tokens`` is ⌈chars/4⌉ over all message text (85 per image part),
  ``usage.completion_tokens`` ⌈chars/4⌉ of the content (cut to ``max_tokens``, with
  ``finish_reason="length"``). ``stream: true`` answers the same content as one SSE chunk.
- the song-score convention: when ``response_format.type`` is ``json_object`` or
  ``json_schema`` and the system message mentions both "song" and "score"
  (case-insensitive), the content is the JSON song-analyzer expects:
  ``{"score": 0-100, "verdict": str, "references": [str]}``, the score a hash of the user
  message only (:func:`song_score`), never of the model: it is the song's "true" score, so
  every correctly fine-tuned songs model (``...:songs:v1``, ``v2``...) agrees, and an
  evaluation set labelled by one model (``examples/evaluation/song-analyzer.yaml``) holds
  for the next. Any other JSON request gets ``{"model": ..., "echo": <last user text>}``.
- image generations: ``dall-e-*`` models answer ``url`` unless ``response_format`` is
  ``b64_json`` and add ``revised_prompt`` (dall-e-3); other models (gpt-image-1) always
  answer ``b64_json`` (a 1x1 PNG) with token ``usage`` by quality.

Faults (see :mod:`fakeupstream.faults`) apply to /v1 routes by the request's ``model``:
an injected error answers ``status_code`` in the OpenAI error shape (429 with Retry-After: 1),
a timeout hangs ``hang_s`` (ending early when the client disconnects) and then answers 504,
malformed chat content is ``"this is not JSON {"`` (a valid completion), and a malformed body
is a 200 whose body is not a chat completion (:func:`malformed_body`: JSON cut mid-object, an
object without ``choices`` or with ``choices: []``, or a gateway's HTML error page as
``text/html``), answered as that body even to ``stream: true``. Both are counted ``malformed``
and apply to chat completions only: an image request they hit is answered as usual.
A ``score_offset`` N (not a rate: every song-score answer of the model) shifts the song-score
answer's ``score`` by N, clamped to 0..100, its verdict following the shifted score: a
fine-tune that answers 200 with valid JSON and wrong scores, which only an evaluation of the
answers (not an error rate) catches.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from modelkit import create_app, error_body
from modelkit.settings import ServiceSettings
from pydantic import Field

from fakeupstream.faults import Decision, Fault, FaultBook, MalformedBody

MALFORMED_CONTENT = "this is not JSON {"
KNOWN_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v1",
    "dall-e-3",
    "gpt-image-1",
)
# A valid 1x1 transparent PNG: what every b64_json image decodes to.
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
# What a misbehaving gateway in front of the provider answers, with status 200.
GATEWAY_ERROR_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
# gpt-image-1 output tokens for a square image by quality (OpenAI's published table).
IMAGE_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}


class FakeUpstreamSettings(ServiceSettings):
    # Chat requests may carry several data-URI images of up to 10 MB each.
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1)


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _message_text(message: Any) -> tuple[str, int]:
    """The text of one chat message and the number of image parts in it."""
    if not isinstance(message, dict):
        return "", 0
    content = message.get("content")
    if isinstance(content, str):
        return content, 0
    text, images = [], 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                text.append(str(part.get("text", "")))
            elif isinstance(part, dict) and part.get("type") == "image_url":
                images += 1
    return " ".join(text), images


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def true_song_score(user_text: str) -> int:
    """The song's "true" score, 0-100: a hash of the user message alone (never the model's)."""
    return _digest(user_text) % 101


def song_score(user_text: str, *, score_offset: int = 0) -> dict[str, Any]:
    """The deterministic song-score answer for a user message: its :func:`true_song_score`,
    shifted by ``score_offset`` (the fault of that name) and clamped to 0..100."""
    score = min(100, max(0, true_song_score(user_text) + score_offset))
    if score >= 80:
        verdict = "strong: vivid, original imagery and a memorable hook"
    elif score >= 50:
        verdict = "solid: clear theme, some clichés"
    else:
        verdict = "weak: generic lines and little structure"
    # song-analyzer sends "Artist: ...\nTitle: ...\nLyrics:\n..."; quote the lyrics' first line.
    lyrics = user_text.split("Lyrics:", 1)[-1]
    first_line = next((line.strip() for line in lyrics.splitlines() if line.strip()), "")
    return {
        "score": score,
        "verdict": verdict,
        "references": [f"opening line: {first_line[:80]}"] if first_line else [],
    }


def malformed_body(shape: MalformedBody, completion: dict[str, Any]) -> Response:
    """A 200 whose body is not a chat completion, made from the valid ``completion``."""
    if shape == "truncated_json":
        # The connection dropped mid-answer: a prefix of an object is never valid JSON.
        text = json.dumps(completion)
        return Response(text[: len(text) // 2], media_type="application/json")
    if shape == "no_choices":
        return JSONResponse({key: value for key, value in completion.items() if key != "choices"})
    if shape == "empty_choices":
        return JSONResponse({**completion, "choices": []})
    return Response(GATEWAY_ERROR_PAGE, media_type="text/html")


def _openai_error(
    status: int, message: str, error_type: str, code: str, retry_after_s: int = 1
) -> JSONResponse:
    headers = {"Retry-After": str(retry_after_s)} if status == 429 else None
    return JSONResponse(error_body(message, error_type, code), status_code=status, headers=headers)


def _bad_request(message: str, param: str) -> JSONResponse:
    body = error_body(message, "invalid_request_error", "invalid_value", param)
    return JSONResponse(body, status_code=400)


def build_app(settings: FakeUpstreamSettings) -> FastAPI:
    app = create_app(settings, service="fake-upstream", models=("fake-upstream",),
                     upstream_check=False)  # fmt: skip
    book = FaultBook()
    app.state.faults = book

    async def apply_fault(request: Request, model: str) -> tuple[Decision, Response | None]:
        """Run the fault schedule; returns its decision and the response it forces, if any.

        The request counts as in flight (``/admin/concurrency``) while it is delayed or hangs
        here: the rest of its answer is built without waiting."""
        book.enter(model)
        try:
            return await _apply_fault(request, model)
        finally:
            book.leave(model)

    async def _apply_fault(request: Request, model: str) -> tuple[Decision, Response | None]:
        decision = book.decision(model)
        action, fault = decision.action, decision.fault
        if action == "timeout":
            deadline = time.monotonic() + fault.hang_s
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    break
                await asyncio.sleep(0.05)
            book.count(model, "timeout")
            return decision, _openai_error(504, "injected timeout", "timeout_error", "injected_fault")
        if decision.latency_s > 0:
            await asyncio.sleep(decision.latency_s)
        if action == "error":
            book.count(model, "error")
            error_type = {429: "rate_limit_error", 401: "authentication_error"}.get(
                fault.status_code,
                "invalid_request_error" if fault.status_code < 500 else "server_error",
            )
            return decision, _openai_error(
                fault.status_code,
                f"injected fault: status {fault.status_code} for model {model}",
                error_type,
                "injected_fault",
                retry_after_s=fault.retry_after_s,
            )
        return decision, None

    async def json_object(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _bad_request("request body is not valid JSON", "body")
        if not isinstance(body, dict):
            return _bad_request("request body must be a JSON object", "body")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return _bad_request("model: field required (a model id string)", "model")
        return body

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await json_object(request)
        if isinstance(body, JSONResponse):
            return body
        model = str(body["model"])
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _bad_request("messages: must be a non-empty list", "messages")
        decision, forced = await apply_fault(request, model)
        if forced is not None:
            return forced
        action = decision.action
        texts = [_message_text(m) for m in messages]
        prompt_tokens = sum(_tokens(text) + 85 * images for text, images in texts)
        user_text = next(
            (_message_text(m)[0] for m in reversed(messages)
             if isinstance(m, dict) and m.get("role") == "user"),
            "",
        )  # fmt: skip
        system_text = " ".join(
            _message_text(m)[0] for m in messages
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        ).lower()  # fmt: skip
        response_format = body.get("response_format")
        wants_json = isinstance(response_format, dict) and response_format.get("type") in (
            "json_object",
            "json_schema",
        )
        if action == "malformed":
            content = MALFORMED_CONTENT
        elif wants_json and "song" in system_text and "score" in system_text:
            content = json.dumps(song_score(user_text, score_offset=decision.fault.score_offset))
        elif wants_json:
            content = json.dumps({"model": model, "echo": user_text})
        else:
            content = f"[{model}] {user_text[:200]}"
        finish_reason = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0 and _tokens(content) > max_tokens:
            content, finish_reason = content[: max_tokens * 4], "length"
        book.count(model, "malformed" if action in ("malformed", "malformed_body") else "success")
        completion_id = f"chatcmpl-fake-{_digest(model + user_text):x}"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": _tokens(content),
            "total_tokens": prompt_tokens + _tokens(content),
        }
        created = int(time.time())
        completion = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }
        if decision.malformed_body is not None:
            return malformed_body(decision.malformed_body, completion)
        if body.get("stream") is True:
            return StreamingResponse(
                _stream(completion_id, created, model, content, finish_reason, usage),
                media_type="text/event-stream",
            )
        return JSONResponse(completion)

    @app.post("/v1/images/generations")
    async def images_generations(request: Request) -> Response:
        body = await json_object(request)
        if isinstance(body, JSONResponse):
            return body
        model = str(body["model"])
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return _bad_request("prompt: must be a non-empty string", "prompt")
        count = body.get("n", 1)
        if not isinstance(count, int) or not 1 <= count <= 10:
            return _bad_request("n: must be an integer from 1 to 10", "n")
        _, forced = await apply_fault(request, model)
        if forced is not None:
            return forced
        book.count(model, "success")
        encoded = base64.b64encode(PNG_1X1).decode()
        result: dict[str, Any] = {"created": int(time.time())}
        if model.startswith("dall-e"):
            if body.get("response_format") == "b64_json":
                item: dict[str, Any] = {"b64_json": encoded}
            else:
                item = {"url": f"https://fake-upstream.invalid/images/{_digest(prompt):x}.png"}
            if model == "dall-e-3":
                item["revised_prompt"] = f"A detailed rendering of: {prompt}"
            result["data"] = [dict(item) for _ in range(count)]
        else:
            quality = str(body.get("quality") or "auto")
            output_tokens = IMAGE_OUTPUT_TOKENS.get(quality, IMAGE_OUTPUT_TOKENS["auto"]) * count
            input_tokens = _tokens(prompt)
            result["data"] = [{"b64_json": encoded} for _ in range(count)]
            result["usage"] = {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
                "input_tokens_details": {"text_tokens": input_tokens, "image_tokens": 0},
            }
        return JSONResponse(result)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        ids = sorted({*KNOWN_MODELS, *(m for m in book.snapshot() if m != "*")})
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in ids],
        }

    @app.put("/admin/faults/{model:path}")
    async def put_fault(model: str, fault: Fault) -> dict[str, Any]:
        book.set(model, fault)
        return {"model": model, "fault": fault.model_dump()}

    @app.get("/admin/faults")
    async def get_faults() -> dict[str, Any]:
        return {"faults": book.snapshot()}

    @app.delete("/admin/faults")
    async def delete_faults() -> dict[str, Any]:
        book.clear()
        return {"faults": {}}

    @app.delete("/admin/faults/{model:path}")
    async def delete_fault(model: str) -> dict[str, Any]:
        book.clear(model)
        return {"faults": book.snapshot()}

    @app.get("/admin/stats")
    async def get_stats() -> dict[str, Any]:
        return {"models": book.stats()}

    @app.get("/admin/concurrency")
    async def get_concurrency() -> dict[str, Any]:
        return {"models": book.concurrency()}

    @app.delete("/admin/stats")
    async def delete_stats() -> dict[str, Any]:
        book.reset_stats()
        return {"models": {}}

    return app


async def _stream(
    completion_id: str,
    created: int,
    model: str,
    content: str,
    finish_reason: str,
    usage: dict[str, int],
) -> AsyncIterator[bytes]:
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model}  # fmt: skip
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                              "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}],
         "usage": usage},
    ]  # fmt: skip
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"

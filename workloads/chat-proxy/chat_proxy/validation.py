"""Validation of OpenAI chat-completion requests before they are forwarded upstream.

The proxy is a gatekeeper: a request that passes here is one the upstream should
accept, so callers get a precise ``invalid_request_error`` (with ``param`` naming
the offending field) instead of an opaque upstream 400 that is billed as an error.

Choices the design leaves open, written down here:

* ``model`` may be left out; the proxy then uses its ``DEFAULT_MODEL``.
* Unknown top-level fields are rejected (as OpenAI itself does), so a typo such
  as ``max_token`` is reported instead of silently ignored.
* Images must be inline ``data:image/<png|jpeg|gif|webp>;base64,...`` URIs. The
  proxy never fetches http(s) URLs on a caller's behalf (that would make it an
  open SSRF relay), and it checks that the decoded bytes start with the magic
  number of the declared format, so ``data:image/png`` wrapping a text file is
  rejected here rather than by the upstream.
* Each image is at most ``max_image_bytes`` after decoding (10 MB by default);
  the encoded length is checked first so an oversize image is refused without
  decoding it.
* When the first problem of a request is an image, the refusal names every bad image
  (its path and why) and none of the good ones, so a client fixes them all at once. The
  bad images are never dropped and the rest forwarded: that would change what the model
  sees without the client knowing.
* ``stream`` must be false or absent: the proxy answers with one JSON body, and
  streaming would bypass the per-request outcome accounting the canary relies on.
* ``n`` is bounded (1..8) because every choice is billed.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)

MAX_IMAGE_BYTES_DEFAULT = 10 * 1024 * 1024
MAX_CHOICES = 8
MAX_MESSAGES = 1024

IMAGE_MIME_TYPES = ("png", "jpeg", "gif", "webp")
_DATA_URI = re.compile(r"^data:image/(?P<subtype>[A-Za-z0-9.+-]+);base64,(?P<payload>.*)$", re.DOTALL)
_ANY_DATA_URI = re.compile(r"^data:(?P<mime>[^;,]*)[;,]")


class InvalidRequest(Exception):
    """A caller error: answered as HTTP 400 ``invalid_request_error`` naming ``param``."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class ValidationLimits:
    """Bounds applied while validating; passed through pydantic's validation context."""

    max_image_bytes: int = MAX_IMAGE_BYTES_DEFAULT


def _matches_magic(subtype: str, head: bytes) -> bool:
    if subtype == "png":
        return head.startswith(b"\x89PNG\r\n\x1a\n")
    if subtype == "jpeg":
        return head.startswith(b"\xff\xd8\xff")
    if subtype == "gif":
        return head.startswith((b"GIF87a", b"GIF89a"))
    if subtype == "webp":
        return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return False


def decode_image_data_uri(url: str, max_bytes: int = MAX_IMAGE_BYTES_DEFAULT) -> bytes:
    """Decode an image data URI, raising ``ValueError`` with the reason and the fix."""
    if url.startswith(("http://", "https://")):
        raise ValueError(
            "remote image URLs are not accepted; send the image inline as "
            "data:image/<png|jpeg|gif|webp>;base64,<data>"
        )
    match = _DATA_URI.match(url)
    if match is None:
        other = _ANY_DATA_URI.match(url)
        if other is not None:
            raise ValueError(
                f"data URI has MIME type {other['mime'] or 'text/plain'!r}, which is not an "
                "image; use data:image/<png|jpeg|gif|webp>;base64,<data>"
            )
        raise ValueError("must be a data URI of the form data:image/<png|jpeg|gif|webp>;base64,<data>")
    subtype = match["subtype"].lower()
    if subtype == "jpg":
        subtype = "jpeg"
    if subtype not in IMAGE_MIME_TYPES:
        raise ValueError(
            f"image type image/{match['subtype']} is not supported; use one of "
            + ", ".join(f"image/{t}" for t in IMAGE_MIME_TYPES)
        )
    payload = match["payload"]
    # Cheap bound before decoding: base64 turns every 3 bytes into 4 characters.
    if (len(payload) // 4) * 3 > max_bytes + 2:
        raise ValueError(
            f"image is larger than the limit of {max_bytes} bytes after decoding; resize or recompress it"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image data is not valid base64 (standard alphabet, padded with '=')") from None
    if len(data) > max_bytes:
        raise ValueError(
            f"image is {len(data)} bytes after decoding, over the limit of {max_bytes}; "
            "resize or recompress it"
        )
    if not data:
        raise ValueError("image data is empty")
    if not _matches_magic(subtype, data[:16]):
        raise ValueError(f"image data is not a {subtype.upper()} file (declared image/{subtype})")
    return data


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ImageUrl(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _url_is_image_data_uri(cls, url: str, info: ValidationInfo) -> str:
        limits = info.context.get("limits") if isinstance(info.context, dict) else None
        max_bytes = (
            limits.max_image_bytes if isinstance(limits, ValidationLimits) else MAX_IMAGE_BYTES_DEFAULT
        )
        decode_image_data_uri(url, max_bytes)
        return url


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


# Union tags appear in pydantic's error locations; they are stripped from `param`.
_TAG_STRING, _TAG_PARTS, _TAG_TEXT, _TAG_IMAGE = "@string", "@parts", "@text", "@image_url"
_UNION_TAGS = {_TAG_STRING, _TAG_PARTS, _TAG_TEXT, _TAG_IMAGE}


def _content_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return _TAG_STRING
    if isinstance(value, list):
        return _TAG_PARTS
    return None


def _part_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return {"text": _TAG_TEXT, "image_url": _TAG_IMAGE}.get(kind) if isinstance(kind, str) else None


ContentPart = Annotated[
    Annotated[TextPart, Tag(_TAG_TEXT)] | Annotated[ImagePart, Tag(_TAG_IMAGE)],
    Discriminator(
        _part_kind,
        custom_error_type="invalid_part",
        custom_error_message="each content part must be an object with type 'text' or 'image_url'",
    ),
]

Content = Annotated[
    Annotated[str, Tag(_TAG_STRING)] | Annotated[list[ContentPart], Field(min_length=1), Tag(_TAG_PARTS)],
    Discriminator(
        _content_kind,
        custom_error_type="invalid_content",
        custom_error_message="content must be a string or a non-empty list of content parts",
    ),
]


class ChatMessage(_Strict):
    # Field order matters: the validators of later fields read earlier ones from info.data.
    role: Literal["system", "user", "assistant", "tool"]
    name: str | None = Field(default=None, min_length=1, max_length=64)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(default=None, validate_default=True)
    content: Content | None = Field(default=None, validate_default=True)

    @field_validator("tool_call_id")
    @classmethod
    def _tool_messages_name_their_call(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("role") == "tool" and not value:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return value

    @field_validator("content")
    @classmethod
    def _content_required(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and not (info.data.get("role") == "assistant" and info.data.get("tool_calls")):
            raise ValueError(
                "content is required (a string or a non-empty list of parts); only an "
                "assistant message with tool_calls may leave it out"
            )
        return value


class ChatCompletionRequest(_Strict):
    model: str | None = Field(default=None, min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    stream: bool | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    seed: int | None = None
    user: str | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @field_validator("stream")
    @classmethod
    def _no_streaming(cls, stream: bool | None) -> bool | None:
        if stream:
            raise ValueError("streaming is not supported by this proxy; set stream to false")
        return stream

    @field_validator("stop")
    @classmethod
    def _bounded_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return stop

    def upstream_kwargs(self, default_model: str) -> dict[str, Any]:
        """The arguments for ``chat.completions.create``: only what the caller set."""
        kwargs = self.model_dump(exclude_none=True, exclude={"stream"})
        kwargs["model"] = self.model or default_model
        return kwargs


def _param_from_loc(loc: Sequence[int | str]) -> str:
    parts: list[str] = []
    for element in loc:
        if isinstance(element, int):
            parts.append(f"[{element}]")
        elif element not in _UNION_TAGS:
            parts.append(f".{element}" if parts else element)
    return "".join(parts)


def _describe(error: dict[str, Any], param: str) -> str:
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid value"))
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    if kind == "missing":
        return f"Missing required parameter: '{param}'."
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: '{param}'."
    if kind.endswith("_type") or kind in {"literal_error", "invalid_content", "invalid_part"}:
        return f"Invalid type or value for '{param}': {message}."
    return f"Invalid value for '{param}': {message}."


def _is_image_url(loc: Sequence[int | str]) -> bool:
    return tuple(loc[-2:]) == ("image_url", "url")


def _every_bad_image(errors: Sequence[Any]) -> InvalidRequest:
    """One refusal naming every bad image (path and reason), none of the good ones."""
    bad = [(_param_from_loc(error["loc"]), error) for error in errors if _is_image_url(error["loc"])]
    if len(bad) == 1:
        param, error = bad[0]
        return InvalidRequest(_describe(dict(error), param), param)
    reasons = " ".join(_describe(dict(error), param) for param, error in bad)  # each ends in "."
    return InvalidRequest(
        f"{len(bad)} images are invalid; fix each of them and resend the request. {reasons}",
        bad[0][0],
    )


def parse_chat_request(body: Any, limits: ValidationLimits | None = None) -> ChatCompletionRequest:
    """Validate a decoded JSON body; raise :class:`InvalidRequest` naming the first bad field,
    or, when that is an image, every bad image of the request."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object with 'model' and 'messages'.", None)
    try:
        return ChatCompletionRequest.model_validate(body, context={"limits": limits or ValidationLimits()})
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        first = errors[0]
        if _is_image_url(first["loc"]):
            # A client sending several images fixes them all in one go, not one per round trip.
            raise _every_bad_image(errors) from None
        param = _param_from_loc(first["loc"])
        raise InvalidRequest(_describe(dict(first), param or "body"), param or None) from None

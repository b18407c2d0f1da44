"""Checking the upstream's answer before passing it on: a body that is not a chat completion
is a 502 naming what was wrong, never a 500 and never a 200 the client cannot use.

The proxy reads the upstream's raw answer (status 2xx: other statuses are the SDK's errors,
mapped by the kit) and looks, in this order, for:

=====================================================  ==========================================
the upstream answered                                  the 502's message ends with
=====================================================  ==========================================
a body that does not decode as JSON, typed JSON        ``not valid JSON (cut short or garbled)``
  (or typed nothing)
a body that does not decode as JSON, typed otherwise   ``content type text/html, not JSON``
  (a gateway's HTML error page)
JSON that is not an object                             ``not a JSON object``
an object without ``choices``                          ``no choices``
``choices`` that is not a list                         ``choices is not a list``
``choices: []``                                        ``choices is empty``
any other departure from the API's schema (strict     ``usage.prompt_tokens: off the API's
  validation, e.g. ``prompt_tokens: null``)              schema``
=====================================================  ==========================================

Each message is ``upstream answered a body that is not a chat completion: <problem> (model
<model>); retry later`` with code ``invalid_upstream_answer``. The problem is made of fixed
words and of the schema's field names only, never of the provider's text (which may carry
secrets or others' prompts); the body itself goes to the log, redacted and cut short. A JSON
completion sent with a non-JSON content type is accepted, as the openai SDK accepts it. A
completion that passes all this but holds a value JSON cannot carry is the kit's
(:func:`modelkit.upstream.forwardable`: the same 502 and code, the kit's fixed message).
Raised inside the kit's ``upstream_call``, each of these 502s is counted ``error`` in
``model_upstream_requests_total`` and, by its status, in ``model_requests_total``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pydantic
from modelkit.errors import ServiceError, upstream_error
from modelkit.jsonbody import is_json_content_type
from modelkit.logs import redact
from modelkit.upstream import forwardable
from openai.types.chat import ChatCompletion

log = logging.getLogger("chat_proxy.answers")

NOT_A_COMPLETION = "upstream answered a body that is not a chat completion: {problem}"
INVALID_ANSWER_CODE = "invalid_upstream_answer"
# A media type shown in a message: ``type/subtype`` of token characters, nothing else.
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
# A schema field name shown in a message (the loc parts of pydantic's error).
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_LOGGED_BODY_CHARS = 200


def not_a_completion_message(problem: str, model: str) -> str:
    """The caller-facing message of a body that is not a chat completion."""
    return f"{NOT_A_COMPLETION.format(problem=problem)} (model {model}); retry later"


def _shown_media_type(content_type: str | None) -> str:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type if _MEDIA_TYPE.match(media_type) else "unknown"


@dataclass(frozen=True)
class Completion:
    """An upstream answer that is a chat completion: its body, passed on byte for byte, and
    the token counts the metrics need."""

    body: bytes
    prompt_tokens: int | None
    completion_tokens: int | None


def read_completion(model: str, content_type: str | None, body: bytes) -> Completion:
    """The upstream's 2xx answer as a :class:`Completion`, or the 502 naming what is wrong
    (the module's table). Parsed once: the proxy answers the upstream's own bytes rather
    than re-encoding what it parsed (faster, and the caller gets exactly what was sent)."""
    problem, data = _decoded(content_type, body)
    problem = problem or _shape_problem(data)
    if problem is not None:
        raise not_a_completion(model, problem, body)
    try:
        completion = ChatCompletion.model_validate(data)
    except pydantic.ValidationError as error:  # what the SDK's strict validation refuses
        raise not_a_completion(model, schema_problem(error), body) from error
    # Numbers beyond the float range and lone surrogates are JSON, yet no client can rely
    # on them: the kit's 502, as for every service passing an answer on.
    forwardable(data, model=model)
    usage = completion.usage
    return Completion(body, usage.prompt_tokens if usage else None,
                      usage.completion_tokens if usage else None)


def completion_problem(content_type: str | None, body: bytes) -> str | None:
    """What makes a 2xx body not shaped like a chat completion, in the words of the
    module's table, or None (the schema's validation checks the rest)."""
    problem, data = _decoded(content_type, body)
    return problem or _shape_problem(data)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decoded(content_type: str | None, body: bytes) -> tuple[str | None, Any]:
    try:
        # NaN and Infinity literals are Python's, not JSON: a client's parser refuses them.
        return None, json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if is_json_content_type(content_type):
            return "not valid JSON (cut short or garbled)", None
        return f"content type {_shown_media_type(content_type)}, not JSON", None


def _shape_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    if "choices" not in data:
        return "no choices"
    choices = data["choices"]
    if not isinstance(choices, list):
        return "choices is not a list"
    if not choices:
        return "choices is empty"
    return None


def schema_problem(error: pydantic.ValidationError) -> str:
    """The problem named by the schema's validation: the first bad field's path, schema
    names and list indices only."""
    errors = error.errors()
    if errors:
        parts: list[str] = []
        for part in errors[0].get("loc", ()):
            if isinstance(part, int):
                parts.append(f"[{part}]")
            elif isinstance(part, str) and _FIELD_NAME.match(part):
                parts.append(("." if parts else "") + part)
            else:
                break  # pydantic's union branch names and the like: stop at the field
        if parts:
            return f"{''.join(parts)}: off the API's schema"
    return "off the API's schema"


def not_a_completion(model: str, problem: str, body: bytes | str | None = None) -> ServiceError:
    """The 502 for a body that is not a chat completion; the body goes to the log only."""
    fields: dict[str, Any] = {"model": model, "problem": problem}
    if body is not None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        # Redacted whole (a key cut in two would slip past), then capped.
        fields["body"] = redact(text, limit=_LOGGED_BODY_CHARS)
    log.warning("upstream answered a body that is not a chat completion", extra={"fields": fields})
    return upstream_error(not_a_completion_message(problem, model), code=INVALID_ANSWER_CODE)

"""Strict JSON request bodies: what cannot be forwarded upstream is refused at the door.

Python's ``json`` accepts more than JSON, and more than the openai SDK (or any JSON encoder
with ``allow_nan=False`` and UTF-8 output) can send on: a value accepted here and refused
later would be a 500 that any caller could provoke. :func:`decode_json` refuses, with a 400
``invalid_request_error`` naming the field:

- ``NaN``, ``Infinity`` and ``-Infinity`` literals (not JSON);
- numbers outside the float range, such as ``1e999`` (Python reads them as infinity);
- escaped lone UTF-16 surrogates (``"\\ud800"``), which no UTF-8 text can carry;
- bodies that are not UTF-8 JSON, or nested deeper than the parser can follow.

Integers of any size JSON allows are kept (Python refuses those over 4300 digits, which is
reported as invalid JSON). The kit's middleware applies it to every JSON body (content type
``application/json``, ``*+json`` or none, as FastAPI parses) before the route runs;
:func:`request_json` gives a route the decoded body without parsing it twice.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from fastapi import Request

from modelkit.errors import ServiceError, invalid_request

# Where the middleware leaves the decoded body, in the ASGI scope's state.
DECODED_JSON_STATE_KEY = "modelkit_json"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_PATH_PART_MAX = 40
_PATH_SHOWN_MAX = 120


class _OutOfRange(ValueError):
    pass


class _NotJson(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _OutOfRange(text)
    return value


def _path_part(key: str) -> str:
    shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
    return shown if len(shown) <= _PATH_PART_MAX else shown[:_PATH_PART_MAX] + "…"


def _leaves(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (path, scalar or key) in a decoded body, paths like ``tools[0].function.name``.

    Iterative, so a body nested as deep as the parser allows never overflows the stack here.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            children = []
            for key, child in item.items():
                child_path = f"{path}.{_path_part(key)}" if path else _path_part(key)
                yield child_path, key
                children.append((child_path, child))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{path}[{i}]", child) for i, child in enumerate(item)]))
        else:
            yield path, item


def shown_path(path: str) -> str:
    """A path short enough for a message (the end of a deep one, where the value is)."""
    return path if len(path) <= _PATH_SHOWN_MAX else "…" + path[-_PATH_SHOWN_MAX:]


def _is_unforwardable(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _all_forwardable(value: Any) -> bool:
    """Whether every value and key can be carried (the common case, checked without building
    the paths :func:`_leaves` makes: that is what made the check cost)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if not (isinstance(key, str) and key.isascii()) and _is_unforwardable(key):
                    return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if not item.isascii() and _is_unforwardable(item):
                return False
        elif isinstance(item, float) and not math.isfinite(item):
            return False
    return True


def find_unforwardable(value: Any) -> str | None:
    """The path of the first value strict JSON in UTF-8 cannot carry (a non-finite number, a
    string or key with a lone surrogate); ``""`` for the value itself; None when all can."""
    if _all_forwardable(value):
        return None
    return next((path for path, leaf in _leaves(value) if _is_unforwardable(leaf)), None)


def _not_json(detail: str) -> ServiceError:
    return invalid_request(
        f"request body is not valid JSON ({detail}); send a JSON object", code="invalid_json"
    )


def _non_finite_path(raw: bytes) -> str | None:
    """Where the first non-finite number is (errors only: parses again, keeping them)."""
    try:
        return find_unforwardable(json.loads(raw, parse_int=lambda _: 0))
    except (ValueError, RecursionError):
        return None  # something else is wrong further on: say only what was found first


def decode_json(raw: bytes) -> Any:
    """The body as JSON, or a 400 naming the field that cannot be forwarded (see above)."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (_OutOfRange, _NotJson) as error:
        path = _non_finite_path(raw)
        if path is None:
            raise _not_json(str(error) if isinstance(error, _NotJson) else "a number is out of "
                            "range") from None  # fmt: skip
        problem = (
            f"{error} (NaN and Infinity are not numbers in JSON)"
            if isinstance(error, _NotJson)
            else "a number is out of range (beyond ±1.8e308, such as 1e999)"
        )
        raise invalid_request(
            f"{shown_path(path) or 'request body'}: {problem}; send a finite number",
            param=shown_path(path) or None,
            code="number_out_of_range",
        ) from None
    except RecursionError:
        raise _not_json("nested too deeply") from None
    except UnicodeDecodeError:
        raise _not_json("it is not UTF-8 text") from None
    except ValueError as error:
        raise _not_json(str(error)) from None
    if _SURROGATE_ESCAPE.search(raw):
        path = find_unforwardable(body)
        if path is not None:
            raise invalid_request(
                f"{shown_path(path) or 'request body'}: contains an unpaired UTF-16 surrogate escape "
                "(\\ud800-\\udfff), which no UTF-8 text can carry; send valid Unicode text",
                param=shown_path(path) or None,
                code="invalid_unicode",
            )
    return body


def is_json_content_type(content_type: str | None) -> bool:
    """True where FastAPI would parse the body as JSON: no content type, or a JSON one."""
    if not content_type:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def request_json(request: Request) -> Any:
    """The request's body as strict JSON, decoded once (by the middleware where it could)."""
    state = request.scope.get("state") or {}
    if DECODED_JSON_STATE_KEY in state:
        return state[DECODED_JSON_STATE_KEY]
    return decode_json(await request.body())

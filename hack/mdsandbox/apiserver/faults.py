"""Fault injection on command: make chosen API requests fail, answer late, or lose their watch.

A test of how a client survives a bad API server (a webhook that denies, a conflict on
a status write, throttling, a slow or trickling answer, a watch that drops or cannot
resume) sets a rule over the admin API and clears it afterwards::

    POST   /mdsandbox/faults         a rule (JSON) -> 201 {"id": "fault-1", ...the rule}
    GET    /mdsandbox/faults         {"items": [rule, ...]} with "matched" and "hits"
    GET    /mdsandbox/faults/<id>    one rule
    DELETE /mdsandbox/faults/<id>    removes it (200, the rule as it ended)
    DELETE /mdsandbox/faults         removes all ({"items": [the removed rules]})

The admin path is not under ``/api`` or ``/apis``, so no Kubernetes client reaches it
by accident and discovery does not list it; its requests are never faulted.

A rule has matchers (all optional; a request must pass every one given):

- ``verbs``: Kubernetes verbs (get, list, watch, create, update, patch, delete,
  deletecollection). Default: all (``["watch"]`` for the watch effects).
- ``resources``: plural names as RBAC names them, any API group: ``deployments`` does
  not cover ``deployments/status``; a subresource is ``modeldeployments/status``.
- ``namespace``: the request's namespace (cluster-wide requests never match one).
- ``names``: object names. A create's name is the body's ``metadata.name``; a list or
  watch with ``fieldSelector=metadata.name=<n>`` has the name ``<n>``, as RBAC sees it.
  ``namePrefix``: the name starts with it (a create with only ``generateName`` is
  matched by its ``generateName``).
- ``userAgent``: a substring of the User-Agent header (case-sensitive), e.g.
  ``modeldeploy-operator`` or ``kopf``.

and exactly one effect:

- ``status`` (400-599), optional ``reason`` and ``message``: the request is refused
  before it is served (nothing is written) with a Status object as kube-apiserver
  words it. Left out, ``reason`` and ``message`` are the real server's for that code
  and request: 403 is RBAC's ``<resource> "<name>" is forbidden: User "system:anonymous"
  cannot ...``, 409 is the update conflict ``Operation cannot be fulfilled on ...``
  (``reason: AlreadyExists`` gives ``... already exists``), 404 ``... not found``, 422
  ``<Kind> "<name>" is invalid: ...``, 429 ``Too many requests, please try again
  later.``, 500 ``Internal error occurred: ...``, 503 ``the server is currently unable
  to handle the request``, 504 ``Timeout: ...``. 403, 404 and 409 carry
  ``details`` {name, group, kind} (422: the Kind) when the request names an object.
  ``retryAfter`` (whole seconds) adds a ``Retry-After`` header and
  ``details.retryAfterSeconds``, as the server does for 429 and 5xx.
- ``delay`` (seconds): the request is served at once (a write takes effect) and the
  answer, success or error, is sent ``delay`` seconds later. With ``trickle: true`` the
  headers go at once and the body follows in small pieces, one every 0.1 s (fewer for
  a tiny body), the last at ``delay``: a per-read timeout never fires, only an overall
  deadline does. A watch opens ``delay`` late; ``trickle`` does not apply to streams
  (watches, ``pods/log``).
- ``dropWatchAfter`` (seconds): a matching watch stream is ended cleanly (as when its
  ``timeoutSeconds`` runs out) that long after it opened; streams open when the rule
  is created are ended that long after the rule's creation. Clients reconnect, and
  their new watches are dropped in turn.
- ``goneOnResume: true``: a watch that passes a ``resourceVersion`` (a resume, not a
  fresh watch or ``sendInitialEvents``) gets the 410 Expired ``ERROR`` event the real
  server sends when that version is compacted away.

and how often (optional): ``share`` (0..1, default 1) of the requests it matches,
drawn from the rule's own ``random.Random(seed)`` (``seed`` default 0, so a run
repeats); ``count``: only the first N requests it matches (``share`` is drawn within
them); ``seconds``: only for that long after the rule's creation.

Rules are tried in creation order; the first that fires answers the request, and later
rules do not see it (their ``matched`` is not counted). ``matched`` counts the
requests a rule matched inside its windows, ``hits`` the ones it faulted (for
``dropWatchAfter``: the streams it ended); ``active`` is false once its ``count`` or
``seconds`` window has passed. Discovery, ``/version``, health checks and the Service
proxy are never faulted. Faulted requests are in the audit log with the code answered
and ``"fault": "<id>"``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

from aiohttp import web

from .errors import (
    APIError,
    Cause,
    already_exists,
    bad_request,
    conflict,
    invalid,
    method_not_allowed,
    not_found,
    qualified,
    resource_details,
)

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
EFFECTS = ("status", "delay", "dropWatchAfter", "goneOnResume")
WATCH_EFFECTS = ("dropWatchAfter", "goneOnResume")
FIELDS = {
    "verbs", "resources", "namespace", "names", "namePrefix", "userAgent",
    *EFFECTS, "reason", "message", "retryAfter", "trickle",
    "share", "seed", "count", "seconds",
}
# What each effect's extra fields need, so a misplaced one is refused, not ignored.
NEEDS = {"reason": "status", "message": "status", "retryAfter": "status", "trickle": "delay"}
RESOURCE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[a-z]+)?$")
TRICKLE_PIECE_SECONDS = 0.1
ANONYMOUS = "system:anonymous"  # the sandbox authenticates no one

# The real server's reason and message per code, where one exists regardless of the
# object (the object-naming ones, 403/404/409/422, are built in _error below).
GENERIC = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    401: ("Unauthorized", "Unauthorized"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    410: ("Gone", "the requested resource is no longer available"),
    413: ("RequestEntityTooLarge", "Request entity too large: limit is 3145728"),
    415: ("UnsupportedMediaType", "the body of the request was in an unknown format"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "Timeout: request did not complete within requested timeout - "
                     "context deadline exceeded"),
}


class RequestFacts(Protocol):
    """What the server parsed from a resource request's path (its ``RequestInfo``)."""

    group: str
    plural: str
    subresource: str
    namespace: str | None
    name: str | None
    verb: str


@dataclass(frozen=True)
class Target:
    """A request as rules see it."""

    verb: str
    group: str
    plural: str
    resource: str  # plural, or plural/subresource
    namespace: str | None
    name: str | None
    generate_name: str | None
    user_agent: str
    resumes: bool  # a watch from a resourceVersion


@dataclass(eq=False)
class OpenWatch:
    """A watch stream being served, and how to end it."""

    target: Target
    close: Callable[[], None]
    timers: list[tuple[Rule, asyncio.TimerHandle]] = field(default_factory=list)
    dropped: bool = False


@dataclass(eq=False)
class Rule:
    id: str
    spec: dict[str, Any]  # as given, with defaults filled in: what the admin API echoes
    effect: str
    verbs: frozenset[str]
    resources: frozenset[str] | None
    namespace: str | None
    names: frozenset[str] | None
    name_prefix: str | None
    user_agent: str | None
    share: float
    count: int | None
    seconds: float | None
    rng: random.Random
    created: float = field(default_factory=time.monotonic)
    matched: int = 0
    hits: int = 0
    pending: dict[OpenWatch, asyncio.TimerHandle] = field(default_factory=dict)

    def wants_name(self) -> bool:
        return self.names is not None or self.name_prefix is not None

    def matches(self, target: Target) -> bool:
        if target.verb not in self.verbs:
            return False
        if self.resources is not None and target.resource not in self.resources:
            return False
        if self.namespace is not None and target.namespace != self.namespace:
            return False
        if self.names is not None and target.name not in self.names:
            return False
        if self.name_prefix is not None:
            candidate = target.name if target.name is not None else target.generate_name
            if candidate is None or not candidate.startswith(self.name_prefix):
                return False
        if self.user_agent is not None and self.user_agent not in target.user_agent:
            return False
        return self.effect != "goneOnResume" or target.resumes

    def active(self, now: float) -> bool:
        if self.count is not None and self.matched >= self.count:
            return False
        return self.seconds is None or now - self.created < self.seconds

    def fires(self, target: Target, now: float) -> bool:
        """Whether this rule faults ``target`` (counting it as matched when in a window)."""
        if not self.active(now) or not self.matches(target):
            return False
        self.matched += 1
        return self.rng.random() < self.share

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, **self.spec, "matched": self.matched, "hits": self.hits,
                "active": self.active(time.monotonic())}


FAULT_KEY: web.RequestKey[Rule | None] = web.RequestKey("mdsandbox_fault", Rule)


# -- rule parsing -------------------------------------------------------------------------


def _number(body: dict[str, Any], name: str, *, low: float, high: float | None = None,
            low_open: bool = False, whole: bool = False) -> float | None:
    if name not in body:
        return None
    value = body[name]
    kind = "a whole number" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            whole and not isinstance(value, int)):
        raise bad_request(f"{name} must be {kind}, not {json.dumps(value)}")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        bounds = f"{'above' if low_open else 'at least'} {low:g}"
        if high is not None:
            bounds += f" and at most {high:g}"
        raise bad_request(f"{name} must be {bounds}, not {value}")
    return float(value)


def _string(body: dict[str, Any], name: str) -> str | None:
    if name not in body:
        return None
    value = body[name]
    if not isinstance(value, str) or not value:
        raise bad_request(f"{name} must be a non-empty string, not {json.dumps(value)}")
    return value


def _strings(body: dict[str, Any], name: str, example: str) -> list[str] | None:
    if name not in body:
        return None
    value = body[name]
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v for v in value):
        raise bad_request(f"{name} must be a non-empty list of strings such as {example}, "
                          f"not {json.dumps(value)} (leave {name} out to match every one)")
    return value


def parse_rule(rule_id: str, body: Any) -> Rule:
    """A :class:`Rule` from the admin API's JSON; a 400 naming the field when it is wrong."""
    if not isinstance(body, dict):
        raise bad_request("a fault rule must be a JSON object such as "
                          '{"verbs": ["patch"], "resources": ["deployments"], "status": 409}')
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r} in the fault rule: the fields are "
                          + ", ".join(sorted(FIELDS)))
    effects = [e for e in EFFECTS if e in body]
    if len(effects) != 1:
        given = ", ".join(effects) or "none"
        raise bad_request("a fault rule needs exactly one effect of status, delay, "
                          f"dropWatchAfter or goneOnResume (given: {given})")
    effect = effects[0]
    for extra, needed in NEEDS.items():
        if extra in body and effect != needed:
            raise bad_request(f"{extra} goes with {needed}, not with {effect}")

    verbs = _strings(body, "verbs", '["get", "patch"]')
    for verb in verbs or []:
        if verb not in VERBS:
            raise bad_request(f"verbs: {verb!r} is not a Kubernetes verb; use "
                              + ", ".join(VERBS))
    if effect in WATCH_EFFECTS:
        if verbs is not None and verbs != ["watch"]:
            raise bad_request(f"{effect} acts on watches only: set verbs to [\"watch\"] "
                              "or leave verbs out")
        verbs = ["watch"]
    resources = _strings(body, "resources", '["deployments", "modeldeployments/status"]')
    for resource in resources or []:
        if not RESOURCE_NAME.match(resource):
            raise bad_request(f"resources: {resource!r} is not a plural resource name; use "
                              "lowercase plurals as RBAC names them, such as deployments "
                              "or modeldeployments/status")
    names = _strings(body, "names", '["web"]')
    spec: dict[str, Any] = {"verbs": verbs or list(VERBS)}
    spec.update({k: body[k] for k in ("resources", "namespace", "names", "namePrefix",
                                      "userAgent") if k in body})

    if effect == "status":
        code = _number(body, "status", low=400, high=599, whole=True)
        assert code is not None
        if int(code) not in HTTPStatus._value2member_map_:
            raise bad_request(f"status {int(code)} is not an HTTP status code clients know; "
                              "use one such as 403, 409, 422, 429, 500 or 503")
        spec["status"] = int(code)
        for text in ("reason", "message"):
            if _string(body, text) is not None:
                spec[text] = body[text]
        if _number(body, "retryAfter", low=0, low_open=True, whole=True) is not None:
            spec["retryAfter"] = body["retryAfter"]
    elif effect == "delay":
        spec["delay"] = _number(body, "delay", low=0, low_open=True)
        if "trickle" in body:
            if not isinstance(body["trickle"], bool):
                raise bad_request(f"trickle must be true or false, not {json.dumps(body['trickle'])}")
            spec["trickle"] = body["trickle"]
    elif effect == "dropWatchAfter":
        spec["dropWatchAfter"] = _number(body, "dropWatchAfter", low=0)
    elif body["goneOnResume"] is not True:
        raise bad_request("goneOnResume must be true (leave it out for no such fault)")
    else:
        spec["goneOnResume"] = True

    share = _number(body, "share", low=0, high=1)
    spec["share"] = 1.0 if share is None else share
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise bad_request(f"seed must be a whole number, not {json.dumps(seed)}")
    spec["seed"] = seed
    count = _number(body, "count", low=1, whole=True)
    if count is not None:
        spec["count"] = int(count)
    seconds = _number(body, "seconds", low=0, low_open=True)
    if seconds is not None:
        spec["seconds"] = seconds
    return Rule(
        id=rule_id, spec=spec, effect=effect, verbs=frozenset(spec["verbs"]),
        resources=frozenset(resources) if resources is not None else None,
        namespace=_string(body, "namespace"),
        names=frozenset(names) if names is not None else None,
        name_prefix=_string(body, "namePrefix"), user_agent=_string(body, "userAgent"),
        share=spec["share"], count=spec.get("count"), seconds=seconds,
        rng=random.Random(seed),
    )


# -- the error a status rule answers ------------------------------------------------------


def _error(rule: Rule, target: Target, kind: str) -> APIError:
    """The Status kube-apiserver would send for ``rule``'s code on ``target``."""
    code: int = rule.spec["status"]
    group, plural, name = target.group, target.plural, target.name or ""
    reason = rule.spec.get("reason")
    default: APIError
    if code == 403:
        resource = f'"{target.resource}" in API group "{group}"'
        scope = (f'in the namespace "{target.namespace}"' if target.namespace
                 else "at the cluster scope")
        subject = f'{qualified(group, plural)} "{name}"' if name else qualified(group, plural)
        named = resource_details(group, plural, name)
        if not name:
            del named["name"]  # Go leaves an empty name out
        default = APIError(403, "Forbidden", f'{subject} is forbidden: User "{ANONYMOUS}" '
                                             f"cannot {target.verb} resource {resource} {scope}",
                           named)
    elif code == 404:
        default = not_found(group, plural, name) if name else APIError(
            404, "NotFound", "the server could not find the requested resource")
    elif code == 409:
        default = (already_exists if reason == "AlreadyExists" else conflict)(group, plural, name)
    elif code == 422:
        where = "status" if target.resource.endswith("/status") else "spec"
        default = invalid(kind, group, name, [Cause(where, f'Invalid value: "object": '
                                                           f"refused by mdsandbox {rule.id}")])
    elif code == 500:
        cause = f"mdsandbox {rule.id}"
        default = APIError(500, "InternalError", f"Internal error occurred: {cause}",
                           {"causes": [{"message": cause}]})
    else:
        phrase = HTTPStatus(code).phrase.title().replace(" ", "").replace("-", "")
        generic_reason, message = GENERIC.get(code, (
            phrase, f"the server responded with the status code {code} but did not return "
                    "more information"))
        default = APIError(code, generic_reason, message)
    details, causes = default.details, default.causes
    if "message" in rule.spec:  # a message of one's own replaces the default's causes
        causes = []
        if code == 500:
            details = None
    error = APIError(code, reason or default.reason, rule.spec.get("message", default.message),
                     details, causes)
    if "retryAfter" in rule.spec:
        error.details = {**(error.details or {}), "retryAfterSeconds": rule.spec["retryAfter"]}
    return error


# -- the injector -------------------------------------------------------------------------


class FaultInjector:
    """The rules, the server's hooks into them, and the admin API's handler.

    Everything runs on the server's event loop, so no locks. The server calls
    :meth:`intercept` only while ``rules`` is non-empty: without a rule, serving costs
    one list check (and the open-watch bookkeeping, a set insert per watch).
    """

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self._open_watches: set[OpenWatch] = set()
        self._serial = 0

    # -- the admin API

    async def admin(self, request: web.Request) -> web.Response:
        rule_id = request.match_info.get("id")
        if not rule_id:
            if request.method == "POST":
                raw = await request.read()
                try:
                    body = json.loads(raw or b"null")
                except ValueError as exc:
                    raise bad_request(f"the fault rule is not valid JSON: {exc}") from exc
                return _json(self.add(body).describe(), 201)
            if request.method == "GET":
                return _json({"items": [r.describe() for r in self.rules]})
            if request.method == "DELETE":
                return _json({"items": [r.describe() for r in self.clear()]})
            raise method_not_allowed("/mdsandbox/faults takes GET, POST and DELETE")
        rule = next((r for r in self.rules if r.id == rule_id), None)
        if rule is None:
            raise APIError(404, "NotFound", f'fault rule "{rule_id}" not found (GET '
                                            "/mdsandbox/faults lists the rules)", {})
        if request.method == "GET":
            return _json(rule.describe())
        if request.method == "DELETE":
            self._remove(rule)
            return _json(rule.describe())
        raise method_not_allowed("/mdsandbox/faults/<id> takes GET and DELETE")

    def add(self, body: Any) -> Rule:
        rule = parse_rule(f"fault-{self._serial + 1}", body)
        self._serial += 1
        self.rules.append(rule)
        if rule.effect == "dropWatchAfter":
            now = time.monotonic()
            for watch in list(self._open_watches):
                if not watch.dropped and rule.fires(watch.target, now):
                    self._schedule_drop(rule, watch)
        return rule

    def clear(self) -> list[Rule]:
        removed = list(self.rules)
        for rule in removed:
            self._remove(rule)
        return removed

    def _remove(self, rule: Rule) -> None:
        self.rules.remove(rule)
        for handle in rule.pending.values():
            handle.cancel()
        rule.pending.clear()

    # -- hooks of the request path

    async def intercept(self, request: web.Request, facts: RequestFacts, kind: str,
                        read_body: Callable[[], Awaitable[Any]]) -> web.Response | None:
        """The error to answer now, or None to serve the request (noting a delay)."""
        # A create's name is in its body: read it when a rule matches names (or, below,
        # when an error is to name the object).
        named = facts.verb == "create" and any(r.wants_name() for r in self.rules)
        target = _target(request, facts, *(await _body_names(read_body) if named else (None, None)))
        now = time.monotonic()
        rule = next((r for r in self.rules if r.fires(target, now)), None)
        if rule is None:
            return None
        request[FAULT_KEY] = rule
        if rule.effect != "dropWatchAfter":  # a drop is a hit when the stream ends
            rule.hits += 1
        if rule.effect == "status":
            if facts.verb == "create" and not named:
                target = _target(request, facts, *await _body_names(read_body))
            error = _error(rule, target, kind)
            headers = ({"Retry-After": str(rule.spec["retryAfter"])}
                       if "retryAfter" in rule.spec else None)
            return _json(error.status(), error.code, headers)
        if rule.effect == "delay" and (facts.verb == "watch" or facts.subresource == "log"):
            await asyncio.sleep(rule.spec["delay"])  # a stream is sent as it is served
        return None

    async def deliver(self, request: web.Request, response: web.StreamResponse,
                      rule: Rule) -> web.StreamResponse:
        """``response``, late (or trickled) when ``rule`` is a delay; else as it is."""
        if rule.effect != "delay" or response.prepared:
            return response
        delay: float = rule.spec["delay"]
        body = response.body if isinstance(response, web.Response) else None
        if not rule.spec.get("trickle") or not isinstance(body, bytes) or not body:
            await asyncio.sleep(delay)
            return response
        stream = web.StreamResponse(status=response.status, reason=response.reason,
                                    headers=response.headers)
        stream.content_length = len(body)
        size = math.ceil(len(body) / max(1, min(len(body), math.ceil(delay / TRICKLE_PIECE_SECONDS))))
        pieces = [body[start:start + size] for start in range(0, len(body), size)]
        try:
            await stream.prepare(request)
            for piece in pieces:
                await asyncio.sleep(delay / len(pieces))
                await stream.write(piece)
            await stream.write_eof()
        except ConnectionResetError:
            pass  # the client gave up waiting: what a trickle is for
        return stream

    @staticmethod
    def expires(request: web.Request) -> bool:
        """Whether this watch resume is to get 410 Expired (a ``goneOnResume`` rule)."""
        rule = request[FAULT_KEY]
        return rule is not None and rule.effect == "goneOnResume"

    def watch_opened(self, request: web.Request, facts: RequestFacts,
                     close: Callable[[], None]) -> OpenWatch:
        """Note an open watch stream; ``close()`` ends it cleanly."""
        watch = OpenWatch(_target(request, facts, None, None), close)
        self._open_watches.add(watch)
        rule = request[FAULT_KEY]
        if rule is not None and rule.effect == "dropWatchAfter":
            self._schedule_drop(rule, watch)
        return watch

    def watch_closed(self, watch: OpenWatch) -> None:
        self._open_watches.discard(watch)
        for rule, handle in watch.timers:
            handle.cancel()
            rule.pending.pop(watch, None)

    def _schedule_drop(self, rule: Rule, watch: OpenWatch) -> None:
        handle = asyncio.get_running_loop().call_later(
            rule.spec["dropWatchAfter"], self._drop, rule, watch)
        watch.timers.append((rule, handle))
        rule.pending[watch] = handle

    @staticmethod
    def _drop(rule: Rule, watch: OpenWatch) -> None:
        rule.pending.pop(watch, None)
        if watch.dropped:
            return
        watch.dropped = True
        rule.hits += 1
        watch.close()


def _target(request: web.Request, facts: RequestFacts, body_name: str | None,
            generate_name: str | None) -> Target:
    name = facts.name if facts.name is not None else body_name
    query = request.query
    if name is None and facts.verb in ("list", "watch"):
        name = _selected_name(query.get("fieldSelector", ""))
    resumes = facts.verb == "watch" and query.get("resourceVersion", "") not in ("", "0") \
        and query.get("sendInitialEvents") not in ("true", "1", "True")
    resource = f"{facts.plural}/{facts.subresource}" if facts.subresource else facts.plural
    return Target(facts.verb, facts.group, facts.plural, resource, facts.namespace, name,
                  generate_name, request.headers.get("User-Agent", ""), resumes)


async def _body_names(read_body: Callable[[], Awaitable[Any]]) -> tuple[str | None, str | None]:
    """A create body's ``metadata.name`` and ``metadata.generateName`` (None where absent)."""
    try:
        body = await read_body()
    except APIError:  # a bad body is the handler's to refuse
        return None, None
    meta = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(meta, dict):
        return None, None
    name, generate_name = meta.get("name"), meta.get("generateName")
    return (name if isinstance(name, str) else None,
            generate_name if isinstance(generate_name, str) else None)


def _selected_name(selector: str) -> str | None:
    """``n`` of a field selector that requires ``metadata.name=n`` (as RBAC reads it)."""
    for term in selector.split(","):
        key, _, value = term.partition("==" if "==" in term else "=")
        if key.strip() == "metadata.name":  # "metadata.name!=n" leaves the key "...name!"
            return value.strip()
    return None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json",
                        headers=headers)

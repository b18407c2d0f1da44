"""Kubernetes ``Status`` bodies for failed requests.

Every error the server returns is an :class:`APIError`, rendered as a ``Status``
object (kind, apiVersion, metadata, status Failure, message, reason, details,
code) worded as kube-apiserver words it, so clients that branch on ``reason``
(Kopf, client-go, the Python client) behave as against a real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cause:
    """One failing field of a 422 Invalid answer (``details.causes[]``)."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


@dataclass
class APIError(Exception):
    """An error answered to the client as a ``Status`` object."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] | None = None
    causes: list[Cause] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            details = dict(self.details)
            if self.causes:
                details["causes"] = [c.as_dict() for c in self.causes]
            body["details"] = details
        body["code"] = self.code
        return body


def resource_details(group: str, plural: str, name: str) -> dict[str, Any]:
    """``details`` as kube-apiserver fills it: name, group (omitted for core), kind=plural."""
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = plural
    return details


def qualified(group: str, plural: str) -> str:
    """``widgets.golden.example.io`` or ``configmaps`` (core has no group suffix)."""
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> APIError:
    return APIError(
        404,
        "NotFound",
        f'{qualified(group, plural)} "{name}" not found',
        resource_details(group, plural, name),
    )


def already_exists(group: str, plural: str, name: str) -> APIError:
    return APIError(
        409,
        "AlreadyExists",
        f'{qualified(group, plural)} "{name}" already exists',
        resource_details(group, plural, name),
    )


def conflict(group: str, plural: str, name: str) -> APIError:
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(group, plural)} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again",
        resource_details(group, plural, name),
    )


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> APIError:  # noqa: E501
    return APIError(405, "MethodNotAllowed", message, {})


def unsupported_media_type(accepted: list[str]) -> APIError:
    return APIError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> APIError:
    """422 Invalid, with the message kube-apiserver builds from the causes."""
    bodies = [f"{c.field}: {c.message}" for c in causes]
    joined = bodies[0] if len(bodies) == 1 else "[" + ", ".join(bodies) + "]"
    qualified_kind = f"{kind}.{group}" if group else kind
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    return APIError(
        422, "Invalid", f'{qualified_kind} "{name}" is invalid: {joined}', details, causes
    )

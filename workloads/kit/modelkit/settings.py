"""Service settings read from environment variables, validated before the server binds.

Every service subclasses :class:`ServiceSettings` and adds its own fields; field names are
the environment variable names (case-insensitive, no prefix). :func:`load_settings` turns a
validation failure into a message on stderr that names the variable and what it expects, and
exits with status 2, so a bad deployment fails fast at start-up instead of at the first request.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class ServiceSettings(BaseSettings):
    """The configuration every model service shares (DESIGN.md's fixed names)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", env_prefix="")

    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=8080, ge=1, le=65535, description="TCP port to listen on.")
    log_level: LogLevel = Field(default="INFO", description="Python logging level.")
    api_key: str | None = Field(
        default=None,
        description="When set, every route but /health and /metrics needs X-API-Key equal to it.",
    )
    max_request_bytes: int = Field(
        default=1_048_576, ge=1, description="Largest request body accepted (413 above it)."
    )
    request_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="Longest wait for a request's whole body (408 after): a trickled body "
        "must not hold a place in the queue for ever.",
    )
    max_concurrent_requests: int = Field(
        default=0,
        ge=0,
        description="Model requests served at once (modelkit.limits); 0 = no limit. The kit's "
        "default suits apps that are not model services; each model service sets its own.",
    )
    max_queued_requests: int = Field(
        default=0,
        ge=0,
        description="Admitted requests that may wait for a slot beyond MAX_CONCURRENT_REQUESTS; "
        "any more get 429 with Retry-After at once.",
    )
    rate_limit_per_minute: int = Field(
        default=0,
        ge=0,
        description="Model requests each client may send a minute (modelkit.ratelimit), per API "
        "key, else per client address; 0 = no limit: behind an ingress (or the sandbox's data "
        "plane) every client has the same address, so a per-address default would throttle "
        "all traffic as one client. A deployment that knows its clients sets it.",
    )
    app_version: str = Field(default="dev", min_length=1, description="model_info's version.")
    openai_api_key: str = Field(
        default="not-set",
        description="Passed to the openai SDK; any placeholder works against the fake upstream.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_api_key_is_unset(cls, value: Any) -> Any:
        # An empty API_KEY in a manifest means "no auth", not "the key is the empty string".
        return None if value == "" else value


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


class ConfigurationError(Exception):
    """Raised by :func:`parse_settings` with one readable line per bad variable."""


def _variable_names(settings_cls: type[BaseSettings] | None, field: str) -> str:
    """``FIELD``, or ``FIELD (also read as OLD_NAME)`` for a field with alias choices."""
    info = settings_cls.model_fields.get(field) if settings_cls is not None else None
    alias = info.validation_alias if info is not None else None
    if not isinstance(alias, AliasChoices):
        return field.upper()
    others = [str(choice).upper() for choice in alias.choices if str(choice) != field]
    return f"{field.upper()} (also read as {', '.join(others)})" if others else field.upper()


def describe_validation_error(
    error: ValidationError, settings_cls: type[BaseSettings] | None = None
) -> str:
    """Render a settings ValidationError as lines naming each environment variable."""
    lines = []
    for item in error.errors():
        loc = item.get("loc") or ("?",)
        variable = _variable_names(settings_cls, str(loc[0]))
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{variable}: {item.get('msg', 'invalid value')}{shown}")
    return "\n".join(lines)


def parse_settings(settings_cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build settings from the environment (and keyword overrides, for tests).

    Raises :class:`ConfigurationError` naming each bad variable.
    """
    try:
        return settings_cls(**overrides)
    except ValidationError as error:
        raise ConfigurationError(describe_validation_error(error, settings_cls)) from None


def load_settings(settings_cls: type[SettingsT]) -> SettingsT:
    """Build settings from the environment or exit(2) with the bad variables on stderr."""
    try:
        return parse_settings(settings_cls)
    except ConfigurationError as error:
        print(
            f"configuration error: fix these environment variables and restart:\n{error}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None

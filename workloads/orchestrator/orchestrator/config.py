"""The orchestrator's settings: the kit's shared ones plus orchestration's own.

Field names are the environment variable names (the kit's convention). Every bad
value is refused at start-up with a message naming the variable.

Defaults where the design is silent:

* ``FF_MODEL_SELECTION`` false (ask every requested model), ``FF_PARALLEL_EXECUTION``
  true, ``FF_RESULT_MERGING`` true, ``FF_VALIDATION`` true. Flags read "true"/"false"
  (pydantic's booleans: 1/0, yes/no, on/off work too).
* ``ORCH_SELECT_TOP_K`` 2: how many models model selection keeps.
* ``ORCH_MIN_CONFIDENCE`` 0.2: model selection skips models scored below it,
  unless that would leave none.
* ``ORCH_CACHE_TTL_S`` 300, ``ORCH_CACHE_MAX_ENTRIES`` 1024 (0 disables the cache),
  ``ORCH_TIMEOUT_S`` 30 per upstream call, ``MAX_REQUEST_BYTES`` 64 KiB (a prompt,
  not a document store).
* ``OPENAI_BASE_URL`` unset means the openai SDK's default (api.openai.com).
* ``MAX_CONCURRENT_REQUESTS`` 32 queries at once (each asks up to every registered
  model), ``MAX_QUEUED_REQUESTS`` 64 waiting; any more get 429 with Retry-After.
* ``ORCH_DISABLED_MODELS`` empty: registered models that are not asked (their price and
  confidence stay known, so switching one back on restores what was learned).
* ``ORCH_HISTORY_MAX_BYTES`` 10 MiB: the performance history file is rotated to ``.1``
  before it would pass this size (:mod:`orchestrator.history`); 0 keeps no history, and
  any other value under 4096 (a handful of lines) is refused as a likely unit mistake.

Settings may also come from a JSON file, usually a mounted ConfigMap
(:func:`load_orchestrator_settings`): ``ORCH_CONFIG_FILE`` names it; unset, the
conventional ``/etc/orchestrator/config.json`` is read when it exists (so an image run
without the mount needs no file); set to the empty string, no file is read. Its keys
are the environment variable names, its values JSON-typed (booleans for flags, numbers
for numbers, strings, or a list of strings for the two model lists). Precedence:
defaults < config.json < environment. The file is read once, at start-up: a changed
ConfigMap takes effect on restart, that is with a new ModelDeployment revision, which is
what makes a configuration change a canary. A malformed file, an unknown key, a secret
(``API_KEY``, ``OPENAI_API_KEY`` belong in a Secret) or a wrongly typed value stops
start-up naming the file and the key.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit.settings import ConfigurationError, ServiceSettings
from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from orchestrator.history import DEFAULT_MAX_BYTES as DEFAULT_HISTORY_MAX_BYTES
from orchestrator.history import MIN_MAX_BYTES as MIN_HISTORY_MAX_BYTES
from orchestrator.registry import ConfigError, ModelSpec, parse_models


class OrchestratorSettings(ServiceSettings):
    max_request_bytes: int = Field(default=65_536, ge=1)
    max_concurrent_requests: int = Field(default=32, ge=1)
    max_queued_requests: int = Field(default=64, ge=0)
    openai_base_url: str | None = Field(default=None, description="Upstream base URL (…/v1).")
    orch_models: str = Field(
        default="", description="Comma-separated model ids, optionally id=<in>/<out> USD per 1M."
    )
    orch_data_dir: Path = Field(default=Path("/var/lib/orchestrator"))
    orch_cache_ttl_s: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    orch_cache_max_entries: int = Field(default=1024, ge=0)
    orch_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    orch_select_top_k: int = Field(default=2, ge=1)
    orch_min_confidence: float = Field(default=0.2, ge=0, le=1, allow_inf_nan=False)
    ff_model_selection: bool = False
    ff_parallel_execution: bool = True
    ff_result_merging: bool = True
    ff_validation: bool = True
    orch_disabled_models: str = Field(
        default="", description="Comma-separated registered model ids that are not asked."
    )
    orch_history_max_bytes: int = Field(
        default=DEFAULT_HISTORY_MAX_BYTES,
        ge=0,
        description="Size at which performance_history.jsonl is rotated to .1; 0 keeps no history.",
    )

    _registry: dict[str, ModelSpec] = PrivateAttr(default_factory=dict)
    _config_sources: ConfigSources | None = PrivateAttr(default=None)

    @field_validator("openai_base_url", mode="before")
    @classmethod
    def _empty_base_url_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("orch_models")
    @classmethod
    def _models_parse(cls, value: str) -> str:
        try:
            parse_models(value)
        except ConfigError as error:
            raise ValueError(str(error).removeprefix("ORCH_MODELS: ")) from None
        return value

    @field_validator("orch_disabled_models")
    @classmethod
    def _disabled_models_are_registered(cls, value: str, info: ValidationInfo) -> str:
        disabled = _split_ids(value)
        registered_text = info.data.get("orch_models")
        if registered_text is None:  # ORCH_MODELS itself is bad and already reported
            return value
        registered = list(parse_models(registered_text))
        for model in disabled:
            if model not in registered:
                raise ValueError(
                    f"{model!r} is not a registered model; list only models of ORCH_MODELS "
                    f"({', '.join(registered)})"
                )
        if set(registered) <= set(disabled):
            raise ValueError("every registered model is disabled; leave at least one enabled")
        return value

    @field_validator("orch_history_max_bytes")
    @classmethod
    def _history_limit_holds_some_lines(cls, value: int) -> int:
        if 0 < value < MIN_HISTORY_MAX_BYTES:
            raise ValueError(
                f"must be 0 (keep no history) or at least {MIN_HISTORY_MAX_BYTES} bytes; it is a "
                f"size in bytes (the default, {DEFAULT_HISTORY_MAX_BYTES}, is 10 MiB)"
            )
        return value

    @model_validator(mode="after")
    def _build_registry(self) -> OrchestratorSettings:
        self._registry = parse_models(self.orch_models)
        return self

    @property
    def models(self) -> dict[str, ModelSpec]:
        """The registry, in ORCH_MODELS order, disabled models included."""
        return dict(self._registry)

    @property
    def disabled_models(self) -> frozenset[str]:
        return frozenset(_split_ids(self.orch_disabled_models))

    @property
    def enabled_models(self) -> dict[str, ModelSpec]:
        """The models a query asks unless it names its own, in ORCH_MODELS order."""
        disabled = self.disabled_models
        return {model: spec for model, spec in self._registry.items() if model not in disabled}

    @property
    def config_sources(self) -> ConfigSources:
        """Where each setting came from; environment and defaults only unless loaded from a file."""
        if self._config_sources is None:
            return ConfigSources.of(type(self), None, {}, _environment_names(os.environ))
        return self._config_sources

    def flags(self) -> dict[str, bool]:
        return {
            "FF_MODEL_SELECTION": self.ff_model_selection,
            "FF_PARALLEL_EXECUTION": self.ff_parallel_execution,
            "FF_RESULT_MERGING": self.ff_result_merging,
            "FF_VALIDATION": self.ff_validation,
        }


# --- config.json -------------------------------------------------------------------

CONFIG_FILE_VARIABLE = "ORCH_CONFIG_FILE"
DEFAULT_CONFIG_FILE = Path("/etc/orchestrator/config.json")
# A ConfigMap is readable by anyone who may read the namespace's configuration.
SECRET_KEYS = frozenset({"API_KEY", "OPENAI_API_KEY"})
# Model lists read naturally as JSON lists; the environment's comma form works too.
LIST_KEYS = frozenset({"ORCH_MODELS", "ORCH_DISABLED_MODELS"})
FROM_DEFAULT = "default"
FROM_ENVIRONMENT = "environment"


class ConfigFileError(ConfigurationError):
    """config.json is unusable; the message names the file, the key and the fix."""


def _split_ids(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _environment_names(environ: Mapping[str, str]) -> frozenset[str]:
    # The kit reads variables case-insensitively, so "orch_models" counts as ORCH_MODELS.
    return frozenset(name.upper() for name in environ)


@dataclass(frozen=True)
class ConfigSources:
    """Where each effective setting came from: ``default``, ``environment`` or the file's path."""

    file: Path | None
    by_setting: dict[str, str]

    @classmethod
    def of(
        cls,
        settings_cls: type[OrchestratorSettings],
        file: Path | None,
        file_values: Mapping[str, Any],
        environment_names: frozenset[str],
    ) -> ConfigSources:
        by_setting: dict[str, str] = {}
        for field in settings_cls.model_fields:
            name = field.upper()
            if name in environment_names:
                by_setting[name] = FROM_ENVIRONMENT
            elif field in file_values:
                by_setting[name] = str(file)
            else:
                by_setting[name] = FROM_DEFAULT
        return cls(file, by_setting)

    def describe(self) -> str:
        from_file = [name for name, source in self.by_setting.items() if source == str(self.file)]
        from_env = [name for name, source in self.by_setting.items() if source == FROM_ENVIRONMENT]
        parts = [
            f"from {self.file}: {', '.join(from_file) or 'nothing'}"
            if self.file is not None
            else "no config file",
            f"from the environment: {', '.join(from_env) or 'nothing'}",
            "every other setting at its default",
        ]
        return "; ".join(parts)


def config_file_path(environ: Mapping[str, str]) -> Path | None:
    """The file to read: ORCH_CONFIG_FILE, else the conventional path when it exists."""
    named = next((value for name, value in environ.items() if name.upper() == CONFIG_FILE_VARIABLE), None)
    if named is None:
        return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None
    if named == "":
        return None
    path = Path(named)
    if not path.exists():
        raise ConfigFileError(
            f"{CONFIG_FILE_VARIABLE}={named}: no such file; mount the ConfigMap there, "
            f"or unset {CONFIG_FILE_VARIABLE} to run on environment variables alone"
        )
    return path


def _expected_json(annotation: Any) -> tuple[tuple[type, ...], str]:
    """The JSON value types a setting of this annotation takes from the file, and their name."""
    if annotation is bool:
        return (bool,), "true or false"
    if annotation is int:
        return (int,), "a whole number"
    if annotation is float:
        return (int, float), "a number"
    # str, Path, a Literal of strings, or ``str | None`` (leaving the key out means unset).
    return (str,), "a string"


def read_config_file(path: Path, settings_cls: type[OrchestratorSettings]) -> dict[str, Any]:
    """The file's settings by field name, checked for unknown keys, secrets and JSON types."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigFileError(
            f"{path}: cannot be read ({error.strerror or error}); mount the ConfigMap's "
            f"config.json there, or point {CONFIG_FILE_VARIABLE} at the file"
        ) from None
    try:
        document = json.loads(raw)
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8 text; save it as UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise ConfigFileError(
            f"{path}: not valid JSON: {error.msg} at line {error.lineno} column {error.colno}; "
            "fix the syntax (one JSON object of settings)"
        ) from None
    if not isinstance(document, dict):
        raise ConfigFileError(
            f"{path}: holds a JSON {type(document).__name__}; it must be one JSON object of "
            'settings, e.g. {"ORCH_MODELS": ["gpt-4o-mini"], "FF_VALIDATION": true}'
        )
    known = {field.upper(): field for field in settings_cls.model_fields}
    values: dict[str, Any] = {}
    for key, value in document.items():
        where = f"{path}: key {key!r}"
        if key in SECRET_KEYS:
            raise ConfigFileError(
                f"{where}: a secret does not belong in config.json (a ConfigMap); remove it and "
                f"set {key} from a Secret (env valueFrom.secretKeyRef)"
            )
        if key not in known:
            hint = key.upper() if key.upper() in known else next(
                iter(difflib.get_close_matches(key.upper(), known, n=1)), None
            )
            fix = f"did you mean {hint!r}?" if hint else "keys are the settings' environment variable names"
            raise ConfigFileError(f"{where} is not a setting; {fix} (or remove the key)")
        if key in LIST_KEYS and isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise ConfigFileError(
                    f"{where}: list items must be model id strings (got {json.dumps(value)})"
                )
            value = ",".join(value)
        field = known[key]
        kinds, kind_name = _expected_json(settings_cls.model_fields[field].annotation)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            plural = " or a list of strings" if key in LIST_KEYS else ""
            raise ConfigFileError(
                f"{where} must be {kind_name}{plural} (got {json.dumps(value)}); fix its value"
            )
        values[field] = value
    return values


def _describe_errors(error: ValidationError, file: Path | None, file_values: Mapping[str, Any]) -> str:
    lines = []
    for item in error.errors():
        loc = item.get("loc") or ("?",)
        field = str(loc[0])
        name = field.upper()
        message = item.get("msg", "invalid value").removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        if file is not None and field in file_values:
            lines.append(f"{file}: key {name!r}: {message}{shown}; fix it in the file")
        else:
            lines.append(f"{name}: {message}{shown}")
    return "\n".join(lines)


def load_orchestrator_settings() -> OrchestratorSettings:
    """Settings from defaults < config.json < environment; :class:`ConfigurationError` names what is bad."""
    environ = os.environ
    file = config_file_path(environ)
    file_values = read_config_file(file, OrchestratorSettings) if file is not None else {}
    environment_names = _environment_names(environ)
    # Init values outrank the environment in pydantic-settings; leaving out those the
    # environment sets restores the precedence the file promises.
    from_file = {
        field: value for field, value in file_values.items() if field.upper() not in environment_names
    }
    try:
        settings = OrchestratorSettings(**from_file)
    except ValidationError as error:
        raise ConfigurationError(_describe_errors(error, file, from_file)) from None
    settings._config_sources = ConfigSources.of(OrchestratorSettings, file, file_values, environment_names)
    return settings

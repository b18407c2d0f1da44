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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelkit.settings import ServiceSettings
from pydantic import Field, PrivateAttr, field_validator, model_validator

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

    _registry: dict[str, ModelSpec] = PrivateAttr(default_factory=dict)

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

    @model_validator(mode="after")
    def _build_registry(self) -> OrchestratorSettings:
        self._registry = parse_models(self.orch_models)
        return self

    @property
    def models(self) -> dict[str, ModelSpec]:
        """The registry, in ORCH_MODELS order."""
        return dict(self._registry)

    def flags(self) -> dict[str, bool]:
        return {
            "FF_MODEL_SELECTION": self.ff_model_selection,
            "FF_PARALLEL_EXECUTION": self.ff_parallel_execution,
            "FF_RESULT_MERGING": self.ff_result_merging,
            "FF_VALIDATION": self.ff_validation,
        }

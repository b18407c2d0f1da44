"""song-analyzer's settings (environment variables)."""

from __future__ import annotations

from modelkit import ServiceSettings
from pydantic import Field


class SongAnalyzerSettings(ServiceSettings):
    llm_api_base_url: str = Field(
        default="https://api.openai.com/v1", min_length=1, description="OpenAI-compatible base URL."
    )
    llm_model: str = Field(
        default="ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v1",
        min_length=1,
        description="The (fine-tuned) chat model that scores songs.",
    )
    llm_temperature: float = Field(default=0.2, ge=0, le=2)
    llm_max_tokens: int = Field(default=2000, ge=1, le=128_000)
    llm_timeout: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="Seconds for one analysis's upstream work, all of it: the wait for an "
        "upstream slot, every try and the back-off between them (504 after).",
    )
    # A model service bounds its calls to the provider apart from its requests: cache hits
    # never take an upstream slot, and a burst of misses cannot open more calls than this.
    upstream_max_concurrency: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="Upstream calls in flight at once per process; more wait for a slot.",
    )
    upstream_max_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Retries after an upstream 429 or 5xx (never after another 4xx).",
    )
    upstream_retry_base_delay_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        allow_inf_nan=False,
        description="Back-off before retry k (k = 0, 1, ...): base·2^k plus up to as much "
        "again of jitter, and at least the upstream's Retry-After.",
    )
    cache_max_entries: int = Field(
        default=1024, ge=0, le=1_000_000, description="LRU cache size; 0 turns the cache off."
    )
    # Lyrics are bounded to 20,000 characters (≤ 80 KB of UTF-8) plus artist and title.
    max_request_bytes: int = Field(default=128 * 1024, ge=1)
    # Each analysis is one upstream call of up to LLM_TIMEOUT; beyond these, 429.
    max_concurrent_requests: int = Field(default=32, ge=1)
    max_queued_requests: int = Field(default=64, ge=0)

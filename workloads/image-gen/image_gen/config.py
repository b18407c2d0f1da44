"""image-gen's settings (environment variables) and what each image model accepts."""

from __future__ import annotations

from dataclasses import dataclass

from modelkit import ServiceSettings
from pydantic import AliasChoices, Field


class ImageGenSettings(ServiceSettings):
    openai_base_url: str = Field(
        default="https://api.openai.com/v1", min_length=1, description="OpenAI-compatible base URL."
    )
    image_model: str = Field(default="gpt-image-1", min_length=1, description="Image model id.")
    image_timeout_s: float = Field(
        default=180.0, gt=0, le=3600, description="Timeout of one images.generate call."
    )
    # The kit's limiter; IMAGE_MAX_CONCURRENCY, its earlier name, is still read.
    max_concurrent_requests: int = Field(
        default=4,
        ge=1,
        le=1000,
        validation_alias=AliasChoices("max_concurrent_requests", "image_max_concurrency"),
        description="Generations in flight before answering 429.",
    )
    # No queue by default: a generation takes minutes, a caller is better told at once.
    max_queued_requests: int = Field(default=0, ge=0)
    # A 4000-character prompt is at most 16 KB of UTF-8; 64 KiB leaves room for the JSON.
    max_request_bytes: int = Field(default=64 * 1024, ge=1)


@dataclass(frozen=True)
class ModelOptions:
    """Sizes and qualities a model accepts, and its price per image where not token-billed."""

    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    # (quality, size) -> USD per image, for models billed per image (dall-e-*).
    per_image_usd: dict[tuple[str, str], float] | None = None
    default_quality: str | None = None


_GPT_IMAGE = ModelOptions(
    sizes=("1024x1024", "1536x1024", "1024x1536", "auto"),
    qualities=("low", "medium", "high", "auto"),
)
MODEL_OPTIONS: dict[str, ModelOptions] = {
    "gpt-image-1": _GPT_IMAGE,
    "gpt-image-1-mini": _GPT_IMAGE,
    "dall-e-3": ModelOptions(
        sizes=("1024x1024", "1792x1024", "1024x1792"),
        qualities=("standard", "hd"),
        per_image_usd={
            ("standard", "1024x1024"): 0.040,
            ("standard", "1792x1024"): 0.080,
            ("standard", "1024x1792"): 0.080,
            ("hd", "1024x1024"): 0.080,
            ("hd", "1792x1024"): 0.120,
            ("hd", "1024x1792"): 0.120,
        },
        default_quality="standard",
    ),
    "dall-e-2": ModelOptions(
        sizes=("256x256", "512x512", "1024x1024"),
        qualities=("standard",),
        per_image_usd={
            ("standard", "256x256"): 0.016,
            ("standard", "512x512"): 0.018,
            ("standard", "1024x1024"): 0.020,
        },
        default_quality="standard",
    ),
}

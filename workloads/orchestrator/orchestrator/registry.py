"""The registered models (ORCH_MODELS) and what each costs.

``ORCH_MODELS`` is a comma-separated list of model ids. A model whose price the
kit's table knows (:mod:`modelkit.pricing`, fine-tunes and dated snapshots
included) needs nothing more (``gpt-4o-mini,gpt-4o``); any other model
(a fine-tune, a local or fake model) carries its price inline as
``<id>=<input USD per 1M tokens>/<output USD per 1M tokens>``, for example
``fake-small=0.15/0.6``. A model with no known price is a configuration error at
start-up: silently counting it as free would make the cost gates of the canary
meaningless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelkit.pricing import TokenPrice, price_for


class ConfigError(ValueError):
    """A bad environment setting; the message names the variable and the fix."""


@dataclass(frozen=True)
class ModelSpec:
    """One registered model and its price in USD per 1M tokens."""

    id: str
    input_usd_per_million: float
    output_usd_per_million: float

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_usd_per_million + output_tokens * self.output_usd_per_million
        ) / 1_000_000

    @property
    def token_price(self) -> TokenPrice:
        return TokenPrice(self.input_usd_per_million, self.output_usd_per_million)

    @property
    def blended_usd_per_million(self) -> float:
        """One number to rank models by price (prompts are short, answers longer)."""
        return (self.input_usd_per_million + self.output_usd_per_million) / 2


def _parse_price(text: str, entry: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"ORCH_MODELS: bad price {text!r} in {entry!r}; prices are non-negative numbers "
            "in USD per 1M tokens, as <id>=<input>/<output>"
        )
    return value


def parse_models(raw: str) -> dict[str, ModelSpec]:
    """Parse ``ORCH_MODELS`` into an ordered registry (order = preference on ties)."""
    registry: dict[str, ModelSpec] = {}
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        model_id, sep, price = entry.partition("=")
        model_id = model_id.strip()
        if not model_id:
            raise ConfigError(f"ORCH_MODELS: entry {entry!r} has no model id")
        if model_id in registry:
            raise ConfigError(f"ORCH_MODELS: model {model_id!r} is listed twice; list it once")
        if sep:
            input_text, slash, output_text = price.partition("/")
            if not slash:
                raise ConfigError(
                    f"ORCH_MODELS: price of {model_id!r} must be <input>/<output> "
                    f"USD per 1M tokens, e.g. {model_id}=0.15/0.6"
                )
            prices = (_parse_price(input_text, entry), _parse_price(output_text, entry))
        elif (known := price_for(model_id)) is not None:
            prices = (known.input_per_million, known.output_per_million)
        else:
            raise ConfigError(
                f"ORCH_MODELS: no price is known for model {model_id!r}; give it inline as "
                f"{model_id}=<input USD per 1M tokens>/<output USD per 1M tokens>"
            )
        registry[model_id] = ModelSpec(model_id, *prices)
    if not registry:
        raise ConfigError(
            "ORCH_MODELS is empty; set it to a comma-separated list of model ids, "
            "e.g. ORCH_MODELS=gpt-4o-mini,gpt-4o"
        )
    return registry

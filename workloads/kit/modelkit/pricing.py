"""Token prices per model, in USD per one million tokens (OpenAI list prices, standard tier).

Resolution order for a model id, first match wins:

1. the exact id in :data:`TOKEN_PRICES` (``ft:gpt-4o-mini`` is the fine-tuned price);
2. a fine-tuned id ``ft:<base>[:org:name:id]`` is priced as the fine-tune of ``<base>``
   (``ft:<base>`` in the table), falling back to ``<base>``'s own price when the table has
   no fine-tuned price for it — a new fine-tune of a known model is never left unpriced;
3. a dated snapshot (``gpt-4o-mini-2024-07-18``) is priced as its undated family
   (``gpt-4o-mini``);
4. otherwise the model is unknown: :func:`cost_usd` returns None and the caller counts
   tokens but no cost (and should log it once), rather than inventing a price.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenPrice:
    """USD per one million input and output tokens."""

    input_per_million: float
    output_per_million: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1_000_000


TOKEN_PRICES: dict[str, TokenPrice] = {
    "gpt-4o-mini": TokenPrice(0.15, 0.60),
    "ft:gpt-4o-mini": TokenPrice(0.30, 1.20),
    "gpt-4o": TokenPrice(2.50, 10.00),
    "ft:gpt-4o": TokenPrice(3.75, 15.00),
    "gpt-4.1": TokenPrice(2.00, 8.00),
    "ft:gpt-4.1": TokenPrice(3.00, 12.00),
    "gpt-4.1-mini": TokenPrice(0.40, 1.60),
    "ft:gpt-4.1-mini": TokenPrice(0.80, 3.20),
    "gpt-4.1-nano": TokenPrice(0.10, 0.40),
    "ft:gpt-4.1-nano": TokenPrice(0.20, 0.80),
    "gpt-3.5-turbo": TokenPrice(0.50, 1.50),
    "ft:gpt-3.5-turbo": TokenPrice(3.00, 6.00),
    "o3-mini": TokenPrice(1.10, 4.40),
    # gpt-image-1 bills text input and image output tokens.
    "gpt-image-1": TokenPrice(5.00, 40.00),
}

_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def _family(model: str) -> str:
    return _SNAPSHOT_SUFFIX.sub("", model)


def price_for(model: str, prices: dict[str, TokenPrice] | None = None) -> TokenPrice | None:
    """The price of ``model`` by the resolution order in the module docstring."""
    table = TOKEN_PRICES if prices is None else prices
    if model in table:
        return table[model]
    if model.startswith("ft:"):
        base = model.split(":")[1] if model.count(":") >= 1 else ""
        for candidate in (f"ft:{base}", f"ft:{_family(base)}", base, _family(base)):
            if candidate in table:
                return table[candidate]
        return None
    return table.get(_family(model))


def cost_usd(
    model: str, input_tokens: int, output_tokens: int, prices: dict[str, TokenPrice] | None = None
) -> float | None:
    """USD for one call, or None when the model has no known price."""
    price = price_for(model, prices)
    return None if price is None else price.cost(input_tokens, output_tokens)

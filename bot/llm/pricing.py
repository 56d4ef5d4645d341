"""Prices from configuration: USD per million tokens (input cache hit, input cache miss, output)
and the ``$web_search`` fee per call.

The defaults are the global platform's list prices from the Kimi API reference (January 2026).
``KIMI_PRICES`` (JSON, ``{"model": [hit, miss, out], ...}``) overrides or adds models;
``KIMI_DEFAULT_PRICE`` (``[hit, miss, out]``) charges a model the table does not know. Without a
default, a model without a price is refused at start-up (:meth:`PriceTable.check`), so no model
is ever free and a fallback model cannot escape the daily budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    cache_hit: float
    cache_miss: float
    output: float

    def microusd(self, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> int:
        """The cost of one call in micro-dollars (USD per 1M tokens x tokens = micro-USD)."""
        uncached = max(prompt_tokens - cached_tokens, 0)
        return round(cached_tokens * self.cache_hit + uncached * self.cache_miss + completion_tokens * self.output)


#: kimi-api.md §10, global platform, USD. moonshot-v1 has no cache: a hit costs a miss.
DEFAULT_PRICES: dict[str, Price] = {
    "kimi-k2.5": Price(0.10, 0.60, 3.00),
    "kimi-k2-0905-preview": Price(0.15, 0.60, 2.50),
    "kimi-k2-0711-preview": Price(0.15, 0.60, 2.50),
    "kimi-k2-turbo-preview": Price(0.15, 1.15, 8.00),
    "kimi-k2-thinking": Price(0.15, 0.60, 2.50),
    "kimi-k2-thinking-turbo": Price(0.15, 1.15, 8.00),
    "kimi-k2.6": Price(0.16, 0.95, 4.00),
    "moonshot-v1-8k": Price(0.20, 0.20, 2.00),
    "moonshot-v1-32k": Price(1.00, 1.00, 3.00),
    "moonshot-v1-128k": Price(2.00, 2.00, 5.00),
}
DEFAULT_WEB_SEARCH_FEE_USD = 0.005


def _price(value: object, where: str) -> Price:
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise ConfigError(f"{where}: expected [cache_hit, cache_miss, output] in USD per 1M tokens, got {value!r}")
    return Price(float(value[0]), float(value[1]), float(value[2]))


class PriceTable:
    """Model id -> :class:`Price`, with an optional default for models it does not list."""

    def __init__(
        self,
        prices: dict[str, Price] | None = None,
        *,
        default: Price | None = None,
        web_search_fee_usd: float = DEFAULT_WEB_SEARCH_FEE_USD,
    ) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)
        self.default = default
        self.web_search_fee_usd = web_search_fee_usd

    @classmethod
    def from_settings(cls, prices_json: str, default_json: str, web_search_fee_usd: float) -> PriceTable:
        """Build the table from ``KIMI_PRICES`` / ``KIMI_DEFAULT_PRICE`` (JSON, may be empty)."""
        table = dict(DEFAULT_PRICES)
        if prices_json.strip():
            try:
                raw = json.loads(prices_json)
            except ValueError as exc:
                raise ConfigError(f"KIMI_PRICES is not valid JSON: {exc}") from None
            if not isinstance(raw, dict):
                raise ConfigError('KIMI_PRICES must be a JSON object {"model": [hit, miss, out]}')
            for model, value in raw.items():
                table[str(model)] = _price(value, f"KIMI_PRICES[{model!r}]")
        default = None
        if default_json.strip():
            try:
                default = _price(json.loads(default_json), "KIMI_DEFAULT_PRICE")
            except ValueError as exc:
                raise ConfigError(f"KIMI_DEFAULT_PRICE is not valid JSON: {exc}") from None
        if web_search_fee_usd < 0:
            raise ConfigError("KIMI_WEB_SEARCH_FEE_USD must not be negative")
        return cls(table, default=default, web_search_fee_usd=web_search_fee_usd)

    def price(self, model: str) -> Price:
        """The price of ``model``; a model without a price costs the default, never nothing."""
        found = self.prices.get(model)
        if found is not None:
            return found
        if self.default is not None:
            return self.default
        # Not configured and not checked at start-up: charge the dearest known price rather than 0.
        return max(self.prices.values(), key=lambda p: p.cache_miss + p.output, default=Price(3.0, 3.0, 15.0))

    def check(self, models: list[str]) -> None:
        """Refuse models without a price when no default is configured (called at start-up)."""
        if self.default is not None:
            return
        missing = sorted({m for m in models if m and m not in self.prices})
        if missing:
            raise ConfigError(
                f"no price for model(s) {', '.join(missing)}: add them to KIMI_PRICES "
                "(e.g. KIMI_PRICES='{\"" + missing[0] + "\": [0.15, 0.60, 2.50]}') or set KIMI_DEFAULT_PRICE"
            )

    def microusd(self, model: str, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> int:
        return self.price(model).microusd(
            prompt_tokens=prompt_tokens, cached_tokens=cached_tokens, completion_tokens=completion_tokens
        )

    @property
    def web_search_fee_microusd(self) -> int:
        return round(self.web_search_fee_usd * 1_000_000)

"""Cost of a model call from the `prices` table: model names matched exactly, then by longest prefix.

Providers answer with dated versions of the model asked for (`gpt-4o` →
`gpt-4o-2024-08-06`, `claude-sonnet-4` → `claude-sonnet-4-20250514`), so a table keyed by
family names prices them through the prefix match; the longest prefix wins, so
`gpt-4o-mini-2024-07-18` finds `gpt-4o-mini`, not `gpt-4o`. The response model is looked up
first (it is what ran), then the request model, then `default`.

Token accounting follows the conventions: `input_tokens` includes cached input
(`cache_read`, `cache_creation`/`cache_write`) and `output_tokens` includes reasoning tokens,
so the plain input price applies to the input that was neither read from nor written to the
cache, and the plain output price to the output that was not reasoning.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from connectors.genai_metrics.config import PriceConfig, PricesConfig

_CACHE_LIMIT = 4096
PER_TOKEN = 1e-6  # prices are per million tokens


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per token."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float

    @classmethod
    def of(cls, cfg: PriceConfig) -> Price:
        def per_token(v: float | None, fallback: float) -> float:
            return (fallback if v is None else v) * PER_TOKEN
        return cls(cfg.input * PER_TOKEN, cfg.output * PER_TOKEN, per_token(cfg.cache_read_input, cfg.input),
                   per_token(cfg.cache_write_input, cfg.input), per_token(cfg.reasoning_output, cfg.output))

    def cost(self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int, reasoning: int) -> float:
        plain_in = max(input_tokens - cache_read - cache_write, 0)
        plain_out = max(output_tokens - reasoning, 0)
        return (plain_in * self.input + cache_read * self.cache_read + cache_write * self.cache_write
                + plain_out * self.output + reasoning * self.reasoning)


class PriceTable:
    """`lookup(model)`: the price of a model name (exact, else longest prefix), or None."""

    def __init__(self, cfg: PricesConfig) -> None:
        self._models: Mapping[str, Price] = {name: Price.of(p) for name, p in cfg.models.items()}
        self._by_length = sorted(self._models, key=len, reverse=True)
        self.default = Price.of(cfg.default) if cfg.default is not None else None
        self._cache: dict[str, Price | None] = {}

    def lookup(self, model: str) -> Price | None:
        try:
            return self._cache[model]
        except KeyError:
            pass
        found = self._models.get(model)
        if found is None:
            found = next((self._models[name] for name in self._by_length if model.startswith(name)), None)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[model] = found
        return found

    def price(self, response_model: str | None, request_model: str | None) -> Price | None:
        """The price of a call: its response model's, else its request model's, else the default."""
        for model in (response_model, request_model):
            if model:
                p = self.lookup(model)
                if p is not None:
                    return p
        return self.default

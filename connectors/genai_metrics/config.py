"""Configuration of the `genai_metrics` connector.

Keys shared with the Collector's spanmetrics connector keep its spelling and meaning
(`dimensions` with `name`/`default`, `metrics_flush_interval`, `exemplars.enabled` /
`max_per_data_point`, `aggregation_cardinality_limit`, `series_expiration`); the rest is
specific to agent runs (`trace_timeout`, `max_traces`, `step_ceiling`), cost (`prices`) and
budgets (`budgets`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from connectors.genai_metrics import semconv
from pipeline.config.types import Duration, Issue

Period = Literal["hour", "day", "week", "month"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DimensionConfig:
    """An extra attribute on every metric: read from the span, then its resource, else `default`
    (no default: the attribute is left out)."""

    name: str
    default: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExemplarsConfig:
    enabled: bool = True
    max_per_data_point: int = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceConfig:
    """US dollars per million tokens. Cached input and reasoning output default to the plain prices."""

    input: float = 0.0
    output: float = 0.0
    cache_read_input: float | None = None
    cache_write_input: float | None = None
    reasoning_output: float | None = None

    def validate(self) -> list[Issue]:
        return [Issue(k, "must be a finite number, 0 or more (US dollars per million tokens)")
                for k in ("input", "output", "cache_read_input", "cache_write_input", "reasoning_output")
                if (v := getattr(self, k)) is not None and not (math.isfinite(v) and v >= 0)]


@dataclass(frozen=True, slots=True, kw_only=True)
class PricesConfig:
    """`models` maps a model name to its price; a model not found exactly is matched by the longest
    name that prefixes it (`gpt-4o` prices `gpt-4o-2024-08-06`), else it gets `default` (none: the
    call is not priced)."""

    default: PriceConfig | None = None
    models: dict[str, PriceConfig] = field(default_factory=dict)

    def validate(self) -> list[Issue]:
        return [Issue(f"models.{name}" if name else "models", "a model name must not be empty")
                for name in self.models if not name.strip()]


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetConfig:
    """`limit` US dollars per `period` (UTC calendar hour, day, ISO week or month) for `agent`."""

    agent: str
    period: Period = "day"
    limit: float

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if not self.agent.strip():
            out.append(Issue("agent", "must not be empty: the gen_ai.agent.name the budget is for"))
        if not (math.isfinite(self.limit) and self.limit > 0):
            out.append(Issue("limit", "must be a finite number greater than 0 (US dollars per period)"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class GenAIMetricsConfig:
    dimensions: tuple[DimensionConfig, ...] = ()
    metrics_flush_interval: Duration = Duration(60.0)
    exemplars: ExemplarsConfig = field(default_factory=ExemplarsConfig)
    aggregation_cardinality_limit: int = 2000
    series_expiration: Duration = Duration(3600.0)
    trace_timeout: Duration = Duration(30.0)
    max_traces: int = 10_000
    step_ceiling: int = 25
    prices: PricesConfig = field(default_factory=PricesConfig)
    budgets: tuple[BudgetConfig, ...] = ()

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        own = {a for m in semconv.METRICS for a in m.attributes}
        seen: set[str] = set()
        for i, d in enumerate(self.dimensions):
            if not d.name:
                out.append(Issue(f"dimensions[{i}].name", "must not be empty"))
            elif d.name in own:
                out.append(Issue(f"dimensions[{i}].name", f"{d.name!r} is already an attribute of the metrics"))
            elif d.name in seen:
                out.append(Issue(f"dimensions[{i}].name", f"duplicate dimension {d.name!r}"))
            seen.add(d.name)
        for key in ("metrics_flush_interval", "series_expiration", "trace_timeout"):
            if getattr(self, key) <= 0:
                out.append(Issue(key, "must be greater than 0"))
        if self.exemplars.max_per_data_point < 1:
            out.append(Issue("exemplars.max_per_data_point", "must be at least 1"))
        if self.aggregation_cardinality_limit < 1:
            out.append(Issue("aggregation_cardinality_limit", "must be at least 1 (series per metric)"))
        if self.max_traces < 1:
            out.append(Issue("max_traces", "must be at least 1 (agent runs held at once)"))
        if self.step_ceiling < 0:
            out.append(Issue("step_ceiling", "must be 0 (off) or more (model calls per run)"))
        budgets: dict[tuple[str, str], int] = {}
        for i, b in enumerate(self.budgets):
            bkey = (b.agent, b.period)
            if bkey in budgets:
                out.append(Issue(f"budgets[{i}]", f"duplicate budget for agent {b.agent!r} and period {b.period!r} "
                                                  f"(also budgets[{budgets[bkey]}])"))
            budgets.setdefault(bkey, i)
        return out

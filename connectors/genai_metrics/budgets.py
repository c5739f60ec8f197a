"""Budget saturation: each agent's spend in the current period (UTC calendar hour, day, ISO week,
month) divided by its budget, back to 0 when a new period begins.

Spend is what the connector priced while it ran, added when the run is accounted (on the
connector's wall clock); it survives a config reload (handed to the new connector) but not a
restart. `increase(gen_ai_client_cost_usd_total[...])` in Prometheus gives the same spend over any
window, restarts included.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from connectors.genai_metrics.config import BudgetConfig, Period

_UTC = dt.UTC


def period_start(period: Period, now: float) -> float:
    """The start (Unix seconds) of the UTC calendar `period` that holds `now`."""
    t = dt.datetime.fromtimestamp(now, _UTC)
    if period == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
    elif period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period == "week":
        start = (t - dt.timedelta(days=t.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp()


@dataclass(slots=True)
class _Budget:
    period: Period
    limit: float
    start: float = 0.0  # start of the period `spent` belongs to
    spent: float = 0.0

    def roll(self, now: float) -> None:
        start = period_start(self.period, now)
        if start != self.start:
            self.start, self.spent = start, 0.0


class Budgets:
    """Spend per budgeted agent and period; `add` takes every priced call, `utilization` reads the gauges."""

    def __init__(self, budgets: Iterable[BudgetConfig]) -> None:
        self._by_agent: dict[str, list[tuple[str, _Budget]]] = {}
        for b in budgets:
            self._by_agent.setdefault(b.agent, []).append((b.period, _Budget(b.period, b.limit)))

    def __bool__(self) -> bool:
        return bool(self._by_agent)

    def add(self, agent: str, usd: float, now: float) -> None:
        for _, b in self._by_agent.get(agent, ()):
            b.roll(now)
            b.spent += usd

    def utilization(self, now: float) -> list[tuple[str, str, float, float]]:
        """(agent, period, spent, utilization) of every budget, each rolled over to the period of `now`."""
        out = []
        for agent, entries in self._by_agent.items():
            for period, b in entries:
                b.roll(now)
                out.append((agent, period, b.spent, b.spent / b.limit))
        return out

    def state(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(agent, period) → (period start, spent): what a reload hands to the next connector."""
        return {(agent, period): (b.start, b.spent) for agent, entries in self._by_agent.items()
                for period, b in entries}

    def restore(self, state: Mapping[tuple[str, str], tuple[float, float]]) -> None:
        """Take over spend of the same (agent, period) budgets; a budget not in `state` starts at 0."""
        for agent, entries in self._by_agent.items():
            for period, b in entries:
                if (agent, period) in state:
                    b.start, b.spent = state[(agent, period)]

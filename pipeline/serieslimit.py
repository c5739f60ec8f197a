"""Bounded series per metric: the machinery behind `cardinality_limit`, shared with metric producers.

Why here: one attribute carrying a user, session or request id turns a metric
into millions of series. The `cardinality_limit` processor caps series on data
flowing through a pipeline; components that *make* metrics from other data
(the `genai_metrics` connector) need the very same cap on what they produce.
This module is that cap, once: per metric name, the series let through (any
hashable key: a resource and an attribute set) up to the metric's limit, each
with when it was last seen. Series silent for `ttl` age out and free their
slot; at the limit, silent series are swept at most once per sweep interval
before a new one is refused. What a refused series becomes (folded into an
overflow series, dropped) is the caller's business: it only asks `admit`.

Nothing here is global: every component owns its `SeriesLimiter`.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping


class SeriesSet:
    """The series one metric has let through, with when each was last seen."""

    __slots__ = ("last_sweep", "last_used", "limit", "limited", "series")

    def __init__(self, limit: int, now: float, limited: bool) -> None:
        self.limit = limit
        self.series: dict[Hashable, float] = {}
        self.last_sweep = now
        self.last_used = now
        self.limited = limited  # has hit its limit, or has its own limit: callers report its series count

    def expire(self, now: float, ttl: float) -> int:
        """Forget series silent for `ttl`; returns how many."""
        self.last_sweep = now
        cutoff = now - ttl
        series = self.series
        old = [k for k, seen in series.items() if seen < cutoff]
        for k in old:
            del series[k]
        return len(old)


class SeriesLimiter:
    """Per metric name: at most `limits.get(name, default_limit)` series, silent ones aging out after `ttl`."""

    def __init__(self, default_limit: int, ttl: float, limits: Mapping[str, int] | None = None) -> None:
        self.default_limit = default_limit
        self.limits = dict(limits or {})
        self.ttl = ttl
        self.sweep_every = max(min(ttl / 10, 60.0), 0.001)
        self.states: dict[str, SeriesSet] = {}

    def metric(self, name: str, now: float) -> SeriesSet:
        """The state of metric `name` (created on first use), marked as used now."""
        st = self.states.get(name)
        if st is None:
            own = name in self.limits
            st = self.states[name] = SeriesSet(self.limits[name] if own else self.default_limit, now, own)
        st.last_used = now
        return st

    def admit(self, state: SeriesSet, key: Hashable, now: float) -> bool:
        """Let series `key` of `state`'s metric through (True, and mark it seen) or refuse it (False: the
        metric is at its limit and no silent series could be swept); a refusal marks the metric limited."""
        series = state.series
        if key in series or len(series) < state.limit or self._sweep(state, now):
            series[key] = now
            return True
        state.limited = True
        return False

    def _sweep(self, state: SeriesSet, now: float) -> bool:
        """At the limit: age out silent series (at most once per sweep interval); True if a slot is free."""
        if now - state.last_sweep >= self.sweep_every:
            state.expire(now, self.ttl)
        return len(state.series) < state.limit

    def expire(self, now: float) -> tuple[int, list[str]]:
        """Age out every series silent for `ttl`, and forget metrics left with none that were not used for
        `ttl`. Returns (series removed, metric names forgotten)."""
        removed = 0
        forgotten: list[str] = []
        for name in list(self.states):
            st = self.states[name]
            removed += st.expire(now, self.ttl)
            if not st.series and now - st.last_used >= self.ttl:
                del self.states[name]
                forgotten.append(name)
        return removed, forgotten

    def series_count(self, name: str) -> int:
        st = self.states.get(name)
        return len(st.series) if st else 0

    def __iter__(self) -> Iterator[tuple[str, SeriesSet]]:
        return iter(list(self.states.items()))

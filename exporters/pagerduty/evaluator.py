"""Rule evaluation: every aggregation over a window, groups, ratios, offsets and volume guards.

A selector (a metric, a filter, an aggregation, a window, an offset, a grouping) gives one value
per group at a time `now`: the window is (now - offset - window, now - offset]. Per series:

| aggregation | gauge | counter (monotonic sum) | histogram |
|---|---|---|---|
| `last` | last value in the window | running total | — |
| `avg` / `min` / `max` | over the values in the window | over the running totals | `avg`: Δsum / Δcount |
| `sum` | sum of the values | increase | Δsum (sum of the observed values) |
| `count` | number of values | increase | Δcount (observations) |
| `increase` | last − value before the window | reset-aware increase | Δcount |
| `rate` | `increase` per second | reset-aware increase per second | observations per second |
| `p50` … `p99` | — | — | histogram_quantile over the bucket increases |

The increase of a counter is exact at sample resolution, without extrapolation: its total at the
last sample in the window minus its total at the last sample before the window (a counter that
started from zero inside the window counts from zero). Prometheus instead takes the first and
last samples inside the window and extrapolates to its edges; see README for the difference.
`rate` divides by the window, or by the part of it the exporter has been watching when it
started less than a window ago, so a 24 h baseline is not diluted by hours nobody saw.

Across the series of a group: `last`, `sum`, `count`, `increase` and `rate` add up, `avg` is over
every value of the group, `min`/`max` over all of them, and quantiles merge the buckets first
(as `histogram_quantile(q, sum by (le) (rate(...)))`). A series with no sample by the end of
the window is not part of it; one that was quiet in the window counts 0 for the counting
aggregations (`sum`, `count`, `increase`, `rate`) and is absent for the others.
"""
from __future__ import annotations

import math
import operator
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import accumulate, islice, repeat
from typing import Any, NamedTuple

from exporters.pagerduty.config import COUNTING, QUANTILES, Matcher, RuleConfig, compile_filter
from exporters.pagerduty.store import (
    AnySeries,
    CounterSeries,
    GaugeSeries,
    HistogramSeries,
    MetricTable,
    SeriesStore,
)

try:  # the C pass's column sums (setup.py builds it; without it the same sums in Python)
    from exporters.pagerduty._pdwire import column_sums as _native_column_sums
except ImportError:
    _native_column_sums = None  # type: ignore[assignment]

Group = tuple[str, ...]
_SMALL_DELTA = 1e-12

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, Matcher], ...]
    aggregation: str
    window: float
    offset: float
    group_by: tuple[str, ...]

    @property
    def reach(self) -> float:
        """How far back this selector looks."""
        return self.window + self.offset


@dataclass(frozen=True, slots=True)
class CompiledRule:
    cfg: RuleConfig
    main: Selector
    ratio: Selector | None
    volume: Selector | None

    @property
    def selectors(self) -> tuple[Selector, ...]:
        return tuple(s for s in (self.main, self.ratio, self.volume) if s is not None)


class Observation(NamedTuple):
    """One group's value at one evaluation, with what it was made of, and whether the rule holds
    (a tuple: made for every group of every rule in every round)."""

    value: float
    holds: bool
    numerator: float | None = None
    denominator: float | None = None
    volume: float | None = None


def compile_rule(cfg: RuleConfig) -> CompiledRule:
    """The selectors of a validated rule (fields left out of `ratio_to` / `min_volume` are the rule's)."""
    matchers, _ = compile_filter(cfg.filter)
    main = Selector(cfg.metric, tuple(sorted(matchers.items(), key=lambda kv: kv[0])), cfg.aggregation,
                    float(cfg.window), 0.0, cfg.group_by)
    ratio = volume = None
    for sel_cfg, default_agg in ((cfg.ratio_to, cfg.aggregation), (cfg.min_volume, "increase")):
        if sel_cfg is None:
            continue
        m = main.matchers if sel_cfg.filter is None else tuple(sorted(compile_filter(sel_cfg.filter)[0].items(),
                                                                      key=lambda kv: kv[0]))
        sel = Selector(sel_cfg.metric or cfg.metric, m, sel_cfg.aggregation or default_agg,
                       float(sel_cfg.window if sel_cfg.window is not None else cfg.window), float(sel_cfg.offset),
                       cfg.group_by if sel_cfg.group_by is None else sel_cfg.group_by)
        if sel_cfg is cfg.ratio_to:
            ratio = sel
        else:
            volume = sel
    return CompiledRule(cfg, main, ratio, volume)


def retention(rules: Iterable[CompiledRule]) -> dict[str, float]:
    """Seconds of history each referenced metric needs: its largest window + offset."""
    out: dict[str, float] = {}
    for rule in rules:
        for sel in rule.selectors:
            out[sel.metric] = max(out.get(sel.metric, 0.0), sel.reach)
    return out


# -- one series -------------------------------------------------------------------------------------

def _bounds(s: AnySeries, start: float, end: float) -> tuple[int, int]:
    """(first index inside the window, index after the last one inside); the baseline is the one before."""
    return bisect_right(s.times, start), bisect_right(s.times, end)


def _gauge_part(s: GaugeSeries, agg: str, start: float, end: float) -> Any:
    i, j = _bounds(s, start, end)
    if j == 0:
        return None  # no sample by the end of the window: not part of it
    if agg in ("sum", "count"):
        if i == j:
            return 0.0
        total, n = s.window_sum(i, j)
        return total if agg == "sum" else n
    if agg in ("increase", "rate"):
        if i == j:
            return 0.0
        return s.last[j - 1] - (s.last[i - 1] if i > 0 else s.last[i])
    if i == j:
        return None
    if agg == "last":
        return s.last[j - 1]
    if agg == "avg":
        return s.window_sum(i, j)
    if agg == "min":
        return min(s.mins[i:j])
    if agg == "max":
        return max(s.maxs[i:j])
    return _UNSUPPORTED


def _counter_part(s: CounterSeries, agg: str, start: float, end: float) -> Any:
    if agg in COUNTING:
        return s.increase(start, end)
    if agg in QUANTILES:
        return _UNSUPPORTED
    i, j = _bounds(s, start, end)
    if i == j:
        return None
    if agg == "last":
        return s.totals[j - 1]
    if agg == "avg":
        return (math.fsum(s.totals[i:j]), float(j - i))
    return min(s.totals[i:j]) if agg == "min" else max(s.totals[i:j])


def _histogram_part(s: HistogramSeries, agg: str, start: float, end: float) -> Any:
    if agg in ("last", "min", "max"):
        return _UNSUPPORTED
    inc = s.increase(start, end)
    if inc is None:
        return None
    if agg in ("increase", "rate", "count"):
        return inc[-2]
    if agg == "sum":
        return inc[-1]
    if agg == "avg":
        return (inc[-1], inc[-2])
    return (s.bounds, inc[:-2])


class _Unsupported:
    """A series of a kind the aggregation does not apply to (a quantile of a gauge)."""


_UNSUPPORTED = _Unsupported()


def series_part(s: AnySeries, agg: str, start: float, end: float) -> Any:
    """What one series contributes to its group (see the table in the module docstring)."""
    if isinstance(s, CounterSeries):
        return _counter_part(s, agg, start, end)
    if isinstance(s, HistogramSeries):
        return _histogram_part(s, agg, start, end)
    return _gauge_part(s, agg, start, end)


# -- a group ----------------------------------------------------------------------------------------

def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over (upper bound, cumulative count) buckets, +Inf last.

    Linear interpolation inside the bucket holding the rank, the lower edge of the first bucket
    being 0; a rank in the +Inf bucket gives the largest finite bound. NaN without observations.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets)
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    merged: list[list[float]] = []
    for upper, count in buckets:  # the same bound twice: one bucket
        if merged and merged[-1][0] == upper:
            merged[-1][1] += count
        else:
            merged.append([upper, count])
    prev = merged[0][1]
    for bucket in merged[1:]:  # force monotonicity, ignoring float noise
        cur = bucket[1]
        if cur == prev:
            continue
        if cur > prev >= 0:  # (the usual case, cheaper: the larger magnitude is `cur`)
            if cur - prev > _SMALL_DELTA * cur:
                prev = cur
                continue
            bucket[1] = prev
            continue
        if abs(cur - prev) <= _SMALL_DELTA * max(abs(cur), abs(prev)) or cur < prev:
            bucket[1] = prev
            continue
        prev = cur
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


def _merge_quantile(q: float, parts: list[tuple[tuple[float, ...], list[float]]]) -> float:
    """histogram_quantile(q, sum by (le) (...)) over the bucket increases of a group's series."""
    if len(parts) == 1:  # one bucket layout (the usual case): its cumulative counts, without a dict
        bounds, counts = parts[0]
        return bucket_quantile(q, list(zip((*bounds, math.inf), islice(accumulate(counts, initial=0.0), 1, None))))
    by_le: dict[float, float] = {}
    for bounds, counts in parts:
        cum = 0.0
        for upper, c in zip((*bounds, math.inf), counts):
            cum += c
            by_le[upper] = by_le.get(upper, 0.0) + cum
    return bucket_quantile(q, list(by_le.items()))


def combine(agg: str, parts: list[Any], effective_window: float) -> float | None:
    """A group's value from what its series contributed; None when it has none."""
    if not parts:
        return None
    if agg in ("last", "sum", "count", "increase"):
        return math.fsum(parts)
    if agg == "rate":
        return math.fsum(parts) / effective_window if effective_window > 0 else None
    if agg == "avg":
        n = math.fsum(p[1] for p in parts)
        return math.fsum(p[0] for p in parts) / n if n > 0 else None
    if agg == "min":
        return float(min(parts))
    if agg == "max":
        return float(max(parts))
    value = _merge_quantile(QUANTILES[agg], parts)
    return None if math.isnan(value) else value


def _window(s: AnySeries, start: float, end: float) -> tuple[int, int]:
    """(first index inside (start, end], index after the last one inside), as `_bounds`, faster when the last
    sample is inside (the common case: the window ends now)."""
    times = s.times
    j = len(times) if times[-1] <= end else bisect_right(times, end)
    return bisect_right(times, start, 0, j), j


def _one_timeline(members: list[Any]) -> bool:
    """Whether the series of a group share one non-empty timeline (then they take the vectorized paths:
    the window's indices found once, and each series' values read by C loops, `map` over `getitem`)."""
    first = members[0]
    return bool(first.times) and all(map(operator.eq, map(_TL, members), repeat(first.tl)))


_TL = operator.attrgetter("tl")
_TOTALS = operator.attrgetter("totals")
_DATA = operator.attrgetter("data")
_getitem = operator.getitem


def _counter_increases(groups: dict[Group, list[CounterSeries]], start: float, end: float,
                       span: tuple[int, int] | None) -> dict[Group, float]:
    """Per group, the summed increases in (start, end] of the counters that have a sample by `end`
    (`CounterSeries.increase`, inlined: this runs for every series and selector every round)."""
    out: dict[Group, float] = {}
    for group, members in groups.items():
        if span is not None or _one_timeline(members):
            i, j = span or _window(members[0], start, end)
            if j == 0:
                continue
            totals = list(map(_TOTALS, members))
            ends = map(_getitem, totals, repeat(j - 1))
            if i > 0:
                bases: Iterable[float] = map(_getitem, totals, repeat(i - 1))
            else:
                bases = [0.0 if s.zero_based else s.totals[0] for s in members]
            out[group] = sum(map(operator.sub, ends, bases), 0.0)
            continue
        found = None
        for s in members:
            times = s.times
            if not times:
                continue
            j = len(times) if times[-1] <= end else bisect_right(times, end)
            if j == 0:
                continue
            b = bisect_right(times, start, 0, j) - 1
            totals_ = s.totals
            if b >= 0:
                base = totals_[b]
            else:
                base = 0.0 if s.zero_based else totals_[0]
            found = (0.0 if found is None else found) + (totals_[j - 1] - base)
        if found is not None:
            out[group] = found
    return out


def _column_sums(datas: list[array[float]], start: int, width: int) -> list[float]:
    """sum(d[start + k] for d in datas) for each k < width, as `map(sum, zip(*rows))` sums them (rows cut short
    by a short array make zip, and so the result, shorter): by the C pass's `column_sums` where it is built
    (no Python float per bucket), which hands an array it cannot read to this Python form."""
    if _native_column_sums is not None:
        sums = _native_column_sums(datas, start, width)
        if sums is not None:
            return sums
    return list(map(sum, zip(*map(_getitem, datas, repeat(slice(start, start + width))))))


def _histogram_buckets(groups: dict[Group, dict[tuple[float, ...], list[HistogramSeries]]], start: float,
                       end: float, span: tuple[int, int] | None) -> dict[Group, dict[tuple[float, ...], list[float]]]:
    """Per group and bucket layout, the summed bucket increases in (start, end] of the histograms that
    have a sample by `end` (`HistogramSeries.increase`, inlined). When the series of a group and layout share
    a timeline, their bucket rows at the end and at the baseline are summed column by column by C loops
    (`map(sum, zip(*rows))`); otherwise each series' rows are appended to two flat arrays, summed bucket by
    bucket with strided slices. Either way no per-bucket work is done in Python, and the sums are the same."""
    out: dict[Group, dict[tuple[float, ...], list[float]]] = {}
    for group, layouts in groups.items():
        sums: dict[tuple[float, ...], list[float]] = {}
        for bounds, members in layouts.items():
            w = members[0].stride
            if span is not None or _one_timeline(members):
                i, j = span or _window(members[0], start, end)
                if j == 0:
                    continue
                # Column sums of the rows, in the order of the series.
                datas = list(map(_DATA, members))
                end_sums = _column_sums(datas, (j - 1) * w, w - 2)
                if i > 0:
                    base_sums = _column_sums(datas, (i - 1) * w, w - 2)
                else:
                    base_sums = _column_sums([s.data for s in members if not s.zero_based], 0, w - 2)
                sums[bounds] = list(map(operator.sub, end_sums, base_sums)) if base_sums else end_sums
                continue
            ends: array[float] = array("d")
            bases: array[float] = array("d")
            for s in members:
                times = s.times
                if not times:
                    continue
                j = len(times) if times[-1] <= end else bisect_right(times, end)
                if j == 0:
                    continue
                b = bisect_right(times, start, 0, j) - 1
                data = s.data
                ends.extend(data[(j - 1) * w:j * w - 2])
                if b >= 0:
                    bases.extend(data[b * w:(b + 1) * w - 2])
                elif not s.zero_based:
                    bases.extend(data[0:w - 2])
            if not ends:
                continue
            n = len(bounds) + 1
            sums[bounds] = [sum(ends[k::n]) - sum(bases[k::n]) for k in range(n)]
        if sums:
            out[group] = sums
    return out


_GAUGE_FAST = frozenset({"last", "avg", "min", "max"})
_LAST = operator.attrgetter("last")
_CSUMS = operator.attrgetter("csums")
_CCOUNTS = operator.attrgetter("ccounts")
_MINS = operator.attrgetter("mins")
_MAXS = operator.attrgetter("maxs")


def _gauge_parts(groups: dict[Group, list[GaugeSeries]], agg: str, start: float, end: float,
                 span: tuple[int, int] | None) -> dict[Group, list[Any]]:
    """`_gauge_part` for last / avg / min / max, inlined, one part per group already combined."""
    acc: dict[Group, Any] = {}
    for group, members in groups.items():
        if span is not None or _one_timeline(members):
            i, j = span or _window(members[0], start, end)
            if i == j:
                continue  # no sample in the window: not part of it
            if agg == "last":
                acc[group] = sum(map(_getitem, map(_LAST, members), repeat(j - 1)), 0.0)
                continue
            if agg == "min":
                acc[group] = min(map(min, map(_getitem, map(_MINS, members), repeat(slice(i, j)))))
                continue
            if agg == "max":
                acc[group] = max(map(max, map(_getitem, map(_MAXS, members), repeat(slice(i, j)))))
                continue
            if i > 0:
                csums, ccounts = list(map(_CSUMS, members)), list(map(_CCOUNTS, members))
                acc[group] = (sum(map(operator.sub, map(_getitem, csums, repeat(j - 1)),
                                      map(_getitem, csums, repeat(i - 1))), 0.0),
                              sum(map(operator.sub, map(_getitem, ccounts, repeat(j - 1)),
                                      map(_getitem, ccounts, repeat(i - 1))), 0.0))
                continue
        for s in members:
            times = s.times
            if not times:
                continue
            j = len(times) if times[-1] <= end else bisect_right(times, end)
            i = bisect_right(times, start, 0, j)
            if i == j:
                continue  # no sample in the window: not part of it
            found = acc.get(group)
            if agg == "last":
                acc[group] = s.last[j - 1] + (found or 0.0)
            elif agg == "avg":
                total, n = s.window_sum(i, j)
                acc[group] = (total, n) if found is None else (found[0] + total, found[1] + n)
            elif agg == "min":
                v = min(s.mins[i:j])
                acc[group] = v if found is None or v < found else found
            else:
                v = max(s.maxs[i:j])
                acc[group] = v if found is None or v > found else found
    return {group: [part] for group, part in acc.items()}


@dataclass(slots=True)
class _Plan:
    """The series a selector matches with their groups, by kind (the kinds take different paths), and the
    same grouped (in the order of the series): the counters and gauges by group, the histograms by group
    and bucket layout."""

    counters: list[tuple[CounterSeries, Group]] = field(default_factory=list)
    histograms: list[tuple[HistogramSeries, Group]] = field(default_factory=list)
    gauges: list[tuple[GaugeSeries, Group]] = field(default_factory=list)
    counter_groups: dict[Group, list[CounterSeries]] = field(default_factory=dict)
    histogram_groups: dict[Group, dict[tuple[float, ...], list[HistogramSeries]]] = field(default_factory=dict)
    gauge_groups: dict[Group, list[GaugeSeries]] = field(default_factory=dict)


# -- rules ------------------------------------------------------------------------------------------

class Evaluator:
    """Evaluates selectors and rules over a store; remembers which series each selector matches."""

    def __init__(self, store: SeriesStore, *, watch_start: float) -> None:
        self.store = store
        self.watch_start = watch_start  # when the exporter began watching (the clock's time)
        self._plans: dict[Selector, tuple[int, _Plan]] = {}
        self._shared: dict[str, tuple[MetricTable, int, int, bool]] = {}
        self.unsupported: set[tuple[str, str, str]] = set()  # (metric, aggregation, series kind) seen

    def _plan(self, sel: Selector, table: MetricTable) -> _Plan:
        cached = self._plans.get(sel)
        if cached is not None and cached[0] == table.version:
            return cached[1]
        plan = _Plan()
        matchers, group_by = sel.matchers, sel.group_by
        for s in table.series.values():
            attrs = s.attrs
            if all(m(attrs.get(k, "")) for k, m in matchers):
                group = tuple(attrs.get(k, "") for k in group_by)
                if isinstance(s, CounterSeries):
                    plan.counters.append((s, group))
                    plan.counter_groups.setdefault(group, []).append(s)
                elif isinstance(s, HistogramSeries):
                    plan.histograms.append((s, group))
                    plan.histogram_groups.setdefault(group, {}).setdefault(s.bounds, []).append(s)
                else:
                    plan.gauges.append((s, group))
                    plan.gauge_groups.setdefault(group, []).append(s)
        self._plans[sel] = (table.version, plan)
        return plan

    def _shared_timeline(self, table: MetricTable) -> bool:
        """Whether every series of `table` has the same non-empty timeline (checked again after any change)."""
        found = self._shared.get(table.name)
        if found is not None and found[0] is table and found[1] == table.changes and found[2] == table.version:
            return found[3]
        timelines = set(map(_TL, table.series.values()))
        shared = len(timelines) == 1 and 0 not in timelines
        self._shared[table.name] = (table, table.changes, table.version, shared)
        return shared

    def select(self, sel: Selector, now: float) -> dict[Group, float]:
        """The selector's value per group at `now`."""
        table = self.store.tables.get(sel.metric)
        if table is None:
            return {}
        end = now - sel.offset
        start = end - sel.window
        agg = sel.aggregation
        plan = self._plan(sel, table)
        # When every series of the metric has the same timeline, the window's indices are the same for all.
        span = _window(next(iter(table.series.values())), start, end) if self._shared_timeline(table) else None
        parts: dict[Group, list[Any]] = {}
        rest: list[tuple[AnySeries, Group]] = []
        if agg in COUNTING:
            # The common case, inlined (one loop, no call per series): counters' reset-aware increases.
            for group, total in _counter_increases(plan.counter_groups, start, end, span).items():
                parts[group] = [total]
            rest.extend(plan.gauges)
            rest.extend(plan.histograms)
        elif agg in _GAUGE_FAST:
            # Gauges' last / avg / min / max, inlined likewise.
            parts = _gauge_parts(plan.gauge_groups, agg, start, end, span)
            rest.extend(plan.counters)
            rest.extend(plan.histograms)
        elif agg in QUANTILES:
            # Bucket increases of a group summed per bucket layout: one merge per group.
            for group, layouts in _histogram_buckets(plan.histogram_groups, start, end, span).items():
                parts[group] = [(bounds, counts) for bounds, counts in layouts.items()]
            rest.extend(plan.gauges)
            rest.extend(plan.counters)
        else:
            rest.extend(plan.gauges)
            rest.extend(plan.counters)
            rest.extend(plan.histograms)
        for s, group in rest:
            part = series_part(s, agg, start, end)
            if part is None:
                continue
            if part is _UNSUPPORTED:
                self.unsupported.add((sel.metric, agg, s.kind.value))
                continue
            found = parts.get(group)
            if found is None:
                parts[group] = [part]
            else:
                found.append(part)
        effective = end - max(start, self.watch_start)
        out = {}
        for group, ps in parts.items():
            value = combine(agg, ps, effective)
            if value is not None:
                out[group] = value
        return out

    def evaluate(self, rule: CompiledRule, now: float,
                 cache: dict[Selector, dict[Group, float]] | None = None) -> dict[Group, Observation]:
        """Each group's observation for `rule` at `now`; `cache` shares selector results within a round."""
        memo: dict[Selector, dict[Group, float]] = cache if cache is not None else {}

        def values(sel: Selector) -> dict[Group, float]:
            found = memo.get(sel)
            if found is None:
                found = memo[sel] = self.select(sel, now)
            return found

        return observe(rule, values)


def _projector(rule: CompiledRule, sel: Selector) -> Callable[[Group], Group]:
    if sel.group_by == rule.main.group_by:
        return lambda g: g
    index = [rule.main.group_by.index(a) for a in sel.group_by]
    return lambda g: tuple(g[i] for i in index)


def observe(rule: CompiledRule, values: Callable[[Selector], Mapping[Group, float]]) -> dict[Group, Observation]:
    """Combine the rule's selector values per group into observations (the ratio, the guard, the condition)."""
    cfg = rule.cfg
    num = values(rule.main)
    counting = rule.main.aggregation in COUNTING
    groups: set[Group] = set(num)
    den: Mapping[Group, float] = {}
    to_den: Callable[[Group], Group] = lambda g: g  # noqa: E731
    if rule.ratio is not None:
        den = values(rule.ratio)
        to_den = _projector(rule, rule.ratio)
        if counting and rule.ratio.group_by == rule.main.group_by:
            groups |= set(den)  # a group with no numerator series counts 0 (e.g. no failures at all)
    vol: Mapping[Group, float] = {}
    to_vol: Callable[[Group], Group] = lambda g: g  # noqa: E731
    if rule.volume is not None:
        vol = values(rule.volume)
        to_vol = _projector(rule, rule.volume)
    compare = COMPARE[cfg.condition]
    out: dict[Group, Observation] = {}
    for g in groups:
        n = num.get(g, 0.0 if counting else None)
        if n is None:
            continue
        d = None
        if rule.ratio is not None:
            d = den.get(to_den(g))
            if d is None:
                continue
            if d == 0:
                if n == 0:
                    continue  # 0/0: no value, as in Prometheus (NaN)
                value = math.inf if n > 0 else -math.inf
            else:
                value = n / d
        else:
            value = n
        holds = compare(value, cfg.threshold)
        v = None
        if rule.volume is not None:
            v = vol.get(to_vol(g))
            holds = holds and v is not None and v >= rule.cfg.min_volume.threshold  # type: ignore[union-attr]
        out[g] = Observation(value, holds, n if rule.ratio is not None else None, d, v)
    return out

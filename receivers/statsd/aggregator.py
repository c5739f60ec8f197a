"""Parsed StatsD samples → one OTLP metrics request per aggregation interval.

StatsD is an aggregating protocol: clients send every increment and every
timing, and the daemon turns an interval's worth of them into one value per
series. The mapping (per distinct name, type and attribute set):

- counters (`c`) → monotonic DELTA Sum of Σ value / sample rate; `as_int` while
  every contribution was a whole number, else `as_double` (fractions are never
  truncated);
- gauges (`g`) → Gauge of the last value; `+N`/`-N` update the previous value,
  which persists across intervals (and is forgotten after `gauge_ttl` without
  updates, so churned series do not pin memory forever);
- timers (`ms`) → Histogram with unit `s` (values converted from milliseconds);
  histograms (`h`) and distributions (`d`) → Histogram in the value's own unit;
  each can instead become a Summary (quantiles of the interval's values) or a
  Gauge (last value) through its `Observer`; a sample rate weighs a value
  1 / rate times;
- sets (`s`) → Gauge of the number of distinct members seen in the interval.

Only series updated during the interval are emitted; sums and histograms
cover (previous flush, this flush]. A series that got `|T` timestamps takes
the latest one as its point time.

Why histograms are bucketed as samples arrive: memory then grows with the
number of series, not with the traffic, and a flush costs O(series), so it
never stalls the event loop while the UDP socket fills. Only a summary
observer keeps the interval's values (it needs them for exact quantiles).
"""
from __future__ import annotations

import importlib.metadata
import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from receivers.statsd.parser import (
    COUNTER,
    DISTRIBUTION,
    GAUGE,
    HISTOGRAM,
    SET,
    TIMER,
    TYPE_NAMES,
    ParseResult,
    split_key,
)

# Timer buckets in seconds, sized for LLM calls and tool runs: 5 ms … 2 min.
DEFAULT_TIMER_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                            30.0, 60.0, 120.0)
# `h`/`d` values have no known unit (tokens, bytes, seconds, ...): a 1-2.5-5 ladder over many decades.
DEFAULT_VALUE_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0,
                                            50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0,
                                            50000.0, 100000.0, 250000.0, 500000.0, 1000000.0)
DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
DEFAULT_GAUGE_TTL = 3600.0
SCOPE_NAME = "otelpipe/statsdreceiver"
try:
    SCOPE_VERSION = importlib.metadata.version("otelpipe")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
    SCOPE_VERSION = "0.0.0"

_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_HIST_TYPES = (TIMER, HISTOGRAM, DISTRIBUTION)


@dataclass(frozen=True, slots=True)
class Observer:
    """How timers, histograms or distributions become OTLP: `histogram`, `summary` or `gauge`."""

    kind: str = "histogram"
    buckets: tuple[float, ...] = ()
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES


def default_observers() -> dict[int, Observer]:
    return {TIMER: Observer("histogram", DEFAULT_TIMER_BUCKETS),
            HISTOGRAM: Observer("histogram", DEFAULT_VALUE_BUCKETS),
            DISTRIBUTION: Observer("histogram", DEFAULT_VALUE_BUCKETS)}


class StatsDAggregator:
    """Accumulates `ParseResult`s; `flush(now_ns)` returns the interval's request (or None when empty).

    Not thread-safe and not async: the receiver calls `add` from its socket
    callback and `flush` from its flush task, both on the event loop.
    """

    def __init__(self, *, observers: dict[int, Observer] | None = None, enable_metric_type: bool = False,
                 start_ns: int = 0, gauge_ttl: float = DEFAULT_GAUGE_TTL) -> None:
        obs = default_observers()
        obs.update(observers or {})
        for code in _HIST_TYPES:
            if obs[code].kind == "histogram" and not obs[code].buckets:
                obs[code] = Observer("histogram", DEFAULT_TIMER_BUCKETS if code == TIMER else DEFAULT_VALUE_BUCKETS)
        self.observers = obs
        self.enable_metric_type = enable_metric_type
        self.gauge_ttl_ns = int(gauge_ttl * 1e9)
        self._last_flush_ns = start_ns
        self._counters: dict[str, int | float] = {}
        self._gauges: dict[str, int | float] = {}            # updated this interval
        self._gauge_prev: dict[str, int | float] = {}        # last value of every known gauge
        self._gauge_seen: dict[str, int] = {}                # flush time a gauge was last updated
        self._sets: dict[str, set[str]] = {}
        # TIMER/HISTOGRAM/DISTRIBUTION state; its shape depends on the observer (see _add_values).
        self._dists: dict[int, dict[str, list[Any]]] = {TIMER: {}, HISTOGRAM: {}, DISTRIBUTION: {}}
        self._last: dict[int, dict[str, float]] = {TIMER: {}, HISTOGRAM: {}, DISTRIBUTION: {}}
        self._timestamps: tuple[dict[str, int], ...] = ({}, {}, {}, {}, {}, {})

    # -- ingest --------------------------------------------------------------------------------------
    def add(self, res: ParseResult) -> None:
        by_type = res.by_type
        if by_type[COUNTER]:
            c = self._counters
            get = c.get
            for key, x in by_type[COUNTER]:
                c[key] = get(key, 0) + x
        if by_type[GAUGE]:
            cur = self._gauges
            prev = self._gauge_prev
            for key, x, rel in by_type[GAUGE]:
                if rel:
                    base = cur.get(key)
                    if base is None:
                        base = prev.get(key, 0)
                    x = base + x
                cur[key] = x
        for code in _HIST_TYPES:
            if by_type[code]:
                self._add_values(code, by_type[code], None)
        if res.weighted:
            grouped: dict[int, list[tuple[str, float, float]]] = {}
            for code, key, x, w in res.weighted:
                grouped.setdefault(code, []).append((key, x, w))
            for code, items in grouped.items():
                self._add_values(code, items, True)
        if by_type[SET]:
            s = self._sets
            sget = s.get
            for key, member in by_type[SET]:
                members = sget(key)
                if members is None:
                    s[key] = {member}
                else:
                    members.add(member)
        if res.timed:
            tss = self._timestamps
            for code, key, ts in res.timed:
                d = tss[code]
                if ts > d.get(key, 0):
                    d[key] = ts

    def _add_values(self, code: int, items: Sequence[tuple[Any, ...]], weighted: bool | None) -> None:
        """Timer/histogram/distribution values; `weighted` items are (key, value, weight)."""
        obs = self.observers[code]
        div = 1000.0 if code == TIMER else 1.0
        if obs.kind == "gauge":
            last = self._last[code]
            for item in items:
                last[item[0]] = item[1] / div
            return
        d = self._dists[code]
        get = d.get
        if obs.kind == "summary":
            # [values, weights or None]: weights only exist once a sampled value arrived.
            for item in items:
                key = item[0]
                st = get(key)
                if st is None:
                    st = d[key] = [[], None]
                vals, ws = st
                if weighted:
                    if ws is None:
                        ws = st[1] = [1.0] * len(vals)
                    ws.append(item[2])
                elif ws is not None:
                    ws.append(1.0)
                vals.append(item[1] / div)
            return
        # Histogram: [count per bucket..., sum, min, max], updated in place.
        bounds = obs.buckets
        nb = len(bounds) + 1
        i_sum, i_min, i_max = nb, nb + 1, nb + 2
        if not weighted:
            for key, x in items:
                x = x / div
                st = get(key)
                if st is None:
                    st = d[key] = [0] * nb + [0.0, x, x]
                st[bisect_left(bounds, x)] += 1
                st[i_sum] += x
                if x < st[i_min]:
                    st[i_min] = x
                elif x > st[i_max]:
                    st[i_max] = x
            return
        for key, x, w in items:
            x = x / div
            st = get(key)
            if st is None:
                st = d[key] = [0] * nb + [0.0, x, x]
            st[bisect_left(bounds, x)] += w
            st[i_sum] += x * w
            if x < st[i_min]:
                st[i_min] = x
            elif x > st[i_max]:
                st[i_max] = x

    # -- flush ---------------------------------------------------------------------------------------
    def flush(self, now_ns: int) -> ExportMetricsServiceRequest | None:
        """Everything aggregated since the previous flush, as one request; state for the next interval reset."""
        start_ns = self._last_flush_ns
        self._last_flush_ns = now_ns
        counters, self._counters = self._counters, {}
        gauges, self._gauges = self._gauges, {}
        sets, self._sets = self._sets, {}
        dists = self._dists
        self._dists = {TIMER: {}, HISTOGRAM: {}, DISTRIBUTION: {}}
        lasts = self._last
        self._last = {TIMER: {}, HISTOGRAM: {}, DISTRIBUTION: {}}
        tss = self._timestamps
        self._timestamps = ({}, {}, {}, {}, {}, {})
        self._remember_gauges(gauges, now_ns)

        if not (counters or gauges or sets or any(dists.values()) or any(lasts.values())):
            return None
        req = ExportMetricsServiceRequest()
        sm = req.resource_metrics.add().scope_metrics.add()
        sm.scope.name = SCOPE_NAME
        sm.scope.version = SCOPE_VERSION
        metrics = sm.metrics
        w = _Writer(metrics, self.enable_metric_type, start_ns, now_ns)
        if counters:
            w.counters(counters, tss[COUNTER])
        if gauges:
            w.gauges(GAUGE, gauges, tss[GAUGE], "")
        for code in _HIST_TYPES:
            unit = "s" if code == TIMER else ""
            obs = self.observers[code]
            if lasts[code]:
                w.gauges(code, lasts[code], tss[code], unit)
            if dists[code]:
                if obs.kind == "summary":
                    w.summaries(code, dists[code], tss[code], unit, obs.quantiles)
                else:
                    w.histograms(code, dists[code], tss[code], unit, obs.buckets)
        if sets:
            w.gauges(SET, {k: len(v) for k, v in sets.items()}, tss[SET], "")
        return req

    def _remember_gauges(self, gauges: dict[str, int | float], now_ns: int) -> None:
        """Keep the interval's gauge values as the base of later relative updates; forget stale ones.

        `seen` stays ordered oldest-first (a touched key is moved to the end), so
        the sweep stops at the first key that is still fresh.
        """
        prev, seen = self._gauge_prev, self._gauge_seen
        prev.update(gauges)
        pop = seen.pop
        for key in gauges:
            pop(key, None)
            seen[key] = now_ns
        cutoff = now_ns - self.gauge_ttl_ns
        stale = []
        for key, t in seen.items():
            if t >= cutoff:
                break
            stale.append(key)
        for key in stale:
            del seen[key]
            del prev[key]


class _Writer:
    """Builds the Metric messages of one flush: one Metric per (type, name), one point per series."""

    def __init__(self, metrics: object, enable_metric_type: bool, start_ns: int, now_ns: int) -> None:
        self._metrics = metrics
        self._by_name: dict[tuple[int, str], Metric] = {}
        self._typed = enable_metric_type
        self._start = start_ns
        self._now = now_ns

    def _metric(self, code: int, name: str, unit: str) -> tuple[Metric, bool]:
        m = self._by_name.get((code, name))
        if m is not None:
            return m, False
        m = self._metrics.add()  # type: ignore[attr-defined]
        m.name = name
        if unit:
            m.unit = unit
        self._by_name[(code, name)] = m
        return m, True

    def _attrs(self, dp: object, attrs: list[tuple[str, str]], code: int) -> None:
        if self._typed:
            attrs = [kv for kv in attrs if kv[0] != "metric_type"]
            attrs.append(("metric_type", TYPE_NAMES[code]))
        out = dp.attributes  # type: ignore[attr-defined]
        for k, v in attrs:
            out.add(key=k).value.string_value = v

    def counters(self, counters: dict[str, int | float], tss: dict[str, int]) -> None:
        for key, v in counters.items():
            name, attrs = split_key(key)
            m, new = self._metric(COUNTER, name, "")
            if new:
                m.sum.aggregation_temporality = _DELTA
                m.sum.is_monotonic = True
            dp = m.sum.data_points.add()
            ts = tss.get(key) or self._now
            dp.start_time_unix_nano = min(self._start, ts)
            dp.time_unix_nano = ts
            if type(v) is int and _INT64_MIN <= v <= _INT64_MAX:
                dp.as_int = v
            else:
                dp.as_double = float(v)
            self._attrs(dp, attrs, COUNTER)

    def gauges(self, code: int, values: dict[str, int | float], tss: dict[str, int], unit: str) -> None:
        for key, v in values.items():
            name, attrs = split_key(key)
            m, _ = self._metric(code, name, unit)
            dp = m.gauge.data_points.add()
            dp.time_unix_nano = tss.get(key) or self._now
            if type(v) is int and _INT64_MIN <= v <= _INT64_MAX:
                dp.as_int = v
            else:
                dp.as_double = float(v)
            self._attrs(dp, attrs, code)

    def histograms(self, code: int, states: dict[str, list[Any]], tss: dict[str, int], unit: str,
                   bounds: tuple[float, ...]) -> None:
        nb = len(bounds) + 1
        for key, st in states.items():
            name, attrs = split_key(key)
            m, new = self._metric(code, name, unit)
            if new:
                m.histogram.aggregation_temporality = _DELTA
            dp = m.histogram.data_points.add()
            ts = tss.get(key) or self._now
            dp.start_time_unix_nano = min(self._start, ts)
            dp.time_unix_nano = ts
            # Weighted (sampled) counts are fractional: round each bucket, so count == Σ buckets holds.
            counts = [c if type(c) is int else int(c + 0.5) for c in st[:nb]]
            dp.count = sum(counts)
            dp.sum = st[nb]
            dp.min = st[nb + 1]
            dp.max = st[nb + 2]
            dp.explicit_bounds.extend(bounds)
            dp.bucket_counts.extend(counts)
            self._attrs(dp, attrs, code)

    def summaries(self, code: int, states: dict[str, list[Any]], tss: dict[str, int], unit: str,
                  quantiles: tuple[float, ...]) -> None:
        for key, (vals, ws) in states.items():
            name, attrs = split_key(key)
            m, _ = self._metric(code, name, unit)
            dp = m.summary.data_points.add()
            ts = tss.get(key) or self._now
            dp.start_time_unix_nano = min(self._start, ts)
            dp.time_unix_nano = ts
            if ws is None:
                ordered = sorted(vals)
                n = len(ordered)
                dp.count = n
                dp.sum = math.fsum(ordered)
                for q in quantiles:
                    qv = dp.quantile_values.add()
                    qv.quantile = q
                    # nearest rank; the epsilon keeps 0.29 * 100 = 28.999… and 0.9 * 10 = 9.000…1 on rank
                    qv.value = ordered[min(n - 1, max(0, math.ceil(q * n - 1e-9) - 1))]
            else:
                pairs = sorted(zip(vals, ws))
                total = math.fsum(ws)
                dp.count = int(total + 0.5)
                dp.sum = math.fsum(v * w for v, w in pairs)
                cum, acc = [], 0.0
                for _, w in pairs:
                    acc += w
                    cum.append(acc)
                for q in quantiles:
                    qv = dp.quantile_values.add()
                    qv.quantile = q
                    i = bisect_left(cum, q * total)
                    qv.value = pairs[min(i, len(pairs) - 1)][0]
            self._attrs(dp, attrs, code)

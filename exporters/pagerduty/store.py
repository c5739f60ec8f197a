"""The bounded history the rules need: per referenced series, samples back to the largest window + offset.

Only metrics some rule names are kept. Each data point is stamped with the time it reached the
exporter (the injected clock), as Prometheus stamps a scrape, so agents' clock skew cannot move
samples in or out of a window. Samples are kept in compact arrays, one slot per `resolution`
(the evaluation interval): points that arrive faster than that are folded into their slot
(the last value, plus sum / count / min / max for gauges), so a series never holds more than
(largest window + offset) / resolution + 1 samples, and the whole store at most `max_series`
series; points of new series beyond that are refused and counted (`series_limit`).

What a sample holds depends on the kind of metric:

- gauges (and non-monotonic sums): the value; delta non-monotonic sums are summed into it;
- counters (monotonic sums): the reset-adjusted running total, so an increase over any window is
  one subtraction. Cumulative counters: a lower value or a new start time is a reset, after
  which the counter counts again from zero (Prometheus' rule). Delta counters (StatsD, delta
  SDKs) are summed. A counter whose start time lies after the exporter began watching (or any
  delta counter) started from zero, so its first value counts too;
- histograms: the same for every bucket count, the count and the sum (bounds that change start
  the series over).

Ingest works on the request's wire bytes: the envelope view gives each metric's bytes, a
metric is looked at only when its name (the first field, as every encoder writes it) is one a
rule names, and points are read through a skeleton that keeps each attribute as bytes, so a
series is found by a dict lookup without decoding its attributes (they are decoded once, when
the series is new): its key is `((resource, scope), attributes_key(attributes))`, one bytes
object for the attributes.

Where the C extension `_pdwire` is built (setup.py), one pass in C does the same: it reads the
request, finds each point's series by the same key, and folds or appends the sample into the
series' arrays itself (see the comment at the top of exporters/pagerduty/_pdwire.c); it finds a
known series through its own index (keyed by the attributes' bytes, validated by the table's
`series` dict and its `removed` count, which this module bumps whenever it removes or replaces a
series), not by building the key. The points it does not take itself (a new series, a changed kind
or layout) go through the same Python code as here, and a request it does not find plain OTLP is
read by the Python loop.
"""
from __future__ import annotations

import enum
import itertools
import math
import operator
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from pipeline import wire
from pipeline.wire import BYTES, VALUE

try:
    from exporters.pagerduty import _pdwire
except ImportError:  # not built: the Python loop below does the same work
    _pdwire = None  # type: ignore[assignment]

_NUMBER_POINT = {"attributes": BYTES, "start_time_unix_nano": VALUE, "time_unix_nano": VALUE, "as_double": VALUE,
                 "as_int": VALUE, "flags": VALUE}
_HISTOGRAM_POINT = {"attributes": BYTES, "start_time_unix_nano": VALUE, "time_unix_nano": VALUE, "count": VALUE,
                    "sum": VALUE, "bucket_counts": VALUE, "explicit_bounds": VALUE, "flags": VALUE}
_METRIC = wire.skeleton(Metric.DESCRIPTOR, {
    "name": VALUE,
    "gauge": {"data_points": _NUMBER_POINT},
    "sum": {"data_points": _NUMBER_POINT, "aggregation_temporality": VALUE, "is_monotonic": VALUE},
    "histogram": {"data_points": _HISTOGRAM_POINT, "aggregation_temporality": VALUE},
    "exponential_histogram": BYTES,
    "summary": BYTES,
})
# The points the C pass hands back (store.SeriesStore._native_point), read alone.
_NUMBER_POINT_ALONE = wire.skeleton(NumberDataPoint.DESCRIPTOR, _NUMBER_POINT)
_HISTOGRAM_POINT_ALONE = wire.skeleton(HistogramDataPoint.DESCRIPTOR, _HISTOGRAM_POINT)
_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_MAX_RESOURCES = 1024  # decoded resource attributes kept between requests
_MAX_RESOURCE_BYTES = 4096  # (of resources no larger than this)
_NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK


class Kind(enum.Enum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


def attribute_value(value: AnyValue) -> str:
    """An attribute value as text (how filters and group_by see it; Prometheus labels are text too)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return repr(value.double_value)
    if which == "bytes_value":
        return value.bytes_value.hex()
    if which == "array_value":
        return "[" + ",".join(attribute_value(v) for v in value.array_value.values) + "]"
    if which == "kvlist_value":
        return "{" + ",".join(f"{kv.key}={attribute_value(kv.value)}" for kv in value.kvlist_value.values) + "}"
    return ""


_LENGTH = tuple(wire.encode_varint(n) for n in range(0x80))


def attributes_key(attributes: Iterable[bytes]) -> bytes:
    """A point's attributes as its series key holds them: each KeyValue's bytes after its length (a minimal
    varint), joined. That is what follows each attribute's tag on the wire, so it is exact and
    self-delimiting in one bytes object (no tuple of lengths to build, hash and compare beside it); the C
    pass builds the same bytes."""
    return b"".join([_LENGTH[len(a)] + a if len(a) < 0x80 else wire.encode_varint(len(a)) + a for a in attributes])


class _Window(Protocol):
    times: array[float]


def _span(s: _Window, start: float, end: float) -> tuple[int, int]:
    """(index of the last sample at or before `start`, or -1; index after the last sample at or before `end`)."""
    return bisect_right(s.times, start) - 1, bisect_right(s.times, end)


# Timeline ids: two series with the same id have equal `times` arrays (series fed by the same requests
# usually do: every point is stamped with the time it arrived), so the evaluator finds a window's
# indices once per timeline rather than once per series. An id is derived from the previous one and
# the change made to the array (append t, replace the last time by t, drop the first n), so equal
# histories get equal ids; forgetting the mapping only costs sharing, never correctness (ids are never
# reused).
_TIMELINES: dict[tuple[int, int, float], int] = {}
_TIMELINE_IDS = itertools.count(1)
_MAX_TIMELINES = 1 << 16
_APPEND, _REPLACE, _DROP = 0, 1, 2


def _next_timeline(tl: int, op: int, x: float) -> int:
    key = (tl, op, x)
    found = _TIMELINES.get(key)
    if found is None:
        if len(_TIMELINES) >= _MAX_TIMELINES:
            _TIMELINES.clear()
        found = _TIMELINES[key] = next(_TIMELINE_IDS)
    return found


class Series:
    """What every kind of series has: its attributes, its sample times (and their timeline id), its slot size,
    and the key its table holds it under."""

    __slots__ = ("attrs", "times", "kind", "resolution", "slot", "tl", "key")

    def __init__(self, attrs: dict[str, str], kind: Kind, resolution: float) -> None:
        self.attrs = attrs
        self.kind = kind
        self.resolution = resolution
        self.times: array[float] = array("d")
        self.slot = -math.inf  # the slot of the last sample (its time // resolution)
        self.tl = 0  # the timeline id of `times` (0: empty)
        # ((resource, scope), attributes_key(...)), set by the store; the C pass's index of series holds
        # it to compare a point's attributes with, so the index keeps no copy of them.
        self.key: tuple[Any, ...] = ()

    def _same_slot(self, t: float) -> bool:
        """Whether `t` falls in the last sample's slot (the caller replaces the last time by `t`); if not, `t`'s
        slot becomes the last one (the caller appends `t`)."""
        slot = t // self.resolution
        if slot == self.slot and self.times:
            self.tl = _next_timeline(self.tl, _REPLACE, t)
            return True
        self.slot = slot
        self.tl = _next_timeline(self.tl, _APPEND, t)
        return False

    def prune(self, cutoff: float) -> None:
        """Forget samples before `cutoff`, except the last one at or before it (the baseline of the oldest
        window); amortized, so a long series is not shifted on every call."""
        drop = bisect_right(self.times, cutoff) - 1
        if drop >= 16 or (drop > 0 and drop * 4 >= len(self.times)):
            self.tl = _next_timeline(self.tl, _DROP, drop)
            self._drop(drop)

    def _drop(self, n: int) -> None:
        del self.times[:n]

    @property
    def last_time(self) -> float:
        return self.times[-1] if self.times else -math.inf


class GaugeSeries(Series):
    """Per slot: the last value, the min and max of the values that fell into it, and the running sum
    and count of every value so far (so the sum, count and average over a window are two subtractions)."""

    __slots__ = ("last", "csums", "ccounts", "base_sum", "base_count", "mins", "maxs", "running")

    def __init__(self, attrs: dict[str, str], resolution: float) -> None:
        super().__init__(attrs, Kind.GAUGE, resolution)
        self.last: array[float] = array("d")
        self.csums: array[float] = array("d")
        self.ccounts: array[float] = array("d")
        self.base_sum = self.base_count = 0.0  # the running sum and count before the first slot kept
        self.mins: array[float] = array("d")
        self.maxs: array[float] = array("d")
        self.running = 0.0  # the value of a delta non-monotonic sum

    def add(self, t: float, v: float) -> None:
        if self._same_slot(t):
            self.times[-1] = t
            self.last[-1] = v
            self.csums[-1] += v
            self.ccounts[-1] += 1
            if v < self.mins[-1]:
                self.mins[-1] = v
            if v > self.maxs[-1]:
                self.maxs[-1] = v
            return
        self.times.append(t)
        self.last.append(v)
        self.csums.append((self.csums[-1] if self.csums else 0.0) + v)
        self.ccounts.append((self.ccounts[-1] if self.ccounts else 0.0) + 1)
        self.mins.append(v)
        self.maxs.append(v)

    def window_sum(self, i: int, j: int) -> tuple[float, float]:
        """The sum and the number of the values in slots i..j-1 (i < j)."""
        if i == 0:
            return self.csums[j - 1] - self.base_sum, self.ccounts[j - 1] - self.base_count
        return self.csums[j - 1] - self.csums[i - 1], self.ccounts[j - 1] - self.ccounts[i - 1]

    def _drop(self, n: int) -> None:
        self.base_sum, self.base_count = self.csums[n - 1], self.ccounts[n - 1]
        for a in (self.times, self.last, self.csums, self.ccounts, self.mins, self.maxs):
            del a[:n]


class CounterSeries(Series):
    """The reset-adjusted running total per slot; an increase is `totals[last] - totals[baseline]`."""

    __slots__ = ("totals", "zero_based", "raw", "offset", "start_ns", "point_ns")

    def __init__(self, attrs: dict[str, str], resolution: float, *, zero_based: bool) -> None:
        super().__init__(attrs, Kind.COUNTER, resolution)
        self.totals: array[float] = array("d")
        self.zero_based = zero_based  # the counter was at 0 just before its first sample
        self.raw = 0.0      # the last cumulative value as sent (cumulative counters)
        self.offset = 0.0   # what resets took away, added back
        self.start_ns = 0   # the last start time (a new one is a reset)
        self.point_ns = 0   # the last point's own timestamp (older ones are out of order)

    def add_cumulative(self, t: float, value: float, start_ns: int, point_ns: int) -> bool:
        """Record a cumulative value; False when the point is older than one already taken."""
        if point_ns and point_ns <= self.point_ns:
            return False
        if self.times and (value < self.raw or (start_ns and self.start_ns and start_ns != self.start_ns)):
            self.offset += self.raw  # a reset: the counter went back to zero, then counted `value`
        self.raw, self.start_ns, self.point_ns = value, start_ns, point_ns or self.point_ns
        self._put(t, value + self.offset)
        return True

    def add_delta(self, t: float, value: float) -> None:
        self._put(t, (self.totals[-1] if self.totals else 0.0) + value)

    def _put(self, t: float, total: float) -> None:
        if self._same_slot(t):
            self.times[-1] = t
            self.totals[-1] = total
        else:
            self.times.append(t)
            self.totals.append(total)

    def _drop(self, n: int) -> None:
        # The sample kept at the front is the baseline of every window from now on.
        self.zero_based = False
        del self.times[:n]
        del self.totals[:n]

    def increase(self, start: float, end: float) -> float | None:
        """How much the counter went up in (start, end]; None when it has no sample by `end`."""
        b, j = _span(self, start, end)
        if j == 0:
            return None
        if b >= 0:
            base = self.totals[b]
        else:
            base = 0.0 if self.zero_based else self.totals[0]
        return self.totals[j - 1] - base


class HistogramSeries(Series):
    """Per slot, flat: the reset-adjusted running count of every bucket, then the count, then the sum."""

    __slots__ = ("bounds", "layout", "stride", "data", "zero_based", "raw", "offsets", "start_ns", "point_ns")

    def __init__(self, attrs: dict[str, str], resolution: float, bounds: tuple[float, ...], *,
                 zero_based: bool) -> None:
        super().__init__(attrs, Kind.HISTOGRAM, resolution)
        self.bounds = bounds
        self.layout = array("d", bounds).tobytes()  # (the C pass compares a point's bounds to these bytes)
        self.stride = len(bounds) + 3  # buckets (+Inf included), count, sum
        self.data: array[float] = array("d")
        self.zero_based = zero_based
        self.raw: array[float] = array("d", bytes(8 * self.stride))
        self.offsets: array[float] = array("d", bytes(8 * self.stride))
        self.start_ns = 0
        self.point_ns = 0

    def add_cumulative(self, t: float, vec: list[float], start_ns: int, point_ns: int) -> bool:
        if point_ns and point_ns <= self.point_ns:
            return False
        raw = self.raw
        if self.times and (vec[-2] < raw[-2] or any(a < b for a, b in zip(vec[:-2], raw[:-2]))
                           or (start_ns and self.start_ns and start_ns != self.start_ns)):
            self.offsets = array("d", map(operator.add, self.offsets, raw))
        self.raw, self.start_ns, self.point_ns = array("d", vec), start_ns, point_ns or self.point_ns
        self._put(t, [v + o for v, o in zip(vec, self.offsets)])
        return True

    def add_delta(self, t: float, vec: list[float]) -> None:
        if self.data:
            vec = list(map(operator.add, self.data[-self.stride:], vec))
        self._put(t, vec)

    def _put(self, t: float, row: list[float]) -> None:
        if self._same_slot(t):
            self.times[-1] = t
            self.data[-self.stride:] = array("d", row)
        else:
            self.times.append(t)
            self.data.extend(row)

    def _drop(self, n: int) -> None:
        self.zero_based = False
        del self.times[:n]
        del self.data[:n * self.stride]

    def increase(self, start: float, end: float) -> list[float] | None:
        """Per bucket, then count and sum: how much each went up in (start, end]; None without a sample by `end`."""
        b, j = _span(self, start, end)
        if j == 0:
            return None
        w = self.stride
        last = self.data[(j - 1) * w:j * w]
        if b >= 0:
            base: Iterable[float] = self.data[b * w:(b + 1) * w]
        else:
            base = [0.0] * w if self.zero_based else self.data[0:w]
        return [a - z for a, z in zip(last, base)]


AnySeries = GaugeSeries | CounterSeries | HistogramSeries


@dataclass
class MetricTable:
    """The series of one metric name; `version` changes whenever a series is added or removed, `removed`
    whenever one is removed or replaced (the C pass's index of series is valid while it stays the same),
    `changes` whenever samples may have been added or dropped."""

    name: str
    retention: float
    series: dict[tuple[Any, ...], AnySeries] = field(default_factory=dict)
    version: int = 0
    removed: int = 0
    changes: int = 0
    pruned_at: float = -math.inf


@dataclass
class IngestResult:
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


class SeriesStore:
    """History of the metrics `retention` names (metric name → seconds of history its rules need)."""

    def __init__(self, retention: Mapping[str, float], *, resolution: float, max_series: int,
                 watch_start_ns: int) -> None:
        self.resolution = resolution
        self.max_series = max_series
        self.watch_start_ns = watch_start_ns  # wall time the exporter began watching (cumulative zero-basing)
        self.tables: dict[str, MetricTable] = {}
        self._prefixes: tuple[bytes, ...] = ()
        self._native: Any = None  # the C pass (_pdwire.Ingestor), for these tables
        self._table_list: tuple[MetricTable, ...] = ()
        self._resources: dict[bytes, dict[str, str]] = {}
        self.series_count = 0
        self.configure(retention, resolution=resolution, max_series=max_series)

    def configure(self, retention: Mapping[str, float], *, resolution: float, max_series: int) -> None:
        """Keep the metrics `retention` names (for that long, plus a slot) and forget the others."""
        self.resolution = resolution
        self.max_series = max_series
        for name in list(self.tables):
            if name not in retention:
                self.series_count -= len(self.tables.pop(name).series)
        for name, seconds in retention.items():
            table = self.tables.get(name)
            if table is None:
                self.tables[name] = MetricTable(name, seconds + resolution)
            else:
                table.retention = seconds + resolution
        # Field 1 (name) of a Metric, as encoders write it first: its tag, its length and the name.
        self._prefixes = tuple(b"\n" + wire.encode_varint(len(n.encode())) + n.encode() for n in self.tables)
        self._table_list = tuple(self.tables.values())
        self._native = None if _pdwire is None else _pdwire.Ingestor(
            tuple(n.encode() for n in self.tables), (GaugeSeries, CounterSeries, HistogramSeries),
            (Kind.GAUGE, Kind.COUNTER, Kind.HISTOGRAM), _TIMELINES, _next_timeline, _APPEND, _REPLACE)

    def ingest(self, raw: bytes, now: float) -> IngestResult:
        """Add the points of the referenced metrics in a serialized metrics request, stamped `now`."""
        result = IngestResult()
        if not self._prefixes:
            return result
        if self._native is not None:
            counts = self._native.ingest(raw, float(now), self._table_list, self._resource, self._native_point,
                                         result)
            if counts is not None:
                kept, invalid, out_of_order, unsupported = counts
                result.kept += kept
                for reason, n in (("invalid", invalid), ("out_of_order", out_of_order),
                                  ("unsupported_type", unsupported)):
                    if n:
                        result.skipped[reason] += n
                return result
        prefixes, tables = self._prefixes, self.tables
        for rm in wire.METRICS_ENVELOPE.FromString(raw).resource_metrics:
            res = rm.resource
            for sm in rm.scope_metrics:
                for mb in sm.metrics:
                    if not mb.startswith(prefixes) and mb[:1] == b"\n":
                        continue  # the name comes first and is none of ours
                    metric = _METRIC.FromString(mb)
                    table = tables.get(metric.name)
                    if table is None:
                        continue
                    res_attrs = self._resource(res)
                    table.changes += 1  # (first: a point that fails to decode must not leave it stale)
                    self._ingest_metric(table, metric, (res, sm.scope), res_attrs, now, result)
        return result

    def _ingest_metric(self, table: MetricTable, metric: Any, origin: tuple[bytes, bytes],
                       res_attrs: dict[str, str], now: float, result: IngestResult) -> None:
        which = metric.WhichOneof("data")
        if which == "gauge":
            points, kind, delta = metric.gauge.data_points, Kind.GAUGE, False
        elif which == "sum":
            s = metric.sum
            points, delta = s.data_points, s.aggregation_temporality == _DELTA
            kind = Kind.COUNTER if s.is_monotonic else Kind.GAUGE
        elif which == "histogram":
            h = metric.histogram
            points, kind, delta = h.data_points, Kind.HISTOGRAM, h.aggregation_temporality == _DELTA
        else:
            if which is not None:
                result.skipped["unsupported_type"] += 1  # counted per metric: its points are never decoded
            return
        for dp in points:
            if dp.flags & _NO_RECORDED_VALUE:
                continue
            key = (origin, attributes_key(dp.attributes))
            self._ingest_point(table, key, kind, delta, dp, res_attrs, now, result)

    def _ingest_point(self, table: MetricTable, key: tuple[Any, ...], kind: Kind, delta: bool, dp: Any,
                      res_attrs: dict[str, str], now: float, result: IngestResult) -> None:
        s = table.series.get(key)
        if s is None or s.kind is not kind:
            s = self._new_series(table, key, kind, delta, dp, res_attrs, result)
            if s is None:
                return
        if kind is Kind.HISTOGRAM:
            ok = self._add_histogram(table, key, cast(HistogramSeries, s), dp, delta, res_attrs, now, result)
        else:
            ok = self._add_number(cast(GaugeSeries | CounterSeries, s), dp, delta, now, result)
        if ok:
            result.kept += 1

    def _native_point(self, table: MetricTable, key: tuple[Any, ...], kind: Kind, delta: bool, point: bytes,
                      now: float, result: IngestResult) -> None:
        """A point the C pass leaves to Python (its serialized bytes): what the Python loop does with it."""
        dp = (_HISTOGRAM_POINT_ALONE if kind is Kind.HISTOGRAM else _NUMBER_POINT_ALONE).FromString(point)
        self._ingest_point(table, key, kind, delta, dp, self._resource(key[0][0]), now, result)

    def _resource(self, raw: bytes) -> dict[str, str]:
        """A resource's attributes as text (decoded once: kept for the next requests, a bounded number)."""
        attrs = self._resources.get(raw)
        if attrs is None:
            attrs = _resource_attrs(raw)
            if len(raw) <= _MAX_RESOURCE_BYTES:
                if len(self._resources) >= _MAX_RESOURCES:
                    self._resources.clear()
                self._resources[raw] = attrs
        return attrs

    def _new_series(self, table: MetricTable, key: tuple[Any, ...], kind: Kind, delta: bool, dp: Any,
                    res_attrs: dict[str, str], result: IngestResult) -> AnySeries | None:
        replaced = table.series.get(key)
        if replaced is None and self.series_count >= self.max_series:
            result.skipped["series_limit"] += 1
            return None
        attrs = dict(res_attrs)
        joined, at = key[1], 0
        while at < len(joined):  # (each attribute's KeyValue after its length: see attributes_key)
            n, at = wire.decode_varint(joined, at)
            decoded = KeyValue.FromString(joined[at:at + n])
            attrs[decoded.key] = attribute_value(decoded.value)
            at += n
        # A cumulative series counts from zero only if it started while watched and recently enough that
        # its first point is its whole history; one that comes back after going quiet (and being
        # forgotten) has counted all along: its first point is a baseline, as in Prometheus.
        start_ns = dp.start_time_unix_nano
        zero_based = delta or (start_ns >= self.watch_start_ns > 0
                               and dp.time_unix_nano - start_ns <= table.retention * 1e9)
        s: AnySeries
        if kind is Kind.GAUGE:
            s = GaugeSeries(attrs, self.resolution)
        elif kind is Kind.COUNTER:
            s = CounterSeries(attrs, self.resolution, zero_based=zero_based)
        else:
            bounds = tuple(dp.explicit_bounds)
            s = HistogramSeries(attrs, self.resolution, bounds, zero_based=zero_based)
        s.key = key
        table.series[key] = s
        table.version += 1
        if replaced is None:
            self.series_count += 1
        else:
            table.removed += 1
        return s

    def _add_number(self, s: GaugeSeries | CounterSeries, dp: Any, delta: bool, now: float,
                    result: IngestResult) -> bool:
        v = float(dp.as_int or dp.as_double)
        if math.isnan(v) or math.isinf(v):
            result.skipped["invalid"] += 1
            return False
        if isinstance(s, GaugeSeries):
            if delta:
                s.running += v
                v = s.running
            s.add(now, v)
            return True
        if delta:
            if v < 0:
                result.skipped["invalid"] += 1  # a monotonic sum cannot go down
                return False
            s.add_delta(now, v)
            return True
        if v < 0:
            result.skipped["invalid"] += 1
            return False
        if not s.add_cumulative(now, v, dp.start_time_unix_nano, dp.time_unix_nano):
            result.skipped["out_of_order"] += 1
            return False
        return True

    def _add_histogram(self, table: MetricTable, key: tuple[Any, ...], s: HistogramSeries, dp: Any, delta: bool,
                       res_attrs: dict[str, str], now: float, result: IngestResult) -> bool:
        bounds = tuple(dp.explicit_bounds)
        counts = dp.bucket_counts
        total = dp.sum
        if len(counts) != len(bounds) + 1 or total != total:  # (NaN sum)
            result.skipped["invalid"] += 1
            return False
        if bounds != s.bounds or not s.times:  # bounds not seen in use yet: checked once, not per point
            if any(not b < c for b, c in zip(bounds, bounds[1:])) or any(b != b for b in bounds):
                result.skipped["invalid"] += 1  # not strictly increasing, or NaN
                return False
            if bounds != s.bounds:  # a new layout: the old samples cannot be subtracted from the new ones
                fresh = self._new_series(table, key, Kind.HISTOGRAM, delta, dp, res_attrs, result)
                assert isinstance(fresh, HistogramSeries)  # replacing a series never hits the limit
                s = fresh
        vec = list(map(float, counts))
        vec.append(float(dp.count))
        vec.append(total)
        if delta:
            s.add_delta(now, vec)
            return True
        if not s.add_cumulative(now, vec, dp.start_time_unix_nano, dp.time_unix_nano):
            result.skipped["out_of_order"] += 1
            return False
        return True

    def prune(self, now: float) -> None:
        """Forget samples no window can reach any more, and series with none left inside retention.

        Amortized: a table is looked at again once an eighth of its retention has passed, so what is
        kept is bounded by the retention plus an eighth (and a round does not walk every series)."""
        for table in self.tables.values():
            if now - table.pruned_at < table.retention / 8:
                continue
            table.pruned_at = now
            table.changes += 1
            cutoff = now - table.retention
            gone = [key for key, s in table.series.items() if s.last_time < cutoff]
            for key in gone:
                del table.series[key]
            if gone:
                table.version += 1
                table.removed += 1
                self.series_count -= len(gone)
            for s in table.series.values():
                s.prune(cutoff)

    def series(self, metric: str) -> Iterator[AnySeries]:
        table = self.tables.get(metric)
        return iter(table.series.values()) if table is not None else iter(())


def _resource_attrs(raw: bytes) -> dict[str, str]:
    return {kv.key: attribute_value(kv.value) for kv in Resource.FromString(raw).attributes}

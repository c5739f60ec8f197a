"""OTLP metrics → Datadog v2 series (`POST /api/v2/series`), one series per Datadog point.

- Gauge → `<name>`, gauge (3).
- Sum, delta (monotonic or not) → `<name>`, count (1) of the point's value.
- Sum, cumulative, monotonic → `<name>`, count (1) of the increase since the series' previous
  point (`sums.cumulative_monotonic_mode: raw_value`: gauge (3) of the value).
- Sum, cumulative, not monotonic → `<name>`, gauge (3) of the value.
- Histogram and ExponentialHistogram → `<name>.count` and `<name>.sum`, counts (1);
  `<name>.avg`, gauge (3) = sum / count of the interval; `<name>.min` and `<name>.max`, gauges (3),
  when a delta point has them (a cumulative point's min/max cover the whole life of the series);
  `histograms.mode: counters` adds `<name>.bucket` counts tagged `lower_bound` / `upper_bound`.
- Summary → `<name>.count` and `<name>.sum`, counts (1) of the increase since the previous point;
  `<name>.quantile`, gauges (3) tagged `quantile:<q>` (`summaries.mode: gauges`).

Cumulative inputs become deltas here, as the Collector's translator does: the last point of each
series (metric name, host and tags) is kept; a point no newer than the last one is dropped
(`out_of_order`); a reset (the start time moved, or a count went down) starts the series again;
the first point of a series is reported whole only when `sums.initial_cumulative_monotonic_value`
says so (`auto`: when its start time is known and after the exporter started, so all of it
happened while otelpipe was watching), else it is only remembered (`initial_value`). That state is
bounded: series idle for `metrics.delta_ttl` seconds are forgotten, and past
`metrics.delta_max_series` the least recently updated one is.

Points of a metric without a name (`invalid_name`: the API would refuse the whole request),
points with NaN or infinite values, or a cumulative increase too large for a double (`invalid_value`),
points timed before 2001 or after 2286 (`invalid_timestamp`) and sums or histograms without a
temporality (`unsupported`) cannot be sent; `MappedMetrics.rejected` counts them, so the exporter
reports them as a partial success.
Points flagged "no recorded value" are skipped (`no_recorded_value`).

The request is read with a skeleton of the OTLP messages (`pipeline.wire`): a data point's
attributes arrive as the bytes of each `KeyValue`. A series is its JSON text (an `orjson.Fragment`,
which orjson copies into the body as it is): the metric name and type are rendered once per metric,
the tags and resources once per attribute set of a resource and scope (one dict lookup keyed by the
attributes' bytes for every point after the first), and only the timestamp and value per point.
No container object is made per point, so the garbage collector has nothing new to walk. (Buckets
and quantile series are plain dicts.)

Where the C extension `_ddwire` is built (exporters/datadog/_ddwire.c), it walks the request and
writes the series instead (the same bytes, tags included: it writes attribute values as
`pipeline.anyvalue.as_string` does), and keeps the cumulative state; this module is then asked
only once per resource and scope (`_scope`), per metric name (`_heads_of`), for attributes whose
value is an array or a map (`_tag_of`) and for summary quantiles (`_native_quantiles`). A request it
does not call plain OTLP, and every request with `histograms.mode: counters`, is walked here (the
state is the renderer's all the same).
"""
from __future__ import annotations

import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from exporters.datadog.attributes import ResourceInfo, TagCache, resource_info, scope_tags
from exporters.datadog.config import DatadogExporterConfig
from pipeline.clock import Clock
from pipeline.wire import BYTES, VALUE, SkeletonSpec, decode_varint, skeleton

try:
    from exporters.datadog import _ddwire
except ImportError:  # not built (no C compiler): the Python walk below does the same work, slower
    _ddwire = None  # type: ignore[assignment]

COUNT, GAUGE = 1, 3  # the v2 intake types (2 is rate)
_NS = 1_000_000_000
_DELTA, _CUMULATIVE = 1, 2  # AggregationTemporality
_NO_RECORDED_VALUE = 1  # DataPointFlags
REJECT_REASONS = frozenset({"invalid_name", "invalid_timestamp", "invalid_value", "unsupported"})
# POSIX seconds the API can take at all (2001-09-09 to 2286-11-20); 0 means "no timestamp: now"
_MIN_TS, _MAX_TS = 1_000_000_000, 10_000_000_000
_RESOURCE_CACHE_SIZE = 1024
# Rendered tags of attribute sets kept at most, and their bytes (all forgotten when either is reached: the
# ones that repeat refill it at once); metric names longer than CACHED_NAME_MAX are rendered every time.
SERIES_TAGS_CACHE_SIZE = 32_768
SERIES_TAGS_CACHE_BYTES = 16 << 20
CACHED_NAME_MAX = 512

_POINT: SkeletonSpec = {"attributes": BYTES, "start_time_unix_nano": VALUE, "time_unix_nano": VALUE, "flags": VALUE}
_NUMBER: SkeletonSpec = {**_POINT, "as_double": VALUE, "as_int": VALUE}
_HISTOGRAM: SkeletonSpec = {**_POINT, "count": VALUE, "sum": VALUE, "min": VALUE, "max": VALUE,
                            "bucket_counts": VALUE, "explicit_bounds": VALUE}
_EXPONENTIAL: SkeletonSpec = {**_POINT, "count": VALUE, "sum": VALUE, "min": VALUE, "max": VALUE}
_SUMMARY: SkeletonSpec = {**_POINT, "count": VALUE, "sum": VALUE,
                          "quantile_values": {"quantile": VALUE, "value": VALUE}}
#: The request as this exporter reads it: resources as bytes, points with their attributes as bytes.
METRICS_VIEW = skeleton(ExportMetricsServiceRequest.DESCRIPTOR, {"resource_metrics": {
    "resource": BYTES,
    "scope_metrics": {"scope": {"name": VALUE, "version": VALUE}, "metrics": {
        "name": VALUE,
        "gauge": {"data_points": _NUMBER},
        "sum": {"data_points": _NUMBER, "aggregation_temporality": VALUE, "is_monotonic": VALUE},
        "histogram": {"data_points": _HISTOGRAM, "aggregation_temporality": VALUE},
        "exponential_histogram": {"data_points": _EXPONENTIAL, "aggregation_temporality": VALUE},
        "summary": {"data_points": _SUMMARY},
    }}}})

Series = orjson.Fragment | dict[str, Any]  # JSON text of one series, or (buckets, quantiles) its dict


@dataclass(slots=True)
class MappedMetrics:
    """The series of one request; `cuts[i]` is where the series of the i-th data point that was sent end.

    From the C renderer the series are `text` instead, their JSON one after another, each followed by
    a comma, and `offsets[i]` is where the i-th data point's series end in it (`documents()` gives
    them as one `orjson.Fragment`: the same JSON array).
    """

    series: list[Series] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    text: bytes | None = None
    offsets: list[int] = field(default_factory=list)

    def documents(self) -> list[Series]:
        """The series, whichever walk wrote them (for orjson: one JSON array either way)."""
        return [orjson.Fragment(self.text[:-1])] if self.text else self.series

    def skip(self, reason: str, n: int = 1) -> None:
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + n

    @property
    def rejected(self) -> int:
        return sum(n for r, n in self.skipped.items() if r in REJECT_REASONS)


def format_bound(x: float) -> str:
    """A bucket bound or quantile as the Collector's translator writes it: `inf`, `-inf`, `0`, `1.0`, `0.25`."""
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    return repr(float(x))


_STATE_KINDS = {"sum": b"s", "histogram": b"h", "summary": b"q"}  # `_ddwire`'s spelling of a state key's kind
_INITIAL_MODES = {"auto": 0, "drop": 1, "keep": 2}


def split_fields(key: bytes) -> tuple[bytes, ...]:
    """The values of a run of length-delimited fields (a data point's attribute fields, as `_ddwire` keys them)."""
    out = []
    i = 0
    while i < len(key):
        _, i = decode_varint(key, i)
        n, i = decode_varint(key, i)
        out.append(key[i:i + n])
        i += n
    return tuple(out)


def system_hostname() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return ""


class _Scope:
    """What every series of one resource and scope shares, and its series' JSON tails by attribute set.

    A tail is the end of a series' JSON text from its point on: `}],"tags":[...],"resources":[...]}`,
    rendered once per attribute set (keyed by the tuple of the points' `KeyValue` bytes).
    """

    __slots__ = ("base", "resources", "tags_end", "tags_head", "tails")

    def __init__(self, base: tuple[str, ...], host: str) -> None:
        self.base = base
        self.resources: tuple[dict[str, str], ...] = ({"name": host, "type": "host"},) if host else ()
        self.tails: dict[tuple[bytes, ...], bytes] = {}
        # a tail around the point's own tags, for `_ddwire`: `}],"tags":[<base>` ... `],"resources":[...]}`
        self.tags_head = b'}],"tags":[' + b",".join(map(orjson.dumps, base))
        self.tags_end = b'],"resources":' + orjson.dumps(self.resources) + b"}"


def _head(name: str, kind: int) -> bytes:
    """The start of a series' JSON text, up to its point's timestamp."""
    return b'{"metric":%b,"type":%d,"points":[{"timestamp":' % (orjson.dumps(name), kind)


def _heads(name: str) -> tuple[bytes, ...]:
    """The heads of every series a metric can give: itself as a gauge and as a count, then its aggregations."""
    return (_head(name, GAUGE), _head(name, COUNT), *(_head(f"{name}.{suffix}", kind) for suffix, kind in (
        ("count", COUNT), ("sum", COUNT), ("avg", GAUGE), ("min", GAUGE), ("max", GAUGE))))


# A series as JSON text: head, timestamp, value (repr of a finite float or an int is a JSON number), tail.
_SERIES = b'%b%d,"value":%a%b'


class MetricsMapper:
    """Turns serialized metrics requests into series; holds the cumulative → delta state of one exporter."""

    def __init__(self, cfg: DatadogExporterConfig, *, clock: Clock, wall_clock: Callable[[], float] = time.time,
                 hostname: str | None = None, native: bool = True) -> None:
        m = cfg.metrics
        self._hostname = cfg.hostname or (system_hostname() if hostname is None else hostname)
        self._global = tuple(cfg.tags)
        self._resource_tags = m.resource_attributes_as_tags
        self._scope_tags = m.instrumentation_scope_metadata_as_tags
        self._to_delta = m.sums.cumulative_monotonic_mode == "to_delta"
        self._initial = m.sums.initial_cumulative_monotonic_value
        self._aggregations = m.histograms.send_aggregation_metrics
        self._buckets = m.histograms.mode == "counters"
        self._quantiles = m.summaries.mode == "gauges"
        self._ttl = float(m.delta_ttl)
        self._max_series = m.delta_max_series
        self._clock = clock
        self._wall = wall_clock
        self._started_ns = int(wall_clock() * _NS)
        self._tags = TagCache()
        self._resources: dict[bytes, ResourceInfo] = {}
        self._scopes: dict[tuple[bytes, str, str], _Scope] = {}
        self._tails = self._tail_bytes = 0  # how many tails the scopes hold, and their keys' and texts' bytes
        self._heads: dict[str, tuple[bytes, ...]] = {}  # metric name → `_heads(name)`
        self._bound_tags: dict[tuple[float, ...], list[tuple[str, str]]] = {}
        # (kind, name, series tail) → [start_ns, time_ns, last value(s), last seen on the clock]; least recent first
        self._state: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()
        self._now = 0.0
        self._evicted = 0
        # the C renderer (and its state) where it is built and wanted; `histograms.mode: counters` is walked here
        self._native = _ddwire.Renderer(
            self._native_scope, self._heads_of, self._tag_of, self._native_quantiles,
            to_delta=self._to_delta, initial=_INITIAL_MODES[self._initial], aggregations=self._aggregations,
            quantiles=self._quantiles, started_ns=self._started_ns, max_series=self._max_series,
        ) if native and _ddwire is not None else None
        self._render = self._native.render if self._native is not None and not self._buckets else None

    @property
    def native(self) -> bool:
        """Whether the C renderer walks the requests."""
        return self._render is not None

    @property
    def tracked_series(self) -> int:
        return self._native.tracked if self._native is not None else len(self._state)

    @property
    def evicted(self) -> int:
        return self._native.evicted if self._native is not None else self._evicted

    def map(self, raw: bytes) -> MappedMetrics:
        out = MappedMetrics()
        self._now = self._clock()  # one reading per request: when its series were last seen
        now_s = int(self._wall())
        if self._native is not None:
            self._native.expire(self._now - self._ttl)
            text = self._render(raw, out.cuts, out.offsets, out.skipped, self._now, now_s) if self._render else None
            if text is not None:
                out.text = text
                return out
        else:
            self._expire()
        for rm in METRICS_VIEW.FromString(raw).resource_metrics:
            resource = rm.resource
            for sm in rm.scope_metrics:
                sc = self._scope(resource, sm.scope.name, sm.scope.version)
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if not m.name:  # the API refuses a whole request for one series without a name
                        if kind is not None:
                            out.skip("invalid_name", len(getattr(m, kind).data_points))
                    elif kind == "gauge":
                        self._numbers(out, m.name, m.gauge.data_points, sc, now_s, GAUGE)
                    elif kind == "sum":
                        self._sum(out, m.name, m.sum, sc, now_s)
                    elif kind == "histogram" or kind == "exponential_histogram":
                        data = getattr(m, kind)
                        self._histograms(out, m.name, data.data_points, data.aggregation_temporality, sc, now_s,
                                         kind == "histogram" and self._buckets)
                    elif kind == "summary":
                        self._summaries(out, m.name, m.summary.data_points, sc, now_s)
        return out

    def _heads_of(self, name: str) -> tuple[bytes, ...]:
        heads = self._heads.get(name)
        if heads is None:
            if len(name) > CACHED_NAME_MAX:
                return _heads(name)
            if len(self._heads) >= _RESOURCE_CACHE_SIZE:
                self._heads.clear()
            heads = self._heads[name] = _heads(name)
        return heads

    # -- tags -----------------------------------------------------------------------------------

    def _scope(self, resource: bytes, name: str, version: str) -> _Scope:
        key = (resource, name, version) if self._scope_tags else (resource, "", "")
        sc = self._scopes.get(key)
        if sc is None:
            res = self._resource(resource)
            base = (*res.tags, *(scope_tags(name, version) if self._scope_tags else ()), *self._global)
            if len(self._scopes) >= _RESOURCE_CACHE_SIZE:
                self._scopes.clear()
                self._tails = self._tail_bytes = 0
            sc = self._scopes[key] = _Scope(base, res.host)
        return sc

    def _native_scope(self, resource: bytes, name: str, version: str) -> tuple[_Scope, bytes, bytes]:
        """`_scope` for `_ddwire`: the scope, and its series tail before and after a point's own tags."""
        sc = self._scope(resource, name, version)
        return sc, sc.tags_head, sc.tags_end

    def _point_tags(self, sc: _Scope, attrs: Sequence[bytes]) -> tuple[str, ...]:
        return sc.base + self._tags.tags(attrs) if attrs else sc.base

    def _tag_of(self, raw: bytes) -> str:
        """The tag of one attribute (`KeyValue` bytes), for `_ddwire` (arrays, maps, and what is not plain)."""
        return self._tags.tags((raw,))[0]

    def _native_quantiles(self, sc: _Scope, key: bytes, name: str, ts: int,
                          pairs: Sequence[tuple[float, float]]) -> list[bytes]:
        """A summary point's quantile series as JSON, for `_ddwire` (as `_summaries` writes them)."""
        tags = self._point_tags(sc, split_fields(key))
        return [orjson.dumps({"metric": f"{name}.quantile", "type": GAUGE,
                              "points": ({"timestamp": ts, "value": value},),
                              "tags": (*tags, f"quantile:{format_bound(q)}"), "resources": sc.resources})
                for q, value in pairs if value - value == 0]

    def _tail(self, sc: _Scope, attrs: Sequence[bytes]) -> bytes:
        """The JSON tail of the series of a point with these attributes (cached: see `_Scope`)."""
        key = tuple(attrs)
        text = sc.tails.get(key)
        if text is None:
            text = b"}]," + orjson.dumps({"tags": self._point_tags(sc, attrs), "resources": sc.resources})[1:]
            size = len(text) + sum(map(len, key))
            if size <= SERIES_TAGS_CACHE_BYTES // 1024:  # a large attribute set is rendered every time
                if self._tails >= SERIES_TAGS_CACHE_SIZE or self._tail_bytes + size > SERIES_TAGS_CACHE_BYTES:
                    for other in self._scopes.values():
                        other.tails.clear()
                    self._tails = self._tail_bytes = 0
                sc.tails[key] = text
                self._tails += 1
                self._tail_bytes += size
        return text

    # -- per metric kind ------------------------------------------------------------------------

    def _sum(self, out: MappedMetrics, name: str, data: Any, sc: _Scope, now_s: int) -> None:
        temporality = data.aggregation_temporality
        if temporality == _DELTA:
            self._numbers(out, name, data.data_points, sc, now_s, COUNT)
        elif temporality != _CUMULATIVE:
            out.skip("unsupported", len(data.data_points))
        elif data.is_monotonic and self._to_delta:
            self._monotonic(out, name, data.data_points, sc, now_s)
        else:
            self._numbers(out, name, data.data_points, sc, now_s, GAUGE)

    def _numbers(self, out: MappedMetrics, name: str, points: Sequence[Any], sc: _Scope, now_s: int,
                 kind: int) -> None:
        series, cuts = out.series, out.cuts
        append, cut, tails, tail_of, fragment = series.append, cuts.append, sc.tails, self._tail, orjson.Fragment
        head = self._heads_of(name)[kind == COUNT]
        for dp in points:
            if dp.flags & _NO_RECORDED_VALUE:
                out.skip("no_recorded_value")
                continue
            v = dp.as_int or dp.as_double
            if v - v:  # NaN or ±inf
                out.skip("invalid_value")
                continue
            point_ts = dp.time_unix_nano // _NS or now_s
            if not _MIN_TS <= point_ts < _MAX_TS:
                out.skip("invalid_timestamp")
                continue
            attrs = dp.attributes
            tail = tails.get(tuple(attrs)) or tail_of(sc, attrs)
            append(fragment(_SERIES % (head, point_ts, v, tail)))
            cut(len(series))

    def _monotonic(self, out: MappedMetrics, name: str, points: Sequence[Any], sc: _Scope, now_s: int) -> None:
        series, tails, tail_of, fragment = out.series, sc.tails, self._tail, orjson.Fragment
        head = self._heads_of(name)[1]
        for dp in points:
            if dp.flags & _NO_RECORDED_VALUE:
                out.skip("no_recorded_value")
                continue
            v = dp.as_int or dp.as_double
            if v - v:
                out.skip("invalid_value")
                continue
            ts = dp.time_unix_nano
            point_ts = ts // _NS or now_s
            if not _MIN_TS <= point_ts < _MAX_TS:
                out.skip("invalid_timestamp")
                continue
            attrs = dp.attributes
            tail = tails.get(tuple(attrs)) or tail_of(sc, attrs)
            d = self._delta(out, ("sum", name, tail), dp.start_time_unix_nano, ts, (v,))
            if d is None:
                continue
            if d[0] - d[0]:  # finite values, an infinite difference (±1.7e308)
                out.skip("invalid_value")
                continue
            series.append(fragment(_SERIES % (head, point_ts, d[0], tail)))
            out.cuts.append(len(series))

    def _histograms(self, out: MappedMetrics, name: str, points: Sequence[Any], temporality: int, sc: _Scope,
                    now_s: int, buckets: bool) -> None:
        if temporality not in (_DELTA, _CUMULATIVE):
            out.skip("unsupported", len(points))
            return
        cumulative = temporality == _CUMULATIVE
        series, tails, tail_of, aggregations, fragment = out.series, sc.tails, self._tail, self._aggregations, \
            orjson.Fragment
        append = series.append
        h_count, h_sum, h_avg, h_min, h_max = self._heads_of(name)[2:]
        for dp in points:
            if dp.flags & _NO_RECORDED_VALUE:
                out.skip("no_recorded_value")
                continue
            ts = dp.time_unix_nano
            point_ts = ts // _NS or now_s
            if not _MIN_TS <= point_ts < _MAX_TS:
                out.skip("invalid_timestamp")
                continue
            attrs = dp.attributes
            tail = tails.get(tuple(attrs)) or tail_of(sc, attrs)
            count = dp.count
            total = dp.sum if dp.HasField("sum") else None
            if total is not None and total - total:
                total = None  # a NaN or infinite sum: count, min and max still go
            counts: Sequence[float] = dp.bucket_counts if buckets else ()
            if cumulative:
                d = self._delta(out, ("histogram", name, tail), dp.start_time_unix_nano, ts,
                                (count, total or 0.0, *counts))
                if d is None:
                    continue
                count, total, counts = d[0], (d[1] if total is not None and d[1] - d[1] == 0 else None), d[2:]
                low = high = None
            else:
                low = dp.min if dp.HasField("min") else None
                high = dp.max if dp.HasField("max") else None
            if aggregations:
                append(fragment(_SERIES % (h_count, point_ts, count, tail)))
                if total is not None:
                    append(fragment(_SERIES % (h_sum, point_ts, total, tail)))
                    if count:
                        append(fragment(_SERIES % (h_avg, point_ts, total / count, tail)))
                if low is not None and count and low - low == 0:
                    append(fragment(_SERIES % (h_min, point_ts, low, tail)))
                if high is not None and count and high - high == 0:
                    append(fragment(_SERIES % (h_max, point_ts, high, tail)))
            if buckets:
                self._bucket_series(series, f"{name}.bucket", dp.explicit_bounds, counts,
                                    self._point_tags(sc, attrs), sc.resources, point_ts)
            out.cuts.append(len(series))

    def _bucket_series(self, series: list[Series], name: str, bounds: Sequence[float], counts: Sequence[float],
                       tags: tuple[str, ...], resources: tuple[dict[str, str], ...], ts: int) -> None:
        key = tuple(bounds)
        pairs = self._bound_tags.get(key)
        if pairs is None:
            edges = [float("-inf"), *key, float("inf")]
            pairs = [(f"lower_bound:{format_bound(edges[i])}", f"upper_bound:{format_bound(edges[i + 1])}")
                     for i in range(len(edges) - 1)]
            if len(self._bound_tags) >= _RESOURCE_CACHE_SIZE:
                self._bound_tags.clear()
            self._bound_tags[key] = pairs
        for pair, n in zip(pairs, counts):
            series.append({"metric": name, "type": COUNT, "points": ({"timestamp": ts, "value": n},),
                           "tags": tags + pair, "resources": resources})

    def _summaries(self, out: MappedMetrics, name: str, points: Sequence[Any], sc: _Scope, now_s: int) -> None:
        series, tail_of, fragment = out.series, self._tail, orjson.Fragment
        s_count, s_sum = self._heads_of(name)[2:4]
        n_quantile = f"{name}.quantile"
        for dp in points:
            if dp.flags & _NO_RECORDED_VALUE:
                out.skip("no_recorded_value")
                continue
            ts = dp.time_unix_nano
            point_ts = ts // _NS or now_s
            if not _MIN_TS <= point_ts < _MAX_TS:
                out.skip("invalid_timestamp")
                continue
            attrs = dp.attributes
            tail = tail_of(sc, attrs)
            total = dp.sum
            n0 = len(series)
            # a point without a count delta (out of order, first value) may still send its quantiles:
            # its skip counts only when nothing of it is sent
            no_delta = MappedMetrics()
            d = self._delta(no_delta, ("summary", name, tail), dp.start_time_unix_nano, ts,
                            (dp.count, total if total - total == 0 else 0.0))
            if d is not None:
                series.append(fragment(_SERIES % (s_count, point_ts, d[0], tail)))
                if total - total == 0 and d[1] - d[1] == 0:
                    series.append(fragment(_SERIES % (s_sum, point_ts, d[1], tail)))
            if self._quantiles:
                tags = self._point_tags(sc, attrs)
                for q in dp.quantile_values:
                    value = q.value
                    if value - value == 0:
                        series.append({"metric": n_quantile, "type": GAUGE,
                                       "points": ({"timestamp": point_ts, "value": value},),
                                       "tags": (*tags, f"quantile:{format_bound(q.quantile)}"),
                                       "resources": sc.resources})
            if len(series) > n0:
                out.cuts.append(len(series))
            else:
                for reason, n in no_delta.skipped.items():
                    out.skip(reason, n)

    # -- state ----------------------------------------------------------------------------------

    def _delta(self, out: MappedMetrics, key: tuple[Any, ...], start: int, ts: int,
               values: tuple[float, ...]) -> tuple[float, ...] | None:
        """The increase of a cumulative series since its previous point, or None (skip counted) when there is none.

        `values[0]` is a count that only goes up (a decrease is a reset), `values[1:]` follow it
        (a sum may go down; histogram bucket counts, from index 2, are checked like the count).
        """
        if self._native is not None:
            kind, name, tail = key
            raw_name = name.encode()
            got = self._native.delta(_STATE_KINDS[kind] + len(raw_name).to_bytes(4, "little") + raw_name + tail,
                                     start, ts, values, self._now)
            if isinstance(got, tuple):
                return got
            if got == 0:
                out.skip("out_of_order")
                return None
            return self._first(out, start, ts, values)
        state = self._state
        now = self._now
        entry = state.get(key)
        if entry is None:
            if len(state) >= self._max_series:
                state.popitem(last=False)
                self._evicted += 1
            state[key] = [start, ts, values, now]
            return self._first(out, start, ts, values)
        if ts <= entry[1]:
            out.skip("out_of_order")
            return None
        prev_start, prev = entry[0], entry[2]
        entry[0], entry[1], entry[2], entry[3] = start, ts, values, now
        state.move_to_end(key)
        if (start and (start == ts or start != prev_start)) or values[0] < prev[0] or len(values) != len(prev) \
                or any(a < b for a, b in zip(values[2:], prev[2:])):
            return self._first(out, start, ts, values)
        return tuple(a - b for a, b in zip(values, prev))

    def _first(self, out: MappedMetrics, start: int, ts: int, values: tuple[float, ...]) -> tuple[float, ...] | None:
        """The first point of a series (or after a reset): reported whole or only remembered, per the mode."""
        mode = self._initial
        if mode == "keep" or (mode == "auto" and start and start != ts and start > self._started_ns):
            return values
        out.skip("initial_value")
        return None

    def _expire(self) -> None:
        state = self._state
        if not state:
            return
        deadline = self._now - self._ttl
        while state:
            key = next(iter(state))
            if state[key][3] > deadline:
                return
            del state[key]

    def _resource(self, raw: bytes) -> ResourceInfo:
        info = self._resources.get(raw)
        if info is None:
            info = resource_info(raw, self._hostname, self._resource_tags)
            if len(self._resources) >= _RESOURCE_CACHE_SIZE:
                self._resources.clear()
            self._resources[raw] = info
        return info

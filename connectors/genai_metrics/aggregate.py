"""Delta aggregation of the connector's metrics between two flushes, and their OTLP encoding.

Why delta: the connector then keeps nothing from one interval to the next but the series the
cardinality limit has admitted, writes only the series that changed, and a restart needs no
reset handling. The `prometheus` exporter adds delta points up into cumulative series and
keeps series summed from deltas for `delta_metric_expiration` (1 h by default) rather than
`metric_expiration`, so a counter of tokens or cost of an agent idle between conversations keeps
its total and Prometheus sees no reset when the agent returns.

A series is identified by its resource (service name, namespace and instance), the metric's
own attribute values and the dimension values; attribute values are kept serialized (or as
text for values the connector computes) and turned into text once, when written. Each metric
is capped by the cardinality limiter's machinery (`pipeline.serieslimit`): a series beyond
`aggregation_cardinality_limit` is folded into the metric's overflow series, whose only
attribute is `otel.metric.overflow=true` (as the OpenTelemetry SDKs do), so totals stay exact.

The hot path: one accumulator per (model call attributes) holds the duration, both token
histograms and the token sums the cost is computed from (`Calls`), one per tool attributes
holds the tool duration; the metrics that drop an attribute of those (token usage has no
`error.type`, cost no models or operation) are merged from them when written.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Exemplar, Metric

from connectors.genai_metrics import semconv as sc
from connectors.genai_metrics.pricing import Price
from connectors.genai_metrics.spans import any_text
from pipeline.serieslimit import SeriesLimiter
from pipeline.version import VERSION

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
OVERFLOW_KEY = "otel.metric.overflow"
SCOPE_NAME = "otelpipe/genai_metrics"
Key = tuple[Any, ...]  # (resource identity, attribute values..., dimension values...)
ResourceId = tuple[tuple[str, str], ...]
#: An exemplar's source: (trace id, span id, time in ns, conversation id, value, value, value); a histogram
#: reads the value at its `vi` index (a model call's duration, input and output tokens share one tuple).
Ref = tuple[Any, ...]
V0, V1, V2 = 4, 5, 6


class _Overflow:
    """The marker in a key that stands for a metric's overflow series: `(resource, OVERFLOW)`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OVERFLOW"


OVERFLOW = _Overflow()


class Hist:
    """One histogram series in the current interval; `exemplars` holds the latest exemplar per bucket."""

    __slots__ = ("buckets", "count", "exemplars", "total", "vi")

    def __init__(self, n_buckets: int, vi: int = V0) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * n_buckets
        self.exemplars: dict[int, Ref] = {}
        self.vi = vi

    def plus(self, other: Hist) -> Hist:
        """A new Hist of both (neither is changed)."""
        same = self.vi == other.vi  # else (a token usage overflow series: input and output) both go to V0
        out = Hist(len(self.buckets), self.vi if same else V0)
        out.count = self.count + other.count
        out.total = self.total + other.total
        out.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]
        for h in (self, other):
            for i, r in h.exemplars.items():
                mine = out.exemplars.get(i)
                if mine is None or r[2] >= mine[2]:
                    out.exemplars[i] = r if same else (*r[:V0], r[h.vi])
        return out


class Total:
    """One sum series in the current interval, with its latest exemplar."""

    __slots__ = ("exemplar", "value")

    def __init__(self, value: float = 0.0, exemplar: Ref | None = None) -> None:
        self.value = value
        self.exemplar = exemplar

    def plus(self, other: Total) -> Total:
        ex = self.exemplar
        if other.exemplar is not None and (ex is None or other.exemplar[2] >= ex[2]):
            ex = other.exemplar
        return Total(self.value + other.value, ex)


class Calls:
    """Leaf model calls of one attribute set: their duration and token histograms, and the token sums
    their cost is computed from when written (cost is linear in the tokens)."""

    __slots__ = ("budgeted", "cache_read", "cache_write", "dur", "plain_in", "plain_out", "price", "reasoning", "tin",
                 "tout", "unpriced")

    def __init__(self, price: Price | None) -> None:
        self.dur = Hist(len(sc.DURATION_BUCKETS) + 1, V0)
        self.tin = Hist(len(sc.TOKEN_BUCKETS) + 1, V1)
        self.tout = Hist(len(sc.TOKEN_BUCKETS) + 1, V2)
        self.price = price
        self.plain_in = self.cache_read = self.cache_write = self.plain_out = self.reasoning = 0
        self.unpriced = 0  # calls with tokens and no price
        self.budgeted = 0.0  # of cost(), what was already added to a budget

    def cost(self) -> float:
        p = self.price
        if p is None:
            return 0.0
        return (self.plain_in * p.input + self.cache_read * p.cache_read + self.cache_write * p.cache_write
                + self.plain_out * p.output + self.reasoning * p.reasoning)

    def merge(self, other: Calls) -> None:
        """Add `other` (same attribute set, so same price) into this one."""
        self.dur = self.dur.plus(other.dur)
        self.tin = self.tin.plus(other.tin)
        self.tout = self.tout.plus(other.tout)
        self.plain_in += other.plain_in
        self.cache_read += other.cache_read
        self.cache_write += other.cache_write
        self.plain_out += other.plain_out
        self.reasoning += other.reasoning
        self.unpriced += other.unpriced
        self.budgeted += other.budgeted


Acc = Hist | Total | Calls


class Series:
    """The series of the current interval, per metric index (`sc.METRICS`) plus the `Calls` of model
    calls (under the operation duration's limit); `get` finds or admits one, `take` hands them over."""

    def __init__(self, limiter: SeriesLimiter, clock: Callable[[], float]) -> None:
        self._limiter = limiter
        self._clock = clock
        self.points: list[dict[Key, Acc]] = [{} for _ in range(len(sc.METRICS) + 1)]
        self.folded: dict[str, int] = {}  # series folded into an overflow series, per metric, since last read
        # Keys remembered per metric and interval: the admitted ones, and as many refused ones (beyond, a refused
        # series asks the limiter again at each point, and counts as folded again: memory stays bounded).
        self._max_keys = 2 * limiter.default_limit + 1024

    def new(self, m: int, key: Key, make: Callable[[], Acc]) -> Acc:
        """The accumulator of a series not yet seen in this interval (the overflow one past the limit)."""
        name = sc.METRICS[m].name if m < len(sc.METRICS) else sc.OPERATION_DURATION.name
        now = self._clock()
        pts = self.points[m]
        limiter = self._limiter
        if limiter.admit(limiter.metric(name, now), key, now):
            acc = pts[key] = make()
            return acc
        self.folded[name] = self.folded.get(name, 0) + 1
        over = (key[0], OVERFLOW)
        acc = pts.get(over)  # type: ignore[assignment]
        if acc is None:
            acc = pts[over] = make()
        if len(pts) < self._max_keys:
            pts[key] = acc  # later points of this series go straight to the overflow series
        return acc

    def hist(self, m: int, key: Key, value: float, ref: Ref | None) -> None:
        """One observation of a histogram; `ref` is its exemplar (the value at `V0`)."""
        h = self.points[m].get(key)
        if h is None:
            buckets = sc.METRICS[m].buckets
            h = self.new(m, key, lambda: Hist(len(buckets) + 1))
        observe(h, sc.METRICS[m].buckets, value, ref)  # type: ignore[arg-type]

    def add(self, m: int, key: Key, value: float, ref: Ref | None) -> None:
        t = self.points[m].get(key)
        if t is None:
            t = self.new(m, key, Total)
        t.value += value  # type: ignore[union-attr]
        if ref is not None:
            t.exemplar = ref  # type: ignore[union-attr]

    def take(self) -> list[dict[Key, Acc]]:
        """The series recorded so far; recording starts afresh."""
        out, self.points = self.points, [{} for _ in self.points]
        return out

    def put_back(self, points: list[dict[Key, Acc]]) -> None:
        """Merge series that could not be sent back in, to go with the next flush (deltas add up)."""
        for m, pts in enumerate(points):
            mine = self.points[m]
            for key, acc in unique(pts):
                cur = mine.get(key)
                if cur is None:
                    mine[key] = acc
                elif isinstance(cur, Calls):
                    cur.merge(acc)  # type: ignore[arg-type]
                else:
                    mine[key] = cur.plus(acc)  # type: ignore[arg-type]


def observe(h: Hist, bounds: Sequence[float], value: float, ref: Ref | None) -> None:
    i = bisect_left(bounds, value)  # OTLP buckets are upper-inclusive: (b[i-1], b[i]]
    h.buckets[i] += 1
    h.count += 1
    h.total += value
    if ref is not None:
        h.exemplars[i] = ref


def unique(pts: dict[Key, Acc]) -> Iterator[tuple[Key, Acc]]:
    """The series of one metric, each once: keys folded into an overflow series are left out."""
    for key, acc in pts.items():
        if key[1] is OVERFLOW or pts.get((key[0], OVERFLOW)) is not acc:
            yield key, acc


def derived(points: Sequence[dict[Key, Acc]]) -> Iterator[tuple[int, Key, Hist | Total]]:
    """Every (metric index, key, series) to write: the generic series, and those of the model calls."""
    for m, pts in enumerate(points):
        if m == M_CALLS:
            continue
        for key, acc in unique(pts):
            yield m, key, acc  # type: ignore[misc]
    for key, calls in unique(points[M_CALLS]):
        assert isinstance(calls, Calls)
        yield from calls_series(key, calls)


M_TOKENS, M_OPERATION, M_COST = (sc.METRICS.index(m) for m in (sc.TOKEN_USAGE, sc.OPERATION_DURATION, sc.COST))
M_CALLS = len(sc.METRICS)  # where Series keeps the Calls
_N_DIMS_AT = 7  # a Calls key: (res, op, provider, request model, response model, error, agent, *dims)


def calls_series(key: Key, c: Calls) -> Iterator[tuple[int, Key, Hist | Total]]:
    """The operation duration, token usage and cost series of one Calls."""
    if key[1] is OVERFLOW:
        yield M_OPERATION, key, c.dur
        if c.tin.count:
            yield M_TOKENS, key, c.tin
        if c.tout.count:
            yield M_TOKENS, key, c.tout
        if c.price is not None:
            yield M_COST, key, Total(c.cost(), _latest(c))
        return
    res, op, provider, req, resp, _err, agent = key[:_N_DIMS_AT]
    dims = key[_N_DIMS_AT:]
    if c.dur.count:
        yield M_OPERATION, key, c.dur
    if c.tin.count:
        yield M_TOKENS, (res, op, provider, req, resp, "input", agent, *dims), c.tin
    if c.tout.count:
        yield M_TOKENS, (res, op, provider, req, resp, "output", agent, *dims), c.tout
    if c.price is not None and (c.tin.count or c.tout.count):
        yield M_COST, (res, agent, provider, req if req is not None else resp, *dims), Total(c.cost(), _latest(c))


def _latest(c: Calls) -> Ref | None:
    """The most recent model call of `c` with tokens, as the cost exemplar (its value: its cost)."""
    refs = [*c.tin.exemplars.values(), *c.tout.exemplars.values()]
    if not refs or c.price is None:
        return None
    r = max(refs, key=lambda x: x[2])
    p = c.price
    tin, tout = r[V1] or 0, r[V2] or 0
    return (*r[:V0], tin * p.input + tout * p.output)


def encode(points: Iterable[tuple[int, Key, Hist | Total]], dims: Sequence[str],
           gauges: Iterable[tuple[int, Key, float]], text: Callable[[Any], str | None], start_ns: int,
           time_ns: int, max_exemplars: int) -> ExportMetricsServiceRequest | None:
    """One OTLP request of delta points (gauges: the values given), a ResourceMetrics per resource.

    Series whose attribute values read the same once written as text (a value sent as an int by
    one span and as a string by another; token usage of failed and successful calls) are one.
    """
    merged: dict[tuple[int, ResourceId, tuple[str | None, ...] | None], Hist | Total] = {}
    for m, key, acc in points:
        values = None if key[1] is OVERFLOW else tuple(text(v) for v in key[1:])
        mkey = (m, key[0], values)
        cur = merged.get(mkey)
        merged[mkey] = acc if cur is None else cur.plus(acc)  # type: ignore[arg-type]
    req = ExportMetricsServiceRequest()
    scopes: dict[ResourceId, Any] = {}
    made: dict[tuple[ResourceId, int], Metric] = {}

    def metric(res: ResourceId, m: int) -> Metric:
        out = made.get((res, m))
        if out is None:
            sm = scopes.get(res)
            if sm is None:
                rm = req.resource_metrics.add()
                rm.resource.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in res)
                sm = scopes[res] = rm.scope_metrics.add()
                sm.scope.name, sm.scope.version = SCOPE_NAME, VERSION
            mdef = sc.METRICS[m]
            out = made[(res, m)] = sm.metrics.add(name=mdef.name, unit=mdef.unit, description=mdef.description)
        return out

    for (m, res, values), acc in sorted(merged.items(), key=lambda kv: kv[0][0]):
        mdef = sc.METRICS[m]
        attrs = ([KeyValue(key=OVERFLOW_KEY, value=AnyValue(string_value="true"))] if values is None else
                 [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in zip((*mdef.attributes, *dims), values)
                  if v is not None])
        out = metric(res, m)
        if isinstance(acc, Hist):
            out.histogram.aggregation_temporality = DELTA
            hdp = out.histogram.data_points.add(start_time_unix_nano=start_ns, time_unix_nano=time_ns,
                                                count=acc.count, sum=acc.total)
            hdp.explicit_bounds.extend(mdef.buckets)
            hdp.bucket_counts.extend(acc.buckets)
            # the largest first: the slow calls and big runs are the ones worth a jump to the trace
            for i in sorted(acc.exemplars, reverse=True)[:max_exemplars]:
                _exemplar(hdp.exemplars.add(), acc.exemplars[i], acc.vi)
            hdp.attributes.extend(attrs)
        else:
            out.sum.aggregation_temporality = DELTA
            out.sum.is_monotonic = True
            dp = out.sum.data_points.add(start_time_unix_nano=start_ns, time_unix_nano=time_ns)
            if mdef is sc.COST:
                dp.as_double = acc.value
            else:
                dp.as_int = round(acc.value)
            if acc.exemplar is not None:
                _exemplar(dp.exemplars.add(), acc.exemplar, V0)
            dp.attributes.extend(attrs)
    for m, key, value in gauges:
        names = (*sc.METRICS[m].attributes, *dims)
        gdp = metric(key[0], m).gauge.data_points.add(time_unix_nano=time_ns, as_double=value)
        gdp.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in zip(names, key[1:])
                             if v is not None)
    return req if req.resource_metrics else None


def _exemplar(e: Exemplar, ref: Ref, vi: int) -> None:
    trace_id, span_id, t, conv = ref[:V0]
    e.as_double = float(ref[vi])
    e.trace_id, e.span_id, e.time_unix_nano = trace_id, span_id, t
    if conv is not None:
        e.filtered_attributes.append(KeyValue(key=sc.CONVERSATION, value=AnyValue(string_value=any_text(conv))))

"""The exporter's state: the latest value of every Prometheus series, ready to render.

Prometheus pulls, OTLP pushes, so the exporter keeps one entry per series
(family name + label set) and a scrape reads them all. What is stored is shaped
for the render path, which must handle 100k series in well under a second:
each series keeps its final label dict (built once, when the series is first
seen) and its values in one immutable tuple or float that an update replaces
in a single assignment, so a render thread reading without the lock never sees
half an update.

Temporality (the compatibility spec's "Sums" and "Histograms"):
- cumulative sums and histograms pass through; a new start time means the
  producer restarted, so the new value replaces the old (a counter reset for
  Prometheus) and `_created` moves; a point from before the last reset or
  older than the stored one is ignored;
- delta sums and delta histograms are added up into cumulative series (their
  `_created` is the start of the first delta). A gap between deltas is not a
  reset: a delta stream that skips an interval (StatsD flushes only what
  changed) just had nothing to add. The exact same point twice (same start
  and time) is applied once;
- non-monotonic sums become gauges. Delta non-monotonic sums, which the spec
  says to drop, are summed into the gauge instead: the running total of an
  up-down counter's deltas is its value, and dropping them is the well-known
  reason StatsD-style counters never show up behind the Collector;
- exponential histograms cannot be written in the text formats and are
  refused (counted), as the spec allows.

A series not updated for `expiration` seconds (on the injected clock) is
removed on the next scrape, so a vanished producer does not leave its last
values behind forever. Series accumulated from delta points are the only copy
of their total: when one expires, Prometheus sees a counter reset as soon as
the stream returns, and bursty delta producers (StatsD, token counters of
agents idle between conversations) go quiet for longer than the usual 5
minutes. They expire after `delta_expiration` instead, but only while there is
room: at `max_series`, delta series idle for longer than `expiration` are
evicted before a new series is refused (`series_limit`).

Metric names without a letter or digit (blank, `-`, `…`) have no meaningful
Prometheus name, and a counter whose name is only its `_total` suffix has no
family name at all: both are refused as `invalid_name`.

Thread safety: `update` and `snapshot` take `lock`; everything after the
snapshot reads only immutable values.
"""
from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    DataPointFlags,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    SummaryDataPoint,
)
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString as _float_to_go_string

from exporters.prometheus import exemplars
from exporters.prometheus.naming import (
    VALID_METRIC_NAME,
    Shape,
    join_labels,
    metric_name,
    unit_metadata,
    value_text,
)

# prometheus_client leaves it unannotated; the same function, typed for strict mypy.
floatToGoString: Callable[[float], str] = _float_to_go_string

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
NO_RECORDED_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
JOB_INSTANCE_ATTRIBUTES = frozenset({"service.name", "service.namespace", "service.instance.id"})
_CACHE_LIMIT = 100_000
_SWEEP_EVERY = 60.0  # seconds between expiry sweeps done by updates
_PRESSURE_SWEEP_EVERY = 1.0  # at max_series: seconds between sweeps that evict idle delta series
_HAS_WORD = re.compile(r"[A-Za-z0-9]")  # what a metric name needs to become a meaningful Prometheus name

# Why a point was not (or not fully) applied. The first group is refused data
# (the exporter reports it as rejected); the second is normal stream hygiene.
REJECT_REASONS = ("name_conflict", "invalid_name", "series_limit", "exponential_histogram",
                  "unspecified_temporality", "invalid_point")
SKIP_REASONS = ("out_of_order", "duplicate")


class Series:
    """One Prometheus series. `value` (counter/gauge) or `hist`/`summary` tuples are replaced, never mutated."""

    __slots__ = (
        "bucket_exemplars",
        "created",
        "delta",
        "exemplar",
        "hist",
        "labels",
        "start",
        "time",
        "updated",
        "value",
    )

    def __init__(self, labels: dict[str, str], updated: float, delta: bool = False) -> None:
        self.labels = labels
        self.updated = updated
        self.delta = delta  # accumulated from delta points: expires after delta_expiration
        self.start = 0
        self.time = 0
        self.created = 0.0
        self.value = 0.0
        self.exemplar: Exemplar | None = None
        # (bounds, le strings incl. "+Inf", cumulative counts per bound, count, sum|None, exemplars|None)
        # for histograms; (quantile strings, values, count, sum|None) for summaries.
        self.hist: tuple[Any, ...] | None = None
        self.bucket_exemplars: list[Exemplar | None] | None = None


class Family:
    """All series of one Prometheus metric family."""

    __slots__ = ("claims", "help", "help_is_fallback", "name", "series", "shape", "unit")

    def __init__(self, name: str, shape: Shape, help_text: str, help_is_fallback: bool, unit: str,
                 claims: tuple[str, ...]) -> None:
        self.name = name
        self.shape = shape
        self.help = help_text
        self.help_is_fallback = help_is_fallback
        self.unit = unit
        self.series: dict[tuple[tuple[str, str], ...], Series] = {}
        self.claims = claims


@dataclass(frozen=True, slots=True)
class FamilyView:
    name: str
    shape: Shape
    help: str
    unit: str
    series: list[Series]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one scrape renders: families, `target_info` label sets, `otel_scope_info` label sets."""

    families: list[FamilyView]
    targets: list[dict[str, str]]
    scopes: list[dict[str, str]]


@dataclass(slots=True)
class UpdateResult:
    applied: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    @property
    def rejected(self) -> int:
        return sum(n for r, n in self.skipped.items() if r in REJECT_REASONS)


def claimed_names(name: str, shape: Shape) -> tuple[str, ...]:
    """Every family and sample name a family writes (OpenMetrics included), to detect clashes."""
    if shape is Shape.COUNTER:
        base = name.removesuffix("_total")
        return (base, base + "_total", base + "_created")
    if shape is Shape.HISTOGRAM:
        return (name, name + "_bucket", name + "_count", name + "_sum", name + "_created")
    if shape is Shape.SUMMARY:
        return (name, name + "_count", name + "_sum", name + "_created")
    return (name,)


_RESERVED_CLAIMS = {n: "target_info" for n in ("target", "target_info")} | {
    n: "otel_scope_info" for n in ("otel_scope", "otel_scope_info")}


class MetricStore:
    """See the module docstring. `delta_expiration` None means `expiration`; `max_series` None means no limit."""

    def __init__(self, *, namespace: str = "", const_labels: Mapping[str, str] | None = None,
                 expiration: float = 300.0, delta_expiration: float | None = None, max_series: int | None = None,
                 resource_to_labels: bool = False, add_suffixes: bool = True,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.Lock()
        self.families: dict[str, Family] = {}
        self._claims: dict[str, str] = dict(_RESERVED_CLAIMS)
        self._namespace = namespace
        self._const = dict(const_labels or {})
        self._expiration = expiration
        self._delta_expiration = max(expiration, expiration if delta_expiration is None else delta_expiration)
        self._max_series = max_series
        self._n_series = 0  # series in all families (kept up to date by _new_series and the removals)
        self._resource_to_labels = resource_to_labels
        self._add_suffixes = add_suffixes
        self._clock = clock
        self._wall = wall_clock
        self._names: dict[tuple[str, str, Shape], str] = {}
        self._label_names: dict[str, str] = {}
        self._les: dict[tuple[float, ...], tuple[str, ...]] = {}
        # (job, instance) → [labels, updated, delta]; scope label set → the same. `delta`: some of the
        # producer's series are delta-derived, so its info series lives as long as they do.
        self._targets: dict[tuple[str, str], list[Any]] = {}
        self._scopes: dict[tuple[tuple[str, str], ...], list[Any]] = {}
        self._last_sweep = clock()
        self._last_pressure_sweep = -float("inf")

    # --- update ---------------------------------------------------------------
    def update(self, request: ExportMetricsServiceRequest) -> UpdateResult:
        """Apply every data point of an OTLP metrics request."""
        result = UpdateResult()
        now = self._clock()
        with self.lock:
            for rm in request.resource_metrics:
                rattrs = [(kv.key, value_text(kv.value)) for kv in rm.resource.attributes]
                base, target = self._job_instance(rattrs, now)
                res_pairs = rattrs if self._resource_to_labels else None
                for sm in rm.scope_metrics:
                    ctx = dict(base)
                    scope = sm.scope
                    if scope.name:
                        ctx["otel_scope_name"] = scope.name
                    if scope.version:
                        ctx["otel_scope_version"] = scope.version
                    scope_entry = self._scope_info(scope.attributes, ctx, now) if scope.attributes else None
                    ctx.update(self._const)
                    delta = False
                    for m in sm.metrics:
                        delta = self._metric(m, ctx, res_pairs, now, result) or delta
                    if delta:
                        for entry in (target, scope_entry):
                            if entry is not None:
                                entry[2] = True
            if now - self._last_sweep >= min(self._expiration, _SWEEP_EVERY):
                # Scrapes expire series too; this keeps memory bounded when nobody scrapes.
                self._expire(now)
            if len(self._label_names) > _CACHE_LIMIT:
                self._label_names.clear()
            if len(self._names) > _CACHE_LIMIT:
                self._names.clear()
            if len(self._les) > _CACHE_LIMIT:
                self._les.clear()
        return result

    def _job_instance(self, rattrs: list[tuple[str, str]], now: float) -> tuple[dict[str, str], list[Any] | None]:
        """`job`/`instance` from service.namespace/name/instance.id; the rest goes to `target_info` (its entry)."""
        rdict = dict(rattrs)
        base: dict[str, str] = {}
        name, ns = rdict.get("service.name"), rdict.get("service.namespace")
        if name is not None or ns is not None:
            base["job"] = f"{ns}/{name or ''}" if ns else (name or "")
        base["instance"] = rdict.get("service.instance.id", "")
        others = [(k, v) for k, v in rattrs if k not in JOB_INSTANCE_ATTRIBUTES]
        if not others:
            return base, None
        labels = join_labels(others, self._label_names)
        labels.update(base)
        return base, _refresh(self._targets, (base.get("job", ""), base["instance"]), labels, now)

    def _scope_info(self, attributes: Iterable[KeyValue], ctx: dict[str, str], now: float) -> list[Any]:
        labels = join_labels(((kv.key, value_text(kv.value)) for kv in attributes), self._label_names)
        for k in ("otel_scope_name", "otel_scope_version"):
            if k in ctx:
                labels[k] = ctx[k]
        return _refresh(self._scopes, tuple(sorted(labels.items())), labels, now)

    def _family(self, m: Metric, shape: Shape, result: UpdateResult) -> Family | str:
        """The family of `m`, or why its points are refused (`invalid_name`, `name_conflict`)."""
        key = (m.name, m.unit, shape)
        name = self._names.get(key)
        if name is None:
            if _HAS_WORD.search(m.name) is None:
                name = ""
            else:
                name = metric_name(m.name, m.unit, shape, namespace=self._namespace, add_suffixes=self._add_suffixes)
            self._names[key] = name
        if not name or name == "_":
            result.conflicts.append(f"{m.name[:100]!r} has no usable Prometheus name (no letter or digit)")
            return "invalid_name"
        fam = self.families.get(name)
        if fam is not None:
            if fam.shape.prom_type != shape.prom_type:
                result.conflicts.append(f"{m.name} ({shape.prom_type}) vs {name} ({fam.shape.prom_type})")
                return "name_conflict"
            if fam.help_is_fallback and m.description:
                fam.help, fam.help_is_fallback = m.description, False
            return fam
        claims = claimed_names(name, shape)
        if not VALID_METRIC_NAME.match(claims[0]):
            # `_total` without suffixes: a counter family whose name without `_total` is empty
            result.conflicts.append(f"{m.name[:100]!r} as {name} has no usable Prometheus family name")
            return "invalid_name"
        taken = [c for c in claims if c in self._claims]
        if taken:
            result.conflicts.append(f"{m.name} as {name} clashes with {self._claims[taken[0]]}")
            return "name_conflict"
        fam = Family(name, shape, m.description or m.name, not m.description,
                     unit_metadata(name, m.unit, shape), claims)
        for c in claims:
            self._claims[c] = name
        self.families[name] = fam
        return fam

    def _metric(self, m: Metric, ctx: dict[str, str], res_pairs: list[tuple[str, str]] | None, now: float,
                result: UpdateResult) -> bool:
        """Apply the points of one metric; True when they were delta points (some applied)."""
        points: Sequence[NumberDataPoint | HistogramDataPoint | SummaryDataPoint]
        kind = m.WhichOneof("data")
        if kind == "gauge":
            shape, temporality, points = Shape.GAUGE, CUMULATIVE, m.gauge.data_points
        elif kind == "sum":
            shape = Shape.COUNTER if m.sum.is_monotonic else Shape.UPDOWN
            temporality, points = m.sum.aggregation_temporality, m.sum.data_points
        elif kind == "histogram":
            shape, temporality, points = Shape.HISTOGRAM, m.histogram.aggregation_temporality, m.histogram.data_points
        elif kind == "summary":
            shape, temporality, points = Shape.SUMMARY, CUMULATIVE, m.summary.data_points
        elif kind == "exponential_histogram":
            result.skip("exponential_histogram", len(m.exponential_histogram.data_points))
            return False
        else:
            return False
        if not points:
            return False
        if temporality != DELTA and temporality != CUMULATIVE:
            result.skip("unspecified_temporality", len(points))
            return False
        fam = self._family(m, shape, result)
        if isinstance(fam, str):
            result.skip(fam, len(points))
            return False
        delta = temporality == DELTA
        applied = result.applied
        series_map = fam.series
        label_names = self._label_names
        for dp in points:
            if res_pairs:
                merged = dict(res_pairs)
                merged.update((kv.key, value_text(kv.value)) for kv in dp.attributes)
                labels = join_labels(merged.items(), label_names)
            elif dp.attributes:
                labels = join_labels([(kv.key, value_text(kv.value)) for kv in dp.attributes], label_names)
            else:
                labels = {}
            labels.update(ctx)
            if shape is Shape.HISTOGRAM:
                labels.pop("le", None)
            elif shape is Shape.SUMMARY:
                labels.pop("quantile", None)
            key = tuple(sorted(labels.items()))
            series = series_map.get(key)
            if dp.flags & NO_RECORDED_VALUE:
                # The producer says this stream ended: drop it so Prometheus marks it stale.
                if series is not None:
                    del series_map[key]
                    self._n_series -= 1
                result.applied += 1
                continue
            if series is None and not self._room(now):
                result.skip("series_limit")
                continue
            if shape is Shape.HISTOGRAM:
                reason = self._histogram(series_map, key, series, labels, dp, delta, now)
            elif shape is Shape.SUMMARY:
                reason = self._summary(series_map, key, series, labels, dp, now)
            else:
                reason = self._number(series_map, key, series, labels, dp, shape, delta, now)
            if reason is None:
                result.applied += 1
            else:
                result.skip(reason)
        return delta and result.applied > applied

    def _room(self, now: float) -> bool:
        """Whether a new series fits under max_series; at the limit, series idle past `expiration` give way
        first, delta-derived ones included (at most one such sweep per second: it visits every series)."""
        limit = self._max_series
        if limit is None or self._n_series < limit:
            return True
        if now - self._last_pressure_sweep >= _PRESSURE_SWEEP_EVERY:
            self._last_pressure_sweep = now
            # Called in the middle of an update: families emptied here stay until the next sweep,
            # since the family being updated may be one of them.
            self._expire(now, delta_expiration=self._expiration, keep_families=True)
        return self._n_series < limit

    # --- per point kinds --------------------------------------------------------
    def _new_series(self, series_map: dict[Any, Series], key: Any, labels: dict[str, str], dp: Any,
                    now: float, delta: bool = False) -> Series:
        s = Series(labels, now, delta)
        start = dp.start_time_unix_nano
        s.created = start / 1e9 if start else (dp.time_unix_nano / 1e9 if dp.time_unix_nano else self._wall())
        series_map[key] = s
        self._n_series += 1
        return s

    @staticmethod
    def _order(s: Series, start: int, t: int, delta: bool) -> str | None:
        """Whether a point is older than what the series holds (None: apply it); resets move `created`."""
        if delta:
            if t and t == s.time and start == s.start:
                return "duplicate"
            return None
        if start and s.start and start != s.start:
            if start < s.start:
                return "out_of_order"  # from before the last reset
            s.created = start / 1e9     # producer restarted: a counter reset
            return None
        if t and s.time and t < s.time:
            return "out_of_order"
        return None

    def _number(self, series_map: dict[Any, Series], key: Any, s: Series | None, labels: dict[str, str], dp: Any,
                shape: Shape, delta: bool, now: float) -> str | None:
        which = dp.WhichOneof("value")
        if which is None:
            return "invalid_point"
        v = dp.as_double if which == "as_double" else float(dp.as_int)
        start, t = dp.start_time_unix_nano, dp.time_unix_nano
        if s is None:
            s = self._new_series(series_map, key, labels, dp, now, delta)
            s.value = v
        else:
            reason = self._order(s, start, t, delta)
            if reason is not None:
                return reason
            s.value = s.value + v if delta else v
            s.updated = now
            s.delta = delta
        s.start, s.time = start, t
        if shape is Shape.COUNTER and dp.exemplars:
            s.exemplar = exemplars.latest(dp.exemplars, self._label_names)
        return None

    def _histogram(self, series_map: dict[Any, Series], key: Any, s: Series | None, labels: dict[str, str], dp: Any,
                   delta: bool, now: float) -> str | None:
        counts = dp.bucket_counts
        bounds = tuple(dp.explicit_bounds) if counts else ()
        if counts and len(counts) != len(bounds) + 1:
            return "invalid_point"
        cum = tuple(itertools.accumulate(counts[:-1])) if counts else ()
        count = dp.count
        total: float | None = dp.sum if dp.HasField("sum") else None
        if total is not None and (total < 0 or (dp.HasField("min") and dp.min < 0)):
            total = None  # the spec exposes _sum only when it is positive and monotonic
        start, t = dp.start_time_unix_nano, dp.time_unix_nano
        if s is None:
            s = self._new_series(series_map, key, labels, dp, now, delta)
        else:
            reason = self._order(s, start, t, delta)
            if reason is not None:
                return reason
            old = s.hist
            if delta and old is not None and old[0] == bounds:
                cum = tuple(a + b for a, b in zip(old[2], cum))
                count += old[3]
                total = None if total is None or old[4] is None else total + old[4]
            elif old is not None and old[0] != bounds:
                s.bucket_exemplars = None  # new bucket layout: old exemplars no longer line up
            s.updated = now
            s.delta = delta
        s.start, s.time = start, t
        les = self._les.get(bounds)
        if les is None:
            les = tuple(floatToGoString(b) for b in bounds) + ("+Inf",)
            self._les[bounds] = les
        shown = s.hist[5] if s.hist is not None and s.hist[0] == bounds else None
        if dp.exemplars:
            if s.bucket_exemplars is None:
                s.bucket_exemplars = [None] * (len(bounds) + 1)
            shown = exemplars.per_bucket(s.bucket_exemplars, bounds, dp.exemplars, self._label_names)
        s.hist = (bounds, les, cum, count, total, shown)
        return None

    def _summary(self, series_map: dict[Any, Series], key: Any, s: Series | None, labels: dict[str, str], dp: Any,
                 now: float) -> str | None:
        start, t = dp.start_time_unix_nano, dp.time_unix_nano
        if s is None:
            s = self._new_series(series_map, key, labels, dp, now)
        else:
            reason = self._order(s, start, t, False)
            if reason is not None:
                return reason
            s.updated = now
        s.start, s.time = start, t
        qv = sorted((q.quantile, q.value) for q in dp.quantile_values)
        total = dp.sum if dp.sum >= 0 else None
        s.hist = (tuple(floatToGoString(q) for q, _ in qv), tuple(v for _, v in qv), dp.count, total)
        return None

    # --- read side ---------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Expire stale series, then list what a scrape renders (safe from any thread)."""
        now = self._clock()
        with self.lock:
            self._expire(now)
            families = [FamilyView(f.name, f.shape, f.help, f.unit, list(f.series.values()))
                        for f in self.families.values()]
            targets = [v[0] for v in self._targets.values()]
            scopes = [v[0] for v in self._scopes.values()]
        return Snapshot(families, targets, scopes)

    def _expire(self, now: float, *, delta_expiration: float | None = None, keep_families: bool = False) -> None:
        """Remove series not updated for `expiration` (delta-derived ones: `delta_expiration`)."""
        self._last_sweep = now
        cutoff = now - self._expiration
        delta_cutoff = now - (self._delta_expiration if delta_expiration is None else delta_expiration)
        for name in list(self.families):
            fam = self.families[name]
            # delta_cutoff <= cutoff: the first test settles nearly every series
            dead = [k for k, s in fam.series.items()
                    if s.updated < cutoff and (not s.delta or s.updated < delta_cutoff)]
            for k in dead:
                del fam.series[k]
            self._n_series -= len(dead)
            if not fam.series and not keep_families:
                # An empty family frees its names: a later metric may use them with another type.
                del self.families[name]
                for c in fam.claims:
                    if self._claims.get(c) == name:
                        del self._claims[c]
        tables: tuple[dict[Any, list[Any]], ...] = (self._targets, self._scopes)  # they differ only in key type
        for table in tables:
            for k in [k for k, v in table.items() if v[1] < (delta_cutoff if v[2] else cutoff)]:
                del table[k]

    def series_count(self) -> int:
        """Series held right now (before expiry), for the exporter's self-metric."""
        with self.lock:
            return self._n_series + len(self._targets) + len(self._scopes)


def _refresh(table: dict[Any, list[Any]], key: Any, labels: dict[str, str], now: float) -> list[Any]:
    """Record an info series (`target_info`, `otel_scope_info`) as seen now; a delta mark is kept."""
    entry = table.get(key)
    if entry is None:
        entry = table[key] = [labels, now, False]
    else:
        entry[0], entry[1] = labels, now
    return entry


__all__ = [
    "REJECT_REASONS",
    "SKIP_REASONS",
    "Family",
    "FamilyView",
    "MetricStore",
    "Series",
    "Shape",
    "Snapshot",
    "UpdateResult",
    "claimed_names",
]

"""`cardinality_limit`: caps the number of series per metric so a backend's memory stays bounded.

Why: one attribute carrying a user, session or request id turns a metric into
millions of series, and Prometheus pays for each one. This processor remembers,
per metric name, the series it has let through (a series is the metric's
resource, scope and data-point attribute set) up to `max_series_per_metric`
(or the metric's entry in `limits`). Series unseen for `series_ttl` age out
and free their slot.

Beyond the limit, points of new series are folded into one overflow series per
metric whose only attribute is `otel.metric.overflow="true"`, as the
OpenTelemetry metrics SDK does, so totals stay right:

- sums and histograms (explicit and exponential) are added: all overflowing
  points of a metric in one request become a single point, so the series
  count stays at limit + 1 and the sum over all series is unchanged. For
  cumulative data the overflow point is the sum of the overflowing series'
  latest totals in the request (exact when, as SDKs do, every series is
  reported every interval; a series repeated within one request counts once,
  at its latest point);
- gauges keep the latest overflowing point; summaries add count and sum and
  drop their quantiles (they cannot be merged).

`action: drop` drops those points instead (counted). Before counting,
`drop_attributes` removes named data-point attributes and
`max_attribute_value_length` truncates long string values; points that become
identical series are merged by the same rules.

Self-metrics (per processor, pipeline and metric): points folded, points
dropped, and current series of each metric that has hit its limit or has its
own entry in `limits`.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from pipeline.component import (
    Consumer,
    Host,
    ProcessorFactory,
    Settings,
    Stability,
    acknowledges,
)
from pipeline.config.types import Duration, Issue
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.pointmerge import attribute_fingerprints, fold_groups, merge_points
from pipeline.serieslimit import SeriesLimiter, SeriesSet
from pipeline.wire import encode_varint, ld_tag, length_delimited

OVERFLOW_KEY = "otel.metric.overflow"
_OVERFLOW_ATTR = KeyValue(key=OVERFLOW_KEY, value=AnyValue(string_value="true"))
_OVERFLOW_FPS = frozenset({
    _OVERFLOW_ATTR.SerializeToString(),
    KeyValue(key=OVERFLOW_KEY, value=AnyValue(bool_value=True)).SerializeToString(),
})
_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_KEY_TAG = encode_varint(ld_tag(KeyValue.DESCRIPTOR, "key"))
DEFAULT_SERIES_TTL = Duration(3600.0)
MAX_METRIC_LABELS = 1000  # distinct metric names in this processor's own self-metric labels

FOLDED_METRIC = "processor_cardinality_limit_folded_points"
DROPPED_METRIC = "processor_cardinality_limit_dropped_points"
SERIES_METRIC = "processor_cardinality_limit_series"


@dataclass(frozen=True, slots=True, kw_only=True)
class CardinalityLimitConfig:
    max_series_per_metric: int = 2000
    limits: dict[str, int] = field(default_factory=dict)
    series_ttl: Duration = DEFAULT_SERIES_TTL
    action: Literal["fold", "drop"] = "fold"
    drop_attributes: tuple[str, ...] = ()
    max_attribute_value_length: int = 0

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.max_series_per_metric < 1:
            out.append(Issue("max_series_per_metric", "must be at least 1"))
        for name, n in self.limits.items():
            if n < 0:
                out.append(Issue(f"limits.{name}", "must not be negative (0 folds every point of the metric)"))
        if self.series_ttl <= 0:
            out.append(Issue("series_ttl", "must be greater than 0, e.g. '1h'"))
        if self.max_attribute_value_length < 0:
            out.append(Issue("max_attribute_value_length", "must not be negative (0 disables truncation)"))
        for i, key in enumerate(self.drop_attributes):
            if not key:
                out.append(Issue(f"drop_attributes[{i}]", "must not be empty"))
        return out


class CardinalityLimitProcessor:
    """Limits series per metric name; see the module docstring."""

    mutates_data = True

    def __init__(self, settings: Settings, cfg: CardinalityLimitConfig, next_consumer: Consumer) -> None:
        self.settings = settings
        self.cfg = cfg
        self._next = next_consumer
        self._clock: Callable[[], float] = settings.clock
        self._limiter = SeriesLimiter(cfg.max_series_per_metric, float(cfg.series_ttl), cfg.limits)
        self._sweep_every = self._limiter.sweep_every
        self._states = self._limiter.states
        self._drop_keys = frozenset(cfg.drop_attributes)
        # A serialized KeyValue starts with its key: the key field's tag, the key's length, the key.
        self._drop_needles = tuple(length_delimited(_KEY_TAG, k.encode()) for k in self._drop_keys)
        self._max_len = cfg.max_attribute_value_length
        self._edits = bool(self._drop_keys) or self._max_len > 0
        self._task: asyncio.Task[None] | None = None
        self._log = RateLimitedLog(settings.logger)
        self._obs = settings.telemetry.processor(settings)
        tel = settings.telemetry
        self._labels = (str(settings.id), settings.pipeline)
        self._folded = tel.counter(FOLDED_METRIC)
        self._dropped = tel.counter(DROPPED_METRIC)
        self._series_gauge = tel.gauge(SERIES_METRIC)
        self._metric_labels: set[str] = set()

    @property
    def acknowledges(self) -> bool:
        """Hands data straight on: answers when downstream does (end-to-end acknowledgement)."""
        return acknowledges(self._next)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._sweeper(), name=f"cardinality_limit {self.settings.id}")

    async def shutdown(self) -> None:
        """Nothing is buffered; stop the sweeper. Safe without start and safe twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_every)
            self.expire()

    # -- data path ------------------------------------------------------------------------------

    async def consume(self, payload: Payload) -> None:
        result = self.process(payload)
        if result is not None:
            await self._next.consume(result)

    def process(self, payload: Payload) -> Payload | None:
        now = self._clock()
        msg = payload.message  # read-only until something changes; then mark_changed() drops the bytes
        changed = False
        folded: dict[str, int] = {}
        dropped: dict[str, int] = {}
        touched: set[str] = set()
        emptied = False
        for rm in msg.resource_metrics:  # type: ignore[union-attr]
            rfp = rm.resource.SerializeToString()
            for sm in rm.scope_metrics:
                stream = hash((rfp, sm.scope.SerializeToString()))
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is None:
                        continue
                    data = getattr(metric, kind)
                    if not data.data_points:
                        continue
                    name = metric.name
                    state = self._limiter.metric(name, now)
                    touched.add(name)
                    n_over, edited = self._limit(state, kind, data, stream, now)
                    changed = changed or edited
                    if n_over:
                        if self.cfg.action == "fold":
                            folded[name] = folded.get(name, 0) + n_over
                        else:
                            dropped[name] = dropped.get(name, 0) + n_over
                            emptied = emptied or not data.data_points
        self._record(folded, dropped, touched)
        if emptied:
            _prune_metrics(msg)
        if changed:
            payload.mark_changed()
        return payload if payload.items else None

    def _limit(self, state: SeriesSet, kind: str, data: Any, stream: int, now: float) -> tuple[int, bool]:
        """Admit, fold or drop the points of one metric; returns (points overflowed, whether anything changed)."""
        points = data.data_points
        admit = self._limiter.admit
        edits = self._edits
        overflow: list[int] = []
        groups: dict[bytes, list[int]] | None = {} if edits else None
        edited = False
        origins: list[bytes] = []  # each point's identity before edits (series repeated in one request count once)
        if edits:
            origins = attribute_fingerprints(kind, data)
            needles, max_len = self._drop_needles, self._max_len
            for i, fp in enumerate(origins):
                # Only points whose serialized attributes could hold a dropped key or a long value are walked.
                if (max_len and len(fp) > max_len) or any(n in fp for n in needles):
                    edited = self._edit(points[i].attributes) or edited
        fps = attribute_fingerprints(kind, data) if edited or not origins else origins
        for i, fp in enumerate(fps):
            if fp in _OVERFLOW_FPS:
                overflow.append(i)  # an upstream overflow point joins ours
                continue
            if not admit(state, (stream, fp), now):
                overflow.append(i)
                continue
            if groups is not None:
                groups.setdefault(fp, []).append(i)
        if not overflow and not (groups and len(groups) < len(points) - len(overflow)):
            return 0, edited
        if not origins:
            origins = fps
        # Summaries are cumulative by definition; gauges have no temporality.
        cumulative = kind == "summary" or (kind != "gauge" and data.aggregation_temporality == _CUMULATIVE)
        remove: list[int] = fold_groups(kind, cumulative, points, groups.values(), origins) if groups else []
        if overflow:
            state.limited = True
            if self.cfg.action == "fold":
                target = points.add()
                merge_points(kind, cumulative, target, [(origins[i], points[i]) for i in overflow])
                del target.attributes[:]
                target.attributes.append(_OVERFLOW_ATTR)
            remove.extend(overflow)
        for i in sorted(remove, reverse=True):
            del points[i]
        return len(overflow), True

    def _edit(self, attrs: Any) -> bool:
        """Apply drop_attributes and truncation to one point's attributes; True if anything changed."""
        changed = False
        drop = self._drop_keys
        if drop:
            for j in range(len(attrs) - 1, -1, -1):
                if attrs[j].key in drop:
                    del attrs[j]
                    changed = True
        limit = self._max_len
        if limit:
            for kv in attrs:
                v = kv.value
                if v.WhichOneof("value") == "string_value" and len(v.string_value) > limit:
                    v.string_value = v.string_value[:limit]
                    changed = True
        return changed

    def expire(self, now: float | None = None) -> int:
        """Age out every series silent for series_ttl; forget metrics with none left. Returns series removed."""
        now = self._clock() if now is None else now
        removed, forgotten = self._limiter.expire(now)
        for name in forgotten:
            if name in self._metric_labels:
                with contextlib.suppress(KeyError):
                    self._series_gauge.remove(*self._labels, name)
                self._metric_labels.discard(name)
        for name, st in self._limiter:
            if st.limited:
                self._set_series_gauge(name, st)
        return removed

    def series_count(self, metric: str) -> int:
        return self._limiter.series_count(metric)

    # -- self-metrics ------------------------------------------------------------------------------

    def _label(self, name: str) -> str | None:
        if name in self._metric_labels:
            return name
        if len(self._metric_labels) < MAX_METRIC_LABELS:
            self._metric_labels.add(name)
            return name
        return None

    def _set_series_gauge(self, name: str, st: SeriesSet) -> None:
        label = self._label(name)
        if label is not None:
            self._series_gauge.labels(*self._labels, label).set(len(st.series))

    def _record(self, folded: dict[str, int], dropped: dict[str, int], touched: set[str]) -> None:
        for name, n in folded.items():
            self._folded.labels(*self._labels, self._label(name) or "_other").inc(n)
        for name, n in dropped.items():
            self._dropped.labels(*self._labels, self._label(name) or "_other").inc(n)
            self._obs.dropped(n, "cardinality_limit")
        for name in touched:
            st = self._states[name]
            if st.limited:
                self._set_series_gauge(name, st)
        if folded or dropped:
            self._log.warning("metrics over their series limit", key="over",
                              extra={"action": self.cfg.action, "metrics": sorted({*folded, *dropped})[:20]})


def _prune_metrics(msg: Any) -> None:
    """Remove metrics, scopes and resources left without data points by `action: drop`."""
    rms = msg.resource_metrics
    for ri in range(len(rms) - 1, -1, -1):
        sms = rms[ri].scope_metrics
        for si in range(len(sms) - 1, -1, -1):
            ms = sms[si].metrics
            for mi in range(len(ms) - 1, -1, -1):
                kind = ms[mi].WhichOneof("data")
                if kind is not None and not getattr(ms[mi], kind).data_points:
                    del ms[mi]
            if not ms:
                del sms[si]
        if not sms:
            del rms[ri]


def create(settings: Settings, cfg: CardinalityLimitConfig, next_consumer: Consumer) -> CardinalityLimitProcessor:
    return CardinalityLimitProcessor(settings, cfg, next_consumer)


FACTORY = ProcessorFactory(
    type="cardinality_limit",
    config_type=CardinalityLimitConfig,
    signals={Signal.METRICS: Stability.ALPHA},
    create=create,
    description="Caps series per metric; points of new series beyond the limit fold into an overflow series.",
)

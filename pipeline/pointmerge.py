"""Merging metric data points into one: overflow series, and points that became one series.

Two processors merge points, and both must keep totals right:

- cardinality_limit folds the points of series beyond a metric's limit into one
  overflow series (`otel.metric.overflow="true"`), and merges points that its
  attribute edits made identical (`fold_groups`);
- uuid_normalize merges points that normalization made one series: 200 routes
  `/v1/agents/<uuid>/runs` are the one series `/v1/agents/{uuid}/runs`. Left
  apart they are duplicates of one series, and an exporter can keep only one
  of them (the Prometheus exporter applied 1 of 200 StatsD increments)
  (`merge_same_series`).

How points merge (`merge_points`): sums and counts add; explicit-bucket
histograms add bucket by bucket (`fold_groups` re-buckets points with another
layout by their upper bounds, `merge_same_series` never has to); exponential
histograms are brought to a common scale (downscaled further until they fit
`MAX_EXP_BUCKETS`), which is exact, only coarser; summaries add count and sum
and drop their quantiles (the quantiles of a union cannot be computed from the
parts; `_count` and `_sum` alone are still a valid summary); gauges keep the
latest point. Cumulative data counts each origin series once, at its latest
point, and the merged point starts at the earliest start: the total since then
of every series it stands for.

What is one series for `merge_same_series`: points of one Metric message (so the
same resource, scope, name, type, unit and temporality) whose attributes are
equal, and further (separate Metric messages are not merged with each other:
a producer writes one per instrument and scope, and a batch of several exports
keeps one per export, which exporters apply in turn):

- delta sums and histograms: the same window (start and time). A window's points
  add up; windows stay separate points, which a delta consumer adds itself
  (the Prometheus exporter accumulates deltas), so a delta backend keeps its
  timeline;
- cumulative sums, histograms and summaries: any start. The origin of a point is
  its attribute set before normalization. The merged total is exact when every
  original series is reported in every export, as SDKs do with cumulative
  temporality. Nothing stateless can do better: a series a request leaves out
  (an SDK that forgets idle series, a restart) is not in the merged total, which
  then drops and reads as a counter reset in Prometheus. Keeping the points
  apart instead is always wrong, since only one of them can be kept;
- explicit-bucket histograms: the same bounds. Other bounds are kept apart as
  they arrived rather than re-bucketed into a distribution nobody measured;
- metrics of unspecified temporality are left alone (exporters refuse them).

The merged point takes the place of the first of its parts (order is kept),
with that part's attributes, the exemplars of every part it counts (exporters
choose among them), and the "no recorded value" flag only when every part had
it (then it is the latest part: the series ended).

Series identity is computed without decoding attributes in Python: skeleton
message types (`pipeline.wire.skeleton`) that keep a point's attributes as
serialized bytes let the C protobuf parser cut them out, so a point's identity
is its sorted serialized KeyValues joined. The metrics of a request are cut out
as bytes by the metrics envelope view (`pipeline.wire.METRICS_ENVELOPE`).
"""
from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    ExponentialHistogram,
    Gauge,
    Histogram,
    Metric,
    Sum,
    Summary,
)

from pipeline.wire import (
    BYTES,
    METRIC_KINDS,
    METRICS_ENVELOPE,
    MetricsEnvelope,
    Skeleton,
    skeleton,
)

_NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE
_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
MAX_EXP_BUCKETS = 160
_KINDS: dict[str, type[Message]] = {"gauge": Gauge, "sum": Sum, "histogram": Histogram,
                                    "exponential_histogram": ExponentialHistogram, "summary": Summary}
assert tuple(_KINDS) == METRIC_KINDS

MetricKey = tuple[int, int, int]  # (resource, scope, metric) index in a request


# -- merging points -----------------------------------------------------------------------------------

def merge_points(kind: str, cumulative: bool, target: Any, parts: list[tuple[bytes, Any]], *,
                 carry: bool = False) -> None:
    """Merge `parts` (origin identity, point) into the fresh point `target` (attributes set by the caller).

    Cumulative data counts each origin series once, at its latest point;
    everything else adds every point. Gauges keep the latest point. `carry`
    (uuid_normalize: the merged point stands for its parts) also keeps the
    exemplars of the points counted, and the "no recorded value" flag when
    every part has it; cardinality_limit's overflow point does without both.
    """
    recorded = [(o, p) for o, p in parts if not p.flags & _NO_RECORDED_VALUE]
    if kind == "gauge" or (carry and not recorded):
        latest = max((p for _, p in recorded or parts), key=lambda p: p.time_unix_nano)
        attrs = list(target.attributes)
        target.CopyFrom(latest)
        del target.attributes[:]
        target.attributes.extend(attrs)
        return
    recorded = recorded or parts
    if cumulative:
        by_origin: dict[bytes, Any] = {}
        for origin, p in recorded:
            cur = by_origin.get(origin)
            if cur is None or p.time_unix_nano >= cur.time_unix_nano:
                by_origin[origin] = p
        points = list(by_origin.values())
    else:
        points = [p for _, p in recorded]
    starts = [p.start_time_unix_nano for p in points if p.start_time_unix_nano]
    if starts:
        target.start_time_unix_nano = min(starts)
    target.time_unix_nano = max(p.time_unix_nano for p in points)
    if kind == "sum":
        _merge_number(target, points)
    elif kind == "histogram":
        _merge_histogram(target, points)
    elif kind == "exponential_histogram":
        _merge_exponential(target, points)
    elif kind == "summary":
        target.count = sum(p.count for p in points)
        target.sum = math.fsum(p.sum for p in points)
    if carry and kind != "summary":  # summary points have no exemplars
        for p in points:
            target.exemplars.extend(p.exemplars)


def _merge_number(target: Any, points: list[Any]) -> None:
    if all(p.WhichOneof("value") != "as_double" for p in points):
        target.as_int = sum(p.as_int for p in points)
    else:
        target.as_double = math.fsum(p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                                     for p in points)


def _merge_min_max(target: Any, points: list[Any]) -> None:
    mins = [p.min for p in points if p.HasField("min")]
    maxs = [p.max for p in points if p.HasField("max")]
    if mins:
        target.min = min(mins)
    if maxs:
        target.max = max(maxs)


def _merge_histogram(target: Any, points: list[Any]) -> None:
    bounds = list(points[0].explicit_bounds)
    counts = [0] * (len(bounds) + 1)
    for p in points:
        pc = p.bucket_counts
        same = len(p.explicit_bounds) == len(bounds) and list(p.explicit_bounds) == bounds
        if same and len(pc) == len(counts):
            counts = list(map(operator.add, counts, pc))
        elif same:
            for j, c in enumerate(pc[: len(counts)]):
                counts[j] += c
        else:
            # Different bucket layout: move each bucket into the target bucket holding its upper bound.
            pb = list(p.explicit_bounds)
            for j, c in enumerate(pc):
                upper = pb[j] if j < len(pb) else math.inf
                counts[bisect.bisect_left(bounds, upper)] += c
    target.explicit_bounds.extend(bounds)
    target.bucket_counts.extend(counts)
    target.count = sum(p.count for p in points)
    if any(p.HasField("sum") for p in points):
        target.sum = math.fsum(p.sum for p in points)
    _merge_min_max(target, points)


def _merge_exponential(target: Any, points: list[Any]) -> None:
    scale = min(p.scale for p in points)
    pos: dict[int, int] = {}
    neg: dict[int, int] = {}
    for p in points:
        shift = p.scale - scale
        for side, acc in ((p.positive, pos), (p.negative, neg)):
            off = side.offset
            for j, c in enumerate(side.bucket_counts):
                if c:
                    k = (off + j) >> shift
                    acc[k] = acc.get(k, 0) + c
    # Downscale further until each side fits the usual bucket budget.
    while any(acc and max(acc) - min(acc) + 1 > MAX_EXP_BUCKETS for acc in (pos, neg)):
        scale -= 1
        pos = _halve(pos)
        neg = _halve(neg)
    target.scale = scale
    for side, acc in ((target.positive, pos), (target.negative, neg)):
        if acc:
            lo, hi = min(acc), max(acc)
            side.offset = lo
            side.bucket_counts.extend(acc.get(k, 0) for k in range(lo, hi + 1))
    target.count = sum(p.count for p in points)
    target.zero_count = sum(p.zero_count for p in points)
    target.zero_threshold = max(p.zero_threshold for p in points)
    if any(p.HasField("sum") for p in points):
        target.sum = math.fsum(p.sum for p in points)
    _merge_min_max(target, points)


def _halve(acc: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for k, c in acc.items():
        out[k >> 1] = out.get(k >> 1, 0) + c
    return out


def fold_groups(kind: str, cumulative: bool, points: Any, groups: Iterable[list[int]],
                origins: Sequence[bytes]) -> list[int]:
    """cardinality_limit: each group of 2+ point indices becomes one new point appended to `points`.

    Returns the indices of the merged points, for the caller to delete (with its own).
    """
    merged: list[int] = []
    for members in groups:
        if len(members) > 1:
            target = points.add()
            target.attributes.extend(points[members[0]].attributes)
            merge_points(kind, cumulative, target, [(origins[i], points[i]) for i in members])
            merged.extend(members)
    return merged


# -- series identity without decoding attributes ---------------------------------------------------------

if TYPE_CHECKING:
    # The shape of the skeleton messages built below (typing only: the classes are made at run time).
    class _SkeletonPoint(Protocol):
        attributes: Sequence[bytes]


# Data containers whose points keep only their attributes, as serialized KeyValues, and a Metric made
# of such containers (its `data` oneof kept, so a metric with two kinds reads as a decoder reads it).
_POINT_ATTRIBUTES = {"data_points": {"attributes": BYTES}}
_CONTAINERS: dict[str, Skeleton[Any]] = {kind: skeleton(cast(Descriptor, container.DESCRIPTOR), _POINT_ATTRIBUTES)
                                         for kind, container in _KINDS.items()}
_METRIC: Skeleton[Any] = skeleton(Metric.DESCRIPTOR, {kind: _POINT_ATTRIBUTES for kind in _KINDS})


def _joined(points: Iterable[_SkeletonPoint]) -> list[bytes]:
    out = []
    for p in points:
        a = p.attributes
        n = len(a)
        out.append(b"" if n == 0 else a[0] if n == 1 else b"".join(sorted(a)))
    return out


def attribute_fingerprints(kind: str, data: Any) -> list[bytes]:
    """Order-independent identity of each point's attribute set: its serialized KeyValues, sorted, joined."""
    return _joined(_CONTAINERS[kind].FromString(data.SerializeToString()).data_points)


def metric_fingerprints(metric: bytes) -> tuple[str | None, list[bytes]]:
    """The kind of a serialized Metric and the `attribute_fingerprints` of its points."""
    parsed = _METRIC.FromString(metric)
    kind = parsed.WhichOneof("data")
    return kind, ([] if kind is None else _joined(getattr(parsed, kind).data_points))


class MetricBytes:
    """The serialized bytes of each metric of a serialized metrics request, cut out by the C parser on first use."""

    __slots__ = ("_raw", "_tree")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._tree: MetricsEnvelope | None = None

    def _parsed(self) -> MetricsEnvelope:
        if self._tree is None:
            self._tree = METRICS_ENVELOPE.FromString(self._raw)
        return self._tree

    def items(self) -> Iterator[tuple[MetricKey, bytes]]:
        for ri, rm in enumerate(self._parsed().resource_metrics):
            for si, sm in enumerate(rm.scope_metrics):
                for mi, m in enumerate(sm.metrics):
                    yield (ri, si, mi), m

    def get(self, key: MetricKey) -> bytes | None:
        ri, si, mi = key
        rms = self._parsed().resource_metrics
        if ri < len(rms) and si < len(rms[ri].scope_metrics) and mi < len(rms[ri].scope_metrics[si].metrics):
            return rms[ri].scope_metrics[si].metrics[mi]
        return None


def needs_origins(request: ExportMetricsServiceRequest) -> bool:
    """Whether merging points of `request` could need their origins: a cumulative metric with 2+ points."""
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is None or kind == "gauge":
                    continue
                data = getattr(m, kind)
                if len(data.data_points) > 1 and (kind == "summary" or data.aggregation_temporality == _CUMULATIVE):
                    return True
    return False


def changed_metrics(before: MetricBytes, after: MetricBytes) -> list[MetricKey]:
    """The metrics of `after` whose bytes differ from the same metric of `before` (same request, edited)."""
    return [key for key, m in after.items() if before.get(key) != m]


# -- points that became one series (uuid_normalize) ----------------------------------------------------------

def merge_same_series(request: Callable[[], ExportMetricsServiceRequest], changed: Iterable[MetricKey],
                      before: MetricBytes | None, after: MetricBytes | None = None) -> int:
    """Merge, in the `changed` metrics of the request, the points that are one series (see the module docstring).

    `request` gives the decoded request, changed in place. With `after` (the
    request's own bytes) the series are told apart on the bytes, and the
    request is decoded only when some points are to be merged. `before` is the
    request as it was before the change, for the origin of cumulative points;
    without it each point counts as its own origin. Returns the number of
    points merged away (the request holds that many fewer).
    """
    removed = 0
    for key in changed:
        ri, si, mi = key
        metric: Any = None
        if after is not None:
            raw = after.get(key)
            if raw is None:
                continue
            kind, fps = metric_fingerprints(raw)
        else:
            metric = request().resource_metrics[ri].scope_metrics[si].metrics[mi]
            kind = metric.WhichOneof("data")
            fps = [] if kind is None or len(getattr(metric, kind).data_points) < 2 else \
                attribute_fingerprints(kind, getattr(metric, kind))
        if kind is None or len(set(fps)) == len(fps):
            continue
        if metric is None:
            metric = request().resource_metrics[ri].scope_metrics[si].metrics[mi]

        def origins(key: MetricKey = key, n: int = len(fps)) -> list[bytes]:
            old = before.get(key) if before is not None else None
            found = metric_fingerprints(old)[1] if old is not None else []
            return found if len(found) == n else [i.to_bytes(4, "big") for i in range(n)]

        removed += _merge_metric(kind, getattr(metric, kind), fps, origins)
    return removed


def _merge_metric(kind: str, data: Any, fps: list[bytes], origins: Callable[[], list[bytes]]) -> int:
    if kind == "gauge":
        delta = cumulative = False
    elif kind == "summary":
        delta, cumulative = False, True
    else:
        temporality = data.aggregation_temporality
        if temporality != _DELTA and temporality != _CUMULATIVE:
            return 0
        delta, cumulative = temporality == _DELTA, temporality == _CUMULATIVE
    points = data.data_points
    if len(points) != len(fps):  # the bytes and the message disagree: leave the metric as it is
        return 0
    plist = list(points)  # one wrapper per point, reused below
    groups: dict[bytes, list[int]] = {}
    for i, fp in enumerate(fps):
        groups.setdefault(fp, []).append(i)
    known: list[bytes] | None = None
    remove: list[int] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        for part in _split(kind, delta, plist, members):
            if len(part) < 2:
                continue
            if cumulative and known is None:
                known = origins()
            first = plist[part[0]]
            target = type(first)()
            target.attributes.extend(first.attributes)
            merge_points(kind, cumulative, target, [(known[i] if known is not None else b"", plist[i])
                                                    for i in part], carry=True)
            first.CopyFrom(target)
            remove.extend(part[1:])
    for i in sorted(remove, reverse=True):
        del points[i]
    return len(remove)


def _split(kind: str, delta: bool, points: list[Any], members: list[int]) -> Iterable[list[int]]:
    """Points of one attribute set that are still apart: other windows (delta), other bucket bounds."""
    if not delta and kind != "histogram":
        return (members,)
    parts: dict[tuple[int, int, int], list[int]] = {}
    layouts: list[list[float]] = []  # the distinct bucket bounds met, by index (nearly always one)
    for i in members:
        p = points[i]
        layout = 0
        if kind == "histogram":
            bounds = list(p.explicit_bounds)
            if bounds in layouts:
                layout = layouts.index(bounds)
            else:
                layout = len(layouts)
                layouts.append(bounds)
        key = (p.start_time_unix_nano, p.time_unix_nano, layout) if delta else (0, 0, layout)
        parts.setdefault(key, []).append(i)
    return parts.values()


__all__ = ["MAX_EXP_BUCKETS", "MetricBytes", "MetricKey", "attribute_fingerprints", "changed_metrics",
           "fold_groups", "merge_points", "merge_same_series", "metric_fingerprints", "needs_origins"]

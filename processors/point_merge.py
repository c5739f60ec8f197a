"""Merging metric data points into one: what cardinality_limit's overflow series holds.

Points folded into the overflow series (`otel.metric.overflow="true"`) must keep the
totals right: sums and counts add, histograms add bucket by bucket (re-bucketing
points with another layout by their upper bounds), exponential histograms are
brought to a common scale (downscaled further until they fit `MAX_EXP_BUCKETS`),
summaries add count and sum, gauges keep the latest point. Pure functions on
protobuf messages, kept apart from the processor's bookkeeping.
"""
from __future__ import annotations

import bisect
import math
import operator
from typing import Any

_NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE
MAX_EXP_BUCKETS = 160


def merge_points(kind: str, cumulative: bool, target: Any, parts: list[tuple[bytes, Any]]) -> None:
    """Merge `parts` (origin identity, point) into the fresh point `target` (attributes set by the caller).

    Cumulative data counts each origin series once, at its latest point;
    everything else adds every point. Gauges keep the latest point.
    """
    recorded = [(o, p) for o, p in parts if not p.flags & _NO_RECORDED_VALUE] or parts
    if kind == "gauge":
        latest = max((p for _, p in recorded), key=lambda p: p.time_unix_nano)
        attrs = list(target.attributes)
        target.CopyFrom(latest)
        del target.attributes[:]
        target.attributes.extend(attrs)
        return
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
    first = points[0].explicit_bounds
    bounds = list(first)
    counts = [0] * (len(bounds) + 1)
    for p in points:
        pc = p.bucket_counts
        if p.explicit_bounds == first and len(pc) == len(counts):
            counts = list(map(operator.add, counts, pc))
        elif p.explicit_bounds == first:
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

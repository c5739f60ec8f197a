"""OTLP exemplars → Prometheus (OpenMetrics) exemplars, per the compatibility spec.

Only histograms and monotonic sums carry exemplars (the store never asks for
others). Labels are `trace_id` and `span_id` (hex) plus the exemplar's filtered
attributes, the latter only when everything fits OpenMetrics' limit of 128
characters of label names and values: Prometheus refuses a whole scrape
over one oversized exemplar. For the same reason an id of another length than
OTLP's (16-byte trace ids, 8-byte span ids) is left out rather than written:
a 100-byte `trace_id` from a broken producer would otherwise cost every
scrape. A pull endpoint has room for one exemplar per bucket, so each bucket
shows the largest exemplar that fell in it, and a bucket without one repeats
the one carried up from the nearest lower bucket.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence

from opentelemetry.proto.metrics.v1.metrics_pb2 import Exemplar as OtlpExemplar
from prometheus_client.samples import Exemplar

from exporters.prometheus.naming import join_labels, value_text

LABELS_MAX_RUNES = 128  # OpenMetrics: label names + values of one exemplar, combined
TRACE_ID_BYTES, SPAN_ID_BYTES = 16, 8  # OTLP; anything else is not an id


def convert(e: OtlpExemplar, label_cache: dict[str, str] | None = None) -> Exemplar:
    labels: dict[str, str] = {}
    if len(e.trace_id) == TRACE_ID_BYTES:
        labels["trace_id"] = e.trace_id.hex()
    if len(e.span_id) == SPAN_ID_BYTES:
        labels["span_id"] = e.span_id.hex()
    if e.filtered_attributes:
        extra = join_labels(((kv.key, value_text(kv.value)) for kv in e.filtered_attributes), label_cache)
        for k in ("trace_id", "span_id"):
            extra.pop(k, None)
        size = sum(len(k) + len(v) for k, v in labels.items()) + sum(len(k) + len(v) for k, v in extra.items())
        if size <= LABELS_MAX_RUNES:
            labels.update(extra)
    value = e.as_double if e.WhichOneof("value") == "as_double" else float(e.as_int)
    return Exemplar(labels, value, e.time_unix_nano / 1e9 if e.time_unix_nano else None)


def latest(exemplars: Sequence[OtlpExemplar], label_cache: dict[str, str] | None = None) -> Exemplar:
    """The most recent exemplar of a counter point."""
    return max((convert(e, label_cache) for e in exemplars), key=lambda ex: ex.timestamp or 0.0)


def per_bucket(own: list[Exemplar | None], bounds: Sequence[float], exemplars: Sequence[OtlpExemplar],
               label_cache: dict[str, str] | None = None) -> tuple[Exemplar | None, ...]:
    """Merge a point's exemplars into `own` (one slot per bucket, updated in place); return what to expose."""
    fresh: dict[int, Exemplar] = {}
    for e in exemplars:
        ex = convert(e, label_cache)
        i = bisect.bisect_left(bounds, ex.value)  # OTLP buckets are upper-inclusive: (b[i-1], b[i]]
        if i not in fresh or ex.value > fresh[i].value:
            fresh[i] = ex
    for i, ex in fresh.items():
        own[i] = ex
    out: list[Exemplar | None] = []
    carried = None
    for slot in own:
        if slot is not None:
            carried = slot
        out.append(carried)
    return tuple(out)

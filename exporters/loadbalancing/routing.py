"""Cutting one serialized export request into one request per backend, from the wire bytes.

Only what routing needs is decoded. The request is parsed with an envelope view
(`pipeline.wire`: resources, scopes and items as bytes, in C); the key of each item is read
from its bytes (a span's trace id is its first field, bytes 2-18 as every encoder writes it), or
the key of each resource from its `service.name`. Items are then re-framed, unchanged, under
their own resource and scope in the request of the backend that owns their key, so a request
holding spans of many traces becomes one request per backend, each span in exactly one.

The per-item work is a slice, a CRC-32 and a table lookup, plus appending the item's framing;
a request whose items all go to one backend is passed on as the original bytes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from zlib import crc32

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from exporters.loadbalancing.ring import MASK
from pipeline.model import Signal
from pipeline.wire import (
    BYTES,
    LOGS_ENVELOPE,
    METRICS_ENVELOPE,
    TRACES_ENVELOPE,
    VALUE,
    count_items,
    decode_varint,
    encode_varint,
    ld_tag,
    length_delimited,
    skeleton,
)

#: Backend index → (request bytes, items). One entry whose bytes are the input: nothing was cut (its item
#: count is then not meaningful: the caller has the request's own).
Parts = dict[int, tuple[bytes, int]]
#: `split(raw, table, n)`: the request `raw` cut by `table` (bucket → backend index) over `n` backends.
Splitter = Callable[[bytes, Sequence[int], int], Parts]

SERVICE_NAME = "service.name"


class _Tags:
    """The field tags a signal's requests are rebuilt with (resources, their resource and scopes, items)."""

    def __init__(self, request: Any, resource_msg: Any, scope_msg: Any, resources: str, scopes: str,
                 items: str) -> None:
        self.resources = encode_varint(ld_tag(request.DESCRIPTOR, resources))
        self.resource = encode_varint(ld_tag(resource_msg.DESCRIPTOR, "resource"))
        self.scopes = encode_varint(ld_tag(resource_msg.DESCRIPTOR, scopes))
        self.resource_schema = encode_varint(ld_tag(resource_msg.DESCRIPTOR, "schema_url"))
        self.scope = encode_varint(ld_tag(scope_msg.DESCRIPTOR, "scope"))
        self.scope_schema = encode_varint(ld_tag(scope_msg.DESCRIPTOR, "schema_url"))
        self.item = encode_varint(ld_tag(scope_msg.DESCRIPTOR, items))


_TAGS = {
    Signal.TRACES: _Tags(ExportTraceServiceRequest, ResourceSpans, ScopeSpans, "resource_spans", "scope_spans",
                         "spans"),
    Signal.METRICS: _Tags(ExportMetricsServiceRequest, ResourceMetrics, ScopeMetrics, "resource_metrics",
                          "scope_metrics", "metrics"),
    Signal.LOGS: _Tags(ExportLogsServiceRequest, ResourceLogs, ScopeLogs, "resource_logs", "scope_logs",
                       "log_records"),
}
_ENVELOPES: dict[Signal, Any] = {Signal.TRACES: TRACES_ENVELOPE, Signal.METRICS: METRICS_ENVELOPE,
                                 Signal.LOGS: LOGS_ENVELOPE}

# Items are field 2 of their scope in all three signals; their framing (tag + length) for the
# common lengths is looked up rather than encoded per item.
_ITEM_TAG = _TAGS[Signal.TRACES].item
assert all(t.item == _ITEM_TAG for t in _TAGS.values())
_FRAMES = 1 << 14
_FRAME = [_ITEM_TAG + encode_varint(n) for n in range(_FRAMES)]
# A span's trace id: field 1, 16 bytes, written first by every encoder.
_TRACE_ID_PREFIX = encode_varint(ld_tag(Span.DESCRIPTOR, "trace_id")) + encode_varint(16)
_METRIC_NAME_TAG = encode_varint(ld_tag(Metric.DESCRIPTOR, "name"))
_LOG_TRACE_ID = skeleton(LogRecord.DESCRIPTOR, {"trace_id": VALUE})


def _frame(n: int) -> bytes:
    return _FRAME[n] if n < _FRAMES else _ITEM_TAG + encode_varint(n)


def _field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field, left out when empty (as protobuf leaves out proto3 defaults)."""
    return length_delimited(tag, data) if data else b""


def span_trace_id(span: bytes) -> bytes:
    """The trace id of a serialized span (bytes 2-18 when it leads, as every encoder writes it)."""
    if span[:2] == _TRACE_ID_PREFIX:
        return span[2:18]
    return Span.FromString(span).trace_id


def _log_key(record: bytes) -> bytes:
    """A log record's trace id; a record without one is keyed by its own bytes (spread, not grouped)."""
    tid: bytes = _LOG_TRACE_ID.FromString(record).trace_id
    return tid if tid and any(tid) else record


def _metric_key(metric: bytes) -> bytes:
    """A metric's name (field 1, first as every encoder writes it)."""
    if metric[:1] == _METRIC_NAME_TAG:
        n, i = decode_varint(metric, 1)
        return metric[i:i + n]
    return Metric.FromString(metric).name.encode()


def _finish(signal: Signal, raw: bytes, resources: list[list[bytes]], counts: list[int]) -> Parts:
    """The per-backend requests from each backend's encoded resources; the input itself when one backend has all."""
    used = [i for i, c in enumerate(counts) if c]
    if len(used) == 1:
        return {used[0]: (raw, counts[used[0]])}
    tag = _TAGS[signal].resources
    return {i: (b"".join([length_delimited(tag, r) for r in resources[i]]), counts[i]) for i in used}


def _by_item(signal: Signal, key: Callable[[bytes], bytes]) -> Splitter:
    """A splitter that routes every item (span, metric, log record) by `key(item bytes)`."""
    tags = _TAGS[signal]
    envelope = _ENVELOPES[signal]
    scopes_field, items_field = signal.scope_field, signal.items_field
    fast_spans = signal is Signal.TRACES

    def split(raw: bytes, table: Sequence[int], n: int) -> Parts:
        resources: list[list[bytes]] = [[] for _ in range(n)]
        counts = [0] * n
        for rs in getattr(envelope.FromString(raw), signal.resource_field):
            head = _field(tags.resource, rs.resource)
            tail = _field(tags.resource_schema, rs.schema_url.encode())
            scopes: list[list[bytes]] = [[] for _ in range(n)]
            for ss in getattr(rs, scopes_field):
                items = getattr(ss, items_field)
                if not items:
                    continue
                groups: list[list[bytes]] = [[] for _ in range(n)]
                if fast_spans:
                    for item in items:
                        tid = item[2:18] if item[:2] == _TRACE_ID_PREFIX else span_trace_id(item)
                        size = len(item)
                        groups[table[crc32(tid) & MASK]] += (_FRAME[size] if size < _FRAMES else _frame(size), item)
                else:
                    for item in items:
                        groups[table[crc32(key(item)) & MASK]] += (_frame(len(item)), item)
                scope_head = _field(tags.scope, ss.scope)
                scope_tail = _field(tags.scope_schema, ss.schema_url.encode())
                for i, g in enumerate(groups):
                    if g:
                        counts[i] += len(g) >> 1
                        scopes[i].append(length_delimited(tags.scopes, b"".join([scope_head, *g, scope_tail])))
            for i, s in enumerate(scopes):
                if s:
                    resources[i].append(b"".join([head, *s, tail]))
        parts = _finish(signal, raw, resources, counts)
        if signal is Signal.METRICS and len(parts) > 1:  # counted so far: metrics; the items are data points
            return {i: (b, count_items(ExportMetricsServiceRequest, b)) for i, (b, _) in parts.items()}
        return parts

    return split


class _ResourceView:
    """Each resource (ResourceSpans, ResourceMetrics, ResourceLogs) of a request as bytes, and its resource."""

    def __init__(self, request: Any, resource_msg: Any, field_name: str) -> None:
        self.requests = skeleton(request.DESCRIPTOR, {field_name: BYTES})
        self.resource = skeleton(resource_msg.DESCRIPTOR, {"resource": BYTES})
        self.field_name = field_name


_RESOURCE_VIEWS = {
    Signal.TRACES: _ResourceView(ExportTraceServiceRequest, ResourceSpans, "resource_spans"),
    Signal.METRICS: _ResourceView(ExportMetricsServiceRequest, ResourceMetrics, "resource_metrics"),
    Signal.LOGS: _ResourceView(ExportLogsServiceRequest, ResourceLogs, "resource_logs"),
}


def service_name(resource: bytes) -> bytes:
    """The `service.name` of a serialized Resource (b"" when it has none)."""
    for kv in Resource.FromString(resource).attributes:
        if kv.key == SERVICE_NAME:
            return kv.value.string_value.encode()
    return b""


def _by_resource(signal: Signal, key: Callable[[bytes], bytes]) -> Splitter:
    """A splitter that routes every resource, whole, by `key(its Resource bytes)`."""
    view = _RESOURCE_VIEWS[signal]
    request_type = signal.request_type

    def split(raw: bytes, table: Sequence[int], n: int) -> Parts:
        resources: list[list[bytes]] = [[] for _ in range(n)]
        counts = [0] * n
        keys: dict[bytes, int] = {}
        for rs in getattr(view.requests.FromString(raw), view.field_name):
            res = view.resource.FromString(rs).resource
            owner = keys.get(res)
            if owner is None:
                owner = keys[res] = table[crc32(key(res)) & MASK]
            resources[owner].append(rs)
            counts[owner] += 1
        parts = _finish(signal, raw, resources, counts)
        if len(parts) == 1:
            return parts  # the caller knows the item count of an uncut request
        return {i: (b, count_items(request_type, b)) for i, (b, _) in parts.items()}

    return split


def splitter(signal: Signal, key: str) -> Splitter:
    """The splitter for `signal` routed by `key` (`traceID`, `service`, `resource` or `metric`)."""
    if key == "service":
        return _by_resource(signal, service_name)
    if key == "resource" and signal is not Signal.TRACES:
        return _by_resource(signal, lambda resource: resource)
    if key == "traceID" and signal is Signal.TRACES:
        return _by_item(signal, span_trace_id)
    if key == "traceID" and signal is Signal.LOGS:
        return _by_item(signal, _log_key)
    if key == "metric" and signal is Signal.METRICS:
        return _by_item(signal, _metric_key)
    raise ValueError(f"routing_key '{key}' cannot route {signal.value}")

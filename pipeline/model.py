"""The in-memory unit of data: one OTLP export request per signal, plus metadata.

This plays the role of the Collector's pdata. A `Payload` holds the decoded
`Export*ServiceRequest` and, while nothing has changed it, the exact bytes it was
decoded from. Stages that only read (exporters, counting) never force a
re-encode; stages that mutate call `mutable()`, which drops the cached bytes.
Serialized OTLP requests concatenate into a valid merged request (protobuf
wire format), which lets the batch processor merge untouched requests without
decoding or encoding anything.
"""
from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from typing import Any, cast

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from pipeline import wire

ExportRequest = ExportTraceServiceRequest | ExportMetricsServiceRequest | ExportLogsServiceRequest
ExportResponse = ExportTraceServiceResponse | ExportMetricsServiceResponse | ExportLogsServiceResponse


class Signal(enum.Enum):
    """The three OTLP signals. The value is the pipeline-name prefix used in config."""

    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"

    @property
    def request_type(self) -> type[ExportRequest]:
        return _REQUEST_TYPES[self]

    @property
    def response_type(self) -> type[ExportResponse]:
        return _RESPONSE_TYPES[self]

    @property
    def item_name(self) -> str:
        """The item word of self-metric names: spans, metric_points, log_records."""
        return _ITEM_NAMES[self]

    @property
    def resource_field(self) -> str:
        return _FIELDS[self][0]

    @property
    def scope_field(self) -> str:
        return _FIELDS[self][1]

    @property
    def items_field(self) -> str:
        return _FIELDS[self][2]


_REQUEST_TYPES: dict[Signal, type[ExportRequest]] = {
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
    Signal.LOGS: ExportLogsServiceRequest,
}
_RESPONSE_TYPES: dict[Signal, type[ExportResponse]] = {
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
    Signal.LOGS: ExportLogsServiceResponse,
}
_ITEM_NAMES = {Signal.TRACES: "spans", Signal.METRICS: "metric_points", Signal.LOGS: "log_records"}
_FIELDS = {
    Signal.TRACES: ("resource_spans", "scope_spans", "spans"),
    Signal.METRICS: ("resource_metrics", "scope_metrics", "metrics"),
    Signal.LOGS: ("resource_logs", "scope_logs", "log_records"),
}


def metric_points(metric: Metric) -> int:
    """Number of data points in one metric, whatever its type."""
    kind = metric.WhichOneof("data")
    if kind is None:
        return 0
    return len(getattr(metric, kind).data_points)


def count_items(signal: Signal, msg: ExportRequest) -> int:
    """Spans, metric data points or log records in a decoded request (no per-item Python work);
    `wire.count_items` counts serialized requests."""
    rfield, sfield, ifield = _FIELDS[signal]
    if signal is Signal.METRICS:
        return sum(
            metric_points(m)
            for rm in getattr(msg, rfield)
            for sm in getattr(rm, sfield)
            for m in sm.metrics
        )
    return sum(len(getattr(s, ifield)) for r in getattr(msg, rfield) for s in getattr(r, sfield))


class Payload:
    """One export request in flight with its metadata (signal, item count, origin, arrival).

    Ownership passes downstream with `consume()`: after handing a payload on,
    the caller must not touch it again.
    """

    __slots__ = ("signal", "_message", "_raw", "items", "receiver", "arrival", "headers")

    def __init__(
        self,
        signal: Signal,
        *,
        message: ExportRequest | None = None,
        raw: bytes | None = None,
        items: int | None = None,
        receiver: str = "",
        arrival: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if message is None and raw is None:
            message = signal.request_type()
        self.signal = signal
        self._message = message
        self._raw = raw
        self.receiver = receiver
        self.arrival = time.monotonic() if arrival is None else arrival
        self.headers = headers
        if items is None:  # bytes alone are counted from their envelope, without decoding them
            items = wire.count_items(signal.request_type, raw) if message is None and raw is not None else \
                count_items(signal, self.message)
        self.items = items

    @property
    def message(self) -> ExportRequest:
        """The decoded request, for reading. Decodes the cached bytes on first use."""
        if self._message is None:
            assert self._raw is not None
            self._message = self.signal.request_type.FromString(self._raw)
        return self._message

    def mutable(self) -> ExportRequest:
        """The decoded request, for changing in place: the cached bytes become stale and are dropped."""
        msg = self.message
        self._raw = None
        return msg

    def mark_changed(self) -> None:
        """Tell the payload its message was changed; recounts items and drops cached bytes."""
        self._raw = None
        self.items = count_items(self.signal, self.message)

    @property
    def raw_cached(self) -> bytes | None:
        """The wire bytes if they are known without encoding, else None (for cheap prefilters)."""
        return self._raw

    def replace_raw(self, raw: bytes) -> None:
        """Swap in new wire bytes for the same items (a stage that edited the bytes directly).

        The decoded message, if any, is stale and dropped; it re-decodes lazily.
        """
        self._raw = raw
        self._message = None

    def serialize(self) -> bytes:
        """The protobuf wire bytes; encodes at most once per change."""
        if self._raw is None:
            assert self._message is not None
            self._raw = self._message.SerializeToString()
        return self._raw

    def compact(self) -> Payload:
        """Drop the decoded message while the wire bytes are still exact (they re-decode lazily).

        Decoded protobuf takes several times the memory of its bytes; payloads that
        wait in a batch or a sending queue keep only the bytes.
        """
        if self._raw is not None:
            self._message = None
        return self

    def copy(self) -> Payload:
        """An independent copy, for a fan-out branch that will mutate.

        Bytes are immutable, so a payload that still has its bytes is copied by
        sharing them and decoding lazily; otherwise the message is deep-copied.
        """
        if self._raw is not None:
            return Payload(self.signal, raw=self._raw, items=self.items, receiver=self.receiver,
                           arrival=self.arrival, headers=self.headers)
        msg = self.signal.request_type()
        # Same concrete type as self.message (both come from self.signal); mypy cannot pair the union members.
        msg.CopyFrom(cast(Any, self.message))
        return Payload(self.signal, message=msg, items=self.items, receiver=self.receiver,
                       arrival=self.arrival, headers=self.headers)

    def __repr__(self) -> str:
        return f"Payload({self.signal.value}, items={self.items}, receiver={self.receiver!r})"


def merge(signal: Signal, payloads: Iterable[Payload]) -> Payload:
    """One payload holding every item of `payloads`, in order.

    When a part still has its wire bytes, the merged bytes are the concatenation
    of every part's bytes (a valid merged request; parts without bytes are encoded,
    which costs no more than copying them into a merged message) and the parts
    with bytes are not decoded.
    """
    parts = list(payloads)
    if len(parts) == 1:
        return parts[0]
    items = sum(p.items for p in parts)
    arrival = min((p.arrival for p in parts), default=time.monotonic())
    if any(p.raw_cached is not None for p in parts):
        raw = b"".join([p.serialize() for p in parts])
        return Payload(signal, raw=raw, items=items, arrival=arrival)
    msg = signal.request_type()
    rfield = signal.resource_field
    for p in parts:
        getattr(msg, rfield).extend(getattr(p.message, rfield))
    return Payload(signal, message=msg, items=items, arrival=arrival)


def split(signal: Signal, payload: Payload, max_items: int) -> list[Payload]:
    """Cut a payload into payloads of at most `max_items` items, keeping resource and scope."""
    if max_items <= 0 or payload.items <= max_items:
        return [payload]
    src = payload.message
    rfield, sfield, ifield = _FIELDS[signal]
    out: list[ExportRequest] = []
    cur = signal.request_type()
    room = max_items

    def flush() -> None:
        nonlocal cur, room
        out.append(cur)
        cur = signal.request_type()
        room = max_items

    for r in getattr(src, rfield):
        for s in getattr(r, sfield):
            new_r = new_s = None
            if signal is Signal.METRICS:
                pieces = _metric_pieces(s.metrics)
            else:
                pieces = [(it, 1) for it in getattr(s, ifield)]
            i = 0
            while i < len(pieces):
                if room == 0:
                    flush()
                    new_r = new_s = None
                if new_s is None:
                    new_r = getattr(cur, rfield).add()
                    new_r.resource.CopyFrom(r.resource)
                    new_r.schema_url = r.schema_url
                    new_s = getattr(new_r, sfield).add()
                    new_s.scope.CopyFrom(s.scope)
                    new_s.schema_url = s.schema_url
                item, n = pieces[i]
                if signal is Signal.METRICS and n > room:
                    # Cut this metric's points: `room` of them now, the rest later.
                    head, tail = _cut_metric(item, room)
                    new_s.metrics.append(head)
                    pieces[i] = (tail, n - room)
                    room = 0
                    continue
                getattr(new_s, ifield).append(item)
                room -= n
                i += 1
    if room < max_items:
        out.append(cur)
    return [Payload(signal, message=m, receiver=payload.receiver, arrival=payload.arrival) for m in out]


def _metric_pieces(metrics: Iterable[Metric]) -> list[tuple[Metric, int]]:
    return [(m, max(metric_points(m), 1)) for m in metrics]


def _cut_metric(metric: Metric, n: int) -> tuple[Metric, Metric]:
    kind = cast(str, metric.WhichOneof("data"))  # never None: only metrics with 2+ points are cut
    head, tail = Metric(), Metric()
    head.CopyFrom(metric)
    tail.CopyFrom(metric)
    hp = getattr(head, kind).data_points
    tp = getattr(tail, kind).data_points
    del hp[n:]
    del tp[:n]
    return head, tail

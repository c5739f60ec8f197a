"""Debug exporter: prints what reaches it, for trying a pipeline out (the Collector's `debug`).

`basic` prints one summary line per request, `normal` adds one line per span
(service, name, duration, status, trace and span ids, attributes), data point
or log record (severity, body, ids, attributes), `detailed` adds the whole
request as OTLP/JSON. Output goes to stdout, otelpipe's own logs to stderr, so
the two can be told apart (and piped) as with the Collector. Each request is
written with a single `write` so concurrent requests never interleave. Its
sending queue is off by default: output appears while the request is being
consumed, which is what someone watching a terminal expects.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, TextIO

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from pipeline import otlpjson
from pipeline.component import ExporterFactory, Host, Settings, Stability
from pipeline.exporterhelper import ExporterConfig
from pipeline.exporterhelper.queue import QueueConfig
from pipeline.model import ExportRequest, Payload, Signal


@dataclass(frozen=True, slots=True, kw_only=True)
class DebugExporterConfig(ExporterConfig):
    verbosity: Literal["basic", "normal", "detailed"] = "basic"
    sending_queue: QueueConfig = field(default_factory=lambda: QueueConfig(enabled=False))


def any_value_text(v: AnyValue) -> str:
    kind = v.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "string_value":
        return v.string_value
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind == "array_value":
        return "[" + ", ".join(any_value_text(x) for x in v.array_value.values) + "]"
    if kind == "kvlist_value":
        return "{" + attrs_text(v.kvlist_value.values) + "}"
    return str(getattr(v, kind))


def attrs_text(attrs: Iterable[KeyValue]) -> str:
    return " ".join(f"{a.key}={any_value_text(a.value)}" for a in attrs)


def summary(signal: Signal, msg: ExportRequest, items: int) -> str:
    resources = getattr(msg, signal.resource_field)
    parts = [f"resources={len(resources)}"]
    if signal is Signal.METRICS:
        metrics = sum(len(sm.metrics) for rm in resources for sm in rm.scope_metrics)
        parts.append(f"metrics={metrics}")
    parts.append(f"{signal.item_name}={items}")
    return " ".join(parts)


def _point_lines(m: Metric) -> Iterator[str]:
    kind = m.WhichOneof("data")
    if kind is None:
        return
    for dp in getattr(m, kind).data_points:
        attrs = attrs_text(dp.attributes)
        label = f"{m.name}{{{attrs}}}" if attrs else m.name
        if kind in ("gauge", "sum"):
            value = dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
            yield f"{label} {kind} {value}"
        elif kind == "summary":
            yield f"{label} summary count={dp.count} sum={dp.sum}"
        else:
            yield f"{label} {kind} count={dp.count} sum={dp.sum}"


_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def duration_text(nanos: int) -> str:
    """`850us`, `12.500ms`, `3.200s`: a span's length at a glance."""
    if nanos < 1_000_000:
        return f"{nanos / 1000:g}us"
    if nanos < 1_000_000_000:
        return f"{nanos / 1e6:.3f}ms"
    return f"{nanos / 1e9:.3f}s"


def _service(resource_attrs: Iterable[KeyValue]) -> str:
    for a in resource_attrs:
        if a.key == "service.name":
            return any_value_text(a.value)
    return "unknown_service"


def item_lines(signal: Signal, msg: ExportRequest) -> Iterator[str]:
    """One line per span / data point / log record: what it is, ids and attributes."""
    for r in getattr(msg, signal.resource_field):
        service = _service(r.resource.attributes) if signal is Signal.TRACES else ""
        for s in getattr(r, signal.scope_field):
            if signal is Signal.TRACES:
                for span in s.spans:
                    parent = f" parent_span_id={span.parent_span_id.hex()}" if span.parent_span_id else ""
                    status = _STATUS.get(span.status.code, str(span.status.code))
                    if span.status.message:
                        status += f"({span.status.message})"
                    duration = duration_text(max(span.end_time_unix_nano - span.start_time_unix_nano, 0))
                    attrs = attrs_text(span.attributes)
                    yield (f"span {service} {span.name!r} {duration} {status} trace_id={span.trace_id.hex()} "
                           f"span_id={span.span_id.hex()}{parent}" + (f" {attrs}" if attrs else ""))
            elif signal is Signal.METRICS:
                for m in s.metrics:
                    for line in _point_lines(m):
                        yield f"metric {line}"
            else:
                for rec in s.log_records:
                    ids = ""
                    if rec.trace_id:
                        ids = f" trace_id={rec.trace_id.hex()} span_id={rec.span_id.hex()}"
                    attrs = attrs_text(rec.attributes)
                    yield (f"log {rec.severity_text or rec.severity_number} {any_value_text(rec.body)}{ids}"
                           + (f" {attrs}" if attrs else ""))


class DebugExporter:
    """Writes each request to `stream` (stderr unless a test injects one)."""

    def __init__(self, settings: Settings, cfg: DebugExporterConfig, stream: TextIO | None = None) -> None:
        self.settings = settings
        self.cfg = cfg
        self._stream = stream

    def render(self, payload: Payload) -> str:
        signal = payload.signal
        msg = payload.message
        lines = [f"{self.settings.id} {signal.value}: {summary(signal, msg, payload.items)}"]
        if self.cfg.verbosity == "normal":
            lines.extend("  " + line for line in item_lines(signal, msg))
        elif self.cfg.verbosity == "detailed":
            lines.append(orjson.dumps(otlpjson.message_to_dict(msg), option=orjson.OPT_INDENT_2).decode())
        return "\n".join(lines) + "\n"

    async def start(self, host: Host) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def push(self, payload: Payload) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(self.render(payload))
        stream.flush()


def create(settings: Settings, cfg: DebugExporterConfig) -> DebugExporter:
    return DebugExporter(settings, cfg)


FACTORY = ExporterFactory(
    type="debug",
    config_type=DebugExporterConfig,
    signals={Signal.TRACES: Stability.DEVELOPMENT, Signal.METRICS: Stability.DEVELOPMENT,
             Signal.LOGS: Stability.DEVELOPMENT},
    create=create,
    description="Prints a summary, one line per item, or the whole OTLP/JSON request to stderr.",
)

"""OTLP log records → Datadog log entries (`POST /api/v2/logs`, a JSON array), one entry per record.

- `message`: the body (maps and arrays as JSON); a `msg`, `message` or `log` attribute wins.
- `status`: a `status`, `severity`, `level` or `syslog.severity` attribute, else the severity
  text, else the severity number's range (`trace` 1-4, `debug` 5-8, `info` 9-12, `warn` 13-16,
  `error` 17-20, `fatal` 21-24, `error` above), else `info`.
- `service`: resource `service.name` (else the record's); `hostname`: resource
  `datadog.host.name` / `host.name`, else the exporter's `hostname`; `ddsource`: `otlp_log_ingestion`.
- `ddtags`: `service:`, `env:`, `version:` from the resource, the exporter's `tags`, and a `ddtags`
  attribute, comma-separated.
- `dd.trace_id` / `dd.span_id`: the low 64 bits of the trace id and the span id, in decimal
  (Datadog's trace correlation); `otel.trace_id` / `otel.span_id`: the ids in hex.
- `@timestamp` (ISO 8601, ms) and `otel.timestamp` (Unix ns): the record's time, else its observed time.
- `otel.severity_text`, `otel.severity_number`: as sent.
- every other attribute: record, resource and scope attributes as strings (maps flattened to
  `a.b` keys); a record or resource attribute named like one of the fields above is kept as
  `otel.<name>`.

The entries hold only strings, as Datadog's `HTTPLogItem` does. A message over 1 MiB is cut there
(Datadog truncates larger logs itself); the trace id may also come from a hex `trace_id` /
`traceid` attribute (and the span id likewise) when the record has none.
"""
from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from exporters.datadog.attributes import ResourceInfo, resource_info
from exporters.datadog.config import DatadogExporterConfig
from pipeline.anyvalue import as_string

DDSOURCE = "otlp_log_ingestion"
MAX_MESSAGE_BYTES = 1 << 20
_MAX_FLATTEN_DEPTH = 10
_MESSAGE_KEYS = frozenset({"msg", "message", "log"})
_STATUS_KEYS = frozenset({"status", "severity", "level", "syslog.severity"})
_TRACE_KEYS = frozenset({"traceid", "trace_id", "contextmap.traceid", "oteltraceid"})
_SPAN_KEYS = frozenset({"spanid", "span_id", "contextmap.spanid", "otelspanid"})
_RESERVED = frozenset({"message", "status", "service", "hostname", "ddsource", "ddtags", "dd.trace_id",
                       "dd.span_id", "otel.trace_id", "otel.span_id", "@timestamp", "otel.timestamp",
                       "otel.severity_text", "otel.severity_number"})
_LEVELS = ((4, "trace"), (8, "debug"), (12, "info"), (16, "warn"), (20, "error"), (24, "fatal"))
_RESOURCE_CACHE_SIZE = 1024


def status_of(severity_number: int) -> str:
    for top, name in _LEVELS:
        if severity_number <= top:
            return name
    return "error"


def iso_ms(ns: int) -> str:
    t = datetime.datetime.fromtimestamp(ns // 1_000_000 / 1000, tz=datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns // 1_000_000 % 1000:03d}Z"


def _flatten(key: str, v: AnyValue, depth: int = 1) -> Iterator[tuple[str, str]]:
    if v.WhichOneof("value") != "kvlist_value" or depth >= _MAX_FLATTEN_DEPTH:
        yield key, as_string(v)
        return
    for kv in v.kvlist_value.values:
        yield from _flatten(f"{key}.{kv.key}", kv.value, depth + 1)


def _hex_id(text: str, size: int) -> bytes | None:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) == size and any(raw) else None


def _cut(message: str) -> str:
    if len(message) <= MAX_MESSAGE_BYTES // 4:
        return message
    raw = message.encode()
    return raw[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore") if len(raw) > MAX_MESSAGE_BYTES else message


class LogsMapper:
    """Turns logs requests into Datadog entries (stateless apart from a small cache of resources)."""

    def __init__(self, cfg: DatadogExporterConfig, hostname: str) -> None:
        self._hostname = hostname
        self._global = tuple(cfg.tags)
        self._resources: dict[bytes, ResourceInfo] = {}

    def map(self, request: ExportLogsServiceRequest) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for rl in request.resource_logs:
            res = self._resource(rl.resource.SerializeToString())
            res_attrs = [(f"otel.{k}" if k in _RESERVED else k, v) for k, v in res.attributes]
            ddtags = ",".join((*res.tags, *self._global))
            for sl in rl.scope_logs:
                scope_attrs = [pair for kv in sl.scope.attributes for pair in _flatten(kv.key, kv.value)]
                for record in sl.log_records:
                    out.append(self._entry(record, res, res_attrs, scope_attrs, ddtags))
        return out

    def _entry(self, record: Any, res: ResourceInfo, res_attrs: list[tuple[str, str]],
               scope_attrs: list[tuple[str, str]], ddtags: str) -> dict[str, Any]:
        entry: dict[str, Any] = {}
        message = status = service = ""
        trace_id: bytes | None = None
        span_id: bytes | None = None
        kv: KeyValue
        for kv in record.attributes:
            key = kv.key
            low = key.lower()
            if low in _MESSAGE_KEYS:
                message = as_string(kv.value)
            elif low in _STATUS_KEYS:
                status = as_string(kv.value)
            elif low in _TRACE_KEYS:
                trace_id = trace_id or _hex_id(as_string(kv.value), 16)
            elif low in _SPAN_KEYS:
                span_id = span_id or _hex_id(as_string(kv.value), 8)
            elif low == "ddtags":
                extra = as_string(kv.value)
                ddtags = f"{ddtags},{extra}" if ddtags and extra else ddtags or extra
            else:
                if key == "service.name":
                    service = as_string(kv.value)
                for k, v in _flatten(key, kv.value):
                    entry[f"otel.{k}" if k in _RESERVED else k] = v
        entry.update(res_attrs)
        entry.update(scope_attrs)
        if len(record.trace_id) == 16 and any(record.trace_id):
            trace_id = record.trace_id
        if len(record.span_id) == 8 and any(record.span_id):
            span_id = record.span_id
        if trace_id is not None:
            entry["dd.trace_id"] = str(int.from_bytes(trace_id[8:], "big"))
            entry["otel.trace_id"] = trace_id.hex()
        if span_id is not None:
            entry["dd.span_id"] = str(int.from_bytes(span_id, "big"))
            entry["otel.span_id"] = span_id.hex()
        if record.severity_text:
            status = status or record.severity_text
            entry["otel.severity_text"] = record.severity_text
        if record.severity_number:
            status = status or status_of(record.severity_number)
            entry["otel.severity_number"] = str(record.severity_number)
        ts = record.time_unix_nano or record.observed_time_unix_nano
        if ts:
            entry["@timestamp"] = iso_ms(ts)
            entry["otel.timestamp"] = str(ts)
        if not message:
            body = record.body
            message = body.string_value if body.WhichOneof("value") == "string_value" else as_string(body)
        entry["message"] = _cut(message)
        entry["status"] = status or "info"
        entry["ddsource"] = DDSOURCE
        entry["ddtags"] = ddtags
        service = res.service or service
        if service:
            entry["service"] = service
        if res.host:
            entry["hostname"] = res.host
        return entry

    def _resource(self, raw: bytes) -> ResourceInfo:
        info = self._resources.get(raw)
        if info is None:
            info = resource_info(raw, self._hostname, False)
            if len(self._resources) >= _RESOURCE_CACHE_SIZE:
                self._resources.clear()
            self._resources[raw] = info
        return info


def logs_body(entries: Any) -> Any:
    """The logs intake takes a bare JSON array (and a body read back is that array)."""
    return entries

"""OTLP log records → Datadog log entries: the mapping table of exporters/datadog/logs.py."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from exporters.datadog.config import DatadogExporterConfig
from exporters.datadog.logs import LogsMapper, status_of
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.testing import any_value, kv
from tests.e2e.datadog_intake import check_logs

KEY = "0123456789abcdef0123456789abcdef"
TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN = bytes.fromhex("00f067aa0ba902b7")
T = 1_700_000_000_123_456_789


def mapper(**raw: Any) -> LogsMapper:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(DatadogExporterConfig, {"api": {"key": KEY}, **raw}, "x", issues)
    assert issues == []
    return LogsMapper(cfg, "fallback-host")


def request(*records: LogRecord, resource: dict[str, Any] | None = None,
            scope_attrs: dict[str, Any] | None = None) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    for k, v in (resource if resource is not None else {"service.name": "agent", "host.name": "node-1",
                                                        "deployment.environment": "prod"}).items():
        rl.resource.attributes.append(kv(k, v))
    sl = rl.scope_logs.add()
    for k, v in (scope_attrs or {}).items():
        sl.scope.attributes.append(kv(k, v))
    sl.log_records.extend(records)
    return req


def record(body: Any = "hello", attrs: dict[str, Any] | None = None, **fields: Any) -> LogRecord:
    r = LogRecord(**fields)
    r.body.CopyFrom(any_value(body))
    for k, v in (attrs or {}).items():
        r.attributes.append(kv(k, v))
    return r


def test_a_record_with_trace_context() -> None:
    [e] = mapper(tags=["team:ml"]).map(request(record(
        "tool call failed", {"gen_ai.tool.name": "search", "thread.id": 7},
        time_unix_nano=T, severity_number=17, severity_text="ERROR", trace_id=TRACE, span_id=SPAN)))
    assert e == {
        "message": "tool call failed", "status": "ERROR", "service": "agent", "hostname": "node-1",
        "ddsource": "otlp_log_ingestion", "ddtags": "service:agent,env:prod,team:ml",
        "dd.trace_id": str(int.from_bytes(TRACE[8:], "big")), "otel.trace_id": TRACE.hex(),
        "dd.span_id": str(int.from_bytes(SPAN, "big")), "otel.span_id": SPAN.hex(),
        "otel.severity_text": "ERROR", "otel.severity_number": "17",
        "@timestamp": "2023-11-14T22:13:20.123Z", "otel.timestamp": str(T),
        "gen_ai.tool.name": "search", "thread.id": "7",
        "service.name": "agent", "host.name": "node-1", "deployment.environment": "prod",
    }
    assert e["dd.trace_id"] == "11803532876627986230"  # the low 64 bits of the trace id, in decimal


@pytest.mark.parametrize(("number", "status"), [(1, "trace"), (4, "trace"), (5, "debug"), (9, "info"),
                                                 (13, "warn"), (17, "error"), (21, "fatal"), (24, "fatal"),
                                                 (30, "error")])
def test_status_from_the_severity_number(number: int, status: str) -> None:
    assert status_of(number) == status
    [e] = mapper().map(request(record(severity_number=number)))
    assert e["status"] == status


def test_status_and_message_attributes_win_and_unknown_severity_is_info() -> None:
    [e] = mapper().map(request(record("body", {"level": "warning", "msg": "from attribute"}, severity_text="INFO")))
    assert (e["status"], e["message"]) == ("warning", "from attribute")
    [e] = mapper().map(request(record("plain")))
    assert e["status"] == "info" and "otel.severity_number" not in e


def test_structured_bodies_and_attributes_become_strings() -> None:
    [e] = mapper().map(request(record({"event": "done", "tokens": 12}, {"http": {"route": "/x", "code": 200},
                                                                       "ok": False, "hostname": "spoof"})))
    assert e["message"] == '{"event":"done","tokens":12}'
    assert (e["http.route"], e["http.code"], e["ok"], e["otel.hostname"]) == ("/x", "200", "false", "spoof")
    assert e["hostname"] == "node-1"
    assert all(isinstance(v, str) for v in e.values())


def test_observed_time_when_the_record_has_no_time_and_trace_ids_from_attributes() -> None:
    [e] = mapper().map(request(record("x", {"trace_id": TRACE.hex(), "span_id": "zz"}, observed_time_unix_nano=T)))
    assert e["otel.timestamp"] == str(T) and e["otel.trace_id"] == TRACE.hex() and "dd.span_id" not in e


def test_resource_without_host_or_service_and_a_ddtags_attribute() -> None:
    [e] = mapper(hostname="cfg-host").map(request(record("x", {"ddtags": "a:b"}), resource={}))
    assert e["hostname"] == "fallback-host" and "service" not in e and e["ddtags"] == "a:b"


def test_scope_attributes_are_kept_and_huge_messages_are_cut() -> None:
    [e] = mapper().map(request(record("é" * (2 << 20)), scope_attrs={"lib": "openai"}))
    assert e["lib"] == "openai" and len(e["message"].encode()) <= 1 << 20


_LEAF = st.one_of(st.text(max_size=12), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(),
                  st.binary(max_size=8))
_VALUES = st.recursive(_LEAF, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)
_KEYS = st.sampled_from(["message", "msg", "status", "level", "trace_id", "span_id", "ddtags", "service.name",
                         "hostname", "dd.trace_id", "@timestamp", ""]) | st.text(max_size=8)


@st.composite
def hostile_record(draw: st.DrawFn) -> LogRecord:
    u64 = st.integers(0, 2**64 - 1)
    r = LogRecord(time_unix_nano=draw(u64), observed_time_unix_nano=draw(u64),
                  severity_number=draw(st.integers(0, 30)), severity_text=draw(st.text(max_size=8)),
                  trace_id=draw(st.binary(max_size=17)), span_id=draw(st.binary(max_size=9)))
    r.body.CopyFrom(any_value(draw(_VALUES)))
    for k, v in draw(st.dictionaries(_KEYS, _VALUES, max_size=5)).items():
        r.attributes.append(kv(k, v))
    return r


@settings(max_examples=150, deadline=None)
@given(records=st.lists(hostile_record(), max_size=5),
       resource=st.dictionaries(_KEYS, _VALUES, max_size=4))
def test_hostile_records_map_to_one_valid_entry_each(records: list[LogRecord], resource: dict[str, Any]) -> None:
    entries = mapper(tags=["team:a"]).map(request(*records, resource=resource))
    assert check_logs(entries) == entries and len(entries) == len(records)  # every value a string, as the API says
    for e, r in zip(entries, records):
        assert {"message", "status", "ddsource", "ddtags"} <= set(e)
        if len(r.trace_id) == 16 and any(r.trace_id):
            assert e["dd.trace_id"] == str(int.from_bytes(r.trace_id[8:], "big"))

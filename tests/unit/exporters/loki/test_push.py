"""OTLP logs → Loki push bodies: streams, labels, timestamps, structured metadata and lines, checked on the JSON.

Every body built here is also checked against the push API's shape by the fake intake's `check_push`.
A property test compares the builder with a plain oracle written over the fully decoded request.
"""
from __future__ import annotations

import base64
import json
from collections import defaultdict
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from exporters.loki.config import LabelsConfig, LokiExporterConfig
from exporters.loki.push import CHUNK, Batch, BoundedCache, PushBuilder, encode, halves, level_of
from pipeline.testing import any_value, kv
from tests.e2e.loki_intake import check_push

URL = "http://loki:3100/loki/api/v1/push"
T0 = 1_700_000_000_000_000_000
NOW = 1_800_000_000_000_000_000

Labels = tuple[tuple[str, str], ...]


def config(**kw: Any) -> LokiExporterConfig:
    return LokiExporterConfig(endpoint=URL, **kw)


def request(*resources: tuple[dict[str, object], list[dict[str, Any]]]) -> ExportLogsServiceRequest:
    """A request with one resource (its attributes) and one scope per item, holding records made from dicts."""
    req = ExportLogsServiceRequest()
    for attrs, records in resources:
        rl = req.resource_logs.add()
        rl.resource.attributes.extend(kv(k, v) for k, v in attrs.items())
        sl = rl.scope_logs.add()
        sl.scope.name = "agent"
        for r in records:
            rec = sl.log_records.add()
            if "body" in r:
                rec.body.CopyFrom(any_value(r["body"]))
            rec.attributes.extend(kv(k, v) for k, v in r.get("attrs", {}).items())
            for name in ("time_unix_nano", "observed_time_unix_nano", "severity_number", "severity_text",
                         "trace_id", "span_id"):
                if name in r:
                    setattr(rec, name, r[name])
    return req


def rec(body: object = "hello", *, t: int = T0, sev: str = "INFO", **kw: Any) -> dict[str, Any]:
    return {"body": body, "time_unix_nano": t, "severity_text": sev, **kw}


def build(req: ExportLogsServiceRequest, cfg: LokiExporterConfig | None = None) -> tuple[Batch, dict[str, Any]]:
    batch = PushBuilder(cfg or config(), now_ns=lambda: NOW).build(req.SerializeToString())
    body = encode(batch.streams)
    entries, _ = check_push(orjson.loads(body))
    assert len(entries) == batch.entries
    return batch, orjson.loads(body)


def streams(doc: dict[str, Any]) -> dict[Labels, list[list[Any]]]:
    out = {tuple(sorted(s["stream"].items())): s["values"] for s in doc["streams"]}
    assert len(out) == len(doc["streams"]), "two streams with the same labels"
    return out


def lines(doc: dict[str, Any]) -> list[str]:
    return [v[1] for s in doc["streams"] for v in s["values"]]


def only_entry(doc: dict[str, Any]) -> list[Any]:
    (values,) = [s["values"] for s in doc["streams"]]
    (entry,) = values
    return list(entry)


# -- streams and labels --------------------------------------------------------------------------


def test_records_of_every_resource_with_the_same_labels_share_one_stream_in_order() -> None:
    req = request(({"service.name": "a", "host.name": "h1"}, [rec("1"), rec("2", sev="ERROR"), rec("3")]),
                  ({"service.name": "a", "host.name": "h2"}, [rec("4"), rec("5", sev="ERROR")]),
                  ({"service.name": "b"}, [rec("6")]))
    batch, doc = build(req)
    got = {k: [v[1] for v in vs] for k, vs in streams(doc).items()}
    assert got == {(("level", "info"), ("service_name", "a")): ["1", "3", "4"],
                   (("level", "error"), ("service_name", "a")): ["2", "5"],
                   (("level", "info"), ("service_name", "b")): ["6"]}
    assert batch.entries == 6 and len(batch.streams) == 3


@pytest.mark.parametrize(("text", "number", "level"), [
    ("INFO", 9, "info"), ("Warning", 13, "warning"), ("  ERROR ", 0, "error"), ("", 1, "trace"), ("", 4, "trace"),
    ("", 5, "debug"), ("", 9, "info"), ("", 12, "info"), ("", 13, "warn"), ("", 17, "error"), ("", 21, "fatal"),
    ("", 24, "fatal"), ("", 0, "unknown"), ("", 25, "unknown"), ("", -3, "unknown"), ("   ", 9, "unknown"),
])
def test_level_is_the_severity_text_else_the_number_range(text: str, number: int, level: str) -> None:
    assert level_of(text, number) == level
    _, doc = build(request(({"service.name": "a"}, [rec(sev=text, severity_number=number)])))
    assert [s["stream"]["level"] for s in doc["streams"]] == [level]


@pytest.mark.parametrize("attrs", [{}, {"service.name": ""}, {"host.name": "h"}])
def test_a_resource_without_a_service_name_is_unknown_service(attrs: dict[str, object]) -> None:
    _, doc = build(request((attrs, [rec()])))
    assert doc["streams"][0]["stream"] == {"service_name": "unknown_service", "level": "info"}


def test_configured_labels_come_from_resource_and_record_attributes_and_leave_the_metadata() -> None:
    cfg = config(labels=LabelsConfig(resource={"k8s.namespace.name": "", "deployment.environment": "env"},
                                     attributes={"gen_ai.system": "", "tool": "env"}))
    req = request(({"service.name": "a", "k8s.namespace.name": "agents", "deployment.environment": "prod"}, [
        rec("1", attrs={"gen_ai.system": "openai", "x": "1"}),
        rec("2", attrs={"tool": "search"}),       # a record label wins over the resource's of the same name
        rec("3", attrs={"gen_ai.system": ""}),    # an empty attribute makes no label
    ]))
    _, doc = build(req, cfg)
    got = {k: [(v[1], v[2] if len(v) == 3 else {}) for v in vs] for k, vs in streams(doc).items()}
    base = (("k8s_namespace_name", "agents"), ("level", "info"), ("service_name", "a"))
    assert got == {
        tuple(sorted(base + (("env", "prod"), ("gen_ai_system", "openai")))): [("1", {"x": "1"})],
        tuple(sorted(base + (("env", "search"),))): [("2", {})],
        tuple(sorted(base + (("env", "prod"),))): [("3", {})],
    }


def test_a_configured_label_replaces_a_default_one_and_streams_merge_on_the_final_labels() -> None:
    cfg = config(labels=LabelsConfig(resource={"severity": "level"}))
    req = request(({"service.name": "a", "severity": "audit"}, [rec("1", sev="INFO"), rec("2", sev="ERROR")]),
                  ({"service.name": "a"}, [rec("3", sev="ERROR")]))
    _, doc = build(req, cfg)
    assert {k: [v[1] for v in vs] for k, vs in streams(doc).items()} == {
        (("level", "audit"), ("service_name", "a")): ["1", "2"],
        (("level", "error"), ("service_name", "a")): ["3"]}
    cfg = config(labels=LabelsConfig(resource={"k8s.deployment.name": "service_name"},
                                     attributes={"route": "r"}))
    req = request(({"service.name": "x", "k8s.deployment.name": "agent"}, [rec("1", attrs={"route": "/a"})]),
                  ({"service.name": "agent"}, [rec("2", attrs={"route": "/a"})]))
    _, doc = build(req, cfg)
    assert {k: [v[1] for v in vs] for k, vs in streams(doc).items()} == {
        (("level", "info"), ("r", "/a"), ("service_name", "agent")): ["1", "2"]}


# -- timestamps, metadata ---------------------------------------------------------------------------


def test_timestamps_are_the_record_time_else_the_observed_time_else_now() -> None:
    req = request(({"service.name": "a"}, [rec("t", t=T0 + 5, observed_time_unix_nano=T0 + 9),
                                           rec("o", t=0, observed_time_unix_nano=T0 + 9), rec("n", t=0)]))
    _, doc = build(req)
    assert [(v[0], v[1]) for v in doc["streams"][0]["values"]] == [(str(T0 + 5), "t"), (str(T0 + 9), "o"),
                                                                    (str(NOW), "n")]


def test_structured_metadata_holds_the_ids_and_the_record_attributes_as_strings() -> None:
    r = rec(trace_id=bytes(range(16)), span_id=bytes(range(8, 16)), attrs={
        "http.route": "/v1/agents/{id}", "gen_ai.usage.input_tokens": 1200, "temperature": 0.25, "ratio": 3.0,
        "big": 1e20, "stream": False, "blob": b"\x00\xff", "tags": ["a", 1], "ctx": {"k": "v", "n": 2},
        "empty": "", "9lives": "yes", "trace_id": "from-an-attribute"})
    _, doc = build(request(({"service.name": "a", "host.name": "h"}, [r])))
    ts, line, meta = only_entry(doc)
    assert meta == {"http_route": "/v1/agents/{id}", "gen_ai_usage_input_tokens": "1200", "temperature": "0.25",
                    "ratio": "3", "big": "100000000000000000000", "stream": "false",
                    "blob": base64.b64encode(b"\x00\xff").decode(), "tags": '["a",1]', "ctx": '{"k":"v","n":2}',
                    "key_9lives": "yes", "trace_id": bytes(range(16)).hex(), "span_id": bytes(range(8, 16)).hex()}
    assert (ts, line) == (str(T0), "hello")


def test_without_ids_or_attributes_an_entry_is_two_items_and_metadata_can_be_turned_off() -> None:
    _, doc = build(request(({"service.name": "a"}, [rec()])))
    assert only_entry(doc) == [str(T0), "hello"]
    _, doc = build(request(({"service.name": "a"}, [rec(attrs={"a": "b"}, trace_id=b"\x01" * 16)])),
                   config(structured_metadata=False))
    assert only_entry(doc) == [str(T0), "hello"]


# -- lines -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "line"), [
    ("plain text", "plain text"), ({"msg": "done", "n": 2, "ok": True}, '{"msg":"done","n":2,"ok":true}'),
    (["a", 1.5], '["a",1.5]'), (42, "42"), (2.5, "2.5"), (3.0, "3"), (True, "true"), (b"\x01\x02", "AQI="),
    ("", ""), ({"nested": {"a": [1, {"b": None}]}}, '{"nested":{"a":[1,{"b":"None"}]}}'),
])
def test_raw_lines_render_every_body(body: object, line: str) -> None:
    _, doc = build(request(({"service.name": "a"}, [rec(body)])))
    assert lines(doc) == [line]


def test_a_record_without_a_body_has_an_empty_line() -> None:
    req = request(({"service.name": "a"}, [{"time_unix_nano": T0}]))
    _, doc = build(req)
    assert lines(doc) == [""] and doc["streams"][0]["stream"]["level"] == "unknown"


def test_json_lines() -> None:
    req = request(({"service.name": "a", "host.name": "h"}, [
        rec("text"), rec({"msg": "done", "n": 2}), rec(7, trace_id=b"\x01" * 16, attrs={"a": "b"})]))
    _, doc = build(req, config(format="json"))
    assert [json.loads(x) for x in lines(doc)] == [{"body": "text"}, {"body": {"msg": "done", "n": 2}}, {"body": 7}]
    _, doc = build(req, config(format="json", structured_metadata=False))
    assert json.loads(lines(doc)[2]) == {"body": 7, "traceid": "01" * 16, "severity": "INFO",
                                         "attributes": {"a": "b"}, "resources": {"service.name": "a",
                                                                                 "host.name": "h"}}


def test_logfmt_lines() -> None:
    req = request(({"service.name": "a"}, [
        rec("tool search finished"), rec({"msg": "done", "ctx": {"tool": "search", "n": 2}}),
        rec(["x", 'say "hi"']), rec("k=v"), rec(3.5, span_id=b"\x02" * 8, attrs={"a b": "c"})]))
    _, doc = build(req, config(format="logfmt"))
    assert lines(doc) == ['msg="tool search finished"', "msg=done ctx_tool=search ctx_n=2",
                          'body_0=x body_1="say \\"hi\\""', 'msg="k=v"', "msg=3.5"]
    _, doc = build(req, config(format="logfmt", structured_metadata=False))
    assert lines(doc)[4] == "msg=3.5 spanID=0202020202020202 severity=INFO attribute_a_b=c resource_service.name=a"


# -- chunks, halves, caches, bad input --------------------------------------------------------------


def test_many_records_over_several_streams_arrive_whole_and_in_order() -> None:
    n = CHUNK * 3 + 17
    records = [rec(f"r{i}", t=T0 + i, sev=("INFO", "WARN", "ERROR")[i % 3], attrs={"i": i}) for i in range(n)]
    batch, doc = build(request(({"service.name": "a"}, records)))
    assert batch.entries == n
    for level, values in ((s["stream"]["level"], s["values"]) for s in doc["streams"]):
        assert [v[1] for v in values] == [f"r{i}" for i in range(n) if ("info", "warn", "error")[i % 3] == level]
        assert all(v[2] == {"i": v[1][1:]} for v in values)


def test_halves_keep_every_entry_once_and_cut_streams_and_chunks_where_needed() -> None:
    n = CHUNK + 11
    records = [rec(f"r{i}", sev="INFO" if i < n - 5 else "ERROR") for i in range(n)]
    batch, doc = build(request(({"service.name": "a"}, records)))
    first, second = halves(batch)
    assert (first.entries, second.entries) == (n // 2, n - n // 2)
    got: dict[str, list[str]] = defaultdict(list)
    for part in (first, second):
        entries, _ = check_push(orjson.loads(encode(part.streams)))
        assert len(entries) == part.entries
        for e in entries:
            got[dict(e.labels)["level"]].append(e.line)
    assert dict(got) == {s["stream"]["level"]: [v[1] for v in s["values"]] for s in doc["streams"]}
    a, b = halves(Batch(first.streams, first.entries))
    assert a.entries + b.entries == first.entries


def test_a_request_that_does_not_parse_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="does not parse"):
        PushBuilder(config()).build(b"\x0a\xff\xff\xff")


def test_caches_are_bounded() -> None:
    made: list[int] = []
    cache: BoundedCache[int, int] = BoundedCache(lambda k: made.append(k) or k * 2, 3)
    assert [cache[k] for k in (1, 2, 1, 3, 4, 5)] == [2, 4, 2, 6, 8, 10]
    assert made == [1, 2, 3, 4, 5] and len(cache) <= 3


# -- the builder against a plain oracle over the decoded request --------------------------------------

_keys = st.sampled_from(["http.route", "gen_ai.system", "tool", "a.b-c", "x", "ünï", "9k"])
_values = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.booleans())
_records = st.fixed_dictionaries({
    "body": st.one_of(st.text(max_size=12), st.integers(-9, 9), st.dictionaries(st.sampled_from("abc"),
                                                                                st.text(max_size=4), max_size=2)),
    "time_unix_nano": st.sampled_from([0, T0, T0 + 1]),
    "observed_time_unix_nano": st.sampled_from([0, T0 + 7]),
    "severity_text": st.sampled_from(["", "INFO", "Error", "warn"]),
    "severity_number": st.integers(0, 26),
    "trace_id": st.sampled_from([b"", bytes(range(16))]),
    "attrs": st.dictionaries(_keys, _values, max_size=3),
})
_resources = st.lists(st.tuples(st.dictionaries(st.sampled_from(["service.name", "k8s.namespace.name", "host"]),
                                                st.sampled_from(["", "a", "b"]), max_size=3),
                                st.lists(_records, max_size=6)), min_size=1, max_size=3)


def _text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return orjson.dumps(v).decode()
    return str(v)


def _sanitized(key: str) -> str:
    out = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in key)
    while "__" in out:
        out = out.replace("__", "_")
    return "key_" + out if out[:1].isdigit() else out


def oracle(req: ExportLogsServiceRequest, cfg: LokiExporterConfig) -> dict[Labels, list[list[Any]]]:
    out: dict[Labels, list[list[Any]]] = defaultdict(list)
    for rl in req.resource_logs:
        res = {a.key: _text(_plain(a.value)) for a in rl.resource.attributes}
        for sl in rl.scope_logs:
            for r in sl.log_records:
                labels = {"service_name": res.get("service.name") or "unknown_service",
                          "level": level_of(r.severity_text, r.severity_number)}
                labels.update({_sanitized(n or a): res[a] for a, n in cfg.labels.resource.items() if res.get(a)})
                attrs = {a.key: _text(_plain(a.value)) for a in r.attributes}
                labels.update({_sanitized(n or a): attrs[a] for a, n in cfg.labels.attributes.items()
                               if attrs.get(a)})
                meta = {_sanitized(k): v for k, v in attrs.items() if v and k not in cfg.labels.attributes}
                if r.trace_id:
                    meta["trace_id"] = r.trace_id.hex()
                ts = str(r.time_unix_nano or r.observed_time_unix_nano or NOW)
                body = _plain(r.body) if r.HasField("body") else ""
                entry: list[Any] = [ts, _text(body) if body is not None else ""]
                if meta:
                    entry.append(meta)
                out[tuple(sorted(labels.items()))].append(entry)
    return dict(out)


def _plain(v: Any) -> object:
    kind = v.WhichOneof("value")
    if kind == "kvlist_value":
        return {x.key: _plain(x.value) for x in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@pytest.mark.parametrize("cfg", [config(), config(labels=LabelsConfig(resource={"k8s.namespace.name": "ns"},
                                                                       attributes={"tool": "", "x": "ns"}))],
                         ids=["fast path", "record labels"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(resources=_resources)
def test_the_builder_agrees_with_the_oracle(cfg: LokiExporterConfig, resources: list[Any]) -> None:
    req = request(*resources)
    if not any(r for _, r in resources):
        assert PushBuilder(cfg).build(req.SerializeToString()).entries == 0
        return
    _, doc = build(req, cfg)
    assert streams(doc) == oracle(req, cfg)


def test_the_fast_path_is_taken_for_the_default_config_only() -> None:
    assert PushBuilder(config()).fast_path
    assert not PushBuilder(config(format="json")).fast_path
    assert not PushBuilder(config(labels=LabelsConfig(attributes={"a": ""}))).fast_path
    assert not PushBuilder(config(structured_metadata=False)).fast_path
    assert PushBuilder(config(labels=LabelsConfig(resource={"a": ""}))).fast_path


def test_a_log_record_built_by_the_sdk_layout_keeps_its_flags_out_of_the_line() -> None:
    req = request(({"service.name": "a"}, [rec("x")]))
    req.resource_logs[0].scope_logs[0].log_records[0].MergeFrom(
        LogRecord(flags=1, dropped_attributes_count=3, event_name="agent.step"))
    _, doc = build(req)
    assert only_entry(doc) == [str(T0), "x"]


@pytest.mark.parametrize("cfg", [config(), config(format="json")], ids=["fast path", "general path"])
def test_a_time_beyond_what_loki_reads_falls_back_instead_of_failing_the_whole_push(cfg: LokiExporterConfig) -> None:
    # Loki reads the timestamp as an int64: one larger value would make it refuse every stream of the push (400).
    huge = 2**64 - 1
    req = request(({"service.name": "a"}, [rec("ok", t=T0), rec("o", t=huge, observed_time_unix_nano=T0 + 9),
                                           rec("n", t=2**63, observed_time_unix_nano=huge)]))
    _, doc = build(req, cfg)
    assert [v[0] for v in doc["streams"][0]["values"]] == [str(T0), str(T0 + 9), str(NOW)]


def test_resources_that_end_with_the_same_labels_share_one_stream_on_the_fast_path_too() -> None:
    cfg = config(labels=LabelsConfig(resource={"severity": "level"}))
    assert PushBuilder(cfg).fast_path
    req = request(({"service.name": "a", "severity": "audit"}, [rec("1", sev="INFO")]),
                  ({"service.name": "a"}, [rec("2", sev="AUDIT"), rec("3", sev="INFO")]))
    _, doc = build(req, cfg)
    assert {k: [v[1] for v in vs] for k, vs in streams(doc).items()} == {
        (("level", "audit"), ("service_name", "a")): ["1", "2"], (("level", "info"), ("service_name", "a")): ["3"]}

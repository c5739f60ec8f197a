"""The attributes and resource processors: each action, include/exclude matching, validation, wire bytes kept."""
from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest

from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.model import Payload, Signal
from pipeline.testing import Sink, kv, make_logs, make_metrics, make_traces, nop_settings
from processors import resource
from processors.attributes import processor as attributes
from processors.ottl.values import PMap


def decode(factory: Any, raw: dict[str, Any]) -> tuple[Any, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(factory.config_type, raw, f"processors.{factory.type}", issues)
    return cfg, issues


async def run(factory: Any, raw: dict[str, Any], msg: Any, signal: Signal = Signal.TRACES,
              headers: dict[str, str] | None = None) -> Payload:
    cfg, issues = decode(factory, raw)
    assert not issues, issues
    sink = Sink()
    proc = factory.create(nop_settings(factory.type, signal=signal), cfg, sink)
    payload = Payload(signal, raw=msg.SerializeToString(), headers=headers)
    await proc.consume(payload)
    return sink.payloads[0]


def span_attrs(p: Payload) -> list[dict[str, Any]]:
    return [PMap(s.attributes).to_dict() for rs in p.message.resource_spans  # type: ignore[union-attr]
            for ss in rs.scope_spans for s in ss.spans]


def traces(**attrs: object) -> Any:
    return make_traces(1, attrs=attrs)


@pytest.mark.parametrize(("action", "before", "after"), [
    ({"key": "a", "value": "new", "action": "insert"}, {"a": "old"}, {"a": "old"}),
    ({"key": "b", "value": 7, "action": "insert"}, {"a": "old"}, {"a": "old", "b": 7}),
    ({"key": "a", "value": "new", "action": "update"}, {"a": "old"}, {"a": "new"}),
    ({"key": "b", "value": "new", "action": "update"}, {"a": "old"}, {"a": "old"}),
    ({"key": "b", "value": True, "action": "upsert"}, {"a": "old"}, {"a": "old", "b": True}),
    ({"key": "b", "from_attribute": "a", "action": "upsert"}, {"a": "old"}, {"a": "old", "b": "old"}),
    ({"key": "b", "from_attribute": "missing", "action": "upsert"}, {"a": "old"}, {"a": "old"}),
    ({"key": "a", "action": "delete"}, {"a": 1, "b": 2}, {"b": 2}),
    ({"pattern": "^http\\.", "action": "delete"}, {"http.a": 1, "http.b": 2, "c": 3}, {"c": 3}),
    ({"key": "a", "action": "hash"}, {"a": "secret"}, {"a": hashlib.sha256(b"secret").hexdigest()}),
    ({"key": "n", "action": "hash"}, {"n": 5}, {"n": hashlib.sha256(struct.pack("<q", 5)).hexdigest()}),
    ({"key": "url", "pattern": "^(?P<scheme>\\w+)://(?P<host>[^/]+)", "action": "extract"},
     {"url": "https://example.com/x"}, {"url": "https://example.com/x", "scheme": "https", "host": "example.com"}),
    ({"key": "c", "action": "convert", "converted_type": "int"}, {"c": "200"}, {"c": 200}),
    ({"key": "c", "action": "convert", "converted_type": "int"}, {"c": "2x"}, {"c": "2x"}),
    ({"key": "c", "action": "convert", "converted_type": "int"}, {"c": 2.9}, {"c": 2}),
    ({"key": "c", "action": "convert", "converted_type": "double"}, {"c": "1.5"}, {"c": 1.5}),
    ({"key": "c", "action": "convert", "converted_type": "string"}, {"c": 12}, {"c": "12"}),
    ({"key": "c", "action": "convert", "converted_type": "string"}, {"c": True}, {"c": "true"}),
])
async def test_actions(action: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> None:
    out = await run(attributes.FACTORY, {"actions": [action]}, traces(**before))
    assert span_attrs(out) == [after]


async def test_from_context_reads_request_metadata() -> None:
    out = await run(attributes.FACTORY, {"actions": [
        {"key": "tenant", "from_context": "metadata.x-tenant", "action": "insert"},
        {"key": "legacy", "from_context": "X-Tenant", "action": "insert"},
        {"key": "auth", "from_context": "auth.subject", "action": "insert"}]},
        traces(), headers={"X-Tenant": "acme"})
    assert span_attrs(out) == [{"tenant": "acme", "legacy": "acme"}]


async def test_actions_run_in_order() -> None:
    out = await run(attributes.FACTORY, {"actions": [
        {"key": "copy", "from_attribute": "orig", "action": "insert"},
        {"key": "orig", "action": "delete"},
        {"key": "copy", "action": "hash"}]}, traces(orig="x"))
    assert span_attrs(out) == [{"copy": hashlib.sha256(b"x").hexdigest()}]


async def test_logs_and_data_points() -> None:
    out = await run(attributes.FACTORY, {"actions": [{"key": "env", "value": "prod", "action": "upsert"}]},
                    make_logs(2), Signal.LOGS)
    assert all(PMap(r.attributes).get("env") == "prod"
               for r in out.message.resource_logs[0].scope_logs[0].log_records)  # type: ignore[union-attr]
    out = await run(attributes.FACTORY, {"actions": [{"key": "series", "action": "delete"}]},
                    make_metrics(2), Signal.METRICS)
    points = out.message.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points  # type: ignore
    assert [len(p.attributes) for p in points] == [0, 0]


async def test_include_exclude_for_spans() -> None:
    msg = make_traces(3)
    spans = msg.resource_spans[0].scope_spans[0].spans
    spans[2].attributes.append(kv("db.system", "postgres"))
    action = {"key": "x", "value": 1, "action": "insert"}
    out = await run(attributes.FACTORY, {"actions": [action], "include": {
        "match_type": "strict", "span_names": ["span-0", "span-2"]},
        "exclude": {"match_type": "strict", "attributes": [{"key": "db.system"}]}}, msg)
    assert span_attrs(out) == [{"x": 1}, {}, {"db.system": "postgres"}]
    out = await run(attributes.FACTORY, {"actions": [action], "include": {
        "match_type": "regexp", "services": ["^ag"], "span_kinds": ["Internal"], "libraries": [{"name": "te.t"}]}},
        make_traces(1))
    assert span_attrs(out) == [{"x": 1}]
    out = await run(attributes.FACTORY, {"actions": [action], "include": {
        "match_type": "strict", "resources": [{"key": "service.name", "value": "other"}]}}, make_traces(1))
    assert span_attrs(out) == [{}]
    out = await run(attributes.FACTORY, {"actions": [action], "include": {
        "match_type": "strict", "span_kinds": ["SPAN_KIND_INTERNAL"], "libraries": [{"name": "test", "version": ""}]}},
        make_traces(1))
    assert span_attrs(out) == [{"x": 1}]


async def test_include_for_logs_by_severity_and_body() -> None:
    msg = make_logs(3)
    msg.resource_logs[0].scope_logs[0].log_records[2].severity_number = 17
    out = await run(attributes.FACTORY, {"actions": [{"key": "x", "value": 1, "action": "insert"}], "include": {
        "match_type": "strict", "log_severity_number": {"min": "warn", "match_undefined": False}}}, msg, Signal.LOGS)
    records = out.message.resource_logs[0].scope_logs[0].log_records  # type: ignore[union-attr]
    assert [len(r.attributes) for r in records] == [0, 0, 1]
    out = await run(attributes.FACTORY, {"actions": [{"key": "x", "value": 1, "action": "insert"}], "include": {
        "match_type": "regexp", "log_bodies": ["hello [01]"]}}, make_logs(3), Signal.LOGS)
    records = out.message.resource_logs[0].scope_logs[0].log_records  # type: ignore[union-attr]
    assert [len(r.attributes) for r in records] == [1, 1, 0]


async def test_include_for_metrics_by_name() -> None:
    out = await run(attributes.FACTORY, {"actions": [{"key": "x", "value": 1, "action": "insert"}], "include": {
        "match_type": "strict", "metric_names": ["other"]}}, make_metrics(2), Signal.METRICS)
    points = out.message.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points  # type: ignore
    assert all(len(p.attributes) == 1 for p in points)


def test_properties_that_do_not_apply_to_the_signal_are_refused() -> None:
    cfg, _ = decode(attributes.FACTORY, {"actions": [{"key": "a", "action": "delete"}],
                                         "include": {"match_type": "strict", "span_names": ["x"]}})
    with pytest.raises(ValueError, match="span_names does not apply to logs"):
        attributes.FACTORY.create(nop_settings("attributes", signal=Signal.LOGS), cfg, Sink())


@pytest.mark.parametrize(("raw", "key", "words"), [
    ({}, "actions", "is required"),
    ({"actions": [{"key": "a"}]}, "actions[0].action", "is required"),
    ({"actions": [{"key": "a", "action": "insert"}]}, "actions[0]", "exactly one of value"),
    ({"actions": [{"key": "a", "action": "upsert", "value": 1, "from_attribute": "b"}]}, "actions[0]",
     "got value, from_attribute"),
    ({"actions": [{"action": "delete"}]}, "actions[0]", "key and/or pattern"),
    ({"actions": [{"key": "a", "action": "extract", "pattern": "(x)"}]}, "actions[0].pattern", "must be named"),
    ({"actions": [{"key": "a", "action": "convert"}]}, "actions[0].converted_type", "is required"),
    ({"actions": [{"key": "a", "action": "convert", "converted_type": "bool"}]}, "actions[0].converted_type",
     "must be one of"),
    ({"actions": [{"key": "a", "action": "delete", "pattern": "("}]}, "actions[0].pattern", "invalid regular"),
    ({"actions": [{"key": "a", "action": "delet"}]}, "actions[0].action", "did you mean"),
    ({"actions": [{"key": "a", "action": "delete"}], "include": {"span_names": ["x"]}}, "include.match_type",
     "is required"),
])
def test_validation(raw: dict[str, Any], key: str, words: str) -> None:
    _, issues = decode(attributes.FACTORY, raw)
    found = {i.path: i.message for i in issues}
    assert words in found[f"processors.attributes.{key}"], found


async def test_request_without_the_keys_is_not_decoded() -> None:
    payload_in = Payload(Signal.TRACES, raw=traces(other=1).SerializeToString())
    cfg, _ = decode(attributes.FACTORY, {"actions": [{"key": "password", "action": "delete"},
                                                     {"key": "http.url", "action": "hash"}]})
    sink = Sink()
    await attributes.FACTORY.create(nop_settings("attributes"), cfg, sink).consume(payload_in)
    assert sink.payloads[0] is payload_in and payload_in._message is None


async def test_resource_processor() -> None:
    out = await run(resource.FACTORY, {"attributes": [
        {"key": "deployment.environment", "value": "prod", "action": "upsert"},
        {"key": "service.name", "action": "hash"}]}, make_traces(2))
    res = out.message.resource_spans[0].resource  # type: ignore[union-attr]
    assert PMap(res.attributes).to_dict() == {"service.name": hashlib.sha256(b"agent").hexdigest(),
                                              "deployment.environment": "prod"}
    assert span_attrs(out) == [{}, {}]
    _, issues = decode(resource.FACTORY, {})
    assert issues and issues[0].path == "processors.resource.attributes"

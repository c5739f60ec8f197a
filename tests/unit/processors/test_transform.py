"""The transform processor: config styles and validation, the wire-bytes prefilter, error_mode."""
from __future__ import annotations

from typing import Any

import pytest

from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue, PermanentError
from pipeline.model import Payload, Signal
from pipeline.testing import Sink, make_logs, make_metrics, make_traces, nop_settings
from processors.ottl.values import PMap
from processors.transform import FACTORY, TransformConfig


def config(raw: dict[str, Any]) -> tuple[TransformConfig, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(TransformConfig, raw, "processors.transform", issues)
    return cfg, issues


def messages(issues: list[ConfigIssue]) -> dict[str, str]:
    return {i.path: i.message for i in issues}


def wire(msg: Any, signal: Signal = Signal.TRACES) -> Payload:
    """A payload as a receiver hands it on: wire bytes only."""
    return Payload(signal, raw=msg.SerializeToString())


async def process(raw: dict[str, Any], payload: Payload, signal: Signal = Signal.TRACES) -> Sink:
    cfg, issues = config(raw)
    assert not issues, issues
    sink = Sink()
    proc = FACTORY.create(nop_settings("transform", signal=signal), cfg, sink)
    await proc.consume(payload)
    return sink


def test_default_config_is_valid_and_does_nothing() -> None:
    assert config({})[1] == []


def test_flat_and_advanced_styles_validate() -> None:
    _, issues = config({
        "error_mode": "propagate",
        "trace_statements": ['set(span.attributes["a"], "b")', 'set(resource.attributes["c"], "d")'],
        "metric_statements": [{"context": "datapoint", "statements": ['set(attributes["a"], "b")'],
                               "conditions": ['metric.name == "x"'], "error_mode": "silent"}],
        "log_statements": [{"statements": ['set(log.severity_text, "FAIL") where log.body == "x"']}],
    })
    assert issues == []


def test_validation_names_the_key_the_statement_the_column_and_what_is_supported() -> None:
    _, issues = config({
        "trace_statements": ['sett(span.name, "a")', "set(span.nme, 1)", 'set(span.name, Foo("x"))',
                             "set(log.body, 1)", "set(span.name"],
        "metric_statements": [{"context": "metrik", "statements": ['set(metric.name, "x")']},
                              {"statements": []}],
        "log_statements": ['set(attributes["a"], "b")'],
    })
    msg = messages(issues)
    assert msg["processors.transform.trace_statements[0]"].startswith('column 1 of "sett(span.name, "a")": '
                                                                      "unsupported editor 'sett'; supported editors:")
    assert "delete_key" in msg["processors.transform.trace_statements[0]"]
    assert "column 10 of" in msg["processors.transform.trace_statements[1]"]
    assert "unsupported path 'span.nme': the span context supports span.attributes[...]" \
        in msg["processors.transform.trace_statements[1]"]
    assert "unsupported converter 'Foo'; supported converters: Concat" \
        in msg["processors.transform.trace_statements[2]"]
    assert "log paths cannot be used with traces data" in msg["processors.transform.trace_statements[3]"]
    assert "unexpected end" in msg["processors.transform.trace_statements[4]"]
    assert "unknown context 'metrik'" in msg["processors.transform.metric_statements[0].context"]
    assert "is required" in msg["processors.transform.metric_statements[1].statements"]
    assert "cannot infer the context" in msg["processors.transform.log_statements[0]"]


def test_mixing_styles_in_one_list_is_an_error() -> None:
    _, issues = config({"trace_statements": ['set(span.name, "a")', {"statements": ['set(span.name, "b")']}]})
    assert "both styles" in messages(issues)["processors.transform.trace_statements"]


def test_unknown_group_key_and_bad_error_mode() -> None:
    msg = messages(config({"trace_statements": [{"statments": ["x"]}]})[1])
    assert "did you mean 'statements'" in msg["processors.transform.trace_statements[0].statments"]
    msg = messages(config({"error_mode": "loud"})[1])
    assert "must be one of 'ignore', 'silent', 'propagate'" in msg["processors.transform.error_mode"]


def test_argument_checks() -> None:
    _, issues = config({"trace_statements": [
        'delete_key(span.name, "x")', 'limit(span.attributes, -1, [])', 'keep_keys(span.attributes, "a")',
        'merge_maps(span.attributes, span.attributes, "merge")', 'set(span.attributes["x"], IsMatch(span.name, "["))',
        'replace_pattern(span.name, "a", "b", Sha256)', "set(metric.type, 1)",
    ]})
    msg = list(messages(issues).values())
    assert any("must be a path to a map" in m or "expected a map" in m for m in msg) or len(msg) >= 6
    assert any("limit must not be negative" in m for m in msg)
    assert any("must be a list of strings" in m for m in msg)
    assert any("strategy must be insert, update or upsert" in m for m in msg)
    assert any("invalid regular expression" in m for m in msg)
    assert any("must name a converter, one of SHA256" in m for m in msg)
    assert any("metric paths cannot be used with traces data" in m for m in msg)


async def test_untouched_request_is_neither_decoded_nor_re_encoded() -> None:
    raw_msg = make_traces(5, attrs={"http.route": "/api"})
    payload = wire(raw_msg)
    original = payload.raw_cached
    sink = await process({"trace_statements": [
        'set(span.attributes["env"], "prod") where span.name == "healthcheck"',
        'delete_key(span.attributes, "password")',
        'replace_pattern(span.attributes["http.route"], "/users/\\\\d+", "/users/{id}")',
    ]}, payload)
    out = sink.payloads[0]
    assert out.raw_cached is original  # the very same bytes object
    assert out._message is None  # never decoded


async def test_decoded_but_unchanged_request_keeps_its_bytes() -> None:
    payload = wire(make_traces(5))
    original = payload.raw_cached
    # "span-1" is in the bytes, so the request is decoded, but the value is already set
    sink = await process({"trace_statements": ['set(span.name, "span-1") where span.name == "span-1"']}, payload)
    assert sink.payloads[0].raw_cached is original


async def test_changed_request_is_re_encoded() -> None:
    sink = await process({"trace_statements": ['set(span.attributes["env"], "prod") where span.name == "span-1"']},
                         wire(make_traces(3)))
    out = sink.payloads[0]
    assert out.raw_cached is None
    spans = out.message.resource_spans[0].scope_spans[0].spans  # type: ignore[union-attr]
    assert [PMap(s.attributes).get("env") for s in spans] == [None, "prod", None]
    assert out.items == 3


async def test_each_signal_uses_its_own_list() -> None:
    sink = await process({"metric_statements": ['set(metric.name, "renamed")'],
                          "log_statements": ['set(log.body, "x")']}, wire(make_metrics(2), Signal.METRICS),
                         Signal.METRICS)
    assert sink.payloads[0].message.resource_metrics[0].scope_metrics[0].metrics[0].name == "renamed"  # type: ignore
    sink = await process({"log_statements": ['set(log.body, "x")']}, wire(make_logs(2), Signal.LOGS), Signal.LOGS)
    assert sink.payloads[0].message.resource_logs[0].scope_logs[0].log_records[0].body.string_value == "x"  # type: ignore


async def test_propagate_refuses_the_request_with_a_permanent_error() -> None:
    cfg = {"error_mode": "propagate", "trace_statements": ['set(span.attributes["x"], Split(span.name, 1))']}
    _, issues = config(cfg)
    assert issues  # Split's delimiter must be a literal string: caught at validation
    with pytest.raises(PermanentError, match="Int|Split|math"):
        await process({"error_mode": "propagate",
                       "trace_statements": ['set(span.attributes["x"], 1 + span.name)']}, wire(make_traces(1)))


async def test_ignore_keeps_going_and_logs_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    sink = await process({"trace_statements": ['set(span.attributes["x"], 1 + span.name)',
                                               'set(span.attributes["y"], "ok")']}, wire(make_traces(4)))
    spans = sink.payloads[0].message.resource_spans[0].scope_spans[0].spans  # type: ignore[union-attr]
    assert all(PMap(s.attributes).get("y") == "ok" for s in spans)
    assert sum("failed" in r.getMessage() for r in caplog.records) == 1  # rate-limited: 4 failures, one line


def test_flatten_data_is_refused_with_a_reason() -> None:
    assert "feature gate" in messages(config({"flatten_data": True})[1])["processors.transform.flatten_data"]

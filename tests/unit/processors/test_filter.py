"""The filter processor: what is dropped (and counted), both config styles, the prefilter, legacy spans matching."""
from __future__ import annotations

from typing import Any

import pytest

from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue, PermanentError
from pipeline.model import Payload, Signal
from pipeline.testing import Sink, kv, make_logs, make_metrics, make_traces, nop_settings
from processors.filter import FACTORY, FilterConfig


def config(raw: dict[str, Any]) -> tuple[FilterConfig, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(FilterConfig, raw, "processors.filter", issues)
    return cfg, issues


async def run(raw: dict[str, Any], msg: Any, signal: Signal = Signal.TRACES) -> tuple[Sink, Any, Payload]:
    cfg, issues = config(raw)
    assert not issues, issues
    sink = Sink()
    settings = nop_settings("filter", signal=signal)
    proc = FACTORY.create(settings, cfg, sink)
    payload = Payload(signal, raw=msg.SerializeToString())
    await proc.consume(payload)
    return sink, settings.telemetry, payload


def span_names(sink: Sink) -> list[str]:
    return [s.name for p in sink.payloads for rs in p.message.resource_spans  # type: ignore[union-attr]
            for ss in rs.scope_spans for s in ss.spans]


async def test_drops_matching_spans_and_counts_them() -> None:
    sink, tel, _ = await run({"trace_conditions": ['span.name == "span-1"', 'IsMatch(span.name, "-3$")']},
                             make_traces(5))
    assert span_names(sink) == ["span-0", "span-2", "span-4"]
    assert sink.items == 3
    assert tel.value("otelpipe_processor_dropped_spans_total", processor="filter", reason="filtered") == 2


async def test_older_style_keys() -> None:
    sink, _, _ = await run({"traces": {"span": ['span.name == "span-0"', 'attributes["k"] == "v"']}},
                           make_traces(3))
    assert span_names(sink) == ["span-1", "span-2"]


async def test_everything_dropped_sends_nothing() -> None:
    sink, tel, _ = await run({"trace_conditions": ['resource.attributes["service.name"] == "agent"']},
                             make_traces(4))
    assert sink.payloads == []
    assert tel.value("otelpipe_processor_dropped_spans_total", processor="filter", reason="filtered") == 4


async def test_resource_context_drops_the_whole_resource() -> None:
    msg = make_traces(2)
    other = msg.resource_spans.add()
    other.CopyFrom(msg.resource_spans[0])
    other.resource.attributes[0].value.string_value = "noisy"
    sink, _, _ = await run({"traces": {"resource": ['attributes["service.name"] == "noisy"']}}, msg)
    assert sink.items == 2 and len(sink.payloads[0].message.resource_spans) == 1  # type: ignore[union-attr]


async def test_spanevents_are_dropped_from_their_span() -> None:
    msg = make_traces(1)
    span = msg.resource_spans[0].scope_spans[0].spans[0]
    for name in ("keep", "drop"):
        span.events.add().name = name
    sink, _, _ = await run({"trace_conditions": ['spanevent.name == "drop"']}, msg)
    events = sink.payloads[0].message.resource_spans[0].scope_spans[0].spans[0].events  # type: ignore[union-attr]
    assert [e.name for e in events] == ["keep"] and sink.items == 1


async def test_datapoints_and_empty_metrics() -> None:
    sink, tel, _ = await run({"metric_conditions": ['datapoint.attributes["series"] == "1"']},
                             make_metrics(3), Signal.METRICS)
    assert sink.items == 2
    assert tel.value("otelpipe_processor_dropped_metric_points_total", processor="filter", reason="filtered") == 1
    sink, _, _ = await run({"metrics": {"datapoint": ["value_int > 0"]}}, make_metrics(3), Signal.METRICS)
    assert sink.payloads == []  # every point went, so did the metric, its scope and resource


async def test_metric_context() -> None:
    sink, tel, _ = await run({"metric_conditions": ['metric.name == "requests"']}, make_metrics(3), Signal.METRICS)
    assert sink.payloads == []
    assert tel.value("otelpipe_processor_dropped_metric_points_total", processor="filter", reason="filtered") == 3


async def test_logs_by_severity() -> None:
    msg = make_logs(3)
    msg.resource_logs[0].scope_logs[0].log_records[1].severity_number = 17
    sink, _, _ = await run({"log_conditions": ["log.severity_number < SEVERITY_NUMBER_WARN"]}, msg, Signal.LOGS)
    assert sink.items == 1
    sink, _, _ = await run({"logs": {"log_record": ['IsMatch(body, "hello [02]")']}}, make_logs(3), Signal.LOGS)
    assert sink.items == 1


async def test_request_no_condition_can_match_is_not_decoded() -> None:
    sink, _, payload = await run({"trace_conditions": ['span.name == "healthcheck"',
                                                       'span.attributes["http.route"] == "/ready"']},
                                 make_traces(5))
    out = sink.payloads[0]
    assert out is payload and out._message is None and out.raw_cached is not None


async def test_condition_groups_and_error_modes() -> None:
    bad = 'Int(span.name) + 1 > 0 and span.attributes["k"] == nil'  # Int("span-0") is nil: math on nil fails
    sink, _, _ = await run({"trace_conditions": [{"conditions": [bad], "error_mode": "silent"}]}, make_traces(2))
    assert sink.items == 2  # a failing condition counts as false
    with pytest.raises(PermanentError, match="filter"):
        await run({"error_mode": "propagate", "trace_conditions": [bad]}, make_traces(2))


def test_validation() -> None:
    _, issues = config({
        "trace_conditions": ['span.nam == "x"', 'set(span.name, "x")'],
        "traces": {"span": ['name == "x"']},
        "metrics": {"include": {"match_type": "strict", "metric_names": ["a"]}},
        "log_conditions": [{"context": "log", "conditions": ["body =="]}],
    })
    msg = {i.path: i.message for i in issues}
    assert "unsupported path 'span.nam'" in msg["processors.filter.trace_conditions[0]"]
    assert "column 4" in msg["processors.filter.trace_conditions[1]"]
    assert "cannot be combined" in msg["processors.filter.trace_conditions"]
    assert "not supported for metrics" in msg["processors.filter.metrics.include"]
    assert "unexpected end" in msg["processors.filter.log_conditions[0].conditions[0]"]


async def test_legacy_spans_include_exclude() -> None:
    msg = make_traces(4)
    spans = msg.resource_spans[0].scope_spans[0].spans
    spans[1].attributes.append(kv("http.route", "/health"))
    sink, _, _ = await run({"spans": {"exclude": {"match_type": "strict", "attributes": [
        {"key": "http.route", "value": "/health"}]}}}, msg)
    assert span_names(sink) == ["span-0", "span-2", "span-3"]
    sink, _, _ = await run({"spans": {"include": {"match_type": "regexp", "span_names": ["-[01]$"]}}}, make_traces(4))
    assert span_names(sink) == ["span-0", "span-1"]
    _, issues = config({"spans": {"include": {"match_type": "strict", "metric_names": ["x"]}}})
    assert any("does not apply to traces" in i.message for i in issues)

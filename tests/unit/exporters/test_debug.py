"""Debug exporter: what each verbosity prints, and its config."""
from __future__ import annotations

import io

import orjson
import pytest

from exporters import debug
from exporters.debug import DebugExporter, DebugExporterConfig
from pipeline import otlpjson
from pipeline.component import Kind
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.exporterhelper import ExporterHelper
from pipeline.model import Payload, Signal
from pipeline.testing import (
    kv,
    make_logs,
    make_metrics,
    make_traces,
    nop_host,
    nop_settings,
)


def exporter(verbosity: str, signal: Signal = Signal.TRACES) -> tuple[DebugExporter, io.StringIO]:
    out = io.StringIO()
    cfg = DebugExporterConfig(verbosity=verbosity)  # type: ignore[arg-type]
    return DebugExporter(nop_settings("debug", Kind.EXPORTER, signal), cfg, stream=out), out


def decode(data: object) -> tuple[DebugExporterConfig, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    return decode_dataclass(DebugExporterConfig, data, "exporters.debug", issues), issues


def test_config_defaults() -> None:
    cfg, issues = decode(None)
    assert issues == []
    assert cfg.verbosity == "basic"
    assert cfg.sending_queue.enabled is False
    assert cfg.retry_on_failure.enabled is True


def test_config_rejects_typo_and_bad_verbosity() -> None:
    _, issues = decode({"verbosty": "normal"})
    assert [(i.path, i.message) for i in issues] == [
        ("exporters.debug.verbosty", "unknown key 'verbosty'; did you mean 'verbosity'?")]
    _, issues = decode({"verbosity": "loud"})
    assert [i.path for i in issues] == ["exporters.debug.verbosity"]
    assert "must be one of 'basic', 'normal', 'detailed'" in issues[0].message
    cfg, issues = decode({"sending_queue": {"enabled": True}})
    assert issues == [] and cfg.sending_queue.enabled


@pytest.mark.parametrize(("signal", "msg", "expected"), [
    (Signal.TRACES, make_traces(7), "debug traces: resources=1 spans=7\n"),
    (Signal.METRICS, make_metrics(5), "debug metrics: resources=1 metrics=1 metric_points=5\n"),
    (Signal.LOGS, make_logs(3), "debug logs: resources=1 log_records=3\n"),
])
async def test_basic_is_one_line_per_request(signal: Signal, msg: object, expected: str) -> None:
    exp, out = exporter("basic", signal)
    await exp.push(Payload(signal, message=msg))  # type: ignore[arg-type]
    assert out.getvalue() == expected


async def test_normal_traces_one_line_per_span_with_service_name_duration_status_and_ids() -> None:
    exp, out = exporter("normal")
    msg = make_traces(3, attrs={"http.method": "GET"}, service="support-agent")
    spans = msg.resource_spans[0].scope_spans[0].spans  # type: ignore[union-attr]
    spans[1].end_time_unix_nano = spans[1].start_time_unix_nano + 12_500_000
    spans[1].status.code = 2
    spans[1].status.message = "tool timed out"
    spans[2].parent_span_id = bytes.fromhex("00000000000000aa")
    spans[2].end_time_unix_nano = spans[2].start_time_unix_nano + 3_200_000_000
    spans[2].status.code = 1
    await exp.push(Payload(Signal.TRACES, message=msg))
    lines = out.getvalue().splitlines()
    assert lines[0] == "debug traces: resources=1 spans=3"
    assert lines[1:] == [
        "  span support-agent 'span-0' 1us UNSET trace_id=00000000000000000000000000000001 span_id=0000000000000001 "
        "http.method=GET",
        "  span support-agent 'span-1' 12.500ms ERROR(tool timed out) trace_id=00000000000000000000000000000001 "
        "span_id=0000000000000002 http.method=GET",
        "  span support-agent 'span-2' 3.200s OK trace_id=00000000000000000000000000000001 span_id=0000000000000003 "
        "parent_span_id=00000000000000aa http.method=GET",
    ]


async def test_normal_metrics_one_line_per_point() -> None:
    exp, out = exporter("normal", Signal.METRICS)
    msg = make_metrics(2)
    sm = msg.resource_metrics[0].scope_metrics[0]  # type: ignore[union-attr]
    h = sm.metrics.add(name="latency")
    dp = h.histogram.data_points.add(count=4, sum=2.5)
    dp.attributes.append(kv("route", "/a"))
    g = sm.metrics.add(name="temp")
    g.gauge.data_points.add(as_double=21.5)
    await exp.push(Payload(Signal.METRICS, message=msg))
    assert out.getvalue().splitlines()[1:] == [
        "  metric requests{series=0} sum 1",
        "  metric requests{series=1} sum 2",
        "  metric latency{route=/a} histogram count=4 sum=2.5",
        "  metric temp gauge 21.5",
    ]


async def test_normal_logs_one_line_per_record() -> None:
    exp, out = exporter("normal", Signal.LOGS)
    msg = make_logs(2)
    rec = msg.resource_logs[0].scope_logs[0].log_records[1]  # type: ignore[union-attr]
    rec.trace_id = (5).to_bytes(16, "big")
    rec.span_id = (6).to_bytes(8, "big")
    rec.attributes.append(kv("user", {"id": 7, "tags": ["a", "b"]}))
    await exp.push(Payload(Signal.LOGS, message=msg))
    assert out.getvalue().splitlines()[1:] == [
        "  log INFO hello 0",
        "  log INFO hello 1 trace_id=00000000000000000000000000000005 span_id=0000000000000006 "
        "user={id=7 tags=[a, b]}",
    ]


@pytest.mark.parametrize("signal", list(Signal))
async def test_detailed_prints_the_whole_request_as_otlp_json(signal: Signal) -> None:
    exp, out = exporter("detailed", signal)
    msg = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}[signal](2)
    await exp.push(Payload(signal, raw=msg.SerializeToString()))
    header, _, body = out.getvalue().partition("\n")
    assert header.startswith(f"debug {signal.value}: resources=1")
    assert otlpjson.decode(signal, body) == msg
    assert orjson.loads(body) == orjson.loads(otlpjson.encode(msg))


async def test_writes_to_stdout_by_default_leaving_stderr_to_the_logs(capsys: pytest.CaptureFixture[str]) -> None:
    exp = debug.create(nop_settings("debug/x", Kind.EXPORTER, Signal.TRACES), DebugExporterConfig())
    await exp.push(Payload(Signal.TRACES, message=make_traces(1)))
    captured = capsys.readouterr()
    assert captured.out == "debug/x traces: resources=1 spans=1\n" and captured.err == ""


async def test_output_is_synchronous_behind_the_helper() -> None:
    """With the queue off by default, output is written before consume() returns."""
    out = io.StringIO()
    settings = nop_settings("debug", Kind.EXPORTER, Signal.TRACES)
    cfg = DebugExporterConfig()
    helper = ExporterHelper(settings, DebugExporter(settings, cfg, stream=out), cfg)
    await helper.start(nop_host())
    await helper.consume(Payload(Signal.TRACES, message=make_traces(2)))
    assert out.getvalue() == "debug traces: resources=1 spans=2\n"
    await helper.shutdown()

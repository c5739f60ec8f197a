"""OTLP/gRPC receiver: real SDK exporters and raw grpc.aio clients against a receiver on 127.0.0.1:0."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status as SpanStatus
from opentelemetry.trace import StatusCode as SpanStatusCode

from pipeline.component import Consumer, Kind
from pipeline.errors import (
    DataRefusedError,
    PermanentError,
    QueueFullError,
    RetryableError,
)
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import (
    Sink,
    make_logs,
    make_metrics,
    make_traces,
    nop_host,
    nop_settings,
)
from receivers.otlp.config import GRPCConfig, OTLPReceiverConfig, ProtocolsConfig
from receivers.otlp.receiver import FACTORY, OTLPReceiver

TRACES_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
REFUSED = "otelpipe_receiver_refused_spans_total"
ACCEPTED = "otelpipe_receiver_accepted_spans_total"


@contextlib.asynccontextmanager
async def running(consumers: Mapping[Signal, Consumer],
                  **grpc_kw: object) -> AsyncIterator[tuple[OTLPReceiver, Telemetry]]:
    tel = Telemetry(process_metrics=False)
    settings = nop_settings("otlp", Kind.RECEIVER, None, telemetry=tel)
    cfg = OTLPReceiverConfig(protocols=ProtocolsConfig(grpc=GRPCConfig(endpoint="127.0.0.1:0", **grpc_kw)))
    receiver = FACTORY.create(settings, cfg, consumers)
    await receiver.start(nop_host())
    try:
        yield receiver, tel
    finally:
        await receiver.shutdown()


def refused(tel: Telemetry, reason: str, name: str = REFUSED) -> float:
    return tel.value(name, receiver="otlp", transport="grpc", reason=reason)


async def export_raw(endpoint: str, body: bytes, method: str = TRACES_METHOD, **kw: object) -> bytes:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        return await channel.unary_unary(method)(body, timeout=5, **kw)  # type: ignore[no-any-return]


async def good_request_succeeds(endpoint: str, sink: Sink) -> None:
    before = sink.items
    assert await export_raw(endpoint, make_traces(3).SerializeToString()) == b""
    await sink.wait_for_items(before + 3)


# --- the OpenTelemetry Python SDK's own gRPC exporters -------------------------------------------

def sdk_spans() -> list:
    provider = TracerProvider(resource=Resource.create({"service.name": "agent-runner", "deployment": "test"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("agent.tools", "1.2.3")
    with tracer.start_as_current_span("plan", attributes={"agent.step": 3, "agent.tool": "search",
                                                          "ratio": 0.5, "tags": ("a", "b")}) as parent:
        parent.add_event("thinking", {"tokens": 42})
        with tracer.start_as_current_span("call-tool") as child:
            child.set_status(SpanStatus(SpanStatusCode.ERROR, "tool timed out"))
    provider.shutdown()
    return list(memory.get_finished_spans())


def check_spans(sent: list, received: Payload) -> None:
    msg = received.message
    assert msg == encode_spans(sent)  # byte-for-byte what the SDK encoded
    rs = msg.resource_spans[0]
    assert {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"] == "agent-runner"
    scope = rs.scope_spans[0]
    assert (scope.scope.name, scope.scope.version) == ("agent.tools", "1.2.3")
    by_name = {s.name: s for s in scope.spans}
    for span in sent:
        got = by_name[span.name]
        assert got.trace_id == span.context.trace_id.to_bytes(16, "big")
        assert got.span_id == span.context.span_id.to_bytes(8, "big")
    plan, call = by_name["plan"], by_name["call-tool"]
    assert call.parent_span_id == plan.span_id
    attrs = {a.key: a.value for a in plan.attributes}
    assert attrs["agent.step"].int_value == 3 and attrs["agent.tool"].string_value == "search"
    assert attrs["ratio"].double_value == 0.5
    assert [v.string_value for v in attrs["tags"].array_value.values] == ["a", "b"]
    assert plan.events[0].name == "thinking" and plan.events[0].attributes[0].value.int_value == 42
    assert call.status.code == 2 and call.status.message == "tool timed out"


async def test_sdk_span_exporter_spans_arrive_intact() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as (receiver, tel):
        spans = sdk_spans()
        exporter = OTLPSpanExporter(endpoint=receiver.endpoints["grpc"], insecure=True, timeout=5)
        try:
            assert await asyncio.to_thread(exporter.export, spans) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        await sink.wait_for_items(2)
        check_spans(spans, sink.payloads[0])
        assert sink.payloads[0].receiver == "otlp"
        assert tel.value(ACCEPTED, receiver="otlp", transport="grpc") == 2


async def test_sdk_exporter_gzip_compression() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as (receiver, _):
        spans = sdk_spans()
        exporter = OTLPSpanExporter(endpoint=receiver.endpoints["grpc"], insecure=True, timeout=5,
                                    compression=grpc.Compression.Gzip)
        try:
            assert await asyncio.to_thread(exporter.export, spans) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        await sink.wait_for_items(2)
        check_spans(spans, sink.payloads[0])


async def test_sdk_metric_exporter_points_arrive_intact() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({"service.name": "agent-runner"}), metric_readers=[reader])
    meter = provider.get_meter("agent.metrics")
    meter.create_counter("tool_calls").add(5, {"tool": "search"})
    meter.create_counter("tool_calls").add(2, {"tool": "browse"})
    meter.create_histogram("latency_ms").record(12.5, {"tool": "search"})
    data = reader.get_metrics_data()
    provider.shutdown()
    sink = Sink()
    async with running({Signal.METRICS: sink}) as (receiver, tel):
        exporter = OTLPMetricExporter(endpoint=receiver.endpoints["grpc"], insecure=True, timeout=5)
        try:
            assert await asyncio.to_thread(exporter.export, data) == MetricExportResult.SUCCESS
        finally:
            exporter.shutdown()
        await sink.wait_for_items(3)
        msg = sink.payloads[0].message
        assert msg == encode_metrics(data)
        metrics = {m.name: m for m in msg.resource_metrics[0].scope_metrics[0].metrics}
        points = {dp.attributes[0].value.string_value: dp.as_int for dp in metrics["tool_calls"].sum.data_points}
        assert points == {"search": 5, "browse": 2}
        assert metrics["latency_ms"].histogram.data_points[0].sum == 12.5
        assert tel.value("otelpipe_receiver_accepted_metric_points_total", transport="grpc") == 3


async def test_sdk_log_exporter_records_arrive_intact() -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": "agent-runner"}))
    memory = InMemoryLogRecordExporter()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.get_logger("agent.logs").emit(severity_number=SeverityNumber.WARN, severity_text="WARN",
                                           body="tool search failed", attributes={"agent.id": "a-1"})
    records = list(memory.get_finished_logs())
    provider.shutdown()
    sink = Sink()
    async with running({Signal.LOGS: sink}) as (receiver, _):
        exporter = OTLPLogExporter(endpoint=receiver.endpoints["grpc"], insecure=True, timeout=5)
        try:
            assert await asyncio.to_thread(exporter.export, records) == LogRecordExportResult.SUCCESS
        finally:
            exporter.shutdown()
        await sink.wait_for_items(1)
        msg = sink.payloads[0].message
        assert msg == encode_logs(records)
        record = msg.resource_logs[0].scope_logs[0].log_records[0]
        assert record.body.string_value == "tool search failed"
        assert record.severity_text == "WARN"
        assert {a.key: a.value.string_value for a in record.attributes}["agent.id"] == "a-1"


# --- wire bytes, compression, size limit ---------------------------------------------------------

async def test_payload_keeps_the_received_bytes_without_reencoding() -> None:
    sink = Sink()
    body = make_traces(4).SerializeToString()
    async with running({Signal.TRACES: sink}) as (receiver, _):
        assert await export_raw(receiver.endpoints["grpc"], body) == b""
        await sink.wait_for_items(4)
    payload = sink.payloads[0]
    assert payload.raw_cached == body
    assert payload.items == 4


@pytest.mark.parametrize("signal,build,stub", [
    (Signal.TRACES, make_traces, trace_service_pb2_grpc.TraceServiceStub),
    (Signal.METRICS, make_metrics, metrics_service_pb2_grpc.MetricsServiceStub),
    (Signal.LOGS, make_logs, logs_service_pb2_grpc.LogsServiceStub),
])
async def test_every_signal_with_generated_stubs_and_gzip(signal: Signal, build, stub) -> None:  # type: ignore[no-untyped-def]
    sink = Sink()
    async with running({signal: sink}) as (receiver, _):
        async with grpc.aio.insecure_channel(receiver.endpoints["grpc"]) as channel:
            response = await stub(channel).Export(build(5), compression=grpc.Compression.Gzip, timeout=5)
        assert response == signal.response_type()
        assert not response.HasField("partial_success")
        await sink.wait_for_items(5)
        assert sink.payloads[0].signal is signal


async def test_message_over_max_recv_msg_size_is_resource_exhausted() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, max_recv_msg_size_mib=1) as (receiver, _):
        big = make_traces(1, attrs={"blob": "x" * (1024 * 1024 + 100)}).SerializeToString()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await export_raw(receiver.endpoints["grpc"], big)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await good_request_succeeds(receiver.endpoints["grpc"], sink)
        assert sink.items == 3


async def test_gzip_bomb_is_limited_by_the_decompressed_size() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, max_recv_msg_size_mib=1) as (receiver, _):
        bomb = make_traces(1, attrs={"blob": "\0" * (8 * 1024 * 1024)}).SerializeToString()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await export_raw(receiver.endpoints["grpc"], bomb, compression=grpc.Compression.Gzip)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await good_request_succeeds(receiver.endpoints["grpc"], sink)


@pytest.mark.parametrize("garbage", [
    b"\x0a\xff\xff\xff\xff\x0f",  # field 1, length far beyond the message
    b"\x0a\x05\x0a\x03\x12",      # truncated nested message
    b"\xff\xff\xff\xff",          # not a valid tag
])
async def test_garbage_protobuf_is_invalid_argument_and_counted(garbage: bytes) -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as (receiver, tel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await export_raw(receiver.endpoints["grpc"], garbage)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "ExportTraceServiceRequest" in (err.value.details() or "")
        assert refused(tel, "malformed") == 1
        await good_request_succeeds(receiver.endpoints["grpc"], sink)
        assert sink.items == 3


async def test_signal_without_consumer_is_unimplemented() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as (receiver, _):
        async with grpc.aio.insecure_channel(receiver.endpoints["grpc"]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await logs_service_pb2_grpc.LogsServiceStub(channel).Export(make_logs(1), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        await good_request_succeeds(receiver.endpoints["grpc"], sink)


# --- pipeline outcomes → status codes ------------------------------------------------------------

def status_details(err: grpc.aio.AioRpcError) -> tuple[Status, dict[str, bytes]]:
    trailers = {k: v for k, v in (err.trailing_metadata() or ()) if isinstance(v, bytes)}
    return Status.FromString(trailers["grpc-status-details-bin"]), trailers


def retry_info(status: Status) -> RetryInfo:
    infos = [d for d in status.details if d.Is(RetryInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = RetryInfo()
    infos[0].Unpack(info)
    return info


@pytest.mark.parametrize("error,code,reason", [
    (QueueFullError("sending queue is full", retry_after=2.5), grpc.StatusCode.RESOURCE_EXHAUSTED, "queue_full"),
    (DataRefusedError("memory limit reached", retry_after=2.5), grpc.StatusCode.RESOURCE_EXHAUSTED, "memory_limit"),
    (RetryableError("backend down", retry_after=2.5), grpc.StatusCode.UNAVAILABLE, "unavailable"),
])
async def test_back_pressure_carries_retry_info(error: Exception, code: grpc.StatusCode, reason: str) -> None:
    sink = Sink()
    sink.fail_with, sink.fail_times = error, 1
    async with running({Signal.TRACES: sink}) as (receiver, tel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await export_raw(receiver.endpoints["grpc"], make_traces(7).SerializeToString())
        assert err.value.code() == code
        assert str(error) in (err.value.details() or "")
        status, trailers = status_details(err.value)
        assert status.code == code.value[0]
        info = retry_info(status)
        assert (info.retry_delay.seconds, info.retry_delay.nanos) == (2, 500_000_000)
        # Where the OpenTelemetry Python SDK exporter looks for it.
        assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]) == info
        assert refused(tel, reason) == 7
        assert tel.value(ACCEPTED, transport="grpc") == 0
        await good_request_succeeds(receiver.endpoints["grpc"], sink)
        assert tel.value(ACCEPTED, transport="grpc") == 3


async def test_permanent_error_is_invalid_argument_without_retry_info() -> None:
    sink = Sink()
    sink.fail_with, sink.fail_times = PermanentError("bad data"), 1
    async with running({Signal.TRACES: sink}) as (receiver, tel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await export_raw(receiver.endpoints["grpc"], make_traces(2).SerializeToString())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status, trailers = status_details(err.value)
        assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and not status.details
        assert "google.rpc.retryinfo-bin" not in trailers
        assert refused(tel, "permanent_error") == 2


async def test_include_metadata_copies_grpc_metadata() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, include_metadata=True) as (receiver, _):
        await export_raw(receiver.endpoints["grpc"], make_traces(1).SerializeToString(),
                         metadata=(("x-tenant", "acme"),))
        await sink.wait_for_items(1)
    assert sink.payloads[0].headers is not None and sink.payloads[0].headers["x-tenant"] == "acme"


# --- lifecycle -----------------------------------------------------------------------------------

class GateSink(Sink):
    """Holds each payload until released, to have a request in flight during shutdown."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def consume(self, payload: Payload) -> None:
        self.entered.set()
        await self.release.wait()
        await super().consume(payload)


async def test_shutdown_finishes_in_flight_requests_then_stops_accepting() -> None:
    sink = GateSink()
    async with running({Signal.TRACES: sink}) as (receiver, _):
        endpoint = receiver.endpoints["grpc"]
        call = asyncio.create_task(export_raw(endpoint, make_traces(2).SerializeToString()))
        await asyncio.wait_for(sink.entered.wait(), 5)
        stopping = asyncio.create_task(receiver.shutdown())
        sink.release.set()
        assert await asyncio.wait_for(call, 5) == b""
        await asyncio.wait_for(stopping, 10)
        assert sink.items == 2
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async with grpc.aio.insecure_channel(endpoint) as channel:
                await channel.unary_unary(TRACES_METHOD)(b"", timeout=1)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_shutdown_without_start_and_twice() -> None:
    receiver = FACTORY.create(nop_settings("otlp", Kind.RECEIVER, None), OTLPReceiverConfig(), {Signal.TRACES: Sink()})
    await receiver.shutdown()
    await receiver.shutdown()
    async with running({Signal.TRACES: Sink()}) as (started, _):
        await started.shutdown()
    await started.shutdown()


async def test_port_in_use_fails_start() -> None:
    async with running({Signal.TRACES: Sink()}) as (first, _):
        port = first.endpoints["grpc"].rpartition(":")[2]
        cfg = OTLPReceiverConfig(protocols=ProtocolsConfig(grpc=GRPCConfig(endpoint=f"127.0.0.1:{port}")))
        second = FACTORY.create(nop_settings("otlp/2", Kind.RECEIVER, None), cfg, {Signal.TRACES: Sink()})
        with pytest.raises(OSError, match="OTLP/gRPC"):
            await second.start(nop_host())
        await second.shutdown()
        assert await export_raw(first.endpoints["grpc"], b"") == b""

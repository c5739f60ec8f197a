"""OTLP/HTTP receiver: the SDK's HTTP exporters, hand-written OTLP/JSON and every kind of bad request."""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
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
from pipeline.model import Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import (
    Sink,
    make_logs,
    make_metrics,
    make_traces,
    nop_host,
    nop_settings,
)
from receivers.otlp import http_body as otlp_http_body
from receivers.otlp.config import (
    CORSConfig,
    GRPCConfig,
    HTTPConfig,
    OTLPReceiverConfig,
    ProtocolsConfig,
)
from receivers.otlp.http import BodyTooLarge, decompress
from receivers.otlp.receiver import FACTORY, OTLPReceiver

PB = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
REFUSED = "otelpipe_receiver_refused_spans_total"
ACCEPTED = "otelpipe_receiver_accepted_spans_total"


class Client:
    """A running receiver, its telemetry and an aiohttp session pointed at it."""

    def __init__(self, receiver: OTLPReceiver, tel: Telemetry, session: aiohttp.ClientSession) -> None:
        self.receiver = receiver
        self.tel = tel
        self.session = session
        self.base = f"http://{receiver.endpoints['http']}"

    async def post(self, path: str, data: Any, headers: Mapping[str, str], **kw: Any) -> tuple[int, bytes, Any]:
        async with self.session.post(self.base + path, data=data, headers=headers, **kw) as resp:
            return resp.status, await resp.read(), resp.headers

    def refused(self, reason: str, name: str = REFUSED) -> float:
        return self.tel.value(name, receiver="otlp", transport="http", reason=reason)

    async def good_request_succeeds(self, sink: Sink) -> None:
        before = sink.items
        status, body, _ = await self.post("/v1/traces", make_traces(3).SerializeToString(), PB)
        assert (status, body) == (200, b"")
        await sink.wait_for_items(before + 3)


@contextlib.asynccontextmanager
async def running(consumers: Mapping[Signal, Consumer], **http_kw: Any) -> AsyncIterator[Client]:
    tel = Telemetry(process_metrics=False)
    settings = nop_settings("otlp", Kind.RECEIVER, None, telemetry=tel)
    cfg = OTLPReceiverConfig(protocols=ProtocolsConfig(http=HTTPConfig(endpoint="127.0.0.1:0", **http_kw)))
    receiver = FACTORY.create(settings, cfg, consumers)
    await receiver.start(nop_host())
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            yield Client(receiver, tel, session)
    finally:
        await receiver.shutdown()


def status_of(body: bytes, headers: Any) -> Status:
    """The google.rpc.Status of an error body, in whichever content type it came."""
    if headers["Content-Type"].startswith("application/json"):
        data = orjson.loads(body)
        return Status(code=data["code"], message=data["message"])
    assert headers["Content-Type"].startswith("application/x-protobuf")
    return Status.FromString(body)


# --- the OpenTelemetry Python SDK's own HTTP exporters -------------------------------------------

def sdk_spans() -> list:
    provider = TracerProvider(resource=Resource.create({"service.name": "agent-runner"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("agent.tools", "1.2.3")
    with tracer.start_as_current_span("plan", attributes={"agent.step": 3, "agent.tool": "search"}) as parent:
        parent.add_event("thinking", {"tokens": 42})
        with tracer.start_as_current_span("call-tool") as child:
            child.set_status(SpanStatus(SpanStatusCode.ERROR, "tool timed out"))
    provider.shutdown()
    return list(memory.get_finished_spans())


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate])
async def test_sdk_span_exporter_spans_arrive_intact(compression: Compression) -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as client:
        spans = sdk_spans()
        exporter = OTLPSpanExporter(endpoint=client.base + "/v1/traces", timeout=5, compression=compression)
        try:
            assert await asyncio.to_thread(exporter.export, spans) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        await sink.wait_for_items(2)
        payload = sink.payloads[0]
        msg = payload.message
        assert msg == encode_spans(spans)
        assert payload.raw_cached == msg.SerializeToString()  # protobuf bodies keep their wire bytes
        rs = msg.resource_spans[0]
        assert {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"] == "agent-runner"
        by_name = {s.name: s for s in rs.scope_spans[0].spans}
        for span in spans:
            assert by_name[span.name].trace_id == span.context.trace_id.to_bytes(16, "big")
            assert by_name[span.name].span_id == span.context.span_id.to_bytes(8, "big")
        plan, call = by_name["plan"], by_name["call-tool"]
        assert call.parent_span_id == plan.span_id
        assert {a.key: a.value.int_value for a in plan.attributes}["agent.step"] == 3
        assert plan.events[0].name == "thinking"
        assert (call.status.code, call.status.message) == (2, "tool timed out")
        assert client.tel.value(ACCEPTED, receiver="otlp", transport="http") == 2


async def test_sdk_metric_exporter_points_arrive_intact() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({"service.name": "agent-runner"}), metric_readers=[reader])
    provider.get_meter("agent.metrics").create_counter("tool_calls").add(5, {"tool": "search"})
    data = reader.get_metrics_data()
    provider.shutdown()
    sink = Sink()
    async with running({Signal.METRICS: sink}) as client:
        exporter = OTLPMetricExporter(endpoint=client.base + "/v1/metrics", timeout=5, compression=Compression.Gzip)
        try:
            assert await asyncio.to_thread(exporter.export, data) == MetricExportResult.SUCCESS
        finally:
            exporter.shutdown()
        await sink.wait_for_items(1)
        msg = sink.payloads[0].message
        assert msg == encode_metrics(data)
        point = msg.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
        assert point.as_int == 5 and point.attributes[0].value.string_value == "search"


async def test_sdk_log_exporter_records_arrive_intact() -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": "agent-runner"}))
    memory = InMemoryLogRecordExporter()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.get_logger("agent.logs").emit(severity_number=SeverityNumber.ERROR, severity_text="ERROR",
                                           body="tool search failed", attributes={"agent.id": "a-1"})
    records = list(memory.get_finished_logs())
    provider.shutdown()
    sink = Sink()
    async with running({Signal.LOGS: sink}) as client:
        exporter = OTLPLogExporter(endpoint=client.base + "/v1/logs", timeout=5)
        try:
            assert await asyncio.to_thread(exporter.export, records) == LogRecordExportResult.SUCCESS
        finally:
            exporter.shutdown()
        await sink.wait_for_items(1)
        msg = sink.payloads[0].message
        assert msg == encode_logs(records)
        record = msg.resource_logs[0].scope_logs[0].log_records[0]
        assert record.body.string_value == "tool search failed" and record.severity_number == 17


# --- OTLP/JSON -----------------------------------------------------------------------------------

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
PARENT_ID = "eee19b7ec3c1b173"

JSON_TRACES = {
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent-runner"}}]},
        "scopeSpans": [{
            "scope": {"name": "agent.tools", "version": "1.0"},
            "spans": [{
                "traceId": TRACE_ID, "spanId": SPAN_ID, "parentSpanId": PARENT_ID,
                "name": "call-tool", "kind": 3,
                "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000500000000",
                "attributes": [{"key": "agent.step", "value": {"intValue": "3"}},
                               {"key": "agent.tool", "value": {"stringValue": "search"}}],
                "events": [{"timeUnixNano": "1700000000100000000", "name": "retry"}],
                "status": {"code": 2, "message": "timed out"},
                "someFutureField": {"ignored": True},
            }],
        }],
    }],
}


async def test_hand_written_otlp_json_with_hex_ids() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as client:
        status, body, headers = await client.post("/v1/traces", orjson.dumps(JSON_TRACES),
                                                  {"Content-Type": "application/json; charset=utf-8"})
        assert status == 200
        assert headers["Content-Type"].startswith("application/json") and orjson.loads(body) == {}
        await sink.wait_for_items(1)
    span = sink.payloads[0].message.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_ID)
    assert span.span_id == bytes.fromhex(SPAN_ID) and span.parent_span_id == bytes.fromhex(PARENT_ID)
    assert span.name == "call-tool" and span.kind == 3
    assert span.end_time_unix_nano - span.start_time_unix_nano == 500_000_000
    assert span.attributes[0].value.int_value == 3 and span.attributes[1].value.string_value == "search"
    assert span.events[0].name == "retry"
    assert (span.status.code, span.status.message) == (2, "timed out")


@pytest.mark.parametrize("path,signal,build", [
    ("/v1/metrics", Signal.METRICS, make_metrics), ("/v1/logs", Signal.LOGS, make_logs)])
async def test_json_round_trip_for_metrics_and_logs(path: str, signal: Signal, build: Any) -> None:
    from pipeline import otlpjson

    sink = Sink()
    request = build(4)
    async with running({signal: sink}) as client:
        status, _, _ = await client.post(path, gzip.compress(otlpjson.encode(request)),
                                         {**JSON, "Content-Encoding": "gzip"})
        assert status == 200
        await sink.wait_for_items(4)
    assert sink.payloads[0].message == request


# --- bad input: each refused with the right status and reason, and the next request still works ---

async def test_gzip_request_and_garbage_gzip() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as client:
        status, _, _ = await client.post("/v1/traces", gzip.compress(make_traces(2).SerializeToString()),
                                         {**PB, "Content-Encoding": "gzip"})
        assert status == 200
        await sink.wait_for_items(2)
        status, body, headers = await client.post("/v1/traces", b"\x1f\x8b not gzip at all",
                                                  {**PB, "Content-Encoding": "gzip"})
        assert status == 400 and "decompress" in status_of(body, headers).message
        truncated = gzip.compress(make_traces(2).SerializeToString())[:-12]
        status, _, _ = await client.post("/v1/traces", truncated, {**PB, "Content-Encoding": "gzip"})
        assert status == 400
        assert client.refused("malformed") == 2
        await client.good_request_succeeds(sink)


BAD_REQUESTS = [
    # (name, path, body, headers, method, status, reason)
    ("garbage protobuf", "/v1/traces", b"\x0a\xff\xff\xff\xff\x0f", PB, "POST", 400, "malformed"),
    ("bad json", "/v1/traces", b'{"resourceSpans": [', JSON, "POST", 400, "malformed"),
    ("json wrong shape", "/v1/traces", b'{"resourceSpans": 5}', JSON, "POST", 400, "malformed"),
    ("json bad hex id", "/v1/traces",
     b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}', JSON, "POST", 400, "malformed"),
    ("json array", "/v1/traces", b"[]", JSON, "POST", 400, "malformed"),
    ("text/plain", "/v1/traces", b"hello", {"Content-Type": "text/plain"}, "POST", 415, "unsupported_media_type"),
    ("no content type", "/v1/traces", b"", {}, "POST", 415, "unsupported_media_type"),
    ("zstd", "/v1/traces", b"\x28\xb5\x2f\xfd", {**PB, "Content-Encoding": "zstd"}, "POST", 415,
     "unsupported_encoding"),
    ("GET", "/v1/traces", None, {}, "GET", 405, "method_not_allowed"),
    ("PUT", "/v1/traces", b"", PB, "PUT", 405, "method_not_allowed"),
]


@pytest.mark.parametrize("name,path,data,headers,method,status,reason", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
async def test_bad_request_is_refused_and_counted(name: str, path: str, data: bytes | None, headers: dict[str, str],
                                                  method: str, status: int, reason: str) -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as client:
        async with client.session.request(method, client.base + path, data=data, headers=headers) as resp:
            body = await resp.read()
            assert resp.status == status
            if status == 400:
                # a google.rpc.Status in the request's own content type
                assert resp.headers["Content-Type"].startswith(headers["Content-Type"])
                assert status_of(body, resp.headers).code == 3
            if status == 405:
                assert resp.headers["Allow"] == "POST"
        assert client.refused(reason) == 1
        assert sink.items == 0
        await client.good_request_succeeds(sink)
        assert client.tel.value(ACCEPTED, transport="http") == 3


async def test_unknown_path_and_signal_without_consumer_are_404() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as client:
        for path in ("/v1/nope", "/v1/logs", "/", "/v1/traces/extra"):
            status, _, _ = await client.post(path, make_logs(1).SerializeToString(), PB)
            assert status == 404, path
        await client.good_request_succeeds(sink)


async def test_custom_url_path() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, traces_url_path="/otlp/traces") as client:
        assert (await client.post("/v1/traces", b"", PB))[0] == 404
        assert (await client.post("/otlp/traces", make_traces(1).SerializeToString(), PB))[0] == 200
        await sink.wait_for_items(1)


# --- size limits ---------------------------------------------------------------------------------

LIMIT = 64 * 1024


async def test_oversize_body_is_413_by_content_length_and_when_chunked() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, max_request_body_size=LIMIT) as client:
        big = make_traces(1, attrs={"blob": "x" * LIMIT}).SerializeToString()
        status, body, headers = await client.post("/v1/traces", big, PB)
        assert status == 413 and status_of(body, headers).code == 8

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit is found while reading
            for i in range(0, len(big), 4096):
                yield big[i:i + 4096]

        status, _, _ = await client.post("/v1/traces", chunks(), PB)
        assert status == 413
        assert client.refused("too_large") == 2
        await client.good_request_succeeds(sink)
        # exactly at the limit is fine
        exact = next(b for n in range(LIMIT - 1024, LIMIT)
                     if len(b := make_traces(1, attrs={"blob": "y" * n}).SerializeToString()) == LIMIT)
        assert (await client.post("/v1/traces", exact, PB))[0] == 200


async def test_expect_100_continue() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, max_request_body_size=LIMIT) as client:
        status, _, _ = await client.post("/v1/traces", make_traces(2).SerializeToString(), PB, expect100=True)
        assert status == 200
        await sink.wait_for_items(2)


class ZlibSpy:
    """Stands in for the zlib module in otlp_http_body and counts every byte inflated."""

    error = zlib.error
    MAX_WBITS = zlib.MAX_WBITS

    def __init__(self) -> None:
        self.produced = 0

    def decompressobj(self, wbits: int) -> Any:
        spy = self
        inner = zlib.decompressobj(wbits)

        class Wrapped:
            def decompress(self, data: bytes, max_length: int = 0) -> bytes:
                out = inner.decompress(data, max_length)
                spy.produced += len(out)
                return out

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        return Wrapped()


@pytest.mark.parametrize("encoding,compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
async def test_compression_bomb_is_413_without_inflating_it(monkeypatch: pytest.MonkeyPatch, encoding: str,
                                                            compress: Any) -> None:
    spy = ZlibSpy()
    monkeypatch.setattr(otlp_http_body, "zlib", spy)
    sink = Sink()
    async with running({Signal.TRACES: sink}, max_request_body_size=LIMIT) as client:
        bomb = compress(make_traces(1, attrs={"blob": "\0" * (64 * 1024 * 1024)}).SerializeToString())
        assert len(bomb) < LIMIT  # small on the wire, 64 MiB inflated
        status, body, headers = await client.post("/v1/traces", bomb, {**PB, "Content-Encoding": encoding})
        assert status == 413 and "decompressed" in status_of(body, headers).message
        assert spy.produced <= LIMIT + 1
        assert client.refused("too_large") == 1
        await client.good_request_succeeds(sink)


def test_decompress_handles_members_raw_deflate_and_trailing_garbage() -> None:
    data = make_traces(3).SerializeToString()
    assert decompress(gzip.compress(data[:10]) + gzip.compress(data[10:]), "gzip", 1 << 20) == data
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decompress(raw.compress(data) + raw.flush(), "deflate", 1 << 20) == data
    with pytest.raises(zlib.error):
        decompress(zlib.compress(data) + b"junk", "deflate", 1 << 20)
    with pytest.raises(BodyTooLarge):
        decompress(gzip.compress(data[:10]) + gzip.compress(data[10:]), "gzip", len(data) - 1)
    assert decompress(gzip.compress(data), "gzip", len(data)) == data


# --- pipeline outcomes → status codes ------------------------------------------------------------

@pytest.mark.parametrize("error,status,reason", [
    (QueueFullError("sending queue is full", retry_after=2.5), 429, "queue_full"),
    (DataRefusedError("memory limit reached", retry_after=2.5), 429, "memory_limit"),
    (RetryableError("backend down", retry_after=2.5), 503, "unavailable"),
])
@pytest.mark.parametrize("headers", [PB, JSON], ids=["protobuf", "json"])
async def test_back_pressure_sets_retry_after(error: Exception, status: int, reason: str,
                                              headers: dict[str, str]) -> None:
    from pipeline import otlpjson

    sink = Sink()
    sink.fail_with, sink.fail_times = error, 1
    request = make_traces(7)
    data = request.SerializeToString() if headers is PB else otlpjson.encode(request)
    async with running({Signal.TRACES: sink}) as client:
        got, body, resp_headers = await client.post("/v1/traces", data, headers)
        assert got == status
        assert resp_headers["Retry-After"] == "3"
        assert str(error) in status_of(body, resp_headers).message
        assert client.refused(reason) == 7
        await client.good_request_succeeds(sink)


async def test_permanent_error_is_400_without_retry_after() -> None:
    sink = Sink()
    sink.fail_with, sink.fail_times = PermanentError("bad data"), 1
    async with running({Signal.TRACES: sink}) as client:
        status, body, headers = await client.post("/v1/traces", make_traces(2).SerializeToString(), PB)
        assert status == 400 and "Retry-After" not in headers
        assert status_of(body, headers).code == 3
        assert client.refused("permanent_error") == 2


# --- CORS, metadata, lifecycle -------------------------------------------------------------------

async def test_cors_preflight_and_simple_request() -> None:
    sink = Sink()
    cors = CORSConfig(allowed_origins=("https://*.example.com",), allowed_headers=("X-Agent",), max_age=600)
    async with running({Signal.TRACES: sink}, cors=cors) as client:
        url = client.base + "/v1/traces"
        preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type, x-agent"}
        async with client.session.options(url, headers=preflight) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert resp.headers["Access-Control-Allow-Methods"] == "POST"
            assert resp.headers["Access-Control-Max-Age"] == "600"
        async with client.session.options(url, headers={**preflight, "Origin": "https://evil.test"}) as resp:
            assert resp.status == 204 and "Access-Control-Allow-Origin" not in resp.headers
        async with client.session.options(url, headers={**preflight,
                                                        "Access-Control-Request-Headers": "x-other"}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        status, _, headers = await client.post("/v1/traces", make_traces(1).SerializeToString(),
                                               {**PB, "Origin": "https://app.example.com"})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        await sink.wait_for_items(1)


async def test_options_without_cors_is_405() -> None:
    async with running({Signal.TRACES: Sink()}) as client:
        async with client.session.options(client.base + "/v1/traces") as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "POST"


async def test_include_metadata_copies_headers() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, include_metadata=True) as client:
        await client.post("/v1/traces", make_traces(1).SerializeToString(), {**PB, "X-Tenant": "acme"})
        await sink.wait_for_items(1)
    assert sink.payloads[0].headers is not None and sink.payloads[0].headers["x-tenant"] == "acme"


async def test_shutdown_finishes_in_flight_request() -> None:
    class GateSink(Sink):
        def __init__(self) -> None:
            super().__init__()
            self.entered, self.release = asyncio.Event(), asyncio.Event()

        async def consume(self, payload: Any) -> None:
            self.entered.set()
            await self.release.wait()
            await super().consume(payload)

    sink = GateSink()
    async with running({Signal.TRACES: sink}) as client:
        call = asyncio.create_task(client.post("/v1/traces", make_traces(2).SerializeToString(), PB))
        await asyncio.wait_for(sink.entered.wait(), 5)
        stopping = asyncio.create_task(client.receiver.shutdown())
        sink.release.set()
        status, _, _ = await asyncio.wait_for(call, 5)
        assert status == 200
        await asyncio.wait_for(stopping, 10)
        assert sink.items == 2
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.post("/v1/traces", b"", PB)


async def test_both_protocols_and_port_in_use() -> None:
    tel = Telemetry(process_metrics=False)
    settings = nop_settings("otlp", Kind.RECEIVER, None, telemetry=tel)
    cfg = OTLPReceiverConfig(protocols=ProtocolsConfig(
        grpc=GRPCConfig(endpoint="127.0.0.1:0"), http=HTTPConfig(endpoint="127.0.0.1:0")))
    receiver = FACTORY.create(settings, cfg, {Signal.TRACES: Sink()})
    await receiver.start(nop_host())
    try:
        assert set(receiver.endpoints) == {"grpc", "http"}
        assert all(ep.startswith("127.0.0.1:") for ep in receiver.endpoints.values())
        # a second receiver whose gRPC binds but whose HTTP port is taken: start fails, gRPC is released
        http_port = receiver.endpoints["http"].rpartition(":")[2]
        clash = OTLPReceiverConfig(protocols=ProtocolsConfig(
            grpc=GRPCConfig(endpoint="127.0.0.1:0"), http=HTTPConfig(endpoint=f"127.0.0.1:{http_port}")))
        second = FACTORY.create(nop_settings("otlp/2", Kind.RECEIVER, None), clash, {Signal.TRACES: Sink()})
        with pytest.raises(OSError, match="OTLP/HTTP"):
            await second.start(nop_host())
        assert second._grpc is None  # type: ignore[attr-defined]
    finally:
        await receiver.shutdown()

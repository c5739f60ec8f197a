"""OTLP end to end: the OpenTelemetry SDK's own exporters → otelpipe → otlp / otlphttp → backends."""
from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from otelpipe.testing import running_service
from pipeline.model import Signal, count_items
from pipeline.service import Service
from pipeline.testing import make_traces, wait_until

from .backends import GrpcBackend, HttpBackend
from .sdk import (
    encode_logs,
    encode_metrics,
    encode_spans,
    make_logs,
    make_metrics,
    make_spans,
)

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
processors:
  batch: {{send_batch_size: 1000, timeout: 20ms}}
exporters:
  otlp/tempo:
    endpoint: {grpc}
    tls: {{insecure: true}}
    headers: {{X-Scope-OrgID: tenant-a}}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 30s}}
  otlphttp/jaeger:
    endpoint: {http}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 30s}}
service:
  pipelines:
    traces:  {{receivers: [otlp], processors: [batch], exporters: [otlp/tempo, otlphttp/jaeger]}}
    metrics: {{receivers: [otlp], processors: [batch], exporters: [otlp/tempo, otlphttp/jaeger]}}
    logs:    {{receivers: [otlp], processors: [batch], exporters: [otlp/tempo, otlphttp/jaeger]}}
"""


@pytest.fixture
async def backends() -> AsyncIterator[tuple[GrpcBackend, HttpBackend]]:
    g, h = GrpcBackend(), HttpBackend()
    await g.start()
    await h.start()
    yield g, h
    await g.stop()
    await h.stop()


@pytest.fixture
async def svc(backends: tuple[GrpcBackend, HttpBackend]) -> AsyncIterator[Service]:
    g, h = backends
    async with running_service(CONFIG.format(grpc=f"127.0.0.1:{g.port}", http=f"http://127.0.0.1:{h.port}")) as s:
        yield s


def _by_span_id(requests: list[object]) -> dict[bytes, tuple[object, object, object]]:
    out = {}
    for r in requests:
        for rs in r.resource_spans:  # type: ignore[attr-defined]
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out[s.span_id] = (rs.resource, ss.scope, s)
    return out


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_sdk_spans_arrive_identical_at_both_backends(svc: Service, backends, transport: str) -> None:
    g, h = backends
    spans = make_spans(3)
    if transport == "grpc":
        exporter = GrpcSpanExporter(endpoint=svc.endpoint("receiver", "otlp", "grpc"), insecure=True)
    else:
        exporter = HttpSpanExporter(endpoint=f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/traces")
    result = await asyncio.to_thread(exporter.export, spans)
    exporter.shutdown()
    assert result is SpanExportResult.SUCCESS
    expected = _by_span_id([encode_spans(spans)])
    for backend in (g, h):
        await backend.wait_for(Signal.TRACES, len(spans))
        got = _by_span_id(backend.requests[Signal.TRACES])
        assert got.keys() == expected.keys()
        for sid, (res, scope, span) in expected.items():
            assert got[sid] == (res, scope, span)  # ids, names, attributes, events, status, resource: identical
    assert g.metadata[-1].get("x-scope-orgid") == "tenant-a"


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_sdk_metrics_and_logs_arrive_identical(svc: Service, backends, transport: str) -> None:
    g, h = backends
    data, logs = make_metrics(), make_logs(5)
    if transport == "grpc":
        ep = svc.endpoint("receiver", "otlp", "grpc")
        mexp, lexp = GrpcMetricExporter(endpoint=ep, insecure=True), GrpcLogExporter(endpoint=ep, insecure=True)
    else:
        base = f"http://{svc.endpoint('receiver', 'otlp', 'http')}"
        mexp, lexp = HttpMetricExporter(endpoint=f"{base}/v1/metrics"), HttpLogExporter(endpoint=f"{base}/v1/logs")
    assert await asyncio.to_thread(mexp.export, data) is MetricExportResult.SUCCESS
    await asyncio.to_thread(lexp.export, logs)
    mexp.shutdown()
    lexp.shutdown()
    want_m = encode_metrics(data)
    want_l = encode_logs(logs)
    n_points = count_items(Signal.METRICS, want_m)
    for backend in (g, h):
        await backend.wait_for(Signal.METRICS, n_points)
        await backend.wait_for(Signal.LOGS, len(logs))
        got_metrics = {m.name: m for r in backend.requests[Signal.METRICS] for rm in r.resource_metrics
                       for sm in rm.scope_metrics for m in sm.metrics}
        for rm in want_m.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    assert got_metrics[m.name] == m
        got_logs = [lr for r in backend.requests[Signal.LOGS] for rl in r.resource_logs for sl in rl.scope_logs
                    for lr in sl.log_records]
        want_logs = [lr for rl in want_l.resource_logs for sl in rl.scope_logs for lr in sl.log_records]
        assert got_logs == want_logs
        got_res = backend.requests[Signal.LOGS][0].resource_logs[0].resource
        assert got_res == want_l.resource_logs[0].resource


async def test_hand_written_json_and_gzip_requests(svc: Service, backends) -> None:
    g, _ = backends
    url = f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/traces"
    body = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-agent"}}]},
            "scopeSpans": [{"scope": {"name": "manual"}, "spans": [{
                "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                "parentSpanId": "eee19b7ec3c1b173", "name": "tool.call", "kind": 3,
                "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000",
                "attributes": [{"key": "retries", "value": {"intValue": "2"}}],
                "status": {"code": 2, "message": "boom"}, "someFutureField": 1}]}]}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/json")
        gz = gzip.compress(make_traces(4).SerializeToString())
        async with http.post(url, data=gz, headers={"Content-Type": "application/x-protobuf",
                                                    "Content-Encoding": "gzip"}) as resp:
            assert resp.status == 200
    await g.wait_for(Signal.TRACES, 5)
    span = next(s for s in g.spans() if s.name == "tool.call")
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.span_id.hex() == "eee19b7ec3c1b174" and span.parent_span_id.hex() == "eee19b7ec3c1b173"
    assert span.kind == 3 and span.status.code == 2 and span.attributes[0].value.int_value == 2


async def test_bad_inputs_are_refused_and_daemon_keeps_serving(svc: Service, backends) -> None:
    g, _ = backends
    base = f"http://{svc.endpoint('receiver', 'otlp', 'http')}"
    async with aiohttp.ClientSession() as http:
        cases = [
            ("post", "/v1/traces", b"\xff\x00garbage", {"Content-Type": "application/x-protobuf"}, 400),
            ("post", "/v1/traces", b"{not json", {"Content-Type": "application/json"}, 400),
            ("post", "/v1/traces", b"x", {"Content-Type": "text/plain"}, 415),
            ("post", "/v1/nothing", b"", {"Content-Type": "application/x-protobuf"}, 404),
            ("get", "/v1/traces", None, {}, 405),
            ("post", "/v1/traces", gzip.compress(b"\0" * (64 << 20)), {"Content-Type": "application/x-protobuf",
                                                                       "Content-Encoding": "gzip"}, 413),
        ]
        for method, path, data, headers, status in cases:
            async with http.request(method, base + path, data=data, headers=headers) as resp:
                assert resp.status == status, (path, headers)
    async with grpc.aio.insecure_channel(svc.endpoint("receiver", "otlp", "grpc")) as ch:
        call = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await call(b"\xff\xff\xff garbage")
        assert ei.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        stub = trace_service_pb2_grpc.TraceServiceStub(ch)
        await stub.Export(make_traces(3))  # a good client is unaffected
    await g.wait_for(Signal.TRACES, 3)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{svc.endpoint('admin', '', 'http')}/healthz") as resp:
            assert resp.status == 200
    refused = svc.telemetry.snapshot().get("otelpipe_receiver_refused_spans_total", [])
    assert refused and all(s["labels"]["reason"] for s in refused)


async def test_backend_outage_of_a_few_seconds_loses_nothing(svc: Service, backends) -> None:
    g, h = backends
    g.failing = h.failing = True
    async with grpc.aio.insecure_channel(svc.endpoint("receiver", "otlp", "grpc")) as ch:
        stub = trace_service_pb2_grpc.TraceServiceStub(ch)
        for _ in range(10):
            await stub.Export(make_traces(10))
    # let both exporters fail and retry a few times, then end the outage
    await wait_until(lambda: g.calls >= 3 and h.calls >= 3, 10, "three failed attempts per backend")
    g.failing = h.failing = False
    await g.wait_for(Signal.TRACES, 100)
    await h.wait_for(Signal.TRACES, 100)
    assert g.items[Signal.TRACES] == 100 and h.items[Signal.TRACES] == 100
    tel = svc.telemetry
    await wait_until(lambda: tel.value("otelpipe_exporter_sent_spans_total") == 200, 5, "sent counters")
    assert tel.value("otelpipe_exporter_sent_spans_total", exporter="otlp/tempo") == 100
    assert tel.value("otelpipe_exporter_send_failed_spans_total") == 0
    assert tel.value("otelpipe_receiver_accepted_spans_total", receiver="otlp", transport="grpc") == 100

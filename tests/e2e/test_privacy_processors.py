"""secret_mask and uuid_normalize end to end: the OpenTelemetry SDK's OTLP exporters → otelpipe → OTLP backend."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline import components
from pipeline.component import Factory, Kind
from pipeline.model import Signal
from pipeline.testing import running_service
from processors import secret_mask, uuid_normalize

from .backends import GrpcBackend

RUN_ID = "3f2c8a4e-9b1d-4c7e-a5f3-0d8e6b2a1c94"
OPENAI_KEY = "sk-proj-Zq8xT1vN4mK7pL2wR9sY3uB6eH5jC0aG"  # fake, generated for this test
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJlLW5vdC1yZWFs"
RESOURCE = Resource.create({"service.name": "support-agent", "service.instance.id": RUN_ID,
                            "deploy.api_key": "plain-text-key"})

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
processors:
  secret_mask: {{summary_attributes: true}}
  uuid_normalize: {{}}
exporters:
  otlp: {{endpoint: "{backend}", tls: {{insecure: true}}}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [secret_mask, uuid_normalize], exporters: [otlp]}}
    metrics: {{receivers: [otlp], processors: [secret_mask, uuid_normalize], exporters: [otlp]}}
    logs: {{receivers: [otlp], processors: [secret_mask], exporters: [otlp]}}
"""


def factories() -> dict[Kind, dict[str, Factory]]:
    fmap = {kind: dict(by_type) for kind, by_type in components.factories().items()}
    for f in (secret_mask.FACTORY, uuid_normalize.FACTORY):
        fmap[f.kind].setdefault(f.type, f)
    return fmap


def make_spans() -> list[object]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agent.runtime")
    with tracer.start_as_current_span(f"POST /v1/agents/{RUN_ID}/runs", attributes={
            "http.route": f"/v1/agents/{RUN_ID}/runs", "http.request.header.authorization": [f"Bearer {JWT}"],
            "gen_ai.conversation.id": RUN_ID}):
        with tracer.start_as_current_span("chat gpt-4o", attributes={
                "gen_ai.usage.input_tokens": 1200, "gen_ai.request.max_tokens": 4096}) as chat:
            chat.add_event("gen_ai.content.prompt", {"gen_ai.prompt": f"use the key {OPENAI_KEY} for the call"})
        with tracer.start_as_current_span("execute_tool fetch_url", attributes={
                "gen_ai.tool.arguments": '{"url": "https://api.example.com/v1?token=abc123def"}'}):
            pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


@pytest.fixture
async def backend() -> AsyncIterator[GrpcBackend]:
    b = GrpcBackend()
    await b.start()
    yield b
    await b.stop()


async def test_traces_are_masked_and_normalized_through_the_daemon(backend: GrpcBackend) -> None:
    async with running_service(CONFIG.format(backend=f"127.0.0.1:{backend.port}"), factories()) as svc:
        exporter = GrpcSpanExporter(endpoint=svc.endpoint("receiver", "otlp", "grpc"), insecure=True)
        try:
            assert await asyncio.to_thread(exporter.export, make_spans()) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        await backend.wait_for(Signal.TRACES, 3)
        telemetry = svc.telemetry
    received = backend.requests[Signal.TRACES]
    wire = b"".join(r.SerializeToString() for r in received)  # type: ignore[attr-defined]
    for secret in (OPENAI_KEY.encode(), JWT.encode(), b"abc123def", b"plain-text-key"):
        assert secret not in wire
    spans = {s.name: s for s in backend.spans()}  # type: ignore[attr-defined]
    assert set(spans) == {"POST /v1/agents/{uuid}/runs", "chat gpt-4o", "execute_tool fetch_url"}
    root = {a.key: a.value for a in spans["POST /v1/agents/{uuid}/runs"].attributes}
    assert root["http.route"].string_value == "/v1/agents/{uuid}/runs"
    assert root["http.request.header.authorization"].array_value.values[0].string_value == "[REDACTED]"
    assert root["gen_ai.conversation.id"].string_value == RUN_ID  # not a selected attribute
    assert root["otelpipe.masked.count"].int_value == 1
    chat = {a.key: a.value for a in spans["chat gpt-4o"].attributes}
    assert chat["gen_ai.usage.input_tokens"].int_value == 1200 and chat["gen_ai.request.max_tokens"].int_value == 4096
    prompt = spans["chat gpt-4o"].events[0].attributes[0].value.string_value
    assert prompt == "use the key [REDACTED] for the call"
    tool = spans["execute_tool fetch_url"].attributes[0].value.string_value
    assert tool == '{"url": "https://api.example.com/v1?token=[REDACTED]"}'
    resource = {a.key: a.value.string_value for a in received[0].resource_spans[0].resource.attributes}  # type: ignore[attr-defined]
    assert resource["service.instance.id"] == RUN_ID and resource["deploy.api_key"] == "[REDACTED]"
    assert telemetry.value("otelpipe_processor_masked_values_total", processor="secret_mask") == 4
    assert telemetry.value("otelpipe_processor_normalized_values_total", processor="uuid_normalize", detector="uuid") == 2


async def test_metrics_and_logs_over_http(backend: GrpcBackend) -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    counter = meter_provider.get_meter("agent").create_counter("agent.requests")
    for i in range(3):
        counter.add(1, {"http.route": f"/v1/agents/{RUN_ID}/steps/{i + 100}", "session_id": f"s-{i}"})
    metrics = reader.get_metrics_data()
    meter_provider.shutdown()

    log_exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(resource=RESOURCE)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    logger = logging.getLogger("privacy-e2e")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=logger_provider)
    logger.addHandler(handler)
    try:
        logger.warning("retrying with Authorization: Bearer %s", JWT)
        logger.warning("connected to postgres://agent:hunter2pw@db.internal:5432/runs")
    finally:
        logger.removeHandler(handler)
        logger_provider.shutdown()
    logs = list(log_exporter.get_finished_logs())

    async with running_service(CONFIG.format(backend=f"127.0.0.1:{backend.port}"), factories()) as svc:
        base = "http://" + svc.endpoint("receiver", "otlp", "http")
        mexp, lexp = HttpMetricExporter(endpoint=f"{base}/v1/metrics"), HttpLogExporter(endpoint=f"{base}/v1/logs")
        try:
            assert await asyncio.to_thread(mexp.export, metrics) is MetricExportResult.SUCCESS
            await asyncio.to_thread(lexp.export, logs)
        finally:
            mexp.shutdown()
            lexp.shutdown()
        await backend.wait_for(Signal.METRICS, 3)
        await backend.wait_for(Signal.LOGS, 2)
    points = [dp for r in backend.requests[Signal.METRICS] for rm in r.resource_metrics  # type: ignore[attr-defined]
              for sm in rm.scope_metrics for m in sm.metrics for dp in m.sum.data_points]
    assert sorted({a.key: a.value.string_value for a in dp.attributes}["http.route"] for dp in points) == \
        ["/v1/agents/{uuid}/steps/{id}"] * 3
    assert all({a.key: a.value.string_value for a in dp.attributes}["session_id"] == "[REDACTED]" for dp in points)
    bodies = sorted(lr.body.string_value for r in backend.requests[Signal.LOGS]  # type: ignore[attr-defined]
                    for rl in r.resource_logs for sl in rl.scope_logs for lr in sl.log_records)
    assert bodies == ["connected to postgres://agent:[REDACTED]@db.internal:5432/runs",
                      "retrying with Authorization: [REDACTED]"]

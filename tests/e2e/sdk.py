"""Telemetry produced by the real OpenTelemetry Python SDK, plus its own OTLP encoding of it.

The SDK's OTLP exporters (gRPC and HTTP/protobuf) send what these helpers make;
tests compare what otelpipe forwards against the SDK's own encoding.
"""
from __future__ import annotations

import logging

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

RESOURCE = Resource.create({"service.name": "support-agent", "service.instance.id": "pod-7",
                            "deployment.environment": "prod"})


def make_spans(n_traces: int = 3) -> list[object]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agent.runtime", "1.2.3")
    for t in range(n_traces):
        with tracer.start_as_current_span("agent.run", attributes={"gen_ai.agent.name": "support", "run": t}) as root:
            with tracer.start_as_current_span("chat gpt-4o", attributes={
                "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1200 + t,
                "gen_ai.response.finish_reasons": ["stop"], "temperature": 0.2, "stream": False}) as chat:
                chat.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "hello"})
            with tracer.start_as_current_span("execute_tool search") as tool:
                tool.set_status(Status(StatusCode.ERROR, "tool timed out"))
                tool.record_exception(TimeoutError("search took too long"))
            root.set_attribute("outcome", "ok")
    provider.shutdown()
    return list(exporter.get_finished_spans())


def make_metrics() -> object:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("agent.metrics", "0.1")
    tokens = meter.create_counter("gen_ai.client.token.usage", unit="{token}")
    latency = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    inflight = meter.create_up_down_counter("agent.runs.active")
    for i in range(5):
        tokens.add(100 + i, {"gen_ai.request.model": "gpt-4o", "gen_ai.token.type": "input"})
        latency.record(0.5 * (i + 1), {"gen_ai.request.model": "gpt-4o"})
        inflight.add(1 if i % 2 == 0 else -1)
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def make_logs(n: int = 5) -> list[object]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger = logging.getLogger("agent.e2e")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for i in range(n):
            logger.warning("tool call %d finished", i, extra={"tool": "search", "attempt": i})
    finally:
        logger.removeHandler(handler)
    provider.shutdown()
    return list(exporter.get_finished_logs())


__all__ = ["make_spans", "make_metrics", "make_logs", "encode_spans", "encode_metrics", "encode_logs", "RESOURCE"]

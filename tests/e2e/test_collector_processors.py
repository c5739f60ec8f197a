"""attributes, resource, filter and transform end to end: the OpenTelemetry SDK's OTLP exporters → otelpipe
(a Collector-style config) → an OTLP/gRPC backend; each processor's effect is checked on what arrives."""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from otelpipe import components
from otelpipe.testing import running_service
from pipeline.model import Signal

from . import sdk
from .backends import GrpcBackend

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0", include_metadata: true}}
      http: {{endpoint: "127.0.0.1:0"}}
processors:
  attributes/chat:
    actions:
      - {{key: tenant, from_context: metadata.x-tenant, action: insert}}
      - {{key: temperature, action: delete}}
      - {{key: gen_ai.request.model, action: hash}}
      - {{key: gen_ai.usage.input_tokens, action: convert, converted_type: string}}
    include:
      match_type: strict
      span_names: ["chat gpt-4o"]
  resource:
    attributes:
      - {{key: deployment.environment, value: staging, action: upsert}}
      - {{key: service.instance.id, action: delete}}
  filter/errors:
    error_mode: ignore
    trace_conditions:
      - 'span.name == "execute_tool search" and span.status.code == STATUS_CODE_ERROR'
    metric_conditions:
      - 'metric.name == "agent.runs.active"'
    log_conditions:
      - 'IsMatch(log.body, "call [13] finished")'
  transform:
    error_mode: ignore
    trace_statements:  # one group per context: a flat list would all run in the inferred spanevent context
      - statements:
          - >-
            set(span.name, Concat(["agent", span.attributes["gen_ai.agent.name"]], ":"))
            where span.name == "agent.run"
          - >-
            set(span.attributes["run.id"], Concat(["run", span.attributes["run"]], "-"))
            where span.attributes["run"] != nil
      - statements:
          - 'set(spanevent.attributes["gen_ai.prompt"], "[dropped]") where spanevent.name == "gen_ai.content.prompt"'
    metric_statements:
      - context: datapoint
        conditions: ['metric.name == "gen_ai.client.token.usage"']
        statements: ['set(attributes["billing"], "metered")']
    log_statements:
      - 'set(log.severity_text, "WARNING") where log.severity_number == SEVERITY_NUMBER_WARN'
      - 'set(log.attributes["tool.upper"], Concat([log.attributes["tool"], "!"], ""))'
exporters:
  otlp: {{endpoint: "{backend}", tls: {{insecure: true}}}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [resource, filter/errors, attributes/chat, transform], exporters: [otlp]}}
    metrics: {{receivers: [otlp], processors: [resource, filter/errors, transform], exporters: [otlp]}}
    logs: {{receivers: [otlp], processors: [resource, filter/errors, transform], exporters: [otlp]}}
"""


def attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in kvs:
        which = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, which) if which else None
    return out


@pytest.fixture
async def backend() -> AsyncIterator[GrpcBackend]:
    b = GrpcBackend()
    await b.start()
    yield b
    await b.stop()


async def test_sdk_traces_through_the_four_processors(backend: GrpcBackend) -> None:
    spans = sdk.make_spans(3)  # 3 × (agent.run, chat gpt-4o, execute_tool search with an error status)
    async with running_service(CONFIG.format(backend=f"127.0.0.1:{backend.port}"), components.factories()) as svc:
        exporter = GrpcSpanExporter(endpoint=svc.endpoint("receiver", "otlp", "grpc"), insecure=True,
                                    headers={"x-tenant": "acme"})
        try:
            assert await asyncio.to_thread(exporter.export, spans) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        await backend.wait_for(Signal.TRACES, 6)
        dropped = svc.telemetry.value("otelpipe_processor_dropped_spans_total", processor="filter/errors",
                                      reason="filtered")
    assert dropped == 3
    received = backend.spans()
    names = sorted(s.name for s in received)  # type: ignore[attr-defined]
    assert names == ["agent:support"] * 3 + ["chat gpt-4o"] * 3  # the failed tool calls were filtered out
    for s in received:
        a = attrs(s.attributes)  # type: ignore[attr-defined]
        if s.name == "chat gpt-4o":  # type: ignore[attr-defined]
            assert a["tenant"] == "acme" and "temperature" not in a
            assert a["gen_ai.request.model"] == hashlib.sha256(b"gpt-4o").hexdigest()
            assert a["gen_ai.usage.input_tokens"] in {"1200", "1201", "1202"}
            assert attrs(s.events[0].attributes)["gen_ai.prompt"] == "[dropped]"  # type: ignore[attr-defined]
        else:
            assert "tenant" not in a  # include: only the chat spans
            assert a["run.id"] in {"run-0", "run-1", "run-2"}
    for request in backend.requests[Signal.TRACES]:
        for rs in request.resource_spans:  # type: ignore[attr-defined]
            res = attrs(rs.resource.attributes)
            assert res["deployment.environment"] == "staging" and "service.instance.id" not in res


async def test_sdk_metrics_and_logs_through_the_processors(backend: GrpcBackend) -> None:
    metrics, logs = sdk.make_metrics(), sdk.make_logs(5)
    async with running_service(CONFIG.format(backend=f"127.0.0.1:{backend.port}"), components.factories()) as svc:
        base = "http://" + svc.endpoint("receiver", "otlp", "http")
        mexp, lexp = HttpMetricExporter(endpoint=f"{base}/v1/metrics"), HttpLogExporter(endpoint=f"{base}/v1/logs")
        try:
            assert await asyncio.to_thread(mexp.export, metrics) is MetricExportResult.SUCCESS
            await asyncio.to_thread(lexp.export, logs)
        finally:
            mexp.shutdown()
            lexp.shutdown()
        await backend.wait_for(Signal.METRICS, 2)
        await backend.wait_for(Signal.LOGS, 3)
        tel = svc.telemetry
        assert tel.value("otelpipe_processor_dropped_log_records_total", processor="filter/errors") == 2
        assert tel.value("otelpipe_processor_dropped_metric_points_total", processor="filter/errors") == 1
    metric_names = {m.name: m for r in backend.requests[Signal.METRICS] for rm in r.resource_metrics  # type: ignore
                    for sm in rm.scope_metrics for m in sm.metrics}
    assert set(metric_names) == {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"}
    usage = metric_names["gen_ai.client.token.usage"].sum.data_points
    assert all(attrs(p.attributes)["billing"] == "metered" for p in usage)
    latency = metric_names["gen_ai.client.operation.duration"].histogram.data_points
    assert all("billing" not in attrs(p.attributes) for p in latency)
    records = [lr for r in backend.requests[Signal.LOGS] for rl in r.resource_logs  # type: ignore[attr-defined]
               for sl in rl.scope_logs for lr in sl.log_records]
    assert sorted(lr.body.string_value for lr in records) == [f"tool call {i} finished" for i in (0, 2, 4)]
    assert all(lr.severity_text == "WARNING" and attrs(lr.attributes)["tool.upper"] == "search!" for lr in records)

"""secret_mask and uuid_normalize end to end: the OpenTelemetry SDK's OTLP exporters → otelpipe → OTLP backend."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelpipe import components
from otelpipe.testing import running_service
from pipeline.component import Factory, Kind
from pipeline.model import Signal
from processors.privacy import secret_mask, uuid_normalize

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
    assert telemetry.value("otelpipe_processor_normalized_values_total", processor="uuid_normalize",
                           detector="uuid") == 2


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
        await backend.wait_for(Signal.METRICS, 1)
        await backend.wait_for(Signal.LOGS, 2)
    points = [dp for r in backend.requests[Signal.METRICS] for rm in r.resource_metrics  # type: ignore[attr-defined]
              for sm in rm.scope_metrics for m in sm.metrics for dp in m.sum.data_points]
    # Normalized routes and masked session ids make the three series one: merged, the total stays 3.
    assert [{a.key: a.value.string_value for a in dp.attributes}["http.route"] for dp in points] == \
        ["/v1/agents/{uuid}/steps/{id}"]
    assert all({a.key: a.value.string_value for a in dp.attributes}["session_id"] == "[REDACTED]" for dp in points)
    assert [dp.as_int for dp in points] == [3]
    bodies = sorted(lr.body.string_value for r in backend.requests[Signal.LOGS]  # type: ignore[attr-defined]
                    for rl in r.resource_logs for sl in rl.scope_logs for lr in sl.log_records)
    assert bodies == ["connected to postgres://agent:[REDACTED]@db.internal:5432/runs",
                      "retrying with Authorization: [REDACTED]"]


# -- issue 9: what leaked, through the daemon's wire path (no summary attributes: bytes edited in place) --

WIRE_CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
processors:
  secret_mask: {{}}
exporters:
  otlp: {{endpoint: "{backend}", tls: {{insecure: true}}}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [secret_mask], exporters: [otlp]}}
    logs: {{receivers: [otlp], processors: [secret_mask], exporters: [otlp]}}
"""
PEM_LINE = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDZq8xT1vN4mK7pL2"  # fake
SA_JSON = ('{"type": "service_account", "project_id": "agent-prod", "private_key": "-----BEGIN PRIVATE KEY-----\\n'
           + PEM_LINE + '\\n-----END PRIVATE KEY-----\\n", '
           '"client_email": "runner@agent-prod.iam.gserviceaccount.com"}')
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documentation example
SLACK_TOKEN = "abcDEF123ghiJKL456mnoPQR"
HF_TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"


async def test_issue_9_secrets_are_masked_and_identifiers_kept_end_to_end(backend: GrpcBackend) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    arguments = '{"credentials": ' + SA_JSON + ', "notify": "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/' \
                + SLACK_TOKEN + '"}'
    call = '{"name": "deploy_model", "arguments": ' + json.dumps(arguments) + "}"
    with provider.get_tracer("agent.runtime").start_as_current_span("execute_tool deploy_model", attributes={
            "gen_ai.tool.call.arguments": call, "session.id": RUN_ID, "gen_ai.conversation.id": RUN_ID,
            "http.request.header.cookie": "sessionid=s3ss10nc00k1e", "tool.output":
            f"aws_access_key_id AKIAIOSFODNN7EXAMPLE aws_secret_access_key {AWS_SECRET}; token {HF_TOKEN}"}):
        pass
    provider.shutdown()

    logger_provider = LoggerProvider(resource=Resource.create({"service.name": "support-agent"}))
    log_exporter = InMemoryLogRecordExporter()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    logger_provider.get_logger("agent.runtime").emit(body={
        "event": "container.start", "env": [{"name": "DB_PASSWORD", "value": "hunter2pw"},
                                            {"name": "DB_HOST", "value": "db.internal"}],
        "cache": "redis://:r3disPassw0rd@cache.internal:6379/0"})
    logger_provider.shutdown()

    async with running_service(WIRE_CONFIG.format(backend=f"127.0.0.1:{backend.port}"), factories()) as svc:
        span_exporter = GrpcSpanExporter(endpoint=svc.endpoint("receiver", "otlp", "grpc"), insecure=True)
        lexp = HttpLogExporter(endpoint="http://" + svc.endpoint("receiver", "otlp", "http") + "/v1/logs")
        try:
            assert await asyncio.to_thread(span_exporter.export, list(exporter.get_finished_spans())) \
                is SpanExportResult.SUCCESS
            await asyncio.to_thread(lexp.export, list(log_exporter.get_finished_logs()))
        finally:
            span_exporter.shutdown()
            lexp.shutdown()
        await backend.wait_for(Signal.TRACES, 1)
        await backend.wait_for(Signal.LOGS, 1)
        telemetry = svc.telemetry
    wire = b"".join(r.SerializeToString() for s in (Signal.TRACES, Signal.LOGS)  # type: ignore[attr-defined]
                    for r in backend.requests[s])
    for secret in (PEM_LINE, AWS_SECRET, SLACK_TOKEN, HF_TOKEN, "AKIAIOSFODNN7EXAMPLE", "s3ss10nc00k1e", "hunter2pw",
                   "r3disPassw0rd"):
        assert secret.encode() not in wire, secret
    span = backend.spans()[0]  # type: ignore[attr-defined]
    attrs = {a.key: a.value.string_value for a in span.attributes}
    assert attrs["session.id"] == RUN_ID and attrs["gen_ai.conversation.id"] == RUN_ID
    assert attrs["http.request.header.cookie"] == "[REDACTED]"
    inner = json.loads(json.loads(attrs["gen_ai.tool.call.arguments"])["arguments"])  # still valid JSON, twice
    assert inner["credentials"]["private_key"] == "[REDACTED]\n"
    assert inner["credentials"]["client_email"] == "runner@agent-prod.iam.gserviceaccount.com"
    assert inner["notify"] == "https://hooks.slack.com/services/[REDACTED]"
    record = backend.requests[Signal.LOGS][0].resource_logs[0].scope_logs[0].log_records[0]  # type: ignore[attr-defined]
    body = {kv.key: kv.value for kv in record.body.kvlist_value.values}
    env = [{kv.key: kv.value.string_value for kv in item.kvlist_value.values}
           for item in body["env"].array_value.values]
    assert env == [{"name": "DB_PASSWORD", "value": "[REDACTED]"}, {"name": "DB_HOST", "value": "db.internal"}]
    assert body["cache"].string_value == "redis://:[REDACTED]@cache.internal:6379/0"
    counted = {d: telemetry.value("otelpipe_processor_masked_values_total", processor="secret_mask", detector=d)
               for d in ("credential_pair", "slack_webhook", "aws_secret_key", "aws_access_key_id", "huggingface_token",
                         "key", "url_password")}
    assert counted == {"credential_pair": 1, "slack_webhook": 1, "aws_secret_key": 1, "aws_access_key_id": 1,
                       "huggingface_token": 1, "key": 2, "url_password": 1}

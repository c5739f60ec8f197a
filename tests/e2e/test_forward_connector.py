"""The forward connector with real components: an SDK sends spans to the OTLP receiver, pipeline `in`
batches them and forwards them to pipeline `masked` (secret_mask, to one backend) and pipeline `raw`
(to another); each branch sees only its own changes."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelpipe.testing import running_service
from pipeline.model import Signal

from .backends import GrpcBackend, HttpBackend
from .sdk import RESOURCE

CONFIG = """
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:0"}}}}}}
processors:
  batch: {{send_batch_size: 100, timeout: 10ms}}
  secret_mask: {{}}
exporters:
  otlp/masked: {{endpoint: "127.0.0.1:{grpc}", tls: {{insecure: true}}}}
  otlphttp/raw: {{endpoint: "http://127.0.0.1:{http}"}}
connectors:
  forward: {{}}
service:
  pipelines:
    traces/in: {{receivers: [otlp], processors: [batch], exporters: [forward]}}
    traces/masked: {{receivers: [forward], processors: [secret_mask], exporters: [otlp/masked]}}
    traces/raw: {{receivers: [forward], exporters: [otlphttp/raw]}}
"""


def _spans(n: int, attributes: dict[str, str]) -> list[object]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("agent.runtime")
    for i in range(n):
        with tracer.start_as_current_span(f"tool call {i}", attributes=attributes):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


@pytest.fixture
async def backends() -> AsyncIterator[tuple[GrpcBackend, HttpBackend]]:
    g, h = GrpcBackend(), HttpBackend()
    await g.start()
    await h.start()
    yield g, h
    await g.stop()
    await h.stop()


async def test_forward_connector_feeds_isolated_branches(backends: tuple[GrpcBackend, HttpBackend]) -> None:
    g, h = backends
    secret = "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    async with running_service(CONFIG.format(grpc=g.port, http=h.port)) as svc:
        url = f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/traces"
        spans = _spans(3, {"http.request.header.authorization": secret})
        exporter = OTLPSpanExporter(endpoint=url)
        assert await asyncio.to_thread(exporter.export, spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
        await g.wait_for(Signal.TRACES, 3)
        await h.wait_for(Signal.TRACES, 3)

    def auth(backend: GrpcBackend | HttpBackend) -> set[str]:
        return {a.value.string_value for s in backend.spans() for a in s.attributes  # type: ignore[attr-defined]
                if a.key == "http.request.header.authorization"}

    assert auth(g) == {"[REDACTED]"}      # the masked branch
    assert auth(h) == {secret}            # the raw branch never saw the masking

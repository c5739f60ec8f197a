"""`config/examples/from-collector.yaml`, a typical Collector config, runs unchanged: each processor's effect checked.

The file is loaded as it is shipped (only its `${env:...}` ports and backend move, as an operator's
environment would); the OpenTelemetry SDK's exporters send traces (gRPC), metrics and logs (HTTP);
traces arrive at an OTLP/gRPC backend standing in for Tempo, metrics are scraped from the
Prometheus exporter, logs are printed by the debug exporter, and the three extensions answer.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client.parser import text_string_to_metric_families

from otelpipe.testing import running_service
from pipeline.model import Signal

from .backends import GrpcBackend
from .daemon import ROOT

EXAMPLE = ROOT / "config" / "examples" / "from-collector.yaml"
RESOURCE = Resource.create({"service.name": "support-agent", "process.command_line": "python agent.py --key s3cr3t"})
EMAIL = "ada@example.com"


def env(backend: str) -> dict[str, str]:
    local = "127.0.0.1:0"
    return {"HEALTH_CHECK_ENDPOINT": local, "PPROF_ENDPOINT": local, "ZPAGES_ENDPOINT": local,
            "OTLP_GRPC_ENDPOINT": local, "OTLP_HTTP_ENDPOINT": local, "PROMETHEUS_ENDPOINT": local,
            "TEMPO_ENDPOINT": backend, "DEPLOYMENT_ENVIRONMENT": "staging"}


def test_the_shipped_file_validates_with_the_cli() -> None:
    r = subprocess.run([sys.executable, "-m", "otelpipe", "validate", "--config", str(EXAMPLE)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "configuration is valid: 3 pipeline(s)" in r.stdout and r.stderr == ""


def send_traces(endpoint: str) -> None:
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracer = provider.get_tracer("agent.runtime")
    with tracer.start_as_current_span("GET /healthz", attributes={"url.path": "/healthz"}):
        pass
    with tracer.start_as_current_span("chat gpt-4o", attributes={
            "gen_ai.request.model": "gpt-4o", "user.email": EMAIL, "http.request.header.authorization": "Bearer t0k",
            "url.full": "https://api.example.com/v1/chat?token=abc123&stream=1", "prompt": "x" * 5000}):
        pass
    provider.shutdown()


def send_metrics(endpoint: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    provider.get_meter("agent").create_counter("agent.tool.calls").add(7, {"gen_ai.tool.name": "search"})
    assert OTLPMetricExporter(endpoint=f"http://{endpoint}/v1/metrics").export(
        reader.get_metrics_data()) is MetricExportResult.SUCCESS
    provider.shutdown()


def send_logs(endpoint: str) -> None:
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"http://{endpoint}/v1/logs")))
    logger = logging.getLogger("agent.from_collector")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        logger.warning("tool call failed", extra={"user.email": EMAIL, "http.request.header.authorization": "k"})
    finally:
        logger.removeHandler(handler)
        provider.shutdown()


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status, await r.text()


async def test_it_runs_unchanged_and_every_processor_does_its_job(capsys: pytest.CaptureFixture[str]) -> None:
    backend = GrpcBackend()
    await backend.start()
    try:
        async with running_service(EXAMPLE.read_text(), env=env(f"127.0.0.1:{backend.port}")) as svc:
            grpc_ep = svc.endpoint("receiver", "otlp", "grpc")
            http_ep = svc.endpoint("receiver", "otlp", "http")
            await asyncio.to_thread(send_traces, grpc_ep)
            await asyncio.to_thread(send_metrics, http_ep)
            await asyncio.to_thread(send_logs, http_ep)

            # traces → Tempo: the health check is filtered out, the chat span rewritten
            await backend.wait_for(Signal.TRACES, 1)
            (request,) = backend.requests[Signal.TRACES]
            resource = attrs(request.resource_spans[0].resource.attributes)  # type: ignore[attr-defined]
            assert resource["deployment.environment.name"] == "staging"  # resource: upsert from ${env:...}
            assert "process.command_line" not in resource  # resource: delete
            (span,) = backend.spans()
            a = attrs(span.attributes)  # type: ignore[attr-defined]
            assert span.name == "chat gpt-4o"  # type: ignore[attr-defined]
            assert a["user.email"] == hashlib.sha256(EMAIL.encode()).hexdigest()  # attributes: hash
            assert "http.request.header.authorization" not in a  # attributes: delete
            assert a["team"] == "agents"  # attributes: insert
            assert a["llm.model"] == "gpt-4o"  # transform: set ... where
            assert a["url.full"] == "https://api.example.com/v1/chat?token=REDACTED&stream=1"  # replace_pattern
            assert len(a["prompt"]) == 4096  # truncate_all
            assert svc.telemetry.value("otelpipe_processor_dropped_spans_total", processor="filter/health",
                                       pipeline="traces", reason="filtered") == 1

            # metrics → Prometheus, with resource attributes as labels
            scrape = f"http://{svc.endpoint('exporter', 'prometheus', 'http')}/metrics"
            async with asyncio.timeout(10):  # batch holds metrics up to 200 ms
                while not (samples := [s for f in text_string_to_metric_families((await get(scrape))[1])
                                       for s in f.samples if s.name == "agent_tool_calls_total"]):
                    await asyncio.sleep(0.05)
            assert len(samples) == 1 and samples[0].value == 7
            assert samples[0].labels["deployment_environment_name"] == "staging"
            assert "process_command_line" not in samples[0].labels

            # extensions
            health = await get(f"http://{svc.endpoint('extension', 'health_check', 'http')}/")
            assert health[0] == 200 and "Server available" in health[1]
            assert (await get(f"http://{svc.endpoint('extension', 'zpages', 'http')}/debug/servicez"))[0] == 200
            assert (await get(f"http://{svc.endpoint('extension', 'pprof', 'http')}/debug/pprof/"))[0] == 200

            # logs → debug (normal: one line per record with its attributes), through batch's 200 ms
            async with asyncio.timeout(10):
                while "tool call failed" not in (out := capsys.readouterr().out):
                    await asyncio.sleep(0.05)
            line = next(x for x in out.splitlines() if "tool call failed" in x)
            assert hashlib.sha256(EMAIL.encode()).hexdigest() in line and EMAIL not in line
            assert "authorization" not in line and "team=agents" in line
    finally:
        await backend.stop()

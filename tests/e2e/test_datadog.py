"""Datadog end to end: the OpenTelemetry SDK and StatsD clients → otelpipe (from YAML) → the fake Datadog intake.

The intake checks every request against Datadog's documented API shapes (tests/e2e/datadog_intake.py);
the values that arrive are checked exactly: a StatsD counter incremented 5 times totals 5 in
Datadog count points, an SDK cumulative counter arrives as the deltas between its exports, every
log record arrives once with its trace id in Datadog's form. The shipped examples
(config/examples/datadog-*.yaml) are loaded and their traces routes checked against fake
backends: the LLM Observability copy is a sampled set of whole traces with Datadog's headers,
Tempo and the Datadog Agent get every span.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import statsd as statsd_client
from datadog.dogstatsd import DogStatsd
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otelpipe import components
from pipeline.config.confmap import load_texts
from pipeline.config.loader import build
from pipeline.model import Signal
from pipeline.service import Service
from pipeline.telemetry import Telemetry
from pipeline.testing import make_traces

from .backends import GrpcBackend, HttpBackend
from .datadog_intake import DatadogIntake

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"
KEY = "0123456789abcdef0123456789abcdef"
RESOURCE = Resource.create({"service.name": "support-agent", "host.name": "node-7",
                            "deployment.environment.name": "prod", "service.version": "2.1"})

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
  statsd:
    endpoint: "127.0.0.1:0"
    aggregation_interval: 1h   # the tests flush by hand
processors:
  batch: {{send_batch_size: 1000, timeout: 20ms}}
exporters:
  datadog:
    api: {{key: "${{env:DD_API_KEY}}"}}
    hostname: otelpipe-host
    tags: ["team:agents"]
    metrics: {{endpoint: "{url}"}}
    logs: {{endpoint: "{url}"}}
service:
  pipelines:
    metrics: {{receivers: [otlp, statsd], processors: [batch], exporters: [datadog]}}
    logs: {{receivers: [otlp], processors: [batch], exporters: [datadog]}}
"""


@contextlib.asynccontextmanager
async def service(*texts: str, env: dict[str, str]) -> AsyncIterator[Service]:
    """The whole daemon from config texts merged in order (as several --config files are)."""
    overlay = "service: {telemetry: {metrics: {address: '127.0.0.1:0'}}}"
    raw, issues = load_texts([(f"<config {i}>", t) for i, t in enumerate((*texts, overlay))])
    svc = Service(build(raw, issues, components.factories(), env), components.factories(),
                  telemetry=Telemetry(process_metrics=False))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.shutdown()


@pytest.fixture
async def intake() -> AsyncIterator[DatadogIntake]:
    i = await DatadogIntake(KEY).start()
    yield i
    assert i.violations == []
    await i.stop()


@pytest.fixture
async def svc(intake: DatadogIntake) -> AsyncIterator[Service]:
    async with service(CONFIG.format(url=intake.url), env={"DD_API_KEY": KEY}) as s:
        yield s


async def test_statsd_counters_gauges_and_timers_arrive_exactly(svc: Service, intake: DatadogIntake,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DD_ENV", "DD_SERVICE", "DD_VERSION", "DD_TAGS", "DD_ENTITY_ID", "DD_EXTERNAL_ENV"):
        monkeypatch.delenv(var, raising=False)  # the DogStatsD client would add them as tags
    host, port = svc.endpoint("receiver", "statsd", "udp").rsplit(":", 1)
    receiver = svc.component("receiver", "statsd")
    dd = DogStatsd(host=host, port=int(port), disable_telemetry=True, disable_buffering=True,
                   origin_detection_enabled=False)
    plain = statsd_client.StatsClient(host, int(port))
    try:
        for _ in range(5):
            dd.increment("agent.requests", tags=["route:/chat", "env:prod"])
        plain.incr("jobs.done", 3)
        dd.gauge("agent.queue.depth", 7, tags=["env:prod"])
        dd.gauge("agent.queue.depth", 4, tags=["env:prod"])
        dd.timing("agent.step", 40, tags=["env:prod"])
        dd.timing("agent.step", 60, tags=["env:prod"])
    finally:
        dd.close_socket()
        plain.close()
    await receiver.wait_for_lines(10)
    await receiver.force_flush()
    await intake.wait_for(lambda: {"agent.requests", "jobs.done", "agent.queue.depth", "agent.step.max"}
                          <= {s["metric"] for s in intake.series})
    [requests] = intake.find("agent.requests")
    assert requests["type"] == 1 and intake.total("agent.requests", route="/chat") == 5
    assert {"route:/chat", "env:prod", "team:agents"} <= set(requests["tags"])
    assert requests["resources"] == [{"name": "otelpipe-host", "type": "host"}]
    assert intake.total("jobs.done") == 3
    assert [(s["type"], s["points"][0]["value"]) for s in intake.find("agent.queue.depth")] == [(3, 4)]
    step = {s["metric"]: s["points"][0]["value"] for s in intake.series if s["metric"].startswith("agent.step.")}
    assert step == pytest.approx({"agent.step.count": 2, "agent.step.sum": 0.1, "agent.step.avg": 0.05,
                                  "agent.step.min": 0.04, "agent.step.max": 0.06})


async def test_sdk_metrics_arrive_as_counts_and_gauges_with_their_tags(svc: Service, intake: DatadogIntake) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("agent.metrics", "0.1")
    tokens = meter.create_counter("gen_ai.client.token.usage", unit="{token}")
    latency = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    active = meter.create_up_down_counter("agent.runs.active")
    depth = meter.create_gauge("agent.queue.depth")
    exporter = OTLPMetricExporter(endpoint=svc.endpoint("receiver", "otlp", "grpc"), insecure=True)
    model = {"gen_ai.request.model": "gpt-4o"}

    async def export() -> None:
        result = await asyncio.to_thread(exporter.export, reader.get_metrics_data())
        assert result is MetricExportResult.SUCCESS

    try:
        tokens.add(100, model)
        tokens.add(50, model)
        latency.record(0.5, model)
        latency.record(1.5, model)
        active.add(1)
        depth.set(42)
        await export()
        tokens.add(25, model)
        latency.record(3.0, model)
        active.add(1)
        await export()
    finally:
        exporter.shutdown()
        provider.shutdown()
    await intake.wait_for(lambda: len(intake.points("gen_ai.client.token.usage")) == 2
                          and len(intake.points("gen_ai.client.operation.duration.count")) == 2)
    # cumulative in the SDK, deltas in Datadog: 150, then 25 (the series began after otelpipe started)
    assert [v for _, v in intake.points("gen_ai.client.token.usage", **{"gen_ai.request.model": "gpt-4o"})] \
        == [150, 25]
    assert [v for _, v in intake.points("gen_ai.client.operation.duration.count")] == [2, 1]
    assert [v for _, v in intake.points("gen_ai.client.operation.duration.sum")] == [2.0, 3.0]
    assert [v for _, v in intake.points("gen_ai.client.operation.duration.avg")] == [1.0, 3.0]
    assert intake.find("gen_ai.client.operation.duration.min") == []  # cumulative min/max cover the whole life
    assert [(s["type"], s["points"][0]["value"]) for s in intake.find("agent.runs.active")] == [(3, 1), (3, 2)]
    assert [(s["type"], s["points"][0]["value"]) for s in intake.find("agent.queue.depth")][0] == (3, 42)
    [first, *_] = intake.find("gen_ai.client.token.usage")
    assert first["type"] == 1 and first["resources"] == [{"name": "node-7", "type": "host"}]
    assert {"service:support-agent", "env:prod", "version:2.1", "team:agents",
            "gen_ai.request.model:gpt-4o"} <= set(first["tags"])


async def test_sdk_logs_arrive_once_each_with_their_trace_id(svc: Service, intake: DatadogIntake) -> None:
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    tracer = TracerProvider(resource=RESOURCE).get_tracer("agent")
    logger = logging.getLogger("agent.e2e.datadog")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger.addHandler(handler)
    try:
        with tracer.start_as_current_span("agent.run") as span:
            for i in range(20):
                logger.warning("tool call %d finished", i, extra={"gen_ai.tool.name": "search"})
        logger.error("outside any span")
    finally:
        logger.removeHandler(handler)
    exporter = OTLPLogExporter(endpoint=f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/logs")
    try:
        await asyncio.to_thread(exporter.export, memory.get_finished_logs())
    finally:
        exporter.shutdown()
        provider.shutdown()
    await intake.wait_for(lambda: len(intake.logs) >= 21)
    trace_id = span.get_span_context().trace_id
    messages = sorted(e["message"] for e in intake.logs)
    assert messages == sorted([f"tool call {i} finished" for i in range(20)] + ["outside any span"])
    in_span = [e for e in intake.logs if e["message"].startswith("tool call")]
    assert all(e["dd.trace_id"] == str(trace_id & (2**64 - 1)) and e["otel.trace_id"] == f"{trace_id:032x}"
               and e["dd.span_id"] == str(span.get_span_context().span_id) for e in in_span)
    assert all((e["status"], e["service"], e["hostname"], e["ddsource"], e["gen_ai.tool.name"])
               == ("WARN", "support-agent", "node-7", "otlp_log_ingestion", "search") for e in in_span)
    assert in_span[0]["ddtags"] == "service:support-agent,env:prod,version:2.1,team:agents"
    [outside] = [e for e in intake.logs if e["message"] == "outside any span"]
    assert "dd.trace_id" not in outside and outside["status"] == "ERROR"
    assert {r["path"] for r in intake.requests} == {"/api/v2/logs"}


# -- the shipped examples: traces routes ---------------------------------------------------------

def traces_with_known_sampling(n: int) -> tuple[bytes, int, int]:
    """n traces of 3 spans; even-numbered ones have the highest randomness (kept by any sampler), odd the lowest."""
    req = make_traces(3 * n, traces=n, service="support-agent")
    for span in req.resource_spans[0].scope_spans[0].spans:  # type: ignore[union-attr]
        t = int.from_bytes(span.trace_id, "big") - 1
        span.trace_id = t.to_bytes(9, "big") + (b"\xff" * 7 if t % 2 == 0 else b"\x00" * 6 + b"\x01")
    return req.SerializeToString(), 3 * ((n + 1) // 2), 3 * n


async def post_traces(svc: Service, body: bytes) -> None:
    url = f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/traces"
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers={"Content-Type": "application/x-protobuf"}) as resp:
        assert resp.status == 200, await resp.text()


async def test_llmobs_example_sends_a_sampled_copy_to_datadog_and_every_trace_to_tempo(
        intake: DatadogIntake) -> None:
    llmobs, tempo = HttpBackend(), GrpcBackend()
    await llmobs.start()
    await tempo.start()
    overlay = f"""
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}, http: {{endpoint: "127.0.0.1:0"}}}}}}}}
processors: {{memory_limiter: {{limit_mib: 16384, spike_limit_mib: 128}}}}
exporters:
  otlphttp/llmobs: {{traces_endpoint: "http://127.0.0.1:{llmobs.port}/v1/traces"}}
  otlp/tempo: {{endpoint: "127.0.0.1:{tempo.port}"}}
  datadog: {{metrics: {{endpoint: "{intake.url}"}}, logs: {{endpoint: "{intake.url}"}}}}
"""
    body, kept, total = traces_with_known_sampling(10)
    try:
        async with service((EXAMPLES / "datadog-llmobs.yaml").read_text(), overlay,
                           env={"DD_API_KEY": KEY, "LLMOBS_SAMPLING_PERCENTAGE": "50"}) as svc:
            await post_traces(svc, body)
            await tempo.wait_for(Signal.TRACES, total)
            await llmobs.wait_for(Signal.TRACES, kept)
    finally:
        await llmobs.stop()
        await tempo.stop()
    assert len(tempo.spans()) == total
    sampled = {s.trace_id for r in llmobs.requests[Signal.TRACES] for rs in r.resource_spans  # type: ignore[attr-defined]
               for ss in rs.scope_spans for s in ss.spans}
    assert llmobs.items[Signal.TRACES] == kept and all(t[-1] == 0xFF for t in sampled) and len(sampled) == 5
    headers = llmobs.metadata[0]
    assert headers["dd-api-key"] == KEY and headers["dd-otlp-source"] == "llmobs"
    assert llmobs.content_types == ["application/x-protobuf"] * len(llmobs.content_types)


async def test_agent_example_sends_every_trace_to_the_agents_otlp_ingest(intake: DatadogIntake) -> None:
    agent = GrpcBackend()
    await agent.start()
    overlay = f"""
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}, http: {{endpoint: "127.0.0.1:0"}}}}}}}}
processors: {{memory_limiter: {{limit_mib: 16384, spike_limit_mib: 128}}}}
exporters:
  datadog: {{metrics: {{endpoint: "{intake.url}"}}, logs: {{endpoint: "{intake.url}"}}}}
"""
    body, _, total = traces_with_known_sampling(4)
    try:
        # the example dials port 4317 of DD_AGENT_HOST; here the fake Agent listens elsewhere
        async with service((EXAMPLES / "datadog-agent.yaml").read_text(), overlay,
                           f"exporters: {{otlp/datadog-agent: {{endpoint: '127.0.0.1:{agent.port}'}}}}",
                           env={"DD_API_KEY": KEY}) as svc:
            await post_traces(svc, body)
            await agent.wait_for(Signal.TRACES, total)
    finally:
        await agent.stop()
    assert len(agent.spans()) == total


@pytest.mark.parametrize("name", ["datadog-llmobs.yaml", "datadog-agent.yaml"])
def test_the_examples_load_with_only_the_api_key_set(name: str) -> None:
    raw, issues = load_texts([(name, (EXAMPLES / name).read_text())])
    cfg = build(raw, issues, components.factories(), {"DD_API_KEY": KEY})
    assert cfg.warnings == ()
    exporters = {str(k): v for k, v in cfg.exporters.items()}
    assert str(exporters["datadog"].series_url()) == "https://api.datadoghq.com/api/v2/series"
    if name == "datadog-llmobs.yaml":
        llmobs = exporters["otlphttp/llmobs"]
        assert llmobs.traces_endpoint == "https://otlp.datadoghq.com/v1/traces" and llmobs.encoding == "proto"
        assert {k: v.reveal() for k, v in llmobs.headers.items()} == {"dd-api-key": KEY, "dd-otlp-source": "llmobs"}
    else:
        assert str(exporters["otlp/datadog-agent"].endpoint) == "datadog-agent:4317"
    eu = build(*load_texts([(name, (EXAMPLES / name).read_text())]), components.factories(),
               {"DD_API_KEY": KEY, "DD_SITE": "datadoghq.eu"})
    assert str({str(k): v for k, v in eu.exporters.items()}["datadog"].logs_url()) == \
        "https://http-intake.logs.datadoghq.eu/api/v2/logs"

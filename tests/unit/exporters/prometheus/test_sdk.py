"""The OpenTelemetry Python SDK's metrics, through the Prometheus exporter, scraped over HTTP.

The SDK records (counter, up-down counter, histogram, observable gauges; units
`s`, `By`, `{token}`, `1`), encodes with its own OTLP encoder, and the
exporter's `/metrics` is read with a real HTTP client: exact names, labels,
values, `target_info`, and (OpenMetrics) exemplars carrying the SDK tracer's
trace and span ids.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.version import __version__ as SDK_VERSION

from exporters.prometheus import PrometheusExporter, PrometheusExporterConfig
from pipeline.component import Kind
from pipeline.model import Payload, Signal
from pipeline.testing import nop_host, nop_settings
from tests.testdata.promtools import assert_openmetrics_ok, families, samples

RESOURCE = Resource.create({"service.name": "support-agent", "service.instance.id": "pod-7",
                            "deployment.environment": "prod"})
OM_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
             "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")  # what Prometheus 2.x sends
CTX = {"job": "support-agent", "instance": "pod-7", "otel_scope_name": "agent.metrics", "otel_scope_version": "0.1"}


def L(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset({**CTX, **labels}.items())


class Recorded:
    """One SDK meter provider with every instrument kind, and the spans its exemplars point at."""

    def __init__(self, *readers: InMemoryMetricReader) -> None:
        self.provider = MeterProvider(resource=RESOURCE, metric_readers=list(readers))
        self.tracer = TracerProvider(resource=RESOURCE).get_tracer("agent.runtime")
        meter = self.provider.get_meter("agent.metrics", "0.1")
        self.tokens = meter.create_counter("gen_ai.client.token.usage", unit="{token}",
                                           description="Number of input and output tokens used.")
        self.duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s",
                                               description="GenAI operation duration.",
                                               explicit_bucket_boundaries_advisory=[0.5, 1.0, 2.5, 5.0])
        self.active = meter.create_up_down_counter("agent.runs.active", unit="{run}", description="Runs in progress.")
        self.memory = 0
        meter.create_observable_gauge("process.memory.usage", callbacks=[self._memory], unit="By",
                                      description="Resident memory.")
        meter.create_observable_gauge("agent.cache.utilization", callbacks=[self._cache], unit="1",
                                      description="Share of the cache in use.")
        self.span_ids: dict[str, tuple[str, str]] = {}

    def _memory(self, _options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(self.memory, {"pool": "heap"})

    def _cache(self, _options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(0.25)

    def remember(self, name: str) -> None:
        from opentelemetry import trace
        ctx = trace.get_current_span().get_span_context()
        self.span_ids[name] = (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")

    def round_one(self) -> None:
        self.memory = 50_000_000
        self.tokens.add(1200, {"gen_ai.request.model": "gpt-4o", "gen_ai.token.type": "input"})
        with self.tracer.start_as_current_span("chat gpt-4o"):
            self.remember("chat")
            self.tokens.add(300, {"gen_ai.request.model": "gpt-4o", "gen_ai.token.type": "output"})
            self.duration.record(0.7, {"gen_ai.request.model": "gpt-4o"})
        self.duration.record(0.3, {"gen_ai.request.model": "gpt-4o"})
        self.active.add(3)

    def round_two(self) -> None:
        self.memory = 64_000_000
        self.tokens.add(800, {"gen_ai.request.model": "gpt-4o", "gen_ai.token.type": "input"})
        with self.tracer.start_as_current_span("slow tool"):
            self.remember("tool")
            self.duration.record(7.0, {"gen_ai.request.model": "gpt-4o"})
        self.duration.record(3.0, {"gen_ai.request.model": "gpt-4o"})
        self.active.add(-2)


@pytest.fixture
async def exporter() -> AsyncIterator[PrometheusExporter]:
    cfg = PrometheusExporterConfig(endpoint="127.0.0.1:0", enable_open_metrics=True)
    exp = PrometheusExporter(nop_settings("prometheus", Kind.EXPORTER, Signal.METRICS), cfg)
    await exp.start(nop_host())
    yield exp
    await exp.shutdown()


async def scrape(exp: PrometheusExporter, accept: str | None = None) -> tuple[str, bytes]:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://{exp.endpoints['http']}/metrics", headers=headers) as resp:
        assert resp.status == 200
        return resp.headers["Content-Type"], await resp.read()


async def push(exp: PrometheusExporter, reader: InMemoryMetricReader) -> None:
    await exp.push(Payload(Signal.METRICS, message=encode_metrics(reader.get_metrics_data())))


EXPECTED = {
    ("gen_ai_client_token_usage_total", L(gen_ai_request_model="gpt-4o", gen_ai_token_type="input")): 2000.0,
    ("gen_ai_client_token_usage_total", L(gen_ai_request_model="gpt-4o", gen_ai_token_type="output")): 300.0,
    **{("gen_ai_client_operation_duration_seconds_bucket", L(gen_ai_request_model="gpt-4o", le=le)): v
       for le, v in (("0.5", 1.0), ("1.0", 2.0), ("2.5", 2.0), ("5.0", 3.0), ("+Inf", 4.0))},
    ("gen_ai_client_operation_duration_seconds_count", L(gen_ai_request_model="gpt-4o")): 4.0,
    ("gen_ai_client_operation_duration_seconds_sum", L(gen_ai_request_model="gpt-4o")): 11.0,
    ("agent_runs_active", L()): 1.0,
    ("process_memory_usage_bytes", L(pool="heap")): 64_000_000.0,
    ("agent_cache_utilization_ratio", L()): 0.25,
    ("target_info", frozenset({"job": "support-agent", "instance": "pod-7", "deployment_environment": "prod",
                               "telemetry_sdk_language": "python", "telemetry_sdk_name": "opentelemetry",
                               "telemetry_sdk_version": SDK_VERSION}.items())): 1.0,
}


async def test_sdk_metrics_text_exposition(exporter: PrometheusExporter) -> None:
    reader = InMemoryMetricReader()
    rec = Recorded(reader)
    rec.round_one()
    await push(exporter, reader)
    rec.round_two()
    await push(exporter, reader)
    ctype, body = await scrape(exporter)
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    assert samples(body) == EXPECTED
    fams = families(body)
    assert {name: (f.type, f.documentation) for name, f in fams.items()} == {
        "target_info": ("gauge", "Target metadata"),
        "gen_ai_client_token_usage": ("counter", "Number of input and output tokens used."),
        "gen_ai_client_operation_duration_seconds": ("histogram", "GenAI operation duration."),
        "agent_runs_active": ("gauge", "Runs in progress."),
        "process_memory_usage_bytes": ("gauge", "Resident memory."),
        "agent_cache_utilization_ratio": ("gauge", "Share of the cache in use."),
    }
    rec.provider.shutdown()


async def test_sdk_delta_temporality_gives_the_same_exposition(exporter: PrometheusExporter) -> None:
    delta = {Counter: AggregationTemporality.DELTA, UpDownCounter: AggregationTemporality.DELTA,
             Histogram: AggregationTemporality.DELTA}
    reader = InMemoryMetricReader(preferred_temporality=delta)  # type: ignore[arg-type]
    rec = Recorded(reader)
    rec.round_one()
    first = encode_metrics(reader.get_metrics_data())
    assert first.resource_metrics[0].scope_metrics[0].metrics[0].sum.aggregation_temporality == 1  # really delta
    await exporter.push(Payload(Signal.METRICS, message=first))
    rec.round_two()
    await push(exporter, reader)
    _, body = await scrape(exporter)
    assert samples(body) == EXPECTED
    rec.provider.shutdown()


async def test_sdk_exemplars_in_openmetrics(exporter: PrometheusExporter) -> None:
    reader = InMemoryMetricReader()
    rec = Recorded(reader)
    rec.round_one()
    await push(exporter, reader)
    rec.round_two()
    await push(exporter, reader)
    ctype, body = await scrape(exporter, OM_ACCEPT)
    assert ctype == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    fams = {f.name: f for f in assert_openmetrics_ok(body)}
    assert fams["target"].type == "info"
    assert fams["gen_ai_client_operation_duration_seconds"].unit == "seconds"
    assert fams["process_memory_usage_bytes"].unit == "bytes"
    assert fams["agent_cache_utilization_ratio"].unit == "ratio"
    chat, tool = rec.span_ids["chat"], rec.span_ids["tool"]

    tokens = {s.labels["gen_ai_token_type"]: s for s in fams["gen_ai_client_token_usage"].samples
              if s.name == "gen_ai_client_token_usage_total"}
    assert tokens["input"].exemplar is None  # recorded outside any span
    ex = tokens["output"].exemplar
    assert ex is not None and ex.value == 300.0
    assert ex.labels == {"trace_id": chat[0], "span_id": chat[1]}
    assert ex.timestamp is not None

    buckets = {s.labels["le"]: s.exemplar for s in fams["gen_ai_client_operation_duration_seconds"].samples
               if s.name.endswith("_bucket")}
    got = {le: (e.value, e.labels["span_id"]) if e else None for le, e in buckets.items()}
    assert got == {"0.5": None, "1.0": (0.7, chat[1]), "2.5": (0.7, chat[1]), "5.0": (0.7, chat[1]),
                   "+Inf": (7.0, tool[1])}
    created = [s for s in fams["gen_ai_client_token_usage"].samples if s.name.endswith("_created")]
    assert len(created) == 2 and all(s.value > 1.6e9 for s in created)
    rec.provider.shutdown()


async def test_openmetrics_only_when_enabled() -> None:
    exp = PrometheusExporter(nop_settings("prometheus", Kind.EXPORTER, Signal.METRICS),
                             PrometheusExporterConfig(endpoint="127.0.0.1:0"))
    await exp.start(nop_host())
    try:
        reader = InMemoryMetricReader()
        rec = Recorded(reader)
        rec.round_one()
        await push(exp, reader)
        ctype, body = await scrape(exp, OM_ACCEPT)
        assert ctype == "text/plain; version=0.0.4; charset=utf-8"
        assert b"# EOF" not in body and b"trace_id" not in body
        samples(body)
        rec.provider.shutdown()
    finally:
        await exp.shutdown()

"""A real Prometheus server scrapes otelpipe and the values come back through its query API.

The OpenTelemetry SDK sends metrics (delta temporality, so otelpipe has to
accumulate them) over OTLP/HTTP into the whole daemon; two Prometheus
exporters serve them: one with OpenMetrics enabled, scraped with
`honor_labels: true` (job/instance from the resource survive, exemplars are
stored), one plain text, scraped with Prometheus' defaults (its own
job/instance win, ours become exported_job/exported_instance). Debian's
`prometheus` binary runs with a temporary config and storage, scraping every
second; the test waits for readiness, for both targets to be up, and for the
values, each inside a bounded timeout, and stops the server at the end.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otelpipe.testing import running_service
from tests.testdata.promtools import tool

CONFIG = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:0"}
exporters:
  prometheus/om:
    endpoint: "127.0.0.1:0"
    enable_open_metrics: true
  prometheus/text:
    endpoint: "127.0.0.1:0"
service:
  pipelines:
    metrics: {receivers: [otlp], exporters: [prometheus/om, prometheus/text]}
"""

PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: otelpipe-om
    honor_labels: true
    static_configs: [{{targets: ["{om}"]}}]
  - job_name: otelpipe-text
    static_configs: [{{targets: ["{text}"]}}]
"""

RESOURCE = Resource.create({"service.name": "support-agent", "service.instance.id": "pod-7",
                            "deployment.environment": "prod"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def prometheus_server(tmp: Path, config_text: str) -> AsyncIterator[str]:
    """Run /usr/bin/prometheus on `config_text` until the block ends; yields its base URL once it is ready."""
    config = tmp / "prometheus.yml"
    config.write_text(config_text)
    address = f"127.0.0.1:{free_port()}"
    log = (tmp / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address={address}", "--enable-feature=exemplar-storage", "--log.level=warn",
        stdout=log, stderr=log)
    base = f"http://{address}"
    try:
        async with aiohttp.ClientSession() as http:
            await poll(lambda: ready(http, base, proc), 30, "Prometheus /-/ready", tmp)
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def ready(http: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process) -> bool:
    if proc.returncode is not None:
        raise AssertionError(f"prometheus exited with {proc.returncode}")
    try:
        async with http.get(f"{base}/-/ready") as resp:
            return resp.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def poll(check: Any, timeout: float, what: str, tmp: Path | None = None) -> Any:
    """Call the async `check` until it returns something truthy (no event to wait on: Prometheus is another process)."""
    delay = 0.05
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
    except TimeoutError:
        logs = (tmp / "prometheus.log").read_text()[-3000:] if tmp else ""
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}\n{logs}") from None


async def api(http: aiohttp.ClientSession, base: str, path: str, **params: str) -> Any:
    async with http.get(f"{base}/api/v1/{path}", params=params) as resp:
        body = await resp.json()
        assert body["status"] == "success", body
        return body["data"]


def send_sdk_metrics(endpoint: str) -> dict[str, str]:
    """Two delta collections from the SDK, exported with its OTLP/HTTP exporter; returns the exemplar span ids."""
    delta = {Counter: AggregationTemporality.DELTA, UpDownCounter: AggregationTemporality.DELTA,
             Histogram: AggregationTemporality.DELTA}
    reader = InMemoryMetricReader(preferred_temporality=delta)  # type: ignore[arg-type]
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    tracer = TracerProvider(resource=RESOURCE).get_tracer("agent.runtime")
    meter = provider.get_meter("agent.metrics", "0.1")
    tokens = meter.create_counter("gen_ai.client.token.usage", unit="{token}", description="Tokens used.")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s", description="Operation duration.",
                                      explicit_bucket_boundaries_advisory=[0.5, 1.0, 2.5, 5.0])
    active = meter.create_up_down_counter("agent.runs.active", unit="{run}", description="Runs in progress.")
    exporter = OTLPMetricExporter(endpoint=f"http://{endpoint}/v1/metrics")
    spans: dict[str, str] = {}
    model = {"gen_ai.request.model": "gpt-4o"}

    tokens.add(1200, {**model, "gen_ai.token.type": "input"})
    with tracer.start_as_current_span("chat") as span:
        spans["chat"] = f"{span.get_span_context().trace_id:032x}"
        duration.record(0.7, model)
    duration.record(0.3, model)
    active.add(3)
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS

    tokens.add(800, {**model, "gen_ai.token.type": "input"})
    with tracer.start_as_current_span("tool") as span:
        spans["tool"] = f"{span.get_span_context().trace_id:032x}"
        duration.record(7.0, model)
    duration.record(3.0, model)
    active.add(-2)
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    exporter.shutdown()
    provider.shutdown()
    return spans


async def test_real_prometheus_scrapes_otelpipe(tmp_path: Path) -> None:
    async with running_service(CONFIG) as svc:
        spans = await asyncio.to_thread(send_sdk_metrics, svc.endpoint("receiver", "otlp", "http"))
        om_target = svc.endpoint("exporter", "prometheus/om", "http")
        text_target = svc.endpoint("exporter", "prometheus/text", "http")
        prom_config = PROMETHEUS_CONFIG.format(om=om_target, text=text_target)
        async with prometheus_server(tmp_path, prom_config) as prom, aiohttp.ClientSession() as http:

            async def targets_up() -> list[dict[str, Any]] | None:
                active = (await api(http, prom, "targets", state="active"))["activeTargets"]
                ok = [t for t in active if t["health"] == "up" and t["lastError"] == ""]
                return active if len(ok) == 2 else None

            # Prometheus' discovery manager hands new targets over in 5 s batches: most of this test's time
            targets = await poll(targets_up, 30, "both otelpipe targets up", tmp_path)
            assert {t["labels"]["job"] for t in targets} == {"otelpipe-om", "otelpipe-text"}

            async def query(q: str) -> list[dict[str, Any]]:
                return (await api(http, prom, "query", query=q))["result"]  # type: ignore[no-any-return]

            async def value_of(q: str) -> float:
                result = await poll(lambda: query(q), 15, q, tmp_path)
                assert len(result) == 1, result
                return float(result[0]["value"][1])

            om = 'job="support-agent",instance="pod-7"'
            text = 'job="otelpipe-text",exported_job="support-agent",exported_instance="pod-7"'
            for sel in (om, text):
                assert await value_of(f'gen_ai_client_token_usage_total{{{sel},gen_ai_token_type="input"}}') == 2000.0
                assert await value_of(f'gen_ai_client_operation_duration_seconds_count{{{sel}}}') == 4.0
                assert await value_of(f'gen_ai_client_operation_duration_seconds_sum{{{sel}}}') == 11.0
                assert await value_of(f'gen_ai_client_operation_duration_seconds_bucket{{{sel},le="1.0"}}') == 2.0
                assert await value_of(f'gen_ai_client_operation_duration_seconds_bucket{{{sel},le="+Inf"}}') == 4.0
                assert await value_of(f'agent_runs_active{{{sel}}}') == 1.0
            # the median lies in the (0.5, 1.0] bucket: 2 of 4 observations are at or below 1.0
            assert 0.5 < await value_of(
                f'histogram_quantile(0.5, gen_ai_client_operation_duration_seconds_bucket{{{om}}})') <= 1.0

            (info,) = await poll(lambda: query(f"target_info{{{om}}}"), 15, "target_info", tmp_path)
            assert info["metric"]["deployment_environment"] == "prod"
            assert info["metric"]["telemetry_sdk_language"] == "python"
            (series,) = await query(f'gen_ai_client_token_usage_total{{{om},gen_ai_token_type="input"}}')
            assert series["metric"]["otel_scope_name"] == "agent.metrics"
            assert series["metric"]["otel_scope_version"] == "0.1"

            # exemplars travel only in OpenMetrics: the OM target has them, with the SDK's trace ids
            now = time.time()

            async def exemplars() -> list[dict[str, Any]]:
                data = await api(http, prom, "query_exemplars",
                                 query=f"gen_ai_client_operation_duration_seconds_bucket{{{om}}}",
                                 start=str(now - 600), end=str(now + 600))
                return [e for s in data for e in s["exemplars"]]

            found = await poll(exemplars, 15, "exemplars", tmp_path)
            assert {e["labels"]["trace_id"] for e in found} == {spans["chat"], spans["tool"]}
            assert {float(e["value"]) for e in found} == {0.7, 7.0}
            text_ex = await api(http, prom, "query_exemplars",
                                query=f"gen_ai_client_operation_duration_seconds_bucket{{{text}}}",
                                start=str(now - 600), end=str(now + 600))
            assert all(not s["exemplars"] for s in text_ex)


@pytest.mark.parametrize("name", ["prometheus", "promtool"])
def test_prometheus_tools_are_installed(name: str) -> None:
    """These binaries come from the test set-up (`make system-deps`); missing is a failure, not a skip."""
    assert Path(tool(name)).exists()


def readme_scrape_config() -> str:
    """The `prometheus.yml` block of the README, as an operator would copy it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.rindex("\n", 0, readme.index("# prometheus.yml\n")) + 1
    block = readme[start:readme.index("```", start)]
    return textwrap.dedent(block)


async def test_the_readme_scrape_config_scrapes_otelpipe_and_its_data(tmp_path: Path) -> None:
    """Debian's Prometheus on the README's scrape config, targets pointed at a running otelpipe: both jobs answer."""
    scrape = readme_scrape_config()
    assert scrape.count('"otelpipe:8888"') == 1 and scrape.count('"otelpipe:8889"') == 1
    async with running_service(CONFIG.replace("prometheus/text:", "prometheus:").replace(
            "prometheus/text]", "prometheus]")) as svc:
        await asyncio.to_thread(send_sdk_metrics, svc.endpoint("receiver", "otlp", "http"))
        scrape = (scrape.replace("otelpipe:8888", svc.endpoint("admin", "", "http"))
                  .replace("otelpipe:8889", svc.endpoint("exporter", "prometheus", "http")))
        # only the interval is ours (the default 1m would make the test wait a minute)
        config = "global: {scrape_interval: 1s, scrape_timeout: 1s}\n" + scrape
        async with prometheus_server(tmp_path, config) as prom, aiohttp.ClientSession() as http:

            async def query(q: str) -> list[dict[str, Any]]:
                return (await api(http, prom, "query", query=q))["result"]  # type: ignore[no-any-return]

            own = await poll(lambda: query('otelpipe_build_info{job="otelpipe"}'), 30, "build_info", tmp_path)
            assert own[0]["value"][1] == "1"
            accepted = await poll(lambda: query(
                'otelpipe_receiver_accepted_metric_points_total{job="otelpipe",receiver="otlp"}'), 15, "accepted")
            assert float(accepted[0]["value"][1]) > 0
            data = await poll(lambda: query(
                'gen_ai_client_token_usage_total{job="support-agent",instance="pod-7"}'), 15, "data", tmp_path)
            assert float(data[0]["value"][1]) == 2000.0

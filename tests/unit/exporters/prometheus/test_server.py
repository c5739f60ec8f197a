"""Prometheus exporter as a component: config, factory, lifecycle, HTTP endpoint, accounting."""
from __future__ import annotations

import asyncio
import gzip
import threading
from dataclasses import dataclass, replace

import aiohttp
import pytest
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.openmetrics import exposition as om_exposition

from exporters import prometheus
from exporters.prometheus import PrometheusExporter, PrometheusExporterConfig
from exporters.prometheus.server import PREVALIDATED, MetricsServer, wants_openmetrics
from exporters.prometheus.store import MetricStore
from pipeline.component import Kind, ReceiverFactory, Stability, make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigError, ConfigIssue
from pipeline.exporterhelper import ExporterHelper
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import kv, make_metrics, nop_host, nop_settings
from tests.testdata.promtools import assert_openmetrics_ok, samples


@dataclass(frozen=True, slots=True, kw_only=True)
class NopConfig:
    pass


NOP_RECEIVER = ReceiverFactory(type="nop", config_type=NopConfig,
                       signals={Signal.METRICS: Stability.STABLE}, create=lambda *a: None)


def settings(tel: Telemetry | None = None):  # type: ignore[no-untyped-def]
    return nop_settings("prometheus/agents", Kind.EXPORTER, Signal.METRICS, telemetry=tel)


def decode(data: dict[str, object]) -> tuple[PrometheusExporterConfig, list[str]]:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(PrometheusExporterConfig, data, "exporters.prometheus", issues)
    return cfg, [str(i) for i in issues]


# ------------------------------------------------------------------ config and factory

def test_factory_and_defaults() -> None:
    f = prometheus.FACTORY
    assert (f.type, f.kind, set(f.signals)) == ("prometheus", Kind.EXPORTER, {Signal.METRICS})
    cfg, issues = decode({})
    assert issues == []
    assert cfg.endpoint == "localhost:8889" and cfg.namespace == "" and cfg.const_labels == {}
    assert cfg.metric_expiration == 300.0
    assert cfg.add_metric_suffixes is True and cfg.enable_open_metrics is False
    assert cfg.resource_to_telemetry_conversion.enabled is False
    assert cfg.sending_queue.enabled is False  # in-memory state update: no queue by default
    assert cfg.listeners() == [("tcp", "localhost:8889", "endpoint")]


def test_full_config_decodes() -> None:
    cfg, issues = decode({"endpoint": "127.0.0.1:9464", "namespace": "agents", "const_labels": {"cluster": "eu-1"},
                          "metric_expiration": "90s", "resource_to_telemetry_conversion": {"enabled": True},
                          "add_metric_suffixes": False, "enable_open_metrics": True,
                          "sending_queue": {"enabled": True}})
    assert issues == []
    assert (cfg.endpoint, cfg.namespace, cfg.const_labels, cfg.metric_expiration) == (
        "127.0.0.1:9464", "agents", {"cluster": "eu-1"}, 90.0)
    assert cfg.resource_to_telemetry_conversion.enabled and not cfg.add_metric_suffixes and cfg.enable_open_metrics
    assert cfg.sending_queue.enabled


@pytest.mark.parametrize(("data", "message"), [
    ({"endpiont": "x:1"}, "exporters.prometheus.endpiont: unknown key 'endpiont'; did you mean 'endpoint'?"),
    ({"endpoint": "nope"}, "exporters.prometheus.endpoint: invalid endpoint 'nope'"),
    ({"namespace": "my-app"}, "exporters.prometheus.namespace: invalid namespace 'my-app'"),
    ({"metric_expiration": "0s"}, "exporters.prometheus.metric_expiration: must be greater than 0"),
    ({"metric_expiration": 5}, "exporters.prometheus.metric_expiration: a duration needs a unit"),
    ({"const_labels": {"bad-name": "x"}}, "exporters.prometheus.const_labels.bad-name: invalid label name"),
    ({"const_labels": {"__meta": "x"}}, "exporters.prometheus.const_labels.__meta: invalid label name"),
    ({"resource_to_telemetry_conversion": {"enable": True}},
     "exporters.prometheus.resource_to_telemetry_conversion.enable: unknown key 'enable'; did you mean 'enabled'?"),
    ({"enable_open_metrics": "yes"}, "exporters.prometheus.enable_open_metrics: expected a boolean"),
])
def test_bad_config_is_reported_with_its_path(data: dict[str, object], message: str) -> None:
    _, issues = decode(data)
    assert any(message in i for i in issues), issues


def test_config_loads_through_the_pipeline_config() -> None:
    yaml = """
receivers: {nop: {}}
exporters:
  prometheus:
    endpoint: 127.0.0.1:0
    namespace: agents
    metric_expiration: 10m
service:
  pipelines:
    metrics: {receivers: [nop], exporters: [prometheus]}
"""
    cfg = load_text(yaml, make_factory_map([NOP_RECEIVER, prometheus.FACTORY]))
    (exp,) = cfg.exporters.values()
    assert isinstance(exp, PrometheusExporterConfig) and exp.metric_expiration == 600.0
    with pytest.raises(ConfigError) as err:
        load_text(yaml.replace("metrics: {", "traces: {"), make_factory_map([NOP_RECEIVER, prometheus.FACTORY]))
    assert "prometheus" in str(err.value)


# ------------------------------------------------------------------ lifecycle and HTTP

async def test_shutdown_without_start_and_twice() -> None:
    exp = PrometheusExporter(settings(), PrometheusExporterConfig(endpoint="127.0.0.1:0"))
    await exp.shutdown()
    await exp.start(nop_host())
    await exp.shutdown()
    await exp.shutdown()


async def test_port_in_use_fails_start() -> None:
    first = PrometheusExporter(settings(), PrometheusExporterConfig(endpoint="127.0.0.1:0"))
    await first.start(nop_host())
    try:
        second = PrometheusExporter(settings(), PrometheusExporterConfig(endpoint=first.endpoints["http"]))
        with pytest.raises(OSError):
            await second.start(nop_host())
        await second.shutdown()
    finally:
        await first.shutdown()


async def test_http_scrape_negotiation_and_gzip() -> None:
    exp = PrometheusExporter(settings(), PrometheusExporterConfig(endpoint="127.0.0.1:0", enable_open_metrics=True))
    await exp.start(nop_host())
    try:
        await exp.push(Payload(Signal.METRICS, message=make_metrics(3, name="agent.requests")))
        url = f"http://{exp.endpoints['http']}/metrics"
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Encoding"] == "gzip"
                assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                text = gzip.decompress(await resp.read())
            async with session.get(url, headers={"Accept": "application/openmetrics-text; version=1.0.0",
                                                "Accept-Encoding": "identity"}) as resp:
                assert resp.headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
                om = await resp.read()
            async with session.get(url.replace("/metrics", "/other")) as resp:
                assert resp.status == 404
        got = samples(text)
        assert got[("agent_requests_total", frozenset({"job": "agent", "instance": "", "otel_scope_name": "test",
                                                       "series": "2"}.items()))] == 3.0
        assert len(got) == 3
        assert_openmetrics_ok(om)
    finally:
        await exp.shutdown()


async def test_render_failure_is_a_500_not_a_crash() -> None:
    exp = PrometheusExporter(settings(), PrometheusExporterConfig(endpoint="127.0.0.1:0"))
    await exp.start(nop_host())
    try:
        def broken(openmetrics: bool = False) -> bytes:
            raise RuntimeError("boom")

        exp.server.render = broken  # type: ignore[method-assign]
        async with aiohttp.ClientSession() as session, session.get(f"http://{exp.endpoints['http']}/metrics") as resp:
            assert resp.status == 500
            assert "see the otelpipe log" in await resp.text()
    finally:
        await exp.shutdown()


@pytest.mark.parametrize(("headers", "expected"), [
    ([], False),
    (["text/plain;version=0.0.4"], False),
    (["application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"], True),
    (["text/plain;q=0.5", "application/openmetrics-text; version=0.0.1; q=0.75"], True),
    (["application/openmetrics-text;q=0"], False),
    (["APPLICATION/OPENMETRICS-TEXT"], True),
    (["*/*"], False),
])
def test_wants_openmetrics(headers: list[str], expected: bool) -> None:
    assert wants_openmetrics(headers) is expected


async def test_concurrent_scrapes_share_one_render() -> None:
    store = MetricStore()
    store.update(make_metrics(5))
    server = MetricsServer("127.0.0.1:0", store, open_metrics=False)
    calls = 0
    release = threading.Event()
    original = server.render

    def slow_render(openmetrics: bool = False) -> bytes:
        nonlocal calls
        calls += 1
        release.wait(5)
        return original(openmetrics)

    server.render = slow_render  # type: ignore[method-assign]
    first = asyncio.ensure_future(server.render_async(False))
    second = asyncio.ensure_future(server.render_async(False))
    await asyncio.sleep(0)
    release.set()
    a, b = await asyncio.gather(first, second)
    assert a == b and calls == 1
    # once done, the next scrape renders afresh
    assert await server.render_async(False) == a and calls == 2


async def test_render_is_safe_while_updates_continue() -> None:
    """Scrapes render in a worker thread; the event loop keeps updating the store meanwhile."""
    store = MetricStore()
    server = MetricsServer("127.0.0.1:0", store, open_metrics=True)
    for i in range(20):
        store.update(make_metrics(100, name=f"m{i}"))
    renders = [asyncio.ensure_future(server.render_async(om)) for om in (False, True)]
    updates = 0
    while not all(r.done() for r in renders) and updates < 500:  # new families and series while rendering
        store.update(make_metrics(100, name=f"n{updates % 40}"))
        updates += 1
        await asyncio.sleep(0)
    for body in await asyncio.gather(*renders):
        assert body.count(b"\n") > 2000
    samples(server.render(False))
    assert_openmetrics_ok(server.render(True))


def test_fast_escaping_writes_the_same_bytes_as_the_standard_one() -> None:
    store = MetricStore(const_labels={"note": 'quote " backslash \\ newline \n end'})
    req = make_metrics(3, name="job:requests.rate")
    req.resource_metrics[0].scope_metrics[0].metrics[0].description = 'Help with "quotes", \\ and\nnewlines.'
    req.resource_metrics[0].resource.attributes.append(kv("weird.value", "ünïcode ✓ \"q\""))
    store.update(req)
    server = MetricsServer("127.0.0.1:0", store, open_metrics=True)
    assert server._text_escaping == PREVALIDATED and server._om_escaping == PREVALIDATED
    assert server.render(False) == text_latest(server.registry)
    assert server.render(True) == om_exposition.generate_latest(server.openmetrics_registry,
                                                                escaping=om_exposition.ALLOWUTF8)
    assert b"job:requests_rate_total{" in server.render(False)
    assert b"job:requests_rate_total{" in server.render(True)


# ------------------------------------------------------------------ accounting through the exporter helper

async def test_rejected_points_are_failed_and_counted() -> None:
    tel = Telemetry(process_metrics=False)
    s = settings(tel)
    cfg = PrometheusExporterConfig(endpoint="127.0.0.1:0")
    exp = PrometheusExporter(s, cfg)
    helper = ExporterHelper(s, exp, cfg)
    await helper.start(nop_host())
    try:
        await helper.consume(Payload(Signal.METRICS, message=make_metrics(4, name="clash")))
        req = make_metrics(3, name="clash")
        m = req.resource_metrics[0].scope_metrics[0].metrics[0]
        m.sum.is_monotonic = False  # now a gauge named `clash`, which the counter `clash_total` claims
        dup = make_metrics(2, name="clash")
        await helper.consume(Payload(Signal.METRICS, message=req))
        await helper.consume(Payload(Signal.METRICS, message=dup))
        assert tel.value("otelpipe_exporter_sent_metric_points_total", exporter="prometheus/agents") == 6
        assert tel.value("otelpipe_exporter_send_failed_metric_points_total", exporter="prometheus/agents",
                         reason="partial_success") == 3
        assert tel.value("otelpipe_exporter_prometheus_skipped_metric_points_total", exporter="prometheus/agents",
                         reason="name_conflict") == 3
        assert tel.value("otelpipe_exporter_prometheus_series", exporter="prometheus/agents") == 4
    finally:
        await helper.shutdown()
    assert tel.value("otelpipe_exporter_prometheus_series", exporter="prometheus/agents") == 0


def test_config_is_frozen() -> None:
    cfg = PrometheusExporterConfig()
    with pytest.raises(Exception):  # noqa: B017 - dataclasses' FrozenInstanceError, whatever its base
        cfg.endpoint = "x"  # type: ignore[misc]
    assert replace(cfg, endpoint="127.0.0.1:1").endpoint == "127.0.0.1:1"


# ------------------------------------------------------------------ one bad series never fails a scrape

async def _scrape(exp: PrometheusExporter, openmetrics: bool = False) -> tuple[int, bytes]:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://{exp.endpoints['http']}/metrics", headers=headers) as resp:
        return resp.status, await resp.read()


@pytest.mark.parametrize("name", [" ", "\t", "", "__", "-", "…"])
async def test_a_metric_without_a_usable_name_does_not_fail_the_scrape(name: str) -> None:
    tel = Telemetry(process_metrics=False)
    s = settings(tel)
    cfg = PrometheusExporterConfig(endpoint="127.0.0.1:0", enable_open_metrics=True)
    exp = PrometheusExporter(s, cfg)
    helper = ExporterHelper(s, exp, cfg)
    await helper.start(nop_host())
    try:
        await helper.consume(Payload(Signal.METRICS, message=make_metrics(2, name=name)))
        await helper.consume(Payload(Signal.METRICS, message=make_metrics(3, name="agent.requests")))
        status, text = await _scrape(exp)
        assert status == 200
        got = samples(text)
        assert {n for n, _ in got} == {"agent_requests_total"} and len(got) == 3
        status, om = await _scrape(exp, openmetrics=True)
        assert status == 200
        assert {f.name for f in assert_openmetrics_ok(om)} == {"agent_requests"}
        assert tel.value("otelpipe_exporter_prometheus_skipped_metric_points_total", exporter="prometheus/agents",
                         reason="invalid_name") == 2
        assert tel.value("otelpipe_exporter_send_failed_metric_points_total", exporter="prometheus/agents",
                         reason="partial_success") == 2
    finally:
        await helper.shutdown()


async def test_a_counter_named_total_without_suffixes_does_not_fail_the_scrape() -> None:
    """`_total` without add_metric_suffixes is the family `` (empty) to prometheus_client: refused at update."""
    tel = Telemetry(process_metrics=False)
    s = settings(tel)
    cfg = PrometheusExporterConfig(endpoint="127.0.0.1:0", add_metric_suffixes=False)
    exp = PrometheusExporter(s, cfg)
    helper = ExporterHelper(s, exp, cfg)
    await helper.start(nop_host())
    try:
        await helper.consume(Payload(Signal.METRICS, message=make_metrics(2, name="_total")))
        await helper.consume(Payload(Signal.METRICS, message=make_metrics(1, name="agent.requests")))
        status, text = await _scrape(exp)
        assert status == 200
        assert {n for n, _ in samples(text)} == {"agent_requests_total"}
        assert tel.value("otelpipe_exporter_prometheus_skipped_metric_points_total", exporter="prometheus/agents",
                         reason="invalid_name") == 2
    finally:
        await helper.shutdown()


async def test_a_family_that_cannot_be_built_is_left_out_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the store lets through, one family that fails to build costs only its own series."""
    from exporters.prometheus import collector

    real_gauge = collector._gauge

    def failing_gauge(view):  # type: ignore[no-untyped-def]
        if view.name == "broken":
            raise ValueError("cannot build this family")
        return real_gauge(view)

    monkeypatch.setattr(collector, "_gauge", failing_gauge)
    tel = Telemetry(process_metrics=False)
    exp = PrometheusExporter(settings(tel), PrometheusExporterConfig(endpoint="127.0.0.1:0", enable_open_metrics=True))
    await exp.start(nop_host())
    try:
        broken = make_metrics(3, name="broken")
        broken.resource_metrics[0].scope_metrics[0].metrics[0].sum.is_monotonic = False  # a gauge
        await exp.push(Payload(Signal.METRICS, message=broken))
        await exp.push(Payload(Signal.METRICS, message=make_metrics(2, name="agent.requests")))
        for om in (False, True):
            status, body = await _scrape(exp, openmetrics=om)
            assert status == 200
            names = {f.name for f in assert_openmetrics_ok(body)} if om else {n for n, _ in samples(body)}
            assert names == ({"agent_requests"} if om else {"agent_requests_total"})
        assert tel.value("otelpipe_exporter_prometheus_skipped_series_total", exporter="prometheus/agents",
                         reason="render_error") == 6  # 3 series, two scrapes
    finally:
        await exp.shutdown()


class _Unwritable:
    """A family prometheus_client builds but its encoders refuse (a sample value that is not a number)."""

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import GaugeMetricFamily, Sample

        fam = GaugeMetricFamily("unwritable", "A family the encoders cannot write.")
        fam.samples.append(Sample("unwritable", {"k": "a"}, "not a number"))  # type: ignore[arg-type]
        fam.samples.append(Sample("unwritable", {"k": "b"}, "nor this"))  # type: ignore[arg-type]
        yield fam


async def test_a_family_the_encoder_refuses_is_left_out_and_counted() -> None:
    tel = Telemetry(process_metrics=False)
    exp = PrometheusExporter(settings(tel), PrometheusExporterConfig(endpoint="127.0.0.1:0", enable_open_metrics=True))
    await exp.start(nop_host())
    try:
        await exp.push(Payload(Signal.METRICS, message=make_metrics(2, name="agent.requests")))
        exp.server.registry.register(_Unwritable())
        exp.server.openmetrics_registry.register(_Unwritable())
        status, text = await _scrape(exp)
        assert status == 200 and {n for n, _ in samples(text)} == {"agent_requests_total"}
        status, om = await _scrape(exp, openmetrics=True)
        assert status == 200 and {f.name for f in assert_openmetrics_ok(om)} == {"agent_requests"}
        assert tel.value("otelpipe_exporter_prometheus_skipped_series_total", exporter="prometheus/agents",
                         reason="render_error") == 4  # 2 series, two scrapes
    finally:
        await exp.shutdown()

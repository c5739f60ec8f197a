"""The Service: admin endpoints, readiness, self-metrics exposition, reload."""
from __future__ import annotations

import aiohttp

from otelpipe import components
from pipeline.component import ComponentID
from pipeline.config.loader import load_text
from pipeline.config.schema import PipelineID
from pipeline.errors import ConfigError
from pipeline.model import Signal
from pipeline.service import Service
from pipeline.telemetry import Telemetry
from tests.testdata.fakes import factories
from tests.testdata.promtools import assert_promtool_ok

A = """
receivers: {fake: {}}
exporters: {sink: {}}
service:
  pipelines:
    traces: {receivers: [fake], exporters: [sink]}
  telemetry: {metrics: {address: "127.0.0.1:0"}}
"""
B = A.replace("traces: {receivers: [fake], exporters: [sink]}",
              "traces: {receivers: [fake], exporters: [sink]}\n    logs/x: {receivers: [fake], exporters: [sink]}")


async def test_admin_endpoints_and_self_metrics_pass_promtool() -> None:
    fmap = factories()
    svc = Service(load_text(A, fmap, env={}), fmap, telemetry=Telemetry())
    await svc.start()
    base = f"http://{svc.endpoint('admin', '', 'http')}"
    try:
        async with aiohttp.ClientSession() as http:
            for path, status in (("/healthz", 200), ("/readyz", 200)):
                async with http.get(base + path) as r:
                    assert r.status == status
            async with http.get(base + "/status") as r:
                body = await r.json()
                assert body["ready"] is True
                assert body["pipelines"]["traces"] == {"receivers": ["fake"], "processors": [], "exporters": ["sink"]}
                assert {c["id"] for c in body["components"]} == {"fake", "sink"}
            async with http.get(base + "/metrics") as r:
                text = await r.text()
                assert "otelpipe_exporter_queue_capacity{data_type=\"traces\",exporter=\"sink\"} 1000.0" in text
                assert_promtool_ok(text)
            svc.draining = True
            async with http.get(base + "/readyz") as r:
                assert r.status == 503
    finally:
        await svc.shutdown()


async def test_reload_swaps_graph_and_keeps_old_on_invalid_config() -> None:
    fmap = factories()
    texts = [B]
    svc = Service(load_text(A, fmap, env={}), fmap, telemetry=Telemetry(process_metrics=False),
                  reload_config=lambda: load_text(texts[0], fmap, env={}))
    await svc.start()
    try:
        assert (await svc.reload()).result == "ok"
        assert set(svc.config.pipelines) == {PipelineID(Signal.TRACES), PipelineID(Signal.LOGS, "x")}
        assert svc.ready
        texts[0] = "receivers: {nope: {}}"
        assert (await svc.reload()).result == "invalid"
        assert PipelineID(Signal.LOGS, "x") in svc.config.pipelines and svc.ready
        assert svc.telemetry.value("otelpipe_config_reloads_total", result="invalid") == 1
    finally:
        await svc.shutdown()


def test_real_factories_cover_design_components() -> None:
    fmap = components.factories()
    names = {(k.value, t) for k, items in fmap.items() for t in items}
    assert ("receiver", "otlp") in names and ("exporter", "otlp") in names and ("processor", "batch") in names
    try:
        load_text("service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}", fmap, env={})
    except ConfigError as e:
        assert any("references receiver 'otlp' which is not configured" in str(i) for i in e.issues)
    else:
        raise AssertionError("undefined components must be reported")
    assert ComponentID.parse("otlp/tempo") == ComponentID("otlp", "tempo")


async def test_build_info_and_version_are_exported() -> None:
    from pipeline.version import VERSION

    fmap = factories()
    cfg = load_text("receivers: {fake: {}}\nexporters: {sink: {}}\n"
                    "service: {pipelines: {traces: {receivers: [fake], exporters: [sink]}}, "
                    "telemetry: {metrics: {address: '127.0.0.1:0'}}}", fmap, env={})
    svc = Service(cfg, fmap, telemetry=Telemetry(process_metrics=False))
    assert svc.telemetry.value("otelpipe_build_info", version=VERSION) == 1
    assert svc.status()["version"] == VERSION

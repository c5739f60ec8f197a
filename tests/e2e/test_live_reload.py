"""Live reload of the real daemon: SIGHUP, POST /-/reload and --watch-config, under load, with real clients.

Spans come from the OpenTelemetry SDK's OTLP/gRPC exporter, StatsD from the
`statsd` client, and the backends are real gRPC OTLP servers; every assertion
is about what arrived where, what the SDK was told and otelpipe's own counters.
"""
from __future__ import annotations

import asyncio
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import aiohttp
import statsd as statsd_client
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from prometheus_client.parser import text_string_to_metric_families

from pipeline.model import Signal

from .backends import GrpcBackend
from .daemon import Daemon
from .sdk import make_spans

PIPELINE = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}, http: {{endpoint: "127.0.0.1:0"}}}}}}
processors:
  batch: {{send_batch_size: 50, timeout: 20ms}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{port}"
    tls: {{insecure: true}}
    sending_queue: {{num_consumers: 2}}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
  telemetry: {{metrics: {{address: "127.0.0.1:0"}}}}
  shutdown_timeout: 10s
"""


async def admin_get(admin: str, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"http://{admin}{path}") as r:
        return await r.json() if r.content_type == "application/json" else await r.text()


async def counter(admin: str, name: str, **labels: str) -> float:
    text = await admin_get(admin, "/metrics")
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def span_ids(*backends: GrpcBackend) -> list[bytes]:
    return [s.span_id for b in backends for s in b.spans()]  # type: ignore[attr-defined]


async def test_sighup_under_steady_load_with_a_changed_exporter_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    old, new = GrpcBackend(), GrpcBackend()
    await old.start()
    await new.start()
    old.delay = 0.02  # a little slow, so the queue holds data at the switch and must be handed over
    cfg = tmp_path / "otelpipe.yaml"
    cfg.write_text(PIPELINE.format(port=old.port))
    d = Daemon("--config", str(cfg))
    try:
        ready = await d.start()
        grpc_ep, admin = ready["endpoints"]["receiver/otlp"]["grpc"], ready["admin"]
        results: list[SpanExportResult] = []
        sent = 0
        halfway, stop = threading.Event(), threading.Event()

        def load() -> None:
            nonlocal sent
            exporter = OTLPSpanExporter(endpoint=grpc_ep, insecure=True)
            for i in range(400):  # bounded: stops by itself
                spans = make_spans(2)
                results.append(exporter.export(spans))  # type: ignore[arg-type]
                sent += len(spans)
                if i == 40:
                    halfway.set()
                if stop.is_set() and i > 80:
                    break
            exporter.shutdown()

        loader = asyncio.create_task(asyncio.to_thread(load))
        await asyncio.to_thread(halfway.wait, 30)
        cfg.write_text(PIPELINE.format(port=new.port))
        d.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        reloaded = await d.wait_for_log("config reloaded")
        stop.set()
        await loader
        assert set(results) == {SpanExportResult.SUCCESS}
        await new.wait_for(Signal.TRACES, sent - old.items[Signal.TRACES], timeout=20)
        ids = span_ids(old, new)
        assert len(ids) == sent and len(set(ids)) == sent, "every span exactly once"
        assert new.items[Signal.TRACES] > 0 and old.items[Signal.TRACES] > 0
        assert await counter(admin, "otelpipe_receiver_refused_spans_total") == 0
        assert await counter(admin, "otelpipe_exporter_send_failed_spans_total") == 0
        assert await counter(admin, "otelpipe_config_reloads_total", result="ok") == 1
        status = await admin_get(admin, "/status")
        assert status["config_hash"] == reloaded["config_hash"]
        code = await d.stop(signal.SIGTERM)
        assert code == 0
    finally:
        await d.close()
        await old.stop()
        await new.stop()


async def test_data_queued_for_a_backend_that_is_down_goes_to_the_new_backend_after_reload(tmp_path: Path) -> None:
    down, up = GrpcBackend(), GrpcBackend()
    await down.start()
    await up.start()
    down.failing = True
    cfg = tmp_path / "otelpipe.yaml"
    cfg.write_text(PIPELINE.format(port=down.port))
    d = Daemon("--config", str(cfg))
    try:
        ready = await d.start()
        exporter = OTLPSpanExporter(endpoint=ready["endpoints"]["receiver/otlp"]["grpc"], insecure=True)
        spans = make_spans(10)
        assert await asyncio.to_thread(exporter.export, spans) is SpanExportResult.SUCCESS  # acknowledged: queued
        exporter.shutdown()
        while down.calls < 3:  # otelpipe is retrying against the dead backend
            await asyncio.sleep(0.02)
        cfg.write_text(PIPELINE.format(port=up.port))
        d.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        await d.wait_for_log("config reloaded")
        await up.wait_for(Signal.TRACES, len(spans), timeout=10)
        assert sorted(span_ids(up)) == sorted(s.context.span_id.to_bytes(8, "big") for s in spans)  # type: ignore[attr-defined]
        assert await counter(ready["admin"], "otelpipe_exporter_send_failed_spans_total") == 0
    finally:
        await d.close()
        await down.stop()
        await up.stop()


async def test_an_unchanged_receiver_keeps_its_connections_across_a_reload(tmp_path: Path) -> None:
    a, b = GrpcBackend(), GrpcBackend()
    await a.start()
    await b.start()
    cfg = tmp_path / "otelpipe.yaml"
    cfg.write_text(PIPELINE.format(port=a.port))
    d = Daemon("--config", str(cfg))
    try:
        ready = await d.start()
        host, port = ready["endpoints"]["receiver/otlp"]["http"].rsplit(":", 1)
        body = b"{}"
        request = (f"POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(request)
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            cfg.write_text(PIPELINE.format(port=b.port))
            d.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            await d.wait_for_log("config reloaded")
            conn.sendall(request)  # the same TCP connection, after the switch
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        await d.close()
        await a.stop()
        await b.stop()


async def test_post_reload_reports_an_invalid_config_and_keeps_serving(tmp_path: Path) -> None:
    backend = GrpcBackend()
    await backend.start()
    cfg = tmp_path / "otelpipe.yaml"
    cfg.write_text(PIPELINE.format(port=backend.port))
    d = Daemon("--config", str(cfg))
    try:
        ready = await d.start()
        admin = ready["admin"]
        before = (await admin_get(admin, "/status"))["config_hash"]
        cfg.write_text(PIPELINE.format(port=backend.port).replace("batch: {", "bacth: {"))
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://{admin}/-/reload") as r:
                assert r.status == 400
                body = await r.json()
            assert body["result"] == "invalid" and body["config_hash"] == before
            assert any("unknown processor type 'bacth'" in p for p in body["problems"])
            async with http.get(f"http://{admin}/-/reload") as r:
                assert r.status == 405
            cfg.write_text(PIPELINE.format(port=backend.port).replace("timeout: 20ms", "timeout: 30ms"))
            async with http.post(f"http://{admin}/-/reload") as r:
                assert r.status == 200
                ok = await r.json()
            assert ok["result"] == "ok" and ok["config_hash"] != before
            async with http.post(f"http://{admin}/-/reload") as r:
                assert (await r.json())["result"] == "unchanged"
        exporter = OTLPSpanExporter(endpoint=ready["endpoints"]["receiver/otlp"]["grpc"], insecure=True)
        assert await asyncio.to_thread(exporter.export, make_spans(1)) is SpanExportResult.SUCCESS
        exporter.shutdown()
        await backend.wait_for(Signal.TRACES, 3)
        assert await counter(admin, "otelpipe_config_reloads_total", result="invalid") == 1
        assert any(line.get("msg") == "config reload rejected; keeping the running config" for line in d.lines) or \
            await d.wait_for_log("config reload rejected; keeping the running config")
    finally:
        await d.close()
        await backend.stop()


STATSD = """
receivers:
  statsd: {{endpoint: "127.0.0.1:0", aggregation_interval: 50ms}}
exporters:
  prometheus: {{endpoint: "127.0.0.1:0"}}
  debug: {{verbosity: {verbosity}}}
service:
  pipelines:
    metrics: {{receivers: [statsd], exporters: [prometheus, debug]}}
  telemetry: {{metrics: {{address: "127.0.0.1:0"}}}}
"""


async def scrape_total(endpoint: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://{endpoint}/metrics") as r:
        text = await r.text()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


async def test_watch_config_reloads_and_the_prometheus_series_keep_their_totals(tmp_path: Path) -> None:
    cfg = tmp_path / "otelpipe.yaml"
    cfg.write_text(STATSD.format(verbosity="basic"))
    d = Daemon("--config", str(cfg), "--watch-config")
    try:
        ready = await d.start()
        host, port = ready["endpoints"]["receiver/statsd"]["udp"].rsplit(":", 1)
        prom = ready["endpoints"]["exporter/prometheus"]["http"]
        client = statsd_client.StatsClient(host, int(port))
        for _ in range(5):
            client.incr("agent.tool_calls")
        while await scrape_total(prom, "agent_tool_calls_total") < 5:
            await asyncio.sleep(0.05)
        cfg.write_text(STATSD.format(verbosity="normal"))  # the debug exporter changes; the rest is kept
        await d.wait_for_log("config reloaded", timeout=15)
        assert (await scrape_total(prom, "agent_tool_calls_total")) == 5
        for _ in range(3):
            client.incr("agent.tool_calls")
        async with asyncio.timeout(10):
            while await scrape_total(prom, "agent_tool_calls_total") < 8:
                await asyncio.sleep(0.05)
        assert await scrape_total(prom, "agent_tool_calls_total") == 8  # one series, its total kept
    finally:
        await d.close()

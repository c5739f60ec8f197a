"""Every component, running in a whole Service with data flowing through it: its standard self-metrics
move (and the component-owned ones that plain data must move), and once the Service has shut down no
component task is left running and nothing more is recorded (the Collector's componenttest checks the
same for its obsreport metrics).

Data enters through the real OTLP/HTTP receiver (or a StatsD datagram) and leaves through the real
`file` exporter unless the component under test is itself a receiver or an exporter; every pipeline
is configured with short intervals so timers fire within the test.
"""
from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from otelpipe import components
from pipeline.component import Factory, Kind
from pipeline.config.confmap import load_texts
from pipeline.config.loader import build
from pipeline.model import Signal
from pipeline.service import Service
from pipeline.telemetry import Telemetry
from pipeline.telemetry.catalog import CATALOGUE, PREFIX
from pipeline.testing import make_logs, make_metrics, make_traces, wait_until
from tests.e2e.backends import GrpcBackend, HttpBackend
from tests.e2e.datadog_intake import DatadogIntake
from tests.e2e.loki_intake import LokiIntake

FACTORIES = components.factories()
ALL = [f for kinds in FACTORIES.values() for f in kinds.values() if f.kind is not Kind.EXTENSION]
BUILDERS = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}
SPAN_ATTRS: dict[str, dict[str, object]] = {"genai_metrics": {"gen_ai.operation.name": "chat"}}  # what it reads

# How to configure each type so that plain test data flows through it quickly.
SETTINGS: dict[str, str] = {
    "batch": "{timeout: 5ms}",
    "memory_limiter": "{limit_mib: 8192, check_interval: 10ms}",
    "cardinality_limit": "{}",
    "probabilistic_sampler": "{sampling_percentage: 100}",
    "tail_sampling": "{decision_wait: 10ms}",
    "secret_mask": "{}",
    "uuid_normalize": "{}",
    "statsd": '{endpoint: "127.0.0.1:0", aggregation_interval: 20ms}',
    "prometheus": '{endpoint: "127.0.0.1:0"}',
    "debug": "{verbosity: basic}",
    "genai_metrics": "{metrics_flush_interval: 20ms}",
    "pagerduty": ("{routing_key: k, endpoint: 'http://127.0.0.1:9/v2/enqueue', evaluation_interval: 10ms, "
                  "rules: [{name: r, metric: requests, aggregation: rate, condition: '>', threshold: 1000000000}]}"),
    "attributes": "{actions: [{key: env, value: test, action: upsert}]}",
    "resource": "{attributes: [{key: env, value: test, action: upsert}]}",
}
# Component-owned metrics that plain data must move (others count rarer events: masked secrets, overflow).
OWNED_MOVING: dict[str, tuple[str, ...]] = {
    "batch": ("processor_batch_timeout_trigger_send",),
    "statsd": ("receiver_statsd_lines", "receiver_statsd_datagrams"),
    "prometheus": ("exporter_prometheus_series",),
    "pagerduty": ("exporter_pagerduty_series",),
    "datadog": ("exporter_datadog_cumulative_series",),
    "loadbalancing": ("loadbalancer_backend_spans", "loadbalancer_num_resolutions"),
    "tail_sampling": ("processor_tail_sampling_traces", "processor_tail_sampling_policy_decisions"),
}


def _signal(f: Factory) -> Signal:
    if f.kind is Kind.CONNECTOR:
        return next(iter(f.connects))[0]
    return next(iter(f.signals))


def _config(f: Factory, tmp: Path, backends: dict[str, str]) -> tuple[str, Signal]:
    sig = _signal(f)
    s = sig.value
    cfg = SETTINGS.get(f.type, "{}")
    receivers = {"otlp": '{protocols: {http: {endpoint: "127.0.0.1:0"}}}'}
    exporters = {"file": f"{{path: '{tmp}/out.jsonl'}}"}
    processors: dict[str, str] = {}
    connectors: dict[str, str] = {}
    pipelines = {s: {"receivers": ["otlp"], "processors": [], "exporters": ["file"]}}
    if f.kind is Kind.RECEIVER:
        receivers = {f.type: cfg}
        pipelines[s]["receivers"] = [f.type]
    elif f.kind is Kind.PROCESSOR:
        processors[f.type] = cfg
        pipelines[s]["processors"] = [f.type]
    elif f.kind is Kind.EXPORTER:
        if f.type == "otlp":
            cfg = f"{{endpoint: '{backends['grpc']}', tls: {{insecure: true}}}}"
        elif f.type == "otlphttp":
            cfg = f"{{endpoint: '{backends['http']}'}}"
        elif f.type == "file":
            cfg = f"{{path: '{tmp}/out.jsonl'}}"
        elif f.type == "loadbalancing":
            grpc_backend = backends["grpc"]
            cfg = (f"{{resolver: {{static: {{hostnames: ['{grpc_backend}']}}}}, "
                   "protocol: {otlp: {tls: {insecure: true}}}}")
        elif f.type == "datadog":
            dd, key = backends["datadog"], DatadogIntake().api_key
            cfg = f"{{api: {{key: {key}}}, metrics: {{endpoint: '{dd}'}}, logs: {{endpoint: '{dd}'}}}}"
        elif f.type == "loki":
            cfg = f"{{endpoint: '{backends['loki']}'}}"
        exporters = {f.type: cfg}
        pipelines[s]["exporters"] = [f.type]
    else:
        target = next(iter(f.connects))[1].value
        connectors[f.type] = cfg
        pipelines = {f"{s}/in": {"receivers": ["otlp"], "processors": [], "exporters": [f.type]},
                     f"{target}/out": {"receivers": [f.type], "processors": [], "exporters": ["file"]}}

    def section(name: str, items: dict[str, str]) -> str:
        return f"{name}:\n" + "".join(f"  {k}: {v}\n" for k, v in items.items()) if items else ""

    text = (section("receivers", receivers) + section("processors", processors)
            + section("exporters", exporters) + section("connectors", connectors) + "service:\n  pipelines:\n"
            + "".join(f"    {pid}: {{receivers: {p['receivers']}, processors: {p['processors']}, "
                      f"exporters: {p['exporters']}}}\n" for pid, p in pipelines.items()))
    return text.replace("'", '"'), sig


async def _send(svc: Service, f: Factory, sig: Signal) -> None:
    if f.type == "statsd" and f.kind is Kind.RECEIVER:
        host, _, port = svc.endpoint("receiver", "statsd", "udp").rpartition(":")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"agent.requests:1|c|#route:/v1", (host, int(port)))
        return
    url = f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/{sig.value}"
    if f.type in SPAN_ATTRS:
        body = make_traces(5, attrs=SPAN_ATTRS[f.type]).SerializeToString()
    else:
        body = BUILDERS[sig](5).SerializeToString()  # type: ignore[operator]
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers={"Content-Type": "application/x-protobuf"}) as resp:
        assert resp.status == 200, await resp.text()


def _moved(tel: Telemetry, name: str, **labels: str) -> bool:
    return any(tel.value(f"{PREFIX}{name}{suffix}", **labels) > 0 for suffix in ("", "_total"))


def _expected(f: Factory, sig: Signal) -> list[tuple[str, dict[str, str]]]:
    item = sig.item_name
    if f.kind is Kind.RECEIVER:
        out = [(f"receiver_accepted_{item}", {"receiver": f.type})]
    elif f.kind is Kind.PROCESSOR:
        out = [(f"processor_incoming_{item}", {"processor": f.type}),
               (f"processor_outgoing_{item}", {"processor": f.type})]
    elif f.kind is Kind.EXPORTER:
        out = [(f"exporter_sent_{item}", {"exporter": f.type})]
    else:  # a connector: data reaches the pipeline it feeds and leaves through its exporter
        target = next(iter(f.connects))[1]
        out = [(f"exporter_sent_{target.item_name}", {"exporter": "file"})]
    return out + [(name, {}) for name in OWNED_MOVING.get(f.type, ())]


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, str]]:
    g, h, dd, lk = GrpcBackend(), HttpBackend(), DatadogIntake(), LokiIntake()
    await g.start()
    await h.start()
    await dd.start()
    await lk.start()
    yield {"grpc": f"127.0.0.1:{g.port}", "http": f"http://127.0.0.1:{h.port}", "datadog": dd.url, "loki": lk.url}
    await g.stop()
    await h.stop()
    await dd.stop()
    await lk.stop()


def test_every_component_owned_metric_is_declared_with_its_owner() -> None:
    owners = {spec.owner for spec in CATALOGUE.values()}
    types = {f"{f.kind.value}/{f.type}" for kinds in FACTORIES.values() for f in kinds.values()}
    assert owners - types - {"receiver", "processor", "exporter", "service"} == set()


@pytest.mark.parametrize("factory", ALL, ids=lambda f: f"{f.kind.value}/{f.type}")
async def test_counters_move_with_data_and_stop_at_shutdown(factory: Factory, tmp_path: Path,
                                                            backends: dict[str, str]) -> None:
    text, sig = _config(factory, tmp_path, backends)
    raw, issues = load_texts([("<conformance>", text),
                              ("<overlay>", "service: {telemetry: {metrics: {address: '127.0.0.1:0'}}}")])
    cfg = build(raw, issues, FACTORIES, env={})
    tel = Telemetry(process_metrics=False)
    svc = Service(cfg, FACTORIES, telemetry=tel)
    before = set(asyncio.all_tasks())
    await svc.start()
    try:
        await _send(svc, factory, sig)
        for name, labels in _expected(factory, sig):
            await wait_until(lambda n=name, lb=labels: _moved(tel, n, **lb), timeout=10,
                             what=f"{name}{labels} to move for {factory.kind.value}/{factory.type}")
    finally:
        await svc.shutdown()
    # The test's own gRPC backend keeps a task waiting for its next call; otelpipe runs no gRPC server here.
    leftover = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
                and "AioServer._request_call" not in repr(t)]
    assert leftover == [], f"tasks still running after shutdown: {[t.get_name() for t in leftover]}"
    after = tel.snapshot()
    for _ in range(20):
        await asyncio.sleep(0)
    assert tel.snapshot() == after, "something was recorded after shutdown"

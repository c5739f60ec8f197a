"""Every shipped ConfigMap config, run for real on localhost: each signal an agent tier sends is accepted
by the gateway tier and reaches the gateway's backends.

The configs are taken from the manifests as they are; only what a pod gets from Kubernetes is
replaced: listen addresses become 127.0.0.1 with a free port, the gateway's headless Service name
resolves (through a test lookup) to 127.0.0.1 on the port the gateway got, the backends' addresses
and the secrets come from the environment as the manifests' env would set them, and the Datadog and
PagerDuty intakes are local fakes. Real clients send: the OpenTelemetry SDK's OTLP exporters (gRPC to
the sidecar, HTTP to the node agent) and StatsD clients (DogStatsD to the node agent, `statsd` to the sidecar).
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import statsd as statsd_client
import yaml
from datadog.dogstatsd import DogStatsd
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

from exporters.loadbalancing import resolver
from otelpipe.testing import running_service
from pipeline.model import Signal
from pipeline.service import Service
from pipeline.testing import wait_until
from tests.e2e.backends import GrpcBackend, HttpBackend
from tests.e2e.datadog_intake import DatadogIntake
from tests.e2e.pagerduty_intake import ROUTING_KEY, PagerDutyIntake
from tests.e2e.sdk import make_logs, make_metrics, make_spans

from .manifests import objects, otelpipe_config

NODE = "node-7"


def config_of(pattern: str, name: str) -> dict[str, Any]:
    cm = next(o for o in objects(pattern) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)
    return otelpipe_config(cm)


def on_localhost(cfg: dict[str, Any]) -> dict[str, Any]:
    """The pod's listen addresses as 127.0.0.1 with a free port (the admin address is the test's)."""
    for name, rcfg in cfg["receivers"].items():
        if name.split("/")[0] == "otlp":
            for proto in rcfg["protocols"].values():
                proto["endpoint"] = "127.0.0.1:0"
        else:
            rcfg["endpoint"] = "127.0.0.1:0"
    return cfg


def to_gateway(cfg: dict[str, Any], port: int) -> dict[str, Any]:
    cfg["exporters"]["loadbalancing"]["resolver"]["dns"]["port"] = port
    return cfg


async def export(exporter: Any, data: Any) -> None:
    try:
        assert (await asyncio.to_thread(exporter.export, data)).name == "SUCCESS"
    finally:
        exporter.shutdown()


async def test_sidecar_and_node_agent_send_every_signal_through_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    async def gateway_dns(name: str) -> list[str]:
        assert name == "otelpipe-gateway-headless.observability.svc.cluster.local"
        return ["127.0.0.1"]

    monkeypatch.setattr(resolver, "lookup_host", gateway_dns)
    traces_backend, http_backend = GrpcBackend(), HttpBackend()
    datadog, pagerduty = DatadogIntake(), PagerDutyIntake()
    for b in (traces_backend, http_backend, datadog, pagerduty):
        await b.start()
    try:
        gateway_env = {"TRACES_OTLP_ENDPOINT": f"127.0.0.1:{traces_backend.port}",
                       "METRICS_OTLP_ENDPOINT": f"http://127.0.0.1:{http_backend.port}",
                       "LOGS_OTLP_ENDPOINT": f"http://127.0.0.1:{http_backend.port}"}
        gateway_yaml = yaml.safe_dump(on_localhost(config_of("gateway", "otelpipe-gateway")))
        async with running_service(gateway_yaml, gateway_env) as gateway:
            port = int(gateway.endpoint("receiver", "otlp", "grpc").rsplit(":", 1)[1])
            sidecar_cfg = to_gateway(on_localhost(config_of("sidecar", "otelpipe-sidecar")), port)
            sidecar_cfg["exporters"]["datadog"]["metrics"] = {"endpoint": datadog.url}
            sidecar_cfg["exporters"]["pagerduty"]["endpoint"] = pagerduty.url
            sidecar_env = {"DD_API_KEY": datadog.api_key, "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
                           "POD_NAME": "support-agent-0"}
            node_cfg = to_gateway(on_localhost(config_of("daemonset", "otelpipe-agent")), port)
            async with contextlib.AsyncExitStack() as agents_stack:
                sidecar: Service = await agents_stack.enter_async_context(
                    running_service(yaml.safe_dump(sidecar_cfg), sidecar_env))
                node: Service = await agents_stack.enter_async_context(
                    running_service(yaml.safe_dump(node_cfg), {"NODE_NAME": NODE}))
                sent = await send_everything(sidecar, node)
                # the sidecar's own exporters: metrics to Datadog
                await datadog.wait_for(lambda: bool(datadog.series))
            # agents stopped (their batches and queues drained); now the gateway (tail sampling decides)
        check(sent, traces_backend, http_backend)
        assert not datadog.violations and not pagerduty.violations
    finally:
        for b in (traces_backend, http_backend, datadog, pagerduty):
            await b.stop()


async def send_everything(sidecar: Service, node: Service) -> dict[str, int]:
    """Traces, metrics and logs to the sidecar (OTLP/gRPC) and the node agent (OTLP/HTTP, StatsD)."""
    grpc_at = sidecar.endpoint("receiver", "otlp", "grpc")
    http_at = f"http://{node.endpoint('receiver', 'otlp', 'http')}"
    sidecar_spans, node_spans = make_spans(5), make_spans(4)  # every trace has a failed tool call: all kept
    await export(GrpcSpanExporter(endpoint=grpc_at, insecure=True, timeout=10), sidecar_spans)
    await export(HttpSpanExporter(endpoint=f"{http_at}/v1/traces", timeout=10), node_spans)
    metrics = make_metrics()
    await export(GrpcMetricExporter(endpoint=grpc_at, insecure=True, timeout=10), metrics)
    sidecar_logs, node_logs = make_logs(6), make_logs(3)
    await export(GrpcLogExporter(endpoint=grpc_at, insecure=True, timeout=10), sidecar_logs)
    await export(HttpLogExporter(endpoint=f"{http_at}/v1/logs", timeout=10), node_logs)
    # the node's pods use DogStatsD (tags), the sidecar's agent a plain StatsD client
    host, _, port = node.endpoint("receiver", "statsd", "udp").rpartition(":")
    dd = DogStatsd(host=host, port=int(port), disable_telemetry=True, disable_buffering=True,
                   origin_detection_enabled=False)
    try:
        dd.increment("agent.requests", tags=["status:ok"])
        dd.increment("agent.requests", tags=["status:error"])
        dd.gauge("agent.queue.depth", 7)
    finally:
        dd.close_socket()
    host, _, port = sidecar.endpoint("receiver", "statsd", "udp").rpartition(":")
    plain = statsd_client.StatsClient(host, int(port))
    try:
        plain.incr("agent.tool.calls", 3)
        plain.gauge("agent.run.seconds", 1.5)
    finally:
        plain.close()
    for svc, lines in ((node, 3), (sidecar, 2)):
        tel = svc.telemetry
        await wait_until(lambda: tel.value("otelpipe_receiver_statsd_lines_total") == lines,  # noqa: B023
                         what="statsd lines")
    otlp_points = sum(len(dp) for dp in (
        m.data.data_points for rm in metrics.resource_metrics  # type: ignore[attr-defined]
        for sm in rm.scope_metrics for m in sm.metrics))
    return {"spans": len(sidecar_spans) + len(node_spans), "node_spans": len(node_spans),
            "points": otlp_points + 3 + 2, "logs": len(sidecar_logs) + len(node_logs),
            "node_logs": len(node_logs)}


def check(sent: dict[str, int], traces_backend: GrpcBackend, http_backend: HttpBackend) -> None:
    spans = traces_backend.spans()
    assert len(spans) == sent["spans"]
    assert http_backend.items[Signal.METRICS] == sent["points"]
    assert http_backend.items[Signal.LOGS] == sent["logs"]
    # the node agent tagged what it forwarded with its node's name ($(NODE_NAME) in the manifest's env)
    on_node = [rs for req in traces_backend.requests[Signal.TRACES] for rs in req.resource_spans  # type: ignore[attr-defined]
               if any(a.key == "k8s.node.name" and a.value.string_value == NODE for a in rs.resource.attributes)]
    assert sum(len(ss.spans) for rs in on_node for ss in rs.scope_spans) == sent["node_spans"]
    node_logs = [rl for req in http_backend.requests[Signal.LOGS] for rl in req.resource_logs  # type: ignore[attr-defined]
                 if any(a.key == "k8s.node.name" for a in rl.resource.attributes)]
    assert sum(len(sl.log_records) for rl in node_logs for sl in rl.scope_logs) == sent["node_logs"]
    # StatsD (node agent and sidecar) and SDK metrics (sidecar) all arrived
    names = {m.name for req in http_backend.requests[Signal.METRICS] for rm in req.resource_metrics  # type: ignore[attr-defined]
             for sm in rm.scope_metrics for m in sm.metrics}
    assert {"agent.requests", "agent.queue.depth", "agent.tool.calls", "agent.run.seconds",
            "gen_ai.client.token.usage"} <= names

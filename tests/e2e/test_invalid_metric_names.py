"""An OTLP metric named " " is refused at the receiver (partial success, counted) and never reaches a backend;
the valid metrics of the same request are delivered, and every Prometheus scrape keeps answering 200."""
from __future__ import annotations

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)

from otelpipe.testing import running_service
from pipeline import otlpjson
from pipeline.model import Signal
from pipeline.testing import make_metrics
from tests.testdata.promtools import assert_promtool_ok

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:0"}
      http: {endpoint: "127.0.0.1:0"}
exporters:
  prometheus: {endpoint: "127.0.0.1:0"}
service:
  pipelines:
    metrics: {receivers: [otlp], exporters: [prometheus]}
"""


def request_with_a_blank_name() -> object:
    req = make_metrics(3, name="agent.requests")
    bad = make_metrics(2, name=" ")
    req.resource_metrics.extend(bad.resource_metrics)  # type: ignore[attr-defined]
    return req


@pytest.mark.parametrize("transport", ["grpc", "http-proto", "http-json"])
async def test_blank_metric_name_is_refused_and_the_rest_delivered(transport: str) -> None:
    async with running_service(CONFIG) as svc:
        req = request_with_a_blank_name()
        if transport == "grpc":
            async with grpc.aio.insecure_channel(svc.endpoint("receiver", "otlp", "grpc")) as ch:
                resp = await metrics_service_pb2_grpc.MetricsServiceStub(ch).Export(req, timeout=10)
        else:
            is_json = transport == "http-json"
            url = f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/metrics"
            body = otlpjson.encode(req) if is_json else req.SerializeToString()  # type: ignore[attr-defined]
            ctype = "application/json" if is_json else "application/x-protobuf"
            async with aiohttp.ClientSession() as s, s.post(url, data=body, headers={"Content-Type": ctype}) as r:
                assert r.status == 200
                raw = await r.read()
            resp = (otlpjson.decode_response(Signal.METRICS, raw) if is_json
                    else ExportMetricsServiceResponse.FromString(raw))
        assert resp.partial_success.rejected_data_points == 2
        assert "visible character" in resp.partial_success.error_message
        tel = svc.telemetry
        assert tel.value("otelpipe_receiver_refused_metric_points_total", reason="invalid_name") == 2
        assert tel.value("otelpipe_receiver_accepted_metric_points_total") == 3
        scrape = f"http://{svc.endpoint('exporter', 'prometheus', 'http')}/metrics"
        async with aiohttp.ClientSession() as s, s.get(scrape) as r:
            assert r.status == 200
            text = await r.text()
    assert 'agent_requests_total{' in text and text.count("agent_requests_total{") == 3
    assert_promtool_ok(text)

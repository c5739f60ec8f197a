"""StatsD → cardinality_limit → Prometheus: an exploding tag folds into one overflow series, totals exact."""
from __future__ import annotations

import socket

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from otelpipe.testing import running_service
from tests.testdata.promtools import assert_promtool_ok

CONFIG = """
receivers:
  statsd: {endpoint: "127.0.0.1:0", aggregation_interval: 1h}
processors:
  cardinality_limit: {max_series_per_metric: 100}
exporters:
  prometheus: {endpoint: "127.0.0.1:0"}
service:
  pipelines:
    metrics: {receivers: [statsd], processors: [cardinality_limit], exporters: [prometheus]}
"""


async def test_thousand_session_ids_under_limit_100_give_101_series_summing_to_1000() -> None:
    async with running_service(CONFIG) as svc:
        statsd = svc.component("receiver", "statsd")
        host, port = svc.endpoint("receiver", "statsd", "udp").rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(1000):
                s.sendto(f"agent.tool.calls:1|c|#tool:search,session:s-{i:04d}".encode(), (host, int(port)))
        await statsd.wait_for_lines(1000)
        await statsd.force_flush()
        url = f"http://{svc.endpoint('exporter', 'prometheus', 'http')}/metrics"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                text = await resp.text()
    assert_promtool_ok(text)
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "agent_tool_calls"]
    samples = [s for s in family.samples if s.name == "agent_tool_calls_total"]
    assert len(samples) == 101
    assert sum(s.value for s in samples) == 1000
    overflow = [s for s in samples if s.labels.get("otel_metric_overflow") == "true"]
    assert len(overflow) == 1 and overflow[0].value == 900
    assert svc.telemetry.value("otelpipe_processor_cardinality_limit_folded_points_total") == 900

"""Scrape cost of the Prometheus exporter with many active series.

Builds the exporter's store from OTLP requests shaped like an agent platform's
metrics (counters, gauges and explicit-bucket histograms; job, instance, scope
and three attributes per series), then measures, over several repetitions:

- render: one scrape's work, snapshot + metric families + prometheus_client
  encoding, for the text format 0.0.4 and for OpenMetrics;
- http: a real GET /metrics through the aiohttp server (worker-thread render,
  plus gzip when asked), timed by an aiohttp client on the same machine.

"Series" are Prometheus series (one per exposition sample line, as Prometheus
counts them: each histogram bucket, _count and _sum is one). `--series`
sets the total; `--mix` splits it between counter, gauge and histogram lines.

    .venv/bin/python bench/prometheus_scrape.py --series 100000 --reps 5
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from exporters.prometheus.server import MetricsServer
from exporters.prometheus.store import MetricStore
from pipeline.testing import kv

BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]  # 11 buckets + _count + _sum = 13 lines
LINES_PER_HISTOGRAM = len(BOUNDS) + 3
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3.1-70b", "mistral-large"]
T0 = 1_700_000_000_000_000_000


def build_requests(counters: int, gauges: int, histograms: int,
                   per_request: int = 5000) -> list[ExportMetricsServiceRequest]:
    """OTLP requests holding `counters` + `gauges` + `histograms` series, `per_request` points each."""
    out: list[ExportMetricsServiceRequest] = []
    plan = [("counter", counters), ("gauge", gauges), ("histogram", histograms)]
    for kind, total in plan:
        done = 0
        while done < total:
            n = min(per_request, total - done)
            req = ExportMetricsServiceRequest()
            rm = req.resource_metrics.add()
            rm.resource.attributes.extend([kv("service.name", "agent-gateway"), kv("service.instance.id", "pod-7"),
                                           kv("k8s.namespace.name", "agents"), kv("host.name", "node-3"),
                                           kv("deployment.environment", "prod")])
            sm = rm.scope_metrics.add()
            sm.scope.name, sm.scope.version = "agent.metrics", "1.4.0"
            m = sm.metrics.add()
            m.name = {"counter": "gen_ai.client.token.usage", "gauge": "agent.queue.depth",
                      "histogram": "gen_ai.client.operation.duration"}[kind]
            m.unit = {"counter": "{token}", "gauge": "{run}", "histogram": "s"}[kind]
            m.description = f"bench {kind}"
            if kind == "counter":
                m.sum.is_monotonic = True
                m.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                points = m.sum.data_points
            elif kind == "gauge":
                points = m.gauge.data_points
            else:
                m.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                points = m.histogram.data_points
            for i in range(done, done + n):
                dp = points.add()
                dp.start_time_unix_nano = T0
                dp.time_unix_nano = T0 + 10_000_000_000
                dp.attributes.extend([kv("gen_ai.request.model", MODELS[i % len(MODELS)]),
                                      kv("http.route", f"/v1/agents/{i}/runs"), kv("status", "ok")])
                if kind == "histogram":
                    dp.explicit_bounds.extend(BOUNDS)
                    dp.bucket_counts.extend([i % 3, 1, 2, 3, 5, 8, 5, 3, 2, 1, 0])
                    dp.count = sum(dp.bucket_counts)
                    dp.sum = 1.25 * dp.count
                else:
                    dp.as_double = float(i)
            out.append(req)
            done += n
    return out


def timed(fn, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


async def http_scrapes(server: MetricsServer, reps: int, accept: str, gzip: bool) -> tuple[list[float], int]:
    url = f"http://{server.endpoints['http']}/metrics"
    headers = {"Accept": accept, "Accept-Encoding": "gzip" if gzip else "identity"}
    times, size = [], 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for _ in range(reps):
            gc.collect()
            t0 = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                body = await resp.read()
                assert resp.status == 200, resp.status
            times.append(time.perf_counter() - t0)
            size = len(body)
    return times, size


def stats(times: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=100_000, help="Prometheus series (sample lines) in total")
    ap.add_argument("--mix", default="40,40,20", help="percent of series lines: counters,gauges,histograms")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    pc, pg, ph = (int(x) for x in args.mix.split(","))
    counters = args.series * pc // 100
    gauges = args.series * pg // 100
    histograms = (args.series - counters - gauges) // LINES_PER_HISTOGRAM
    counters = args.series - gauges - histograms * LINES_PER_HISTOGRAM  # exact total (target_info adds 1)

    requests = build_requests(counters, gauges, histograms)
    store = MetricStore(expiration=3600.0)
    t0 = time.perf_counter()
    for req in requests:
        store.update(req)
    ingest_s = time.perf_counter() - t0
    points = counters + gauges + histograms

    server = MetricsServer("127.0.0.1:0", store, open_metrics=True)
    text = server.render(False)
    om = server.render(True)
    lines = sum(1 for ln in text.splitlines() if ln and not ln.startswith(b"#"))

    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": os.getloadavg()[0]},
        "series_lines": lines, "otlp_points": points,
        "mix": {"counter_series": counters, "gauge_series": gauges, "histograms": histograms,
                "histogram_lines": histograms * LINES_PER_HISTOGRAM},
        "labels_per_series": len(next(iter(next(iter(store.families.values())).series.values())).labels),
        "ingest_s": round(ingest_s, 3), "ingest_points_per_s": round(points / ingest_s),
        "snapshot": stats(timed(store.snapshot, args.reps)),
        "render_text": stats(timed(lambda: server.render(False), args.reps)),
        "render_openmetrics": stats(timed(lambda: server.render(True), args.reps)),
        "text_bytes": len(text), "openmetrics_bytes": len(om),
    }
    await server.start()
    try:
        t, size = await http_scrapes(server, args.reps, "text/plain;version=0.0.4", gzip=False)
        result["http_text"] = {**stats(t), "bytes": size}
        prom_accept = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                       "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
        t, size = await http_scrapes(server, args.reps, prom_accept, gzip=True)
        result["http_openmetrics_gzip"] = {**stats(t), "bytes": size}
        t, size = await http_scrapes(server, args.reps, "text/plain;version=0.0.4", gzip=True)
        result["http_text_gzip"] = {**stats(t), "bytes": size}
    finally:
        await server.shutdown()
    result["machine"]["loadavg_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

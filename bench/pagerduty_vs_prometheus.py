#!/usr/bin/env python3
"""The `pagerduty` exporter's evaluator against a real Prometheus server: rate, increase, histogram_quantile.

One otelpipe (in-process, the whole daemon) receives OTLP/HTTP metrics and hands them to both its
`prometheus` exporter and its `pagerduty` exporter. Debian's Prometheus scrapes the former every
second. The load: two cumulative counters (`bench.requests`, series `a` and `b`; `b` restarts from
zero, with a new start time, half-way) and a cumulative histogram (`bench.latency`, series `a`),
sent every 0.5 s with random increments. Then, at several instants, the same windows are asked of
both: otelpipe's evaluator (the selectors of rules that never fire) and Prometheus' query API
(`rate(...[w])`, `increase(...[w])`, `histogram_quantile(0.99, sum by (le, series) (rate(...[w])))`)
at the same wall time; and both are compared with the truth, computed from what was sent.

    .venv/bin/python bench/pagerduty_vs_prometheus.py [--windows 30s,60s] [--samples 8]

It prints one line per function and window: the median and largest relative difference of
otelpipe from Prometheus, and of each from the truth.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from otelpipe.testing import running_service
from pipeline.config.types import parse_duration
from pipeline.testing import kv

BOUNDS = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
STEP = 0.5

CONFIG = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:0"}
exporters:
  prometheus: {endpoint: "127.0.0.1:0"}
  pagerduty:
    routing_key: 0123456789abcdef0123456789abcdef
    endpoint: http://127.0.0.1:9/v2/enqueue
    evaluation_interval: 250ms
    rules:
RULES
service:
  pipelines:
    metrics: {receivers: [otlp], exporters: [prometheus, pagerduty]}
  telemetry: {metrics: {address: "127.0.0.1:0"}, logs: {level: warn}}
"""

PROMETHEUS = """
global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
  - job_name: otelpipe
    static_configs: [{targets: ["TARGET"]}]
"""

FUNCTIONS = {
    "rate": ("bench.requests", "rate", 'rate(bench_requests_total[W])'),
    "increase": ("bench.requests", "increase", 'increase(bench_requests_total[W])'),
    "p99": ("bench.latency", "p99", 'histogram_quantile(0.99, sum by (le, series) (rate(bench_latency_bucket[W])))'),
}


def rules(windows: list[str]) -> str:
    out = []
    for w in windows:
        for fn, (metric, agg, _) in FUNCTIONS.items():
            out.append(f"      - {{name: {fn}-{w}, metric: {metric}, aggregation: {agg}, window: {w}, "
                       "group_by: [series], condition: '<', threshold: -1}")
    return "\n".join(out)


class Load:
    """What is sent, with the wall time of each send, so the truth of any window can be computed."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.t0_ns = time.time_ns()
        self.start = {"a": self.t0_ns, "b": self.t0_ns}
        self.totals = {"a": 0, "b": 0}
        self.buckets = [0] * (len(BOUNDS) + 1)
        self.sum = 0.0
        self.sent: list[tuple[float, dict[str, int], list[int]]] = []  # (wall time, increments, bucket increments)

    def step(self, reset_b: bool) -> bytes:
        now_ns = time.time_ns()
        inc = {"a": self.rng.randint(5, 15), "b": self.rng.randint(0, 30)}
        if reset_b:
            self.start["b"], self.totals["b"] = now_ns - 10**8, 0  # restarted 0.1 s ago, counting from zero
        for s, n in inc.items():
            self.totals[s] += n
        obs = [self.rng.lognormvariate(-1.0, 0.9) for _ in range(self.rng.randint(10, 30))]
        binc = [0] * (len(BOUNDS) + 1)
        for v in obs:
            binc[next((i for i, b in enumerate(BOUNDS) if v <= b), len(BOUNDS))] += 1
        self.buckets = [a + b for a, b in zip(self.buckets, binc)]
        self.sum += sum(obs)
        self.sent.append((now_ns / 1e9, inc, binc))
        req = ExportMetricsServiceRequest()
        rm = req.resource_metrics.add()
        rm.resource.attributes.append(kv("service.name", "bench"))
        sm = rm.scope_metrics.add()
        c = sm.metrics.add(name="bench.requests")
        c.sum.is_monotonic, c.sum.aggregation_temporality = True, CUMULATIVE
        for s in ("a", "b"):
            dp = c.sum.data_points.add(start_time_unix_nano=self.start[s], time_unix_nano=now_ns, as_int=self.totals[s])
            dp.attributes.append(kv("series", s))
        h = sm.metrics.add(name="bench.latency")
        h.histogram.aggregation_temporality = CUMULATIVE
        dp = h.histogram.data_points.add(start_time_unix_nano=self.t0_ns, time_unix_nano=now_ns,
                                         count=sum(self.buckets), sum=self.sum)
        dp.explicit_bounds.extend(BOUNDS)
        dp.bucket_counts.extend(self.buckets)
        dp.attributes.append(kv("series", "a"))
        return req.SerializeToString()

    def truth(self, fn: str, series: str, start: float, end: float) -> float | None:
        """The exact answer for what was sent in (start, end]."""
        inside = [(inc, binc) for t, inc, binc in self.sent if start < t <= end]
        if fn in ("rate", "increase"):
            total = sum(inc[series] for inc, _ in inside)
            return total / (end - start) if fn == "rate" else float(total)
        if series != "a" or not inside:
            return None
        counts = [sum(b[i] for _, b in inside) for i in range(len(BOUNDS) + 1)]
        return quantile(0.99, counts)


def quantile(q: float, counts: list[int]) -> float:
    """histogram_quantile over per-bucket counts (the same interpolation Prometheus does)."""
    total = sum(counts)
    rank, cum, lower = q * total, 0, 0.0
    for upper, c in zip([*BOUNDS, math.inf], counts):
        if cum + c >= rank:
            return BOUNDS[-1] if math.isinf(upper) else lower + (upper - lower) * (rank - cum) / c
        cum += c
        lower = upper
    return BOUNDS[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def prometheus(tmp: Path, target: str) -> AsyncIterator[str]:
    (tmp / "prometheus.yml").write_text(PROMETHEUS.replace("TARGET", target))
    address = f"127.0.0.1:{free_port()}"
    log = (tmp / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address={address}", "--log.level=warn", stdout=log, stderr=log)
    try:
        yield f"http://{address}"
    finally:
        proc.terminate()
        await proc.wait()
        log.close()


async def query(http: aiohttp.ClientSession, base: str, q: str, at: float) -> dict[str, float]:
    async with http.get(f"{base}/api/v1/query", params={"query": q, "time": f"{at:.3f}"}) as r:
        body = await r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{q}: {body}")
    return {res["metric"].get("series", ""): float(res["value"][1]) for res in body["data"]["result"]}


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else (0.0 if a == b else math.inf)


async def main(windows: list[str], samples: int, spacing: float) -> None:
    longest = max(float(parse_duration(w)) for w in windows)
    async with running_service(CONFIG.replace("RULES", rules(windows))) as svc:
        exporter = svc.component("exporter", "pagerduty")
        clock = exporter.settings.clock
        otlp = f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/metrics"
        load = Load()
        with tempfile.TemporaryDirectory() as tmp:
            async with prometheus(Path(tmp), svc.endpoint("exporter", "prometheus", "http")) as prom, \
                    aiohttp.ClientSession() as http:

                async def ready() -> bool:
                    try:
                        return bool(await query(http, prom, "up", time.time()))
                    except aiohttp.ClientError:
                        return False

                await until(ready, 60, "Prometheus to scrape otelpipe")
                print(f"Prometheus scraping; sending for {longest:g} s before the first comparison", flush=True)

                async def send(i: int) -> None:
                    body = load.step(reset_b=(i == int((longest + samples * spacing / 2) / STEP)))
                    async with http.post(otlp, data=body, headers={"Content-Type": "application/x-protobuf"}) as r:
                        assert r.status == 200, await r.text()

                rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
                i = 0
                next_sample = time.monotonic() + longest + 2
                taken = 0
                while taken < samples:
                    await send(i)
                    i += 1
                    await asyncio.sleep(STEP)
                    if time.monotonic() < next_sample:
                        continue
                    next_sample += spacing
                    taken += 1
                    at_clock, at_wall = clock(), time.time()
                    for w in windows:
                        secs = float(parse_duration(w))
                        for fn, (_, _, promql) in FUNCTIONS.items():
                            rule = next(r for r in exporter.rules if r.cfg.name == f"{fn}-{w}")
                            ours = exporter.evaluator.select(rule.main, at_clock)
                            theirs = await query(http, prom, promql.replace("W", w), at_wall)
                            for (series,), value in ours.items():
                                truth = load.truth(fn, series, at_wall - secs, at_wall)
                                if series in theirs and truth is not None:
                                    rows.setdefault((fn, w), []).append((value, theirs[series], truth))
    print(f"\n{'function':<10}{'window':>7}{'n':>4}  {'otelpipe vs Prometheus':>24}  {'otelpipe vs truth':>20}  "
          f"{'Prometheus vs truth':>20}   (relative difference: median / max)")
    for (fn, w), vals in rows.items():
        def stat(pairs: list[float]) -> str:
            return f"{statistics.median(pairs):6.1%} / {max(pairs):6.1%}"
        print(f"{fn:<10}{w:>7}{len(vals):>4}  {stat([rel(o, p) for o, p, _ in vals]):>24}  "
              f"{stat([rel(o, t) for o, _, t in vals]):>20}  {stat([rel(p, t) for _, p, t in vals]):>20}")
        mean_o = statistics.fmean(o for o, _, _ in vals)
        mean_p = statistics.fmean(p for _, p, _ in vals)
        print(f"{'':<21}mean value: otelpipe {mean_o:.4g}, Prometheus {mean_p:.4g} ({mean_p / mean_o - 1:+.1%})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", default="30s,60s")
    ap.add_argument("--samples", type=int, default=8, help="comparison instants")
    ap.add_argument("--spacing", type=float, default=5.0, help="seconds between comparison instants")
    a = ap.parse_args()
    asyncio.run(main(a.windows.split(","), a.samples, a.spacing))

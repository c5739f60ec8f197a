#!/usr/bin/env python3
"""StatsD + OTLP metrics in → otelpipe with the `datadog` exporter → a fake intake that only counts.

Usage (from the project root):
    .venv/bin/python bench/datadog_bench.py [--duration 15] [--otlp-rate 0] [--statsd-rate 20000]
                                            [--items-per-request 100] [--outage 15] [--floor] [--json-out FILE]
    .venv/bin/python bench/datadog_bench.py stages [--reps 7] [--python]

Issue 11's target (250,000 points per CPU-second) is measured with `--items-per-request 1000 --outage 0`:
an SDK exports every point of a collection in one request, a Collector in front batches 8,192. At the
default 100 points per request receiving and batching alone cost more than the target allows: `--floor`
shows it (bench/RESULTS.md).

Three processes besides the load generators (../shared/bench/loadgen.py, OTLP/gRPC metrics and
StatsD over UDP): the fake intake (this file, `intake` mode: aiohttp, inflates and counts the
series and points of each `POST /api/v2/series`, answers 202), and `otelpipe run` on a generated
config (otlp + statsd → batch → datadog). The figure of merit is data points per CPU-second of the
otelpipe process (../shared/bench/proctools.py TreeSampler), from the start of the load until the
exporter has sent everything the receivers accepted: `points_per_cpu_s` counts the OTLP points
accepted by the receivers (StatsD lines enter as the few points the statsd receiver aggregates them
into), `input_points_per_cpu_s` counts OTLP points plus StatsD lines, `datadog_points_per_cpu_s` the
Datadog points received by the intake (a histogram point becomes up to five Datadog points).

`stages` measures the exporter's own stages in-process (no daemon): mapping, body building, and the
batch processor's merge of OTLP bytes with a StatsD flush, in CPU microseconds per OTLP point. Mapping
is the C renderer's (exporters/datadog/_ddwire.c) where it is built; `stages --python` times the
Python walk instead.

`--floor` runs the same daemon and load with the `debug` exporter (basic verbosity) in place of
`datadog`: what the receivers and the batch processor cost on their own (no outage phase).

`--outage S` then tells the intake to answer 503 for S seconds under the same load and samples
otelpipe's RSS every half second: with the sending queue full, the receivers refuse new data
(`RESOURCE_EXHAUSTED`), so memory stays bounded by the queue (`sending_queue.max_size`, 64MiB here).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OTELPIPE_SHARED_BENCH", ROOT.parent / "shared" / "bench"))
sys.path.insert(0, str(SHARED))

import proctools  # ../shared/bench

API_KEY = "0123456789abcdef0123456789abcdef"
CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", max_recv_msg_size_mib: 16}}
  statsd:
    endpoint: "127.0.0.1:{statsd}"
    aggregation_interval: 1s
processors:
  batch: {{send_batch_size: 8192, timeout: 200ms}}
exporters:
  datadog:
    api: {{key: {key}}}
    hostname: bench-host
    tags: ["env:bench"]
    metrics: {{endpoint: "http://127.0.0.1:{intake}"}}
    logs: {{endpoint: "http://127.0.0.1:{intake}"}}
    retry_on_failure: {{initial_interval: 1s, max_interval: 2s}}
    sending_queue: {{max_size: 64MiB}}   # the memory bound the outage phase shows
  debug: {{verbosity: basic}}
service:
  pipelines:
    metrics: {{receivers: [otlp, statsd], processors: [batch], exporters: [{exporter}]}}
  telemetry:
    logs: {{level: warn}}
    metrics: {{address: "127.0.0.1:{admin}"}}
"""


# -- the intake (its own process) ---------------------------------------------------------------

def run_intake(port: int) -> None:
    import asyncio

    from aiohttp import web

    stats = {"requests": 0, "series": 0, "points": 0, "bytes": 0, "refused": 0}
    state = {"down": False}

    async def series(request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp inflates gzip / deflate bodies
        if state["down"]:
            stats["refused"] += 1
            return web.json_response({"errors": ["down"]}, status=503)
        stats["requests"] += 1
        stats["bytes"] += int(request.headers.get("Content-Length", 0))
        stats["series"] += body.count(b'"metric":')
        stats["points"] += body.count(b'"timestamp":')
        return web.json_response({"errors": []}, status=202)

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def set_mode(request: web.Request) -> web.Response:
        state["down"] = request.query.get("down") == "1"
        return web.json_response(state)

    async def main() -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/api/v2/series", series)
        app.router.add_get("/stats", get_stats)
        app.router.add_post("/mode", set_mode)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.sleep(3600)  # bounded: the benchmark stops it long before

    asyncio.run(main())


# -- the stages alone ----------------------------------------------------------------------------

def run_stages(reps: int, native: bool = True) -> dict[str, float]:
    """CPU microseconds per OTLP data point of each stage, from the wire bytes the batch processor hands on.

    The requests are the load generator's (100 points each); 82 of them make one batch of 8,200
    points (`send_batch_size: 8192`), as in the daemon. Each figure is the best of `reps` passes.
    """
    sys.path.insert(0, str(ROOT))
    import payloads  # ../shared/bench

    from exporters.datadog.config import APIConfig, DatadogExporterConfig
    from exporters.datadog.exporter import SERIES_HEAD, series_body, series_docs
    from exporters.datadog.intake import SERIES_LIMITS, BodyBuilder
    from exporters.datadog.metrics import MetricsMapper
    from pipeline.clock import SystemClock
    from pipeline.config.types import Secret
    from pipeline.model import Payload, Signal, merge
    from pipeline.testing import make_metrics

    requests = payloads.make_payloads("metrics", 100, count=32)
    batches = [b"".join(requests[(i * 82 + j) % 32] for j in range(82)) for i in range(8)]
    points = 8 * 82 * 100
    cfg = DatadogExporterConfig(api=APIConfig(key=Secret(API_KEY)), hostname="bench-host", tags=("env:bench",))
    mapper = MetricsMapper(cfg, clock=SystemClock(), hostname="bench-host", native=native)
    bodies = BodyBuilder(series_body, series_docs, cfg.compression, SERIES_LIMITS)
    best = {"map": float("inf"), "bodies": float("inf"), "merge_with_a_statsd_flush": float("inf")}
    series = 0
    for rep in range(reps + 1):  # the first pass fills the caches
        spent = {k: 0.0 for k in best}
        for raw in batches:
            t0 = time.process_time()
            mapped = mapper.map(raw)
            t1 = time.process_time()
            if mapped.text is not None:  # the C renderer's series, as JSON text
                bodies.text_batches(SERIES_HEAD, mapped.text, mapped.cuts, mapped.offsets)
            else:
                bodies.batches(mapped.series, mapped.cuts)
            spent["map"] += t1 - t0
            spent["bodies"] += time.process_time() - t1
            series += mapped.cuts[-1] if mapped.cuts else 0
            parts = [Payload(Signal.METRICS, raw=raw, items=8200)]
            parts.append(Payload(Signal.METRICS, message=make_metrics(60)))  # the StatsD receiver builds messages
            t0 = time.process_time()
            merge(Signal.METRICS, parts).serialize()
            spent["merge_with_a_statsd_flush"] += time.process_time() - t0
        if rep:
            best = {k: min(v, spent[k]) for k, v in best.items()}
    out = {f"{k}_us_per_point": round(v / points * 1e6, 3) for k, v in best.items()}
    out["datadog_series_per_point"] = round(series / (points * (reps + 1)), 2)
    return out


# -- the benchmark --------------------------------------------------------------------------------

def http_json(url: str, method: str = "GET") -> dict:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def self_metrics(admin: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    # generous: while the queue drains on a loaded machine the scrape waits its turn on the event loop
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=60) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def loadgen(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(SHARED / "loadgen.py"), *args, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def run_load(a: argparse.Namespace, ports: dict[str, int], duration: float) -> tuple[dict, dict]:
    otlp = loadgen(["otlp", "--signal", "metrics", "--protocol", "grpc", "--endpoint", f"127.0.0.1:{ports['grpc']}",
                    "--items-per-request", str(a.items_per_request), "--rate", str(a.otlp_rate),
                    "--duration", str(duration), "--procs", "1", "--concurrency", "16"])
    statsd = loadgen(["statsd", "--target", f"127.0.0.1:{ports['statsd']}", "--rate", str(a.statsd_rate),
                      "--duration", str(duration), "--lines-per-packet", "10"])
    out_otlp, _ = otlp.communicate(timeout=duration + 120)
    out_statsd, _ = statsd.communicate(timeout=duration + 120)
    return json.loads(out_otlp or b"{}"), json.loads(out_statsd or b"{}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode")
    intake = sub.add_parser("intake")
    intake.add_argument("--port", type=int, required=True)
    stages = sub.add_parser("stages", help="the exporter's stages alone, in this process (no daemon)")
    stages.add_argument("--reps", type=int, default=7)
    stages.add_argument("--python", action="store_true", help="map with the Python walk, not the C renderer")
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--otlp-rate", type=float, default=0, help="OTLP data points/s (0 = as fast as accepted)")
    ap.add_argument("--statsd-rate", type=float, default=20_000, help="StatsD lines/s")
    ap.add_argument("--items-per-request", type=int, default=100)
    ap.add_argument("--outage", type=float, default=15, help="seconds of intake outage (0: skip)")
    ap.add_argument("--floor", action="store_true",
                    help="the same daemon and load with the `debug` exporter instead: what receiving and batching cost")
    ap.add_argument("--json-out", default="")
    a = ap.parse_args()
    if a.mode == "intake":
        run_intake(a.port)
        return 0
    if a.mode == "stages":
        print(json.dumps(run_stages(a.reps, native=not a.python), indent=2))
        return 0

    ports = {k: proctools.free_port() for k in ("grpc", "intake", "admin")}
    with __import__("socket").socket(2, 2) as s:  # a free UDP port for StatsD
        s.bind(("127.0.0.1", 0))
        ports["statsd"] = s.getsockname()[1]
    run_dir = Path(tempfile.mkdtemp(prefix="datadog-bench-"))
    cfg = run_dir / "otelpipe.yaml"
    cfg.write_text(CONFIG.format(key=API_KEY, exporter="debug" if a.floor else "datadog", **ports))
    intake_proc = proctools.start_cmd([sys.executable, __file__, "intake", "--port", str(ports["intake"])],
                                      str(run_dir / "intake.log"))
    daemon = proctools.start_cmd([str(ROOT / ".venv" / "bin" / "otelpipe"), "run", "--config", str(cfg)],
                                 str(run_dir / "otelpipe.log"))
    result: dict = {"ports": ports, "run_dir": str(run_dir), "duration": a.duration}
    try:
        if not (proctools.wait_tcp("127.0.0.1", ports["intake"], 20, intake_proc)
                and proctools.wait_tcp("127.0.0.1", ports["grpc"], 30, daemon)):
            raise SystemExit(f"otelpipe or the intake did not start; see {run_dir}")
        sampler = proctools.TreeSampler(daemon.pid)
        m0, cpu0 = self_metrics(ports["admin"]), sampler.cpu_seconds()
        t0 = time.time()
        lg_otlp, lg_statsd = run_load(a, ports, a.duration)
        # drain: until everything the receivers accepted was sent (or failed), at most 60 s
        deadline = time.time() + 60
        while time.time() < deadline:
            m = self_metrics(ports["admin"])
            accepted = m.get("otelpipe_receiver_accepted_metric_points_total", 0)
            done = (m.get("otelpipe_exporter_sent_metric_points_total", 0)
                    + m.get("otelpipe_exporter_send_failed_metric_points_total", 0))
            if done >= accepted and m.get("otelpipe_exporter_queue_size", 0) == 0:
                break
            time.sleep(0.2)
        cpu, wall = sampler.cpu_seconds() - cpu0, time.time() - t0
        m1, stats = self_metrics(ports["admin"]), http_json(f"http://127.0.0.1:{ports['intake']}/stats")
        lines = m1.get("otelpipe_receiver_statsd_lines_total", 0) - m0.get("otelpipe_receiver_statsd_lines_total", 0)
        points_in = (m1.get("otelpipe_receiver_accepted_metric_points_total", 0)
                     - m0.get("otelpipe_receiver_accepted_metric_points_total", 0))
        result["throughput"] = {
            "otlp_points_acked_by_otelpipe": lg_otlp.get("ok_items"),
            "statsd_lines_sent": lg_statsd.get("sent_lines"),
            "statsd_lines_parsed": m1.get("otelpipe_receiver_statsd_lines_total", 0),
            "points_accepted": points_in,
            "points_sent": m1.get("otelpipe_exporter_sent_metric_points_total", 0)
            - m0.get("otelpipe_exporter_sent_metric_points_total", 0),
            "send_failed": m1.get("otelpipe_exporter_send_failed_metric_points_total", 0),
            "datadog_series_at_intake": stats["series"], "datadog_points_at_intake": stats["points"],
            "intake_requests": stats["requests"], "intake_bytes": stats["bytes"],
            "otelpipe_cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            "points_per_cpu_s": round(points_in / cpu) if cpu else None,
            # StatsD lines are data points too (the receiver aggregates them into few OTLP points)
            "input_points_per_cpu_s": round((lg_otlp.get("ok_items", 0) + lines) / cpu) if cpu else None,
            "datadog_points_per_cpu_s": round(stats["points"] / cpu) if cpu else None,
            "peak_rss_mib": round(sampler.peak_rss / 2**20, 1),
            "loadgen_cpu_s": round(lg_otlp.get("loadgen_cpu_s", 0) + lg_statsd.get("loadgen_cpu_s", 0), 2),
        }
        print(json.dumps(result["throughput"], indent=2), flush=True)
        if a.outage and not a.floor:
            result["outage"] = outage(a, ports, sampler)
            print(json.dumps(result["outage"], indent=2), flush=True)
        sampler.stop()
    finally:
        proctools.stop_proc(daemon)
        proctools.stop_proc(intake_proc)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(result, indent=2))
    return 0


def outage(a: argparse.Namespace, ports: dict[str, int], sampler: proctools.TreeSampler) -> dict:
    """The intake answers 503 for `a.outage` seconds under load; otelpipe's RSS is sampled all along."""
    http_json(f"http://127.0.0.1:{ports['intake']}/mode?down=1", "POST")
    rss: list[float] = []
    m0 = self_metrics(ports["admin"])
    loader = __import__("threading").Thread(target=run_load, args=(a, ports, a.outage))
    loader.start()
    while loader.is_alive():
        sampler.sample()
        rss.append(round(sampler.last_rss / 2**20, 1))
        time.sleep(0.5)
    m1 = self_metrics(ports["admin"])
    http_json(f"http://127.0.0.1:{ports['intake']}/mode?down=0", "POST")
    # recovery: the queue drains once the intake is back (retries back off up to max_interval)
    began, drained = time.time(), None
    while time.time() - began < 120:
        m = self_metrics(ports["admin"])
        if m.get("otelpipe_exporter_queue_size", 0) == 0 and (
                m.get("otelpipe_exporter_sent_metric_points_total", 0)
                + m.get("otelpipe_exporter_send_failed_metric_points_total", 0)
                >= m.get("otelpipe_receiver_accepted_metric_points_total", 0)):
            drained = round(time.time() - began, 1)
            break
        time.sleep(0.5)
    m2 = self_metrics(ports["admin"])

    def delta(name: str) -> float:
        return m1.get(name, 0) - m0.get(name, 0)

    return {
        "drained_after_s": drained,
        "send_failed_total": m2.get("otelpipe_exporter_send_failed_metric_points_total", 0),
        "sent_minus_accepted_total": m2.get("otelpipe_exporter_sent_metric_points_total", 0)
        - m2.get("otelpipe_receiver_accepted_metric_points_total", 0),
        "seconds": a.outage,
        "rss_mib_first_last_max": [rss[0], rss[-1], max(rss)] if rss else [],
        "rss_mib_samples": rss,
        "points_accepted": delta("otelpipe_receiver_accepted_metric_points_total"),
        "points_refused": delta("otelpipe_receiver_refused_metric_points_total"),
        "enqueue_failed": delta("otelpipe_exporter_enqueue_failed_metric_points_total"),
        "queue_size_requests": m1.get("otelpipe_exporter_queue_size", 0),
    }


if __name__ == "__main__":
    raise SystemExit(main())

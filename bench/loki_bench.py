#!/usr/bin/env python3
"""OTLP logs in → otelpipe (batch → loki) → a fast fake Loki intake: log records per CPU-second of otelpipe.

Three processes on loopback: the shared load generator (`../shared/bench/loadgen.py otlp --signal logs`,
OTLP/gRPC, the agent-like log records of `payloads.py`), the real `otelpipe run` with the `loki`
exporter, and a fake intake (this file, `intake` mode, its own process) that gunzips each push,
counts its entries with orjson and answers 204, as Loki does. Two phases:

1. throughput: `--duration` seconds of load after a warm-up; the figure is the entries the intake
   received in the window divided by the CPU seconds (user + system, all threads) otelpipe spent in
   it (`../shared/bench/proctools.py`), once otelpipe has drained;
2. outage (`--outage` seconds, 0 to skip): the intake answers every push 503 (`Retry-After: 1`) while
   the load goes on; otelpipe's resident memory is sampled every 0.2 s and must level off (its
   sending queue is bounded, the batch processor and receivers then refuse with 429 /
   RESOURCE_EXHAUSTED, which the load generator reports as errors). Then the intake accepts again
   and what otelpipe had queued is delivered.

    .venv/bin/python bench/loki_bench.py --duration 20 --outage 30
    .venv/bin/python bench/loki_bench.py --compression none      # without gzip: what ISA-L's compression costs
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OTELPIPE_SHARED_BENCH", ROOT.parent / "shared" / "bench"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared/bench")
sys.path.insert(0, str(SHARED))

import proctools  # the shared harness, found above

CONFIG = """\
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
processors:
  batch: {{send_batch_size: {batch}, timeout: 200ms}}
exporters:
  loki:
    endpoint: "http://127.0.0.1:{intake_port}/loki/api/v1/push"
    compression: {compression}
    sending_queue: {{sizer: items, queue_size: {queue_items}}}
    retry_on_failure: {{initial_interval: 1s, max_interval: 2s, max_elapsed_time: 0}}
service:
  pipelines:
    logs: {{receivers: [otlp], processors: [batch], exporters: [loki]}}
  telemetry:
    logs: {{level: error}}
    metrics: {{address: "127.0.0.1:{admin_port}"}}
"""


# -- the fake intake (its own process) ----------------------------------------------------------------

def serve_intake(port: int) -> None:
    import orjson
    from aiohttp import web

    try:
        from isal import igzip
        gunzip = igzip.decompress
    except ImportError:  # pragma: no cover
        def gunzip(data: bytes) -> bytes:
            return zlib.decompress(data, 31)

    state = {"entries": 0, "pushes": 0, "refused": 0, "refuse": False, "last": 0.0}

    async def push(request: web.Request) -> web.Response:
        body = await request.read()
        if state["refuse"]:
            state["refused"] += 1
            return web.Response(status=503, text="ingester unavailable\n", headers={"Retry-After": "1"})
        if request.headers.get("Content-Encoding") == "gzip":
            body = gunzip(body)
        doc = orjson.loads(body)
        state["entries"] += sum(len(s["values"]) for s in doc["streams"])
        state["pushes"] += 1
        state["last"] = time.time()
        return web.Response(status=204)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(state)

    async def mode(request: web.Request) -> web.Response:
        state["refuse"] = (await request.json())["refuse"]
        return web.json_response(state)

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/loki/api/v1/push", push)
    app.router.add_get("/stats", stats)
    app.router.add_post("/mode", mode)
    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)  # gunzipped above, by ISA-L
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    try:
        import uvloop
        uvloop.run(serve())
    except ImportError:  # pragma: no cover
        asyncio.run(serve())


# -- the driver -------------------------------------------------------------------------------------

async def _http(method: str, url: str, body: object | None = None) -> dict[str, object]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.request(method, url, json=body) as r:
        return dict(await r.json())


def http(method: str, url: str, body: object | None = None) -> dict[str, object]:
    return asyncio.run(_http(method, url, body))


def loadgen(grpc_port: int, seconds: float, args: argparse.Namespace) -> dict[str, object]:
    cmd = [sys.executable, str(SHARED / "loadgen.py"), "otlp", "--signal", "logs", "--protocol", "grpc",
           "--endpoint", f"127.0.0.1:{grpc_port}", "--duration", str(seconds), "--items-per-request",
           str(args.items_per_request), "--procs", "1", "--concurrency", str(args.concurrency), "--json",
           "--rate", str(args.rate)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"loadgen failed: {out.stderr[-2000:]}")
    return dict(json.loads(lines[-1]))


def wait_drained(stats_url: str, quiet: float = 1.5, limit: float = 120.0, since: float = 0.0) -> dict[str, object]:
    """Wait until the intake has received nothing for `quiet` seconds (and something after `since`, if given)."""
    deadline = time.time() + limit
    while time.time() < deadline:
        st = http("GET", stats_url)
        last = float(st["last"])  # type: ignore[arg-type]
        if last > since and time.time() - last > quiet:
            return st
        time.sleep(0.25)
    return http("GET", stats_url)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="run", choices=["run", "intake"])
    ap.add_argument("--port", type=int, default=0, help="intake mode: the port to serve on")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--outage", type=float, default=30.0, help="seconds of intake refusing (0: skip)")
    ap.add_argument("--compression", choices=["gzip", "none"], default="gzip")
    ap.add_argument("--items-per-request", type=int, default=512)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rate", type=float, default=80_000,
                    help="records/s offered in the throughput phase (0: as fast as otelpipe takes them; then "
                         "refused requests cost CPU without delivering)")
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--queue-items", type=int, default=200_000, help="the loki exporter's sending_queue (items)")
    ap.add_argument("--json-out", default="")
    args = ap.parse_args()
    if args.mode == "intake":
        serve_intake(args.port)
        return 0

    intake_port, grpc_port, admin_port = proctools.free_port(), proctools.free_port(), proctools.free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="loki-bench-"))
    config = run_dir / "otelpipe.yaml"
    config.write_text(CONFIG.format(grpc_port=grpc_port, intake_port=intake_port, admin_port=admin_port,
                                    compression=args.compression, batch=args.batch,
                                    queue_items=args.queue_items))
    intake = proctools.start_cmd([sys.executable, __file__, "intake", "--port", str(intake_port)],
                                 str(run_dir / "intake.log"))
    otelpipe = None
    try:
        if not proctools.wait_tcp("127.0.0.1", intake_port, 20, intake):
            raise SystemExit(f"the intake did not start; see {run_dir / 'intake.log'}")
        stats_url = f"http://127.0.0.1:{intake_port}/stats"
        mode_url = f"http://127.0.0.1:{intake_port}/mode"
        otelpipe = proctools.start_cmd([str(ROOT / ".venv" / "bin" / "otelpipe"), "run", "--config", str(config)],
                                       str(run_dir / "otelpipe.log"))
        if not proctools.wait_tcp("127.0.0.1", grpc_port, 30, otelpipe):
            raise SystemExit(f"otelpipe did not start; see {run_dir / 'otelpipe.log'}")
        sampler = proctools.TreeSampler(otelpipe.pid, interval=0.2)
        report: dict[str, object] = {"compression": args.compression, "items_per_request": args.items_per_request,
                                     "batch": args.batch, "queue_items": args.queue_items}

        loadgen(grpc_port, args.warmup, args)
        before = wait_drained(stats_url)
        cpu0 = sampler.cpu_seconds()
        lg = loadgen(grpc_port, args.duration, args)
        after = wait_drained(stats_url)
        cpu1 = sampler.cpu_seconds()
        delivered = int(after["entries"]) - int(before["entries"])  # type: ignore[call-overload]
        cpu = cpu1 - cpu0
        report["throughput"] = {
            "acked_records": lg.get("ok_items"), "delivered_records": delivered, "otelpipe_cpu_s": round(cpu, 2),
            "records_per_cpu_s": round(delivered / cpu) if cpu else None,
            "delivered_per_s": round(delivered / float(lg["window_s"])),  # type: ignore[arg-type]
            "loadgen_errors": lg.get("errors"), "rss_mib": round(sampler.last_rss / 2**20, 1),
        }
        print(f"throughput: {delivered:,} records delivered (acked {lg.get('ok_items'):,}) for {cpu:.2f} "
              f"otelpipe CPU-s = {delivered / cpu:,.0f} records per CPU-second; "
              f"{delivered / float(lg['window_s']):,.0f} records/s; "  # type: ignore[arg-type]
              f"RSS {sampler.last_rss / 2**20:.0f} MiB; loadgen errors {lg.get('errors')}", flush=True)

        if args.outage > 0:
            http("POST", mode_url, {"refuse": True})
            samples: list[tuple[float, float]] = []
            t0 = time.time()
            proc = subprocess.Popen([sys.executable, str(SHARED / "loadgen.py"), "otlp", "--signal", "logs",
                                     "--protocol", "grpc", "--endpoint", f"127.0.0.1:{grpc_port}", "--duration",
                                     str(args.outage), "--items-per-request", str(args.items_per_request),
                                     "--procs", "1", "--concurrency", str(args.concurrency), "--json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while proc.poll() is None:
                sampler.sample()
                samples.append((time.time() - t0, sampler.last_rss / 2**20))
                time.sleep(0.2)
            out, _ = proc.communicate()
            lg2 = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
            refused = http("GET", stats_url)["refused"]
            http("POST", mode_url, {"refuse": False})
            recovered = wait_drained(stats_url, quiet=3.0, since=time.time())
            tail = [r for t, r in samples if t >= args.outage / 2]
            delivered_out = int(recovered["entries"]) - int(after["entries"])  # type: ignore[call-overload]
            report["outage"] = {
                "seconds": args.outage, "acked_records": lg2.get("ok_items"), "loadgen_errors": lg2.get("errors"),
                "pushes_refused": refused, "rss_mib_first": round(samples[0][1], 1),
                "rss_mib_max": round(max(r for _, r in samples), 1),
                "rss_mib_second_half_min": round(min(tail), 1), "rss_mib_second_half_max": round(max(tail), 1),
                "rss_mib_end": round(samples[-1][1], 1),
                "rss_mib_every_5s": [round(max(r for t, r in samples if k <= t < k + 5), 1)
                                     for k in range(0, int(samples[-1][0]), 5)],
                "delivered_after_recovery": delivered_out,
                "acked_but_not_delivered": int(lg2.get("ok_items", 0)) - delivered_out,
            }
            print(f"outage: intake refused {refused} pushes for {args.outage:.0f}s while the load went on "
                  f"(acked {lg2.get('ok_items'):,}, loadgen errors {lg2.get('errors')}); otelpipe RSS "
                  f"{samples[0][1]:.0f} MiB at the start, max {max(r for _, r in samples):.0f} MiB, "
                  f"{min(tail):.0f}-{max(tail):.0f} MiB in the second half; after recovery "
                  f"{report['outage']['delivered_after_recovery']:,} records delivered", flush=True)  # type: ignore[index]
        sampler.stop()
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(report, indent=2))
        print(json.dumps(report))
    finally:
        if otelpipe is not None:
            proctools.stop_proc(otelpipe, timeout=30)
        proctools.stop_proc(intake)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""OTLP gRPC in → batch → `loadbalancing` (traceID) → three counting sinks, side by side with the plain
pass-through (OTLP gRPC in → batch → OTLP gRPC out to one sink), in one run.

Both collectors run under the shared harness's `compare.one_run` (same load generator, warm-up,
drain, CPU and RSS accounting as `../shared/bench/compare.py`), interleaved A,B / B,A / ... The sinks
are this script's own: OTLP/gRPC servers that count spans and keep the set of trace ids they got, so
after each run the script checks that no trace reached two sinks and how evenly they were spread.

Usage (from /tmp, not from the checkout; see bench/RESULTS.md "Issues 9 and 10"):
    cd /tmp && /work/main/.venv/bin/python /work/main/bench/loadbalancing_bench.py --reps 3 --duration 10
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OTELPIPE_SHARED_BENCH", ROOT.parent / "shared" / "bench"))
sys.path.insert(0, str(SHARED))
sys.path.insert(0, str(ROOT))

import compare  # the shared harness
import proctools as pt

LOAD = "otlp --signal traces --protocol grpc --items-per-request 100 --procs 2 --channels 4 --concurrency 32"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


# -- the sink (run as `--sink`) -----------------------------------------------------------------------

async def serve_sink(grpc_port: int, http_port: int, max_seconds: float) -> None:
    import grpc
    from aiohttp import web

    from pipeline.wire import TRACES_ENVELOPE

    state: dict[str, Any] = {}

    def reset() -> None:
        state.update(items=0, requests=0, first_ts=None, last_ts=None, traces=set())

    reset()

    async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        spans = [s for rs in TRACES_ENVELOPE.FromString(request).resource_spans for ss in rs.scope_spans
                 for s in ss.spans]
        state["traces"].update(s[2:18] for s in spans)
        now = time.time()
        state["first_ts"] = state["first_ts"] or now
        state["last_ts"] = now
        state["items"] += len(spans)
        state["requests"] += 1
        return b""

    handler = grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": handler})])
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()

    def snapshot() -> dict[str, Any]:
        # the fields compare.one_run reads
        return {"items": {"traces": state["items"]}, "requests": {"traces": state["requests"]},
                "total_items": state["items"], "errors": 0, "first_ts": state["first_ts"],
                "last_ts": state["last_ts"], "now": time.time(), "cpu_s": sum(os.times()[:2]),
                "trace_ids": len(state["traces"])}

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(snapshot())

    async def do_reset(_: web.Request) -> web.Response:
        snap = snapshot()
        reset()
        return web.json_response(snap)

    async def traces(_: web.Request) -> web.Response:
        return web.json_response(sorted(t.hex() for t in state["traces"]))

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", do_reset)
    app.router.add_get("/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    print(json.dumps({"ready": True}), flush=True)
    try:
        await asyncio.wait_for(stop.wait(), max_seconds)
    except TimeoutError:
        pass
    await server.stop(0.5)
    await runner.cleanup()


# -- the harness --------------------------------------------------------------------------------------

class TraceSink:
    """One sink process (this script with `--sink`)."""

    def __init__(self, work: str, n: int, max_seconds: float) -> None:
        self.grpc_port, self.http_port = pt.free_port(), pt.free_port()
        cmd = [sys.executable, __file__, "--sink", "--grpc-port", str(self.grpc_port), "--http-port",
               str(self.http_port), "--max-seconds", str(max_seconds)]
        self.proc = pt.start_cmd(cmd, os.path.join(work, f"sink{n}.log"))
        if not pt.wait_tcp("127.0.0.1", self.http_port, 20, self.proc):
            raise SystemExit(f"sink {n} did not start; see {work}/sink{n}.log")
        pt.wait_tcp("127.0.0.1", self.grpc_port, 10, self.proc)
        self.base = f"http://127.0.0.1:{self.http_port}"

    def stats(self) -> dict[str, Any]:
        return compare.http_json(self.base + "/stats")

    def reset(self) -> dict[str, Any]:
        return compare.http_json(self.base + "/reset", "POST")

    def trace_ids(self) -> set[str]:
        with urllib.request.urlopen(self.base + "/traces", timeout=30) as r:
            return set(json.loads(r.read()))

    def stop(self) -> None:
        pt.stop_proc(self.proc)


class Sinks:
    """The sinks of one collector, seen by `compare.one_run` as one sink (counts summed)."""

    def __init__(self, sinks: list[TraceSink]) -> None:
        self.sinks = sinks
        self.grpc_port, self.http_port = sinks[0].grpc_port, sinks[0].http_port
        self.proc = sinks[0].proc

    def stats(self) -> dict[str, Any]:
        parts = [s.stats() for s in self.sinks]
        firsts = [p["first_ts"] for p in parts if p["first_ts"]]
        lasts = [p["last_ts"] for p in parts if p["last_ts"]]
        total = sum(p["total_items"] for p in parts)
        return {"items": {"traces": total}, "requests": {"traces": sum(p["requests"]["traces"] for p in parts)},
                "total_items": total, "errors": 0, "first_ts": min(firsts) if firsts else None,
                "last_ts": max(lasts) if lasts else None, "now": max(p["now"] for p in parts),
                "cpu_s": sum(p["cpu_s"] for p in parts)}

    def reset(self) -> dict[str, Any]:
        for s in self.sinks:
            s.reset()
        return {}


def collector(config: str, sinks: list[TraceSink], otelpipe: str) -> str:
    env = " ".join(f"OP_SINK{i + 1}=127.0.0.1:{s.grpc_port}" for i, s in enumerate(sinks))
    return (f"env OP_GRPC=127.0.0.1:{{grpc_port}} OP_HTTP=127.0.0.1:{{http_port}} OP_SINK=127.0.0.1:"
            f"{sinks[0].grpc_port} {env} {otelpipe} run --config {config}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--grpc-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--http-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=3600, help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--drain-timeout", type=float, default=30.0)
    ap.add_argument("--wait-quiet", type=float, default=0)
    ap.add_argument("--load", default=LOAD)
    ap.add_argument("--json-out", default=str(ROOT / "bench" / "out" / "loadbalancing.json"))
    args = ap.parse_args()
    if args.sink:
        asyncio.run(serve_sink(args.grpc_port, args.http_port, args.max_seconds))
        return 0

    # compare.one_run reads these from its own argument list
    run_args = argparse.Namespace(load=args.load, rate=0, duration=args.duration, warmup=args.warmup,
                                  settle=args.settle, drain_timeout=args.drain_timeout, start_timeout=20.0,
                                  startup_grace=0.5, no_sink=False, python=sys.executable)
    work = tempfile.mkdtemp(prefix="lbbench-")
    otelpipe = str(ROOT / ".venv" / "bin" / "otelpipe")
    bound = (args.duration + args.warmup + args.drain_timeout + 120) * args.reps * 2 + 300
    sinks = [TraceSink(work, i, bound) for i in range(3)]
    specs = [("pass-through", collector(str(ROOT / "bench/configs/otlp_batch_otlp.yaml"), sinks, otelpipe),
              Sinks(sinks[:1])),
             ("loadbalancing", collector(str(ROOT / "bench/configs/otlp_batch_loadbalancing.yaml"), sinks, otelpipe),
              Sinks(sinks))]
    print(f"work dir {work}", file=sys.stderr)
    results: list[dict[str, Any]] = []
    try:
        for rep in range(args.reps):
            for name, cmd, target in (specs if rep % 2 == 0 else list(reversed(specs))):
                if args.wait_quiet > 0:
                    pt.wait_quiet(args.wait_quiet)
                for s in sinks:
                    s.reset()
                r = compare.one_run(run_args, name, " ".join(shlex.split(cmd)), target, rep, work)
                per_sink = [s.trace_ids() for s in target.sinks]
                union = set().union(*per_sink)
                r["traces"] = len(union)
                r["traces_on_two_sinks"] = sum(len(p) for p in per_sink) - len(union)
                r["sink_share"] = [round(len(p) / max(len(union), 1), 3) for p in per_sink]
                results.append(r)
                print(f"[rep {rep}] {name}: " + json.dumps({k: r.get(k) for k in (
                    "items_per_cpu_s", "delivered_per_s", "lost", "traces", "traces_on_two_sinks", "sink_share",
                    "peak_rss_mb", "box_busy", "other_cores", "error")}), file=sys.stderr)
    finally:
        for s in sinks:
            s.stop()
    report(results, args)
    return 0


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print("\nper-run:")
    for r in results:
        if "error" in r:
            print(f"  {r['collector']:<14} rep {r['rep']}: ERROR {r['error']}")
            continue
        print(f"  {r['collector']:<14} rep {r['rep']}: spans/cpu_s={r['items_per_cpu_s']:,.0f} "
              f"delivered/s={r['delivered_per_s']:,.0f} lost={r['lost']:,} traces={r['traces']} "
              f"on_two_sinks={r['traces_on_two_sinks']} shares={r['sink_share']} peak_rss_mb={r['peak_rss_mb']:.0f} "
              f"box_busy={r['box_busy']:.0%} other_cores={r['other_cores']:.2f}")
    ok = [r for r in results if "error" not in r]
    ratios = []
    for rep in sorted({r["rep"] for r in ok}):
        by = {r["collector"]: r for r in ok if r["rep"] == rep}
        if len(by) == 2:
            ratios.append(by["loadbalancing"]["items_per_cpu_s"] / by["pass-through"]["items_per_cpu_s"])
    for name in ("pass-through", "loadbalancing"):
        vals = [r["items_per_cpu_s"] for r in ok if r["collector"] == name]
        if vals:
            print(f"{name:<14} spans/cpu_s median {statistics.median(vals):,.0f} "
                  f"[{min(vals):,.0f} - {max(vals):,.0f}]; lost {sum(r['lost'] for r in ok if r['collector'] == name)}")
    if ratios:
        print(f"loadbalancing / pass-through spans per CPU-second: per rep "
              f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})")
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump({"args": vars(args), "results": results, "ratios": ratios}, f, indent=1, default=str)


if __name__ == "__main__":
    raise SystemExit(main())

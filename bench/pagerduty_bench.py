#!/usr/bin/env python3
"""The `pagerduty` exporter's two costs: one evaluation round, and what it takes from the metrics path.

`round` (in-process, a fake clock, nothing sent): the exporter holds 10,000 series of 20 metrics
an agent platform emits (500 series each, by service, route and status; in turn a cumulative
request counter, a cumulative latency histogram with 10 bounds, a delta token counter and a gauge),
with an hour of history at the evaluation interval (15 s), and 100 rules over them (5 per metric):
error ratios with volume guards, token rates against the whole hour, p50/p90/p99 (every other one
against the same window 30 min earlier), avg/max/last of the gauges, grouped by service, by route,
by service and status or not at all. Every rule has its own window (5 to 54 min), so no two rules
share a selector (real configs, with a few common windows, share their denominators and guards and
cost less): the worst case. It times
`evaluate()` (every rule and the alert state machine; nothing fires but a couple of alerts that go
pending), wall and CPU time, the first round (selector plans built) and the rounds after.

    .venv/bin/python bench/pagerduty_bench.py round [--series 10000] [--rules 100] [--rounds 20]

`path`: the metrics path with and without the exporter, side by side in one
`../shared/bench/compare.py` invocation (OTLP gRPC in → batch → OTLP gRPC out to the counting
sink; `pagerduty_on` adds the `pagerduty` exporter to the same pipeline, with five rules over the
load's metrics: bench/configs/pagerduty_{off,on}.yaml). The load is the shared harness's
agent-like metrics (token and duration histograms, request counters, memory gauges).

    .venv/bin/python bench/pagerduty_bench.py path [--reps 3] [--duration 10] [--python-ingest] [--baseline DIR]

(`--python-ingest` adds a collector: `pagerduty_on` with the Python ingest loop, the C pass made
unimportable; `--baseline DIR` (repeatable) adds `pagerduty_on_<DIR's name>`, run from another copy
of the tree (DIR first on PYTHONPATH, its C extensions built there), e.g. the last commit's exporter:
before / after in one run, on the same machine state. Each collector's on/off ratio of items per
CPU-second is printed at the end, per rep and of the medians.)

`ingest` (in-process, CPU time): what recording a point costs, with the C pass
(exporters/pagerduty/_pdwire.c) and with the Python loop, on the `path` load's requests (the shared
harness's metrics, 100 points each, every one referenced) merged in batches as the batch
processor sends them, into a store that already holds their series (the steady state of `path`).
Best of `--reps`.

    .venv/bin/python bench/pagerduty_bench.py ingest [--batches 40] [--reps 5] [--thrash MB] [--path native]

(`--thrash MB` reads that much memory before each batch, untimed, so the store's series are no longer
in the caches, as in the daemon, where a batch's points meet them after the rest of the pipeline ran.
Only an approximation: on the 2-core EPYC VM, 32 MB added about 0.1 µs per point, much less than what
the exporter costs in the daemon beyond the warm figure; `path` is the measure that counts.)
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
import json
import math
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("OTELPIPE_SHARED_BENCH", ROOT.parent / "shared" / "bench"))

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from exporters.pagerduty import PagerDutyExporter, PagerDutyExporterConfig
from pipeline.component import Kind
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import FakeClock, NopHost, kv, nop_settings

INTERVAL = 15.0
HISTORY = 3600.0
BOUNDS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0]
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


KINDS = ("requests", "duration", "tokens", "queue")


def labels(i: int) -> tuple[str, str, str]:
    """Service (25), route (up to 50) and status of series number `i` of a metric."""
    return f"svc-{i % 25}", f"/route/{i // 25 % 50}", "error" if i % 2 else "ok"


def metric_names(metrics: int) -> list[tuple[str, str]]:
    """(kind, name) of each metric: the four kinds in turn, `agent.<kind>.<n>`."""
    return [(KINDS[m % 4], f"agent.{KINDS[m % 4]}.{m // 4}") for m in range(metrics)]


def build_request(metrics: int, per_metric: int, step: int) -> bytes:
    """One export of every series at step `step` (cumulative counters and histograms, delta tokens, gauges)."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("deployment.environment", "prod"))
    sm = rm.scope_metrics.add()
    sm.scope.name = "bench"
    t_ns = 1_700_000_000_000_000_000 + step * int(INTERVAL * 1e9)
    for kind, name in metric_names(metrics):
        m = sm.metrics.add(name=name)
        if kind == "requests":
            m.sum.is_monotonic = True
            m.sum.aggregation_temporality = CUMULATIVE
        elif kind == "duration":
            m.histogram.aggregation_temporality = CUMULATIVE
        elif kind == "tokens":
            m.sum.is_monotonic = True
            m.sum.aggregation_temporality = DELTA
        for i in range(per_metric):
            svc, route, status = labels(i)
            attrs = [kv("service.name", svc), kv("http.route", route), kv("status", status)]
            if kind == "requests":
                dp = m.sum.data_points.add(start_time_unix_nano=1, time_unix_nano=t_ns, as_int=step * (1 + i % 7))
            elif kind == "duration":
                dp = m.histogram.data_points.add(start_time_unix_nano=1, time_unix_nano=t_ns)
                counts = [step * ((i + b) % 5) for b in range(len(BOUNDS) + 1)]
                dp.explicit_bounds.extend(BOUNDS)
                dp.bucket_counts.extend(counts)
                dp.count, dp.sum = sum(counts), float(sum(counts)) * 0.3
            elif kind == "tokens":
                dp = m.sum.data_points.add(start_time_unix_nano=t_ns - int(INTERVAL * 1e9), time_unix_nano=t_ns,
                                           as_int=100 + i % 13)
            else:
                dp = m.gauge.data_points.add(time_unix_nano=t_ns, as_double=float((i * step) % 17))
            dp.attributes.extend(attrs)
    return req.SerializeToString()


def make_rules(n: int, metrics: int) -> list[dict[str, Any]]:
    """`n` rules spread over the metrics, each with its own window (no two share a selector); none fires."""
    groupings: list[list[str]] = [["service.name"], ["http.route"], [], ["service.name", "status"]]
    names = metric_names(metrics)
    out: list[dict[str, Any]] = []
    for k in range(n):
        kind, metric = names[k % metrics]
        group_by = groupings[k // metrics % 4]
        rule: dict[str, Any] = {"name": f"rule-{k}", "metric": metric, "window": f"{5 + k % 50}m",
                                "group_by": group_by, "condition": ">", "for": "5m", "threshold": 1000.0}
        if kind == "requests":  # error ratio with a volume guard
            rule.update(filter={"status": "error"}, aggregation="increase", ratio_to={"filter": {}},
                        min_volume={"filter": {}, "threshold": 100}, group_by=[g for g in group_by if g != "status"])
        elif kind == "duration":  # a latency quantile, every other one against the same window 30 min earlier
            rule.update(aggregation=("p50", "p90", "p99")[k % 3], **({"ratio_to": {"offset": "30m"}} if k % 2 else {}))
        elif kind == "tokens":  # token rate against the whole hour
            rule.update(aggregation="rate", ratio_to={"window": "1h"})
        else:
            rule.update(aggregation=("avg", "max", "last")[k % 3])
        out.append(rule)
    return out


def config(rules: list[dict[str, Any]], max_series: int) -> PagerDutyExporterConfig:
    raw = {"routing_key": "0123456789abcdef0123456789abcdef", "endpoint": "http://127.0.0.1:9/v2/enqueue",
           "evaluation_interval": f"{INTERVAL:g}s", "source": "bench", "max_series": max_series, "rules": rules}
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(PagerDutyExporterConfig, raw, "exporters.pagerduty", issues)
    if issues:
        raise SystemExit(f"bad bench config: {issues}")
    return cfg  # type: ignore[no-any-return]


async def bench_round(series: int, metrics: int, rules: int, rounds: int, history: float, profile: bool) -> None:
    per_metric = series // metrics
    clock = FakeClock()
    settings = dataclasses.replace(nop_settings("pagerduty", Kind.EXPORTER, Signal.METRICS,
                                                telemetry=Telemetry(process_metrics=False)), clock=clock)
    exp = PagerDutyExporter(settings, config(make_rules(rules, metrics), series * 2),
                            wall_clock=lambda: 1.7e9 + clock())
    await exp.start(NopHost())
    steps = int(history / INTERVAL)
    began = time.perf_counter()
    ingest: list[float] = []
    for step in range(1, steps + 1):
        raw = build_request(metrics, per_metric, step)
        t0 = time.perf_counter()
        await exp.push(Payload(Signal.METRICS, raw=raw))
        ingest.append(time.perf_counter() - t0)
        clock.advance(INTERVAL)
    print(f"history: {exp.store.series_count} series × {steps} samples ({history / 60:g} min at {INTERVAL:g} s) "
          f"built in {time.perf_counter() - began:.1f} s; ingest of one export of every series "
          f"({metrics} × {per_metric} points): median {statistics.median(ingest) * 1000:.1f} ms")
    gc.collect()
    times, cpu = [], []
    profiler = cProfile.Profile() if profile else None
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        if profiler is not None and len(times) == 1:
            profiler.enable()
        await exp.evaluate()
        if profiler is not None:
            profiler.disable()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        clock.advance(INTERVAL)
        await exp.push(Payload(Signal.METRICS, raw=build_request(metrics, per_metric, steps + len(times))))
    await exp.shutdown()
    fired = sum(len(s.alerts) for s in exp.states.values())
    warm, warm_cpu = times[1:], cpu[1:]
    print(f"evaluation round, {len(exp.rules)} rules over {exp.store.series_count} series ({fired} alerts): "
          f"first {times[0] * 1000:.1f} ms (CPU {cpu[0] * 1000:.1f} ms); then median "
          f"{statistics.median(warm) * 1000:.1f} ms (CPU {statistics.median(warm_cpu) * 1000:.1f} ms), "
          f"max {max(warm) * 1000:.1f} ms (CPU {max(warm_cpu) * 1000:.1f} ms) over {len(warm)} rounds")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)


def bench_ingest(batches: int, reps: int, thrash: int, paths: list[str]) -> None:
    sys.path.insert(0, str(SHARED))
    import payloads

    from exporters.pagerduty import store as store_module

    referenced = {"agent.requests": 300.0, "gen_ai.client.operation.duration": 7500.0,
                  "gen_ai.client.token.usage": 88200.0, "process.memory.usage": 300.0}
    requests = payloads.make_payloads("metrics", 100, 32, 1)
    merged = [b"".join(requests[(i + j) % 32] for j in range(82)) for i in range(0, 32, 8)]  # 8,200 points each
    points = 82 * 100
    native = store_module._pdwire
    for path in paths:
        if path == "native" and native is None:
            print("native: exporters/pagerduty/_pdwire.c is not built (setup.py)")
            continue
        store_module._pdwire = native if path == "native" else None
        store = store_module.SeriesStore(referenced, resolution=INTERVAL, max_series=100_000, watch_start_ns=1)
        now = 1000.0
        for raw in merged:
            store.ingest(raw, now)
        best = math.inf
        sweep = bytearray(thrash << 20)
        for _ in range(reps):
            spent = 0.0
            for k in range(batches):
                now += 0.01
                if thrash:
                    sweep[::64]  # (every cache line of it read: what the rest of the daemon does to the caches)
                c0 = time.process_time()
                store.ingest(merged[k % len(merged)], now)
                spent += time.process_time() - c0
            best = min(best, spent / (batches * points))
        print(f"{path}: {best * 1e6:.3f} µs per point (CPU, best of {reps} × {batches} batches of {points} points; "
              f"{store.series_count} series{f'; {thrash} MB read before each batch' if thrash else ''})")
    store_module._pdwire = native


# The daemon with the Python ingest loop: exporters.pagerduty._pdwire made unimportable before it starts.
PYTHON_INGEST = ("{python} -c \"import sys; sys.modules['exporters.pagerduty._pdwire'] = None; "
                 "sys.argv[0] = 'otelpipe'; from otelpipe.cli import main; sys.exit(main())\"")


def bench_path(reps: int, duration: float, load: str, python_ingest: bool, baselines: list[str]) -> int:
    sys.path.insert(0, str(SHARED))
    import compare

    otelpipe = ROOT / ".venv" / "bin" / "otelpipe"
    env = "OP_GRPC=127.0.0.1:{grpc_port} OP_HTTP=127.0.0.1:{http_port} OP_SINK={sink_grpc}"
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    configs = ROOT / "bench" / "configs"
    sys.argv = [str(SHARED / "compare.py"), "--reps", str(reps), "--duration", str(duration), "--load", load,
                "--json-out", str(out / "pagerduty-on-vs-off.json"),
                "--collector", f"pagerduty_off=env {env} {otelpipe} run --config {configs}/pagerduty_off.yaml",
                "--collector", f"pagerduty_on=env {env} {otelpipe} run --config {configs}/pagerduty_on.yaml"]
    if python_ingest:  # the same, ingesting with the Python loop (what `on` was before the C pass)
        daemon = PYTHON_INGEST.format(python=ROOT / ".venv" / "bin" / "python")
        sys.argv += ["--collector", f"pagerduty_on_python=env {env} {daemon} run --config {configs}/pagerduty_on.yaml"]
    for baseline in baselines:  # the same, from another tree (PYTHONPATH comes before the editable install)
        tree = Path(baseline).resolve()
        sys.argv += ["--collector", f"pagerduty_on_{tree.name}=env PYTHONPATH={tree} {env} {otelpipe} run "
                                    f"--config {configs}/pagerduty_on.yaml"]
    print("+ compare.py", " ".join(sys.argv[1:]), flush=True)
    rc = int(compare.main() or 0)
    # on / off for every collector (compare.py prints the first two's ratios only, and as off / on)
    results = json.loads((out / "pagerduty-on-vs-off.json").read_text())["results"]
    cpu = {(r["collector"], r["rep"]): r["items_per_cpu_s"] for r in results if r.get("items_per_cpu_s")}
    names = sorted({name for name, _ in cpu if name != "pagerduty_off"})
    print("\nitems per CPU-second, on / off:")
    for name in names:
        paired = [cpu[name, rep] / cpu["pagerduty_off", rep] for rep in range(reps)
                  if (name, rep) in cpu and ("pagerduty_off", rep) in cpu]
        ons = [v for (n, _), v in cpu.items() if n == name]
        offs = [v for (n, _), v in cpu.items() if n == "pagerduty_off"]
        if paired:
            print(f"  {name:<22} per rep {', '.join(f'{x:.3f}' for x in paired)}; ratio of medians "
                  f"{statistics.median(ons) / statistics.median(offs):.3f}")
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("round")
    r.add_argument("--series", type=int, default=10_000)
    r.add_argument("--rules", type=int, default=100)
    r.add_argument("--metrics", type=int, default=20, help="metrics the series are spread over (a multiple of 4)")
    r.add_argument("--rounds", type=int, default=20)
    r.add_argument("--history", type=float, default=HISTORY, help="seconds of history before the rounds")
    r.add_argument("--profile", action="store_true", help="cProfile the second round")
    p = sub.add_parser("path")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--python-ingest", action="store_true",
                   help="also run `pagerduty_on` with the Python ingest loop (the C pass not imported)")
    p.add_argument("--baseline", metavar="DIR", action="append", default=[],
                   help="also run `pagerduty_on` from the tree in DIR (PYTHONPATH; repeatable)")
    p.add_argument("--load", default="otlp --signal metrics --protocol grpc --items-per-request 100 "
                                     "--procs 2 --channels 4 --concurrency 32")
    i = sub.add_parser("ingest")
    i.add_argument("--batches", type=int, default=40)
    i.add_argument("--reps", type=int, default=5)
    i.add_argument("--path", action="append", choices=["native", "python"], help="only this path (repeatable)")
    i.add_argument("--thrash", type=int, default=0, metavar="MB",
                   help="read MB megabytes before each batch (untimed): the caches as the running daemon leaves them")
    args = ap.parse_args()
    if args.what == "ingest":
        bench_ingest(args.batches, args.reps, args.thrash, args.path or ["native", "python"])
        return 0
    if args.what == "round":
        asyncio.run(bench_round(args.series, args.metrics, args.rules, args.rounds, args.history, args.profile))
        return 0
    return bench_path(args.reps, args.duration, args.load, args.python_ingest, args.baseline)


if __name__ == "__main__":
    raise SystemExit(main())

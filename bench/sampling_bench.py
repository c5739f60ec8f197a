#!/usr/bin/env python3
"""In-process throughput of the samplers and cardinality_limit, and tail sampling's memory at 50,000 traces.

Usage (from the project root):
    .venv/bin/python bench/sampling_bench.py [--seconds 3] [--pending 50000] [--only NAME]

Uses the shared agent-like payloads (../shared/bench/payloads.py: 100 spans per
request, traces of 9-13 spans, ~670 B/span; metrics with UUID-bearing routes).
Each case feeds pre-serialized requests as `Payload(raw=...)`, exactly as a
receiver hands them on, so the lazy protobuf decode is included; "+encode"
adds the downstream re-encode a mutating processor causes. Throughput is items
per CPU-second of this process (one core). The memory case runs in a fresh
subprocess and reports the RSS growth and tracemalloc's Python-heap peak while
50,000 traces are pending.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OTELPIPE_SHARED_BENCH", ROOT.parent / "shared" / "bench"))
sys.path[:0] = [str(ROOT), str(SHARED)]

import payloads as shared_payloads

from pipeline.component import Settings
from pipeline.config.types import decode_dataclass
from pipeline.model import Payload, Signal
from pipeline.testing import Sink, nop_settings
from processors.cardinality_limit import processor as cardinality_limit
from processors.sampling import probabilistic as probabilistic_sampler
from processors.sampling import tail as tail_sampling


class CountingSink(Sink):
    async def consume(self, payload: Payload) -> None:
        self.items += payload.items


def cfg(factory: object, raw: dict) -> object:
    issues: list = []
    out = decode_dataclass(factory.config_type, raw, "bench", issues)  # type: ignore[attr-defined]
    assert not issues, issues
    return out


def settings(name: str, signal: Signal, clock: Callable[[], float] | None = None) -> Settings:
    s = nop_settings(name, signal=signal)
    return dataclasses.replace(s, clock=clock) if clock else s


def distinct_trace_requests(n_requests: int, spans_per_request: int = 100) -> list[bytes]:
    """Serialized trace requests whose trace ids never repeat (the shared set has 32 distinct requests)."""
    base = [Signal.TRACES.request_type().FromString(b)
            for b in shared_payloads.make_payloads("traces", spans_per_request, count=32)]
    out = []
    for i in range(n_requests):
        req = Signal.TRACES.request_type()
        req.CopyFrom(base[i % len(base)])
        salt = (i // len(base)).to_bytes(4, "big")
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    s.trace_id = salt + s.trace_id[4:]
        out.append(req.SerializeToString())
    return out


def measure(name: str, items_per_call: int, call: Callable[[], object], seconds: float) -> dict:
    call()  # warm up
    gc.collect()
    n = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.process_time() - cpu0 < seconds:
        call()
        n += 1
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    return {"case": name, "items": n * items_per_call, "cpu_s": round(cpu, 3),
            "items_per_cpu_s": round(n * items_per_call / cpu), "items_per_wall_s": round(n * items_per_call / wall)}


def run_async(coro_factory: Callable[[], object]) -> Callable[[], object]:
    loop = asyncio.new_event_loop()
    return lambda: loop.run_until_complete(coro_factory())  # type: ignore[arg-type]


# -- cases ---------------------------------------------------------------------------------------

def bench_probabilistic(seconds: float) -> list[dict]:
    out = []
    traces = shared_payloads.make_payloads("traces", 100, count=32)
    logs = shared_payloads.make_payloads("logs", 100, count=32)
    for label, raw_cfg in (("proportional 25%", {"sampling_percentage": 25}),
                           ("proportional 100%", {"sampling_percentage": 100}),
                           ("hash_seed 25%", {"sampling_percentage": 25, "hash_seed": 7})):
        sampler = probabilistic_sampler.ProbabilisticSampler(
            settings("probabilistic_sampler", Signal.TRACES), cfg(probabilistic_sampler.FACTORY, raw_cfg))
        i = 0

        def one(encode: bool, sampler: probabilistic_sampler.ProbabilisticSampler = sampler) -> None:
            nonlocal i
            res = sampler.process(Payload(Signal.TRACES, raw=traces[i % 32], items=100))
            if encode and res is not None:
                res.serialize()
            i += 1

        out.append(measure(f"probabilistic_sampler traces {label}", 100, lambda: one(False), seconds))
        out.append(measure(f"probabilistic_sampler traces {label} +encode", 100, lambda: one(True), seconds))
    # Reference: decode alone (what any processor that looks at spans pays first).
    j = 0

    def decode_only() -> None:
        nonlocal j
        Payload(Signal.TRACES, raw=traces[j % 32], items=100).message  # noqa: B018
        j += 1

    out.append(measure("reference: decode only", 100, decode_only, seconds))
    logs_sampler = probabilistic_sampler.ProbabilisticSampler(
        settings("probabilistic_sampler", Signal.LOGS), cfg(probabilistic_sampler.FACTORY, {"sampling_percentage": 25}))
    k = 0

    def one_log() -> None:
        nonlocal k
        logs_sampler.process(Payload(Signal.LOGS, raw=logs[k % 32], items=100))
        k += 1

    out.append(measure("probabilistic_sampler logs proportional 25%", 100, one_log, seconds))
    return out


def bench_tail(seconds: float) -> list[dict]:
    now = [0.0]
    sink = CountingSink()
    proc = tail_sampling.FACTORY.create(
        settings("tail_sampling", Signal.TRACES, clock=lambda: now[0]),
        cfg(tail_sampling.FACTORY, {"decision_wait": "10s", "num_traces": 50_000, "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "slow", "type": "latency", "latency": {"threshold_ms": 4000}},
            {"name": "tokens", "type": "numeric_attribute",
             "numeric_attribute": {"key": "gen_ai.usage.input_tokens", "min_value": 29000}},
            {"name": "sample", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}}]}),
        sink)
    reqs = distinct_trace_requests(640)
    i = 0

    async def one() -> None:
        nonlocal i
        await proc.consume(Payload(Signal.TRACES, raw=reqs[i % len(reqs)], items=100))
        i += 1
        now[0] += 0.001
        if i % 10 == 0:
            await proc.tick(now[0] + 10)  # decide everything buffered so far (what the timer does)

    res = measure("tail_sampling consume+decide+forward (4 policies)", 100, run_async(one), seconds)
    # The shared load marks 8% of spans as errors, so ~64% of its traces contain one and are kept.
    res["kept_fraction"] = round(sink.items / max(i * 100, 1), 3)
    return [res]


def bench_cardinality(seconds: float) -> list[dict]:
    out = []
    metrics = shared_payloads.make_payloads("metrics", 100, count=32)
    for label, raw_cfg in (("default limit 2000", {}), ("limit 100 (folding)", {"max_series_per_metric": 100}),
                           ("limit 100 + drop_attributes", {"max_series_per_metric": 100,
                                                            "drop_attributes": ["http.route"]})):
        proc = cardinality_limit.FACTORY.create(settings("cardinality_limit", Signal.METRICS),
                                                cfg(cardinality_limit.FACTORY, raw_cfg), CountingSink())
        i = 0

        def one(encode: bool, proc: cardinality_limit.CardinalityLimitProcessor = proc) -> None:
            nonlocal i
            res = proc.process(Payload(Signal.METRICS, raw=metrics[i % 32], items=100))
            if encode and res is not None:
                res.serialize()
            i += 1

        out.append(measure(f"cardinality_limit {label}", 100, lambda: one(False), seconds))
        out.append(measure(f"cardinality_limit {label} +encode", 100, lambda: one(True), seconds))
    return out


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory_child(pending: int) -> dict:
    """Hold `pending` traces in tail sampling (never decided) and report the memory they take."""
    per_request = 100
    reqs = distinct_trace_requests(pending // 9 + 64, per_request)  # traces of 9-13 spans, ~10 per request
    proc = tail_sampling.FACTORY.create(
        settings("tail_sampling", Signal.TRACES, clock=lambda: 0.0),
        cfg(tail_sampling.FACTORY, {"num_traces": 10 * pending}), CountingSink())
    gc.collect()
    rss0 = rss_kib()
    tracemalloc.start()
    loop = asyncio.new_event_loop()
    spans = 0
    for raw in reqs:
        if proc.pending_traces >= pending:
            break
        loop.run_until_complete(proc.consume(Payload(Signal.TRACES, raw=raw, items=per_request)))
        spans += per_request
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    rss1 = rss_kib()
    payload_bytes = sum(len(r) for r in reqs[: spans // per_request])
    return {"case": f"tail_sampling memory at {proc.pending_traces} pending traces",
            "pending_traces": proc.pending_traces, "pending_spans": spans,
            "serialized_input_mib": round(payload_bytes / 2**20, 1),
            "rss_growth_mib": round((rss1 - rss0) / 1024, 1),
            "python_heap_peak_mib": round(peak / 2**20, 1),
            "bytes_per_pending_span_rss": round((rss1 - rss0) * 1024 / max(spans, 1))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="CPU seconds per case")
    ap.add_argument("--pending", type=int, default=50_000)
    ap.add_argument("--only", choices=["probabilistic", "tail", "cardinality", "memory"])
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return 0
    from google.protobuf.internal import api_implementation
    print(f"# python {sys.version.split()[0]}, protobuf backend {api_implementation.Type()}, "
          f"{os.cpu_count()} CPUs, {args.seconds:g} CPU-s per case", flush=True)
    results = []
    cases = {"probabilistic": bench_probabilistic, "tail": bench_tail, "cardinality": bench_cardinality}
    for name, fn in cases.items():
        if args.only in (None, name):
            for r in fn(args.seconds):
                print(json.dumps(r), flush=True)
                results.append(r)
    if args.only in (None, "memory"):
        child = subprocess.run([sys.executable, __file__, "--memory-child", str(args.pending)],
                               capture_output=True, text=True, check=True)
        print(child.stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Spans per CPU-second through the filter, transform, attributes and resource processors, on the shared agent load.

Each case starts from the wire bytes a receiver hands on (a `Payload` holding only raw bytes) and
ends with the wire bytes an exporter sends (`payload.serialize()`), so decode and re-encode are
counted whenever a processor causes them (see bench/processors_bench.py):

  passthrough          no processor
  filter untouched     conditions no span of the load meets (told from the bytes: not decoded)
  transform untouched  3 statements whose where clauses / keys the load never has (not decoded)
  transform 3 stmts    a typical transform that touches every request: copy a resource attribute onto
                       each span, normalize UUIDs in http.route, delete the authorization header
  filter drop DB spans IsMatch(span.name, "^SELECT ") drops the database spans (decoded, re-encoded)
  attributes upsert    one upsert on every span
  resource upsert      one upsert on every resource

CPU time is `time.process_time()`; the figure is the median of `--reps` loops of `--seconds` each.

  python bench/ottl_bench.py --items-per-request 100
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED_BENCH = os.environ.get("OTELPIPE_SHARED_BENCH", os.path.join(os.path.dirname(ROOT), "shared", "bench"))
if not os.path.isdir(SHARED_BENCH):
    SHARED_BENCH = "/work/shared/bench"
sys.path.insert(0, SHARED_BENCH)

import payloads

from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.model import Payload, Signal
from processors.attributes.processor import AttributesConfig, AttributesProcessor
from processors.filter import Filter, FilterConfig
from processors.ottl.runner import ErrorHandler
from processors.resource import ResourceConfig, ResourceProcessor
from processors.transform import Transform, TransformConfig

Proc = Callable[[Payload], "Payload | None"]

UNTOUCHED_FILTER = ['span.name == "healthcheck"', 'IsMatch(span.name, "^GET /health")']
UNTOUCHED_TRANSFORM = [
    'set(span.attributes["sampled.out"], true) where span.name == "healthcheck"',
    'delete_key(span.attributes, "password")',
    'set(span.status.code, STATUS_CODE_ERROR) where span.attributes["error.type"] == "timeout"',
]
TYPICAL_TRANSFORM = [
    'set(span.attributes["deployment.environment"], resource.attributes["deployment.environment.name"])',
    'replace_pattern(span.attributes["http.route"], "/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", '
    '"/{id}")',
    'delete_key(span.attributes, "http.request.header.authorization")',
]


def decode(cls: type, raw: dict[str, object]) -> object:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(cls, raw, "bench", issues)
    assert not issues, issues
    return cfg


def on_error() -> ErrorHandler:
    return ErrorHandler(logging.getLogger("bench"), time.monotonic)


def transform(statements: list[str]) -> Transform:
    cfg = decode(TransformConfig, {"trace_statements": statements})
    assert isinstance(cfg, TransformConfig)
    return Transform(cfg.groups(Signal.TRACES)[0], Signal.TRACES, on_error())


def filter_(conditions: list[str]) -> Filter:
    cfg = decode(FilterConfig, {"trace_conditions": conditions})
    assert isinstance(cfg, FilterConfig)
    return Filter(cfg.groups(Signal.TRACES)[0], Signal.TRACES, on_error())


def run_case(bodies: list[bytes], counts: list[int], procs: list[Proc], seconds: float) -> float:
    """Spans in per CPU-second for as many requests as fit in `seconds`."""
    n = items = 0
    k = len(bodies)
    c0 = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(8):
            i = n % k
            p: Payload | None = Payload(Signal.TRACES, raw=bodies[i], items=counts[i])
            for proc in procs:
                assert p is not None
                p = proc(p)
            if p is not None:
                p.serialize()
            items += counts[i]
            n += 1
    return items / (time.process_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items-per-request", type=int, default=100)
    ap.add_argument("--payloads", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from google.protobuf.internal import api_implementation

    bodies = payloads.make_payloads("traces", args.items_per_request, count=args.payloads, seed=7)
    random.Random(1).shuffle(bodies)
    counts = [payloads.count_items("traces", b) for b in bodies]
    per_request = sum(counts) / len(counts)
    print(f"python {sys.version.split()[0]}, protobuf backend {api_implementation.Type()}, traces, "
          f"{args.items_per_request} spans/request, {sum(map(len, bodies)) / len(bodies):,.0f} B/request")
    untouched_t, untouched_f = transform(UNTOUCHED_TRANSFORM), filter_(UNTOUCHED_FILTER)
    cases: dict[str, list[Proc]] = {
        "passthrough": [],
        "filter untouched": [untouched_f],
        "transform untouched": [untouched_t],
        "transform 3 stmts": [transform(TYPICAL_TRANSFORM)],
        "filter drop DB spans": [filter_(['IsMatch(span.name, "^SELECT ")'])],
        "attributes upsert": [AttributesProcessor(
            decode(AttributesConfig, {"actions": [{"key": "team", "value": "agents", "action": "upsert"}]}),  # type: ignore[arg-type]
            Signal.TRACES)],
        "resource upsert": [ResourceProcessor(
            decode(ResourceConfig, {"attributes": [{"key": "team", "value": "agents", "action": "upsert"}]}),  # type: ignore[arg-type]
            Signal.TRACES)],
    }
    for name, procs in cases.items():
        rates = [run_case(bodies, counts, procs, args.seconds) for _ in range(args.reps)]
        med = statistics.median(rates)
        print(f"  {name:<22} {med:>12,.0f} spans/cpu-s  [{min(rates):,.0f} - {max(rates):,.0f}]"
              f"  {1e6 * per_request / med:9.1f} us/request")
    print(f"requests not decoded: filter untouched {untouched_f.skipped}, transform untouched {untouched_t.skipped}")


if __name__ == "__main__":
    main()

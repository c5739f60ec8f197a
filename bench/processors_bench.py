#!/usr/bin/env python3
"""Spans per CPU-second through the privacy processors alone, on the shared agent load.

Each case starts from the wire bytes a receiver hands on (a `Payload` holding
only raw bytes, as the OTLP receiver makes it) and ends with the wire bytes an
exporter sends (`payload.serialize()`), so decode and re-encode are counted
whenever a processor causes them:

  passthrough     no processor (serialize returns the cached bytes)
  uuid_normalize  the processor with its default config
  secret_mask     the processor with its default config
  both            secret_mask then uuid_normalize (the order of DESIGN.md's traces pipeline)

`--clean` also runs the same cases on requests with every secret and id
removed (only the prefilter runs). CPU time is `time.process_time()`; the figure
is the median of `--reps` loops of `--seconds` each.

  python bench/processors_bench.py --signal traces --items-per-request 100
"""
from __future__ import annotations

import argparse
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

import payloads  # noqa: E402  (the shared load generator)

from pipeline.model import Payload, Signal  # noqa: E402
from processors.secret_mask import SecretMask, SecretMaskConfig  # noqa: E402
from processors.uuid_normalize import UUIDNormalize, UUIDNormalizeConfig  # noqa: E402

SIGNALS = {"traces": Signal.TRACES, "metrics": Signal.METRICS, "logs": Signal.LOGS}


def clean_bodies(signal: Signal, bodies: list[bytes]) -> list[bytes]:
    """The same requests with secrets, ids and credential keys replaced by plain words."""
    out = []
    for b in bodies:
        msg = signal.request_type.FromString(b)
        _scrub(msg)
        out.append(msg.SerializeToString())
    return out


def _scrub(msg) -> None:  # type: ignore[no-untyped-def]
    """Remove whatever the prefilters anchor on, so the clean case measures the no-candidate path."""
    import re

    rx = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|/[0-9]+|"
                    r"[Aa]uthorization|[Tt]oken|[Ss]ecret|api_key|sk-|AKIA|eyJ|://|[0-9]{13,}|[0-9a-fA-F]{16,}")

    def fix(v) -> None:  # type: ignore[no-untyped-def]
        if v.string_value:
            v.string_value = rx.sub("x", v.string_value)
        elif v.WhichOneof("value") == "array_value":
            for x in v.array_value.values:
                fix(x)

    def fix_attrs(attrs) -> None:  # type: ignore[no-untyped-def]
        for kv in attrs:
            kv.key = rx.sub("x", kv.key)
            fix(kv.value)

    for field in ("resource_spans", "resource_logs", "resource_metrics"):
        for r in getattr(msg, field, []):
            fix_attrs(r.resource.attributes)
            for s in getattr(r, "scope_spans", []):
                for sp in s.spans:
                    sp.name = rx.sub("x", sp.name)
                    fix_attrs(sp.attributes)
                    for ev in sp.events:
                        fix_attrs(ev.attributes)
            for s in getattr(r, "scope_logs", []):
                for lr in s.log_records:
                    fix(lr.body)
                    fix_attrs(lr.attributes)
            for s in getattr(r, "scope_metrics", []):
                for m in s.metrics:
                    kind = m.WhichOneof("data")
                    for dp in getattr(m, kind).data_points:
                        fix_attrs(dp.attributes)


def run_case(signal: Signal, bodies: list[bytes], items: int, procs: list[Callable[[Payload], Payload]],
             seconds: float) -> float:
    """Items per CPU-second for as many requests as fit in `seconds`."""
    n = 0
    k = len(bodies)
    c0 = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(8):
            p = Payload(signal, raw=bodies[n % k], items=items)
            for proc in procs:
                p = proc(p)
            p.serialize()
            n += 1
    return n * items / (time.process_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--signal", default="traces", choices=sorted(SIGNALS))
    ap.add_argument("--items-per-request", type=int, default=100)
    ap.add_argument("--payloads", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clean", action="store_true", help="also measure requests with nothing to mask")
    args = ap.parse_args()
    from google.protobuf.internal import api_implementation

    signal = SIGNALS[args.signal]
    bodies = payloads.make_payloads(args.signal, args.items_per_request, count=args.payloads, seed=7)
    random.Random(1).shuffle(bodies)
    print(f"python {sys.version.split()[0]}, protobuf backend {api_implementation.Type()}, "
          f"{args.signal}, {args.items_per_request} items/request, "
          f"{sum(map(len, bodies)) / len(bodies):,.0f} B/request")
    sets = [("shared load", bodies)]
    if args.clean:
        sets.append(("clean (nothing to mask)", clean_bodies(signal, bodies)))
    for label, bs in sets:
        cases: dict[str, list[Callable[[Payload], Payload]]] = {
            "passthrough": [],
            "uuid_normalize": [UUIDNormalize(UUIDNormalizeConfig(), signal)],
            "secret_mask": [SecretMask(SecretMaskConfig(), signal)],
            "both": [SecretMask(SecretMaskConfig(), signal), UUIDNormalize(UUIDNormalizeConfig(), signal)],
        }
        print(f"\n{label}:")
        for name, procs in cases.items():
            rates = [run_case(signal, bs, args.items_per_request, procs, args.seconds) for _ in range(args.reps)]
            med = statistics.median(rates)
            print(f"  {name:<15} {med:>12,.0f} {signal.item_name}/cpu-s  [{min(rates):,.0f} - {max(rates):,.0f}]"
                  f"  {1e6 * args.items_per_request / med:9.1f} us/request")


if __name__ == "__main__":
    main()

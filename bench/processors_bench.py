#!/usr/bin/env python3
"""Spans per CPU-second through the privacy processors alone, on the shared agent load.

Each case starts from the wire bytes a receiver hands on (a `Payload` holding
only raw bytes, as the OTLP receiver makes it) and ends with the wire bytes an
exporter sends (`payload.serialize()`), so decode and re-encode are counted
whenever a processor causes them:

  passthrough     no processor (serialize returns the cached bytes)
  uuid_normalize  the processor with its default config
  secret_mask     the processor with its default config
  both            secret_mask then uuid_normalize, each its own walk
  fused           the two in one scan and one walk (what the graph runs when they are adjacent)

`--clean` also runs the cases on requests holding only the load's LLM `chat`
spans (and no resource attributes): agent spans with nothing to mask or normalize.
`--scanner` picks the anchor scanner (secret_mask's, and the one with which the Python walker finds
uuid_normalize's id anchors; libhs: libhyperscan from C; binding: the hyperscan Python binding; re: CPython
`re`, where hyperscan is not installed); `--walker python` the pure-Python wire walker
(the fallback where the C extension processors/privacy/_wirewalk.c is not built); `--regex-pairs` has the C
walker run the detector regex for credential_pair's `key=value` form instead of its own `pair_match`. CPU
time is `time.process_time()`; the figure is the median of `--reps` loops of `--seconds` each.

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

import payloads

from pipeline.model import Payload, Signal
from processors.privacy.secret_mask import SecretMask, SecretMaskConfig
from processors.privacy.stage import Fused
from processors.privacy.uuid_normalize import UUIDNormalize, UUIDNormalizeConfig

SIGNALS = {"traces": Signal.TRACES, "metrics": Signal.METRICS, "logs": Signal.LOGS}


def clean_bodies(signal: Signal, bodies: list[bytes]) -> list[bytes]:
    """The same requests with only the LLM `chat` spans kept: real agent spans with nothing to mask."""
    out = []
    for b in bodies:
        msg = signal.request_type.FromString(b)
        for rs in msg.resource_spans:
            rs.resource.ClearField("attributes")
            for ss in rs.scope_spans:
                keep = [s for s in ss.spans if s.name.startswith("chat ") and not s.events]
                del ss.spans[:]
                ss.spans.extend(keep)
        out.append(msg.SerializeToString())
    return out


def run_case(signal: Signal, bodies: list[bytes], counts: list[int], procs: list[Callable[[Payload], Payload]],
             seconds: float) -> float:
    """Items per CPU-second for as many requests as fit in `seconds`."""
    n = items = 0
    k = len(bodies)
    c0 = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(8):
            i = n % k
            p = Payload(signal, raw=bodies[i], items=counts[i])
            for proc in procs:
                p = proc(p)
            p.serialize()
            items += counts[i]
            n += 1
    return items / (time.process_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--signal", default="traces", choices=sorted(SIGNALS))
    ap.add_argument("--items-per-request", type=int, default=100)
    ap.add_argument("--payloads", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clean", action="store_true", help="also measure requests with nothing to mask")
    ap.add_argument("--scanner", default="auto", choices=["auto", "libhs", "binding", "re"],
                    help="the anchor scanner (secret_mask's, and the Python walker's id anchors for "
                         "uuid_normalize; auto: the best installed)")
    ap.add_argument("--walker", default="auto", choices=["auto", "c", "python"],
                    help="wire walker of both processors (auto: the C one when built)")
    ap.add_argument("--regex-pairs", action="store_true",
                    help="the C walker runs the detector regex for credential_pair too (as before pair_match)")
    args = ap.parse_args()
    if args.regex_pairs:
        from processors.privacy import masker

        masker.pair_groups = lambda rx, enabled, keys: (0, 0)
    from google.protobuf.internal import api_implementation

    signal = SIGNALS[args.signal]
    bodies = payloads.make_payloads(args.signal, args.items_per_request, count=args.payloads, seed=7)
    random.Random(1).shuffle(bodies)
    print(f"python {sys.version.split()[0]}, protobuf backend {api_implementation.Type()}, "
          f"{args.signal}, {args.items_per_request} items/request, "
          f"{sum(map(len, bodies)) / len(bodies):,.0f} B/request")
    sets = [("shared load", bodies)]
    if args.clean and signal is Signal.TRACES:
        sets.append(("clean: only the chat spans (nothing to mask)", clean_bodies(signal, bodies)))
    for label, bs in sets:
        counts = [payloads.count_items(args.signal, b) for b in bs]
        per_request = sum(counts) / len(counts)
        native = {"auto": None, "c": True, "python": False}[args.walker]
        sm = SecretMask(SecretMaskConfig(), signal, scanner_backend=args.scanner, native=native)
        un = UUIDNormalize(UUIDNormalizeConfig(), signal, native=native, scanner_backend=args.scanner)
        cases: dict[str, list[Callable[[Payload], Payload]]] = {
            "passthrough": [],
            "uuid_normalize": [un],
            "secret_mask": [sm],
            "both": [sm, un],
        }
        if signal is not Signal.METRICS:
            cases["fused"] = [Fused(sm.single, un.single)]
        walker = "c" if sm.single.walker.native else "python"
        print(f"\n{label} (scanner: {sm.scanner.backend}, walker: {walker}):")
        for name, procs in cases.items():
            rates = [run_case(signal, bs, counts, procs, args.seconds) for _ in range(args.reps)]
            med = statistics.median(rates)
            print(f"  {name:<15} {med:>12,.0f} {signal.item_name}/cpu-s  [{min(rates):,.0f} - {max(rates):,.0f}]"
                  f"  {1e6 * per_request / med:9.1f} us/request ({per_request:.0f} {signal.item_name})")


if __name__ == "__main__":
    main()

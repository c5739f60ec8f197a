#!/usr/bin/env python3
"""secret_mask on one hostile string: a piece repeated to `--size` bytes in one span attribute, CPU ms per
request on each walker. Anchors repeated inside one long key run (`token-token-...`, `api_keyX...`) or value
run (`tokenizer=tokenizer=...`) once made the walk quadratic in the string; both walkers now keep each run's
answer for every position inside it. The same pairs in a string that is not ASCII (`tokenizer=é`), which
both walkers hand to `Masker.mask_text`, and colons after five digits and an `A` that are not quite a
Telegram token (`12345:Abbb...`), were quadratic too until mask_text and both walkers stopped matching
pairs whose key the key-name rule refuses (see bench/RESULTS.md).

    .venv/bin/python bench/privacy_hostile.py [--size 100000] [--walker c|python|both]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.model import Payload, Signal
from processors.privacy.secret_mask import SecretMask, SecretMaskConfig

PIECES = ["tokenizer=", "token-", "api_keyX", "token", "token=-----BEGIN ", 'token=\\"', "x://a:", "Bearer ", "sk-",
          "tokenizer=é", "12345:A" + "b" * 34, "é12345:A" + "b" * 34]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--walker", default="both", choices=["c", "python", "both"])
    args = ap.parse_args()
    walkers = {"c": [True], "python": [False], "both": [True, False]}[args.walker]
    for native in walkers:
        sm = SecretMask(SecretMaskConfig(), Signal.TRACES, native=native)
        print(f"walker {'c' if sm.single.walker.native else 'python'}, {args.size:,} bytes per string:")
        for piece in PIECES:
            req = ExportTraceServiceRequest()
            span = req.resource_spans.add().scope_spans.add().spans.add(name="x")
            span.attributes.add(key="note").value.string_value = piece * (args.size // len(piece))
            raw = req.SerializeToString()
            c0 = time.process_time()
            sm(Payload(Signal.TRACES, raw=raw, items=1)).serialize()
            print(f"  {piece!r:22} {1e3 * (time.process_time() - c0):10.1f} ms")


if __name__ == "__main__":
    main()

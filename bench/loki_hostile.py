#!/usr/bin/env python3
"""The loki exporter's push-body building on hostile requests: CPU ms for one request of `--records`
records that make as many streams (each its own resource, or each its own severity text), with the C
renderer and with the Python walk. Both once did work per record in proportion to the streams seen so
far (the renderer searched its streams linearly; the Python walk flushed every stream every 256
records): a 4 MB request took 3-6 s. Now both are linear; what is left is Python's work per stream
(labels, the stream's key, its JSON), about 20 µs.

    .venv/bin/python bench/loki_hostile.py [--records 80000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from exporters.loki.config import LokiExporterConfig
from exporters.loki.push import PushBuilder, encode
from pipeline.testing import fixed64, kv, ld


def resources(n: int) -> bytes:
    """n ResourceLogs, each a resource of its own (service.name) with one record."""
    return b"".join(ld(1, ld(1, ld(1, kv("service.name", f"s{i}").SerializeToString()))
                       + ld(2, ld(2, fixed64(1, 1) + ld(5, ld(1, b"x"))))) for i in range(n))


def severities(n: int) -> bytes:
    """One resource and scope with n records, each with a severity text of its own."""
    return ld(1, ld(2, b"".join(ld(2, fixed64(1, 1) + ld(3, f"L{i}".encode()) + ld(5, ld(1, b"x")))
                                for i in range(n))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=80_000)
    args = ap.parse_args()
    cfg = LokiExporterConfig(endpoint="http://loki:3100/loki/api/v1/push")
    for name, make in (("a resource per record", resources), ("a severity per record", severities)):
        for n in (args.records // 16, args.records // 4, args.records):
            raw = make(n)
            for native in (True, False):
                builder = PushBuilder(cfg, native=native)
                c0 = time.process_time()
                batch = builder.build(raw)
                encode(batch.streams)
                streams = len(batch.streams)
                print(f"{name:22} {n:7,} records, {len(raw) / 1e6:5.2f} MB, {'C' if builder.native else 'Python':6}"
                      f" {1e3 * (time.process_time() - c0):8.1f} ms ({streams:,} streams)")


if __name__ == "__main__":
    main()

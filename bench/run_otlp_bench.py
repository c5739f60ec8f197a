#!/usr/bin/env python3
"""OTLP gRPC in → batch → OTLP gRPC out: otelpipe side by side with rotel, via ../shared/bench/compare.py.

Usage (from the project root, after `make setup` and `pip install rotel`):
    .venv/bin/python bench/run_otlp_bench.py [--reps 3] [--duration 15] [--config bench/configs/otlp_batch_otlp.yaml]
Prints compare.py's report and writes its JSON next to this file (bench/out/).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OTELPIPE_SHARED_BENCH", ROOT.parent / "shared" / "bench"))


def rotel_binary() -> str:
    import rotel

    path = Path(rotel.__file__).parent / "rotel-agent"
    if not path.exists():
        raise SystemExit("rotel's binary not found; `pip install rotel`")
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--rate", type=float, default=0)
    ap.add_argument("--config", default=str(ROOT / "bench" / "configs" / "otlp_batch_otlp.yaml"))
    ap.add_argument("--name", default="otelpipe")
    ap.add_argument("--load", default="otlp --signal traces --protocol grpc --items-per-request 100 "
                                      "--procs 2 --channels 4 --concurrency 32")
    ap.add_argument("--no-rotel", action="store_true")
    ap.add_argument("--env", default="", help="extra VAR=value settings for otelpipe")
    args = ap.parse_args()
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    otelpipe = str(ROOT / ".venv" / "bin" / "otelpipe")
    cmd = [sys.executable, str(SHARED / "compare.py"), "--reps", str(args.reps), "--duration", str(args.duration),
           "--load", args.load, "--json-out", str(out / f"{args.name}-vs-rotel.json"),
           "--collector", f"{args.name}=env {args.env} OP_GRPC=127.0.0.1:{{grpc_port}} OP_HTTP=127.0.0.1:{{http_port}} "
                          f"OP_SINK={{sink_grpc}} {otelpipe} run --config {args.config}"]
    if not args.no_rotel:
        cmd += ["--collector", f"rotel={rotel_binary()} start --otlp-grpc-endpoint 127.0.0.1:{{grpc_port}} "
                               "--otlp-http-endpoint 127.0.0.1:{http_port} --exporter otlp "
                               "--otlp-exporter-endpoint {sink_grpc_url} --otlp-exporter-compression none "
                               "--pid-file {run_dir}/rotel.pid --log-file {run_dir}/rotel.log"]
    if args.rate:
        cmd += ["--rate", str(args.rate)]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())

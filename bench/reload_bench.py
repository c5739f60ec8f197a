"""Reload under load: time from SIGHUP to the new config serving, refused requests, lost and duplicated spans.

Starts the shared counting sink (../shared/bench/sink.py), then for each otelpipe tree given (`--tree
NAME=DIR`, e.g. the code before and after a change, run from /tmp copies) an otelpipe daemon from that
tree's `python -m otelpipe`, and drives OTLP/gRPC traces at a fixed rate with the shared load generator
while it sends SIGHUP `--reloads` times, each with a changed exporter setting (the exporter's
`timeout` alternates, so the exporter is replaced and its queue handed over). For each reload it
measures the time from the signal to `otelpipe_config_reloads_total{result="ok"}` moving on the admin
server (polled every 5 ms), and at the end the load generator's errors (refused requests), the spans
acknowledged to it and the spans the sink counted. Trees run one after the other, same load, same
machine, in one invocation: compare them as ratios.

    python bench/reload_bench.py --tree before=/tmp/before --tree after=/tmp/after --rate 20000 --reloads 5
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"

CONFIG = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{grpc}"}}}}}}
processors:
  batch: {{send_batch_size: 8192, timeout: 200ms}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink}"
    tls: {{insecure: true}}
    timeout: {timeout}s
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
  telemetry: {{metrics: {{address: "127.0.0.1:{admin}"}}, logs: {{level: warn}}}}
  shutdown_timeout: 10s
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def reloads_ok(admin: int) -> float:
    for line in get(f"http://127.0.0.1:{admin}/metrics").splitlines():
        if line.startswith("otelpipe_config_reloads_total") and 'result="ok"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_ready(admin: int, proc: subprocess.Popen[bytes], limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"otelpipe exited with {proc.returncode}")
        try:
            get(f"http://127.0.0.1:{admin}/readyz")
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("otelpipe not ready")


def sink_stats(port: int) -> dict[str, int]:
    return json.loads(get(f"http://127.0.0.1:{port}/stats"))  # type: ignore[no-any-return]


def run_tree(name: str, tree: Path, args: argparse.Namespace, sink_grpc: int, sink_http: int) -> dict[str, object]:
    grpc, admin = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"reload-{name}-"))
    cfg = workdir / "otelpipe.yaml"
    cfg.write_text(CONFIG.format(grpc=grpc, sink=sink_grpc, admin=admin, timeout=5))
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{sink_http}/reset", method="POST"), timeout=5)
    proc = subprocess.Popen([sys.executable, "-m", "otelpipe", "--config", str(cfg)], cwd=tree,
                            stdout=subprocess.DEVNULL, stderr=(workdir / "otelpipe.log").open("wb"),
                            start_new_session=True)
    try:
        wait_ready(admin, proc)
        load = subprocess.Popen(
            [sys.executable, str(SHARED / "loadgen.py"), "otlp", "--signal", "traces", "--protocol", "grpc",
             "--endpoint", f"127.0.0.1:{grpc}", "--items-per-request", "100", "--rate", str(args.rate),
             "--duration", str(args.duration), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        switch_ms: list[float] = []
        time.sleep(args.duration / (args.reloads + 2))
        for i in range(args.reloads):
            cfg.write_text(CONFIG.format(grpc=grpc, sink=sink_grpc, admin=admin, timeout=6 + i % 2))
            before = reloads_ok(admin)
            t0 = time.monotonic()
            os.kill(proc.pid, signal.SIGHUP)
            while reloads_ok(admin) <= before:
                if time.monotonic() - t0 > 60:
                    raise SystemExit(f"{name}: reload {i} did not finish within 60 s")
                time.sleep(0.005)
            switch_ms.append((time.monotonic() - t0) * 1000)
            time.sleep(args.duration / (args.reloads + 2))
        out, _ = load.communicate(timeout=args.duration + 60)
        result = json.loads(out)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        stats = sink_stats(sink_http)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    acked = int(result.get("ok_items", 0))
    received = int(stats["items"].get("traces", 0))
    return {"tree": name, "switch_ms": [round(x, 1) for x in switch_ms],
            "switch_ms_max": round(max(switch_ms), 1), "errors": result.get("errors", {}),
            "acked_spans": acked, "sink_spans": received, "lost": max(acked - received, 0),
            "extra": max(received - acked, 0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", required=True, help="NAME=DIR of an otelpipe checkout")
    p.add_argument("--rate", type=int, default=20000, help="spans per second")
    p.add_argument("--duration", type=float, default=12.0)
    p.add_argument("--reloads", type=int, default=5)
    args = p.parse_args()
    sink_grpc, sink_http = free_port(), free_port()
    sink = subprocess.Popen([sys.executable, str(SHARED / "sink.py"), "--grpc-port", str(sink_grpc),
                             "--http-port", str(sink_http), "--max-seconds", "600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                sink_stats(sink_http)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("sink did not start") from None
                time.sleep(0.05)
        for spec in args.tree:
            name, _, path = spec.partition("=")
            print(json.dumps(run_tree(name, Path(path), args, sink_grpc, sink_http)), flush=True)
    finally:
        os.killpg(sink.pid, signal.SIGTERM)
        sink.wait(timeout=10)


if __name__ == "__main__":
    main()

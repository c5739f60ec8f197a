"""Soak: minutes of steady load at 70 % of the measured maximum with one backend flapping; RSS and loss.

Issue 14 asks that otelpipe's memory stay flat and nothing acknowledged be lost over a long run while
a backend comes and goes. This starts two shared counting sinks (../shared/bench/sink.py), one that
stays up and one that is stopped (SIGTERM: it prints its counters) and restarted on the same ports
every `--flap-every` seconds for `--flap-down` seconds, and an otelpipe daemon from `--tree` (a
checkout or a `git archive` copy with its C parts built) fanning traces out to both through `batch`
and two `otlp` exporters, the flapping one optionally with a persistent queue (`--storage`).

First it calibrates: the shared load generator runs flat out for `--calibrate` seconds and the soak
rate is `--fraction` of the spans it got acknowledged per second (or pass `--rate`). Then the soak:
the load generator at that rate for `--duration` seconds while otelpipe's RSS is sampled every
second from /proc. After the load stops it waits (bounded) for both sinks to catch up, stops
everything and prints one JSON line: the rate, acknowledged spans, spans at each sink (the flapping
one summed over its lives), lost and duplicated spans per sink, and RSS at each quarter of the soak.

    cd /tmp && python /work/main/bench/soak_bench.py --tree /tmp/soak_tree --duration 180
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
from collections.abc import Callable
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/bench")

CONFIG = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{grpc}"}}}}}}
processors:
  batch: {{send_batch_size: 8192, timeout: 200ms}}
exporters:
  otlp/steady:
    endpoint: "127.0.0.1:{steady}"
    tls: {{insecure: true}}
  otlp/flapping:
    endpoint: "127.0.0.1:{flapping}"
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 200ms, max_interval: 2s, max_elapsed_time: 0s}}
    sending_queue: {{queue_size: 100000{storage}}}
{extensions}
service:
{service_extensions}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp/steady, otlp/flapping]}}
  telemetry: {{metrics: {{address: "127.0.0.1:{admin}"}}, logs: {{level: warn}}}}
  shutdown_timeout: 30s
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def post(url: str) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as r:
        return r.read().decode()


def wait_for(check: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


class Sink:
    """One shared counting sink on fixed ports; restartable, its counts summed over its lives."""

    def __init__(self) -> None:
        self.grpc, self.http = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.past = 0

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SHARED / "sink.py"), "--grpc-port", str(self.grpc),
                                      "--http-port", str(self.http), "--max-seconds", "3600"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: bool(get(f"http://127.0.0.1:{self.http}/stats")), 30, "the sink")

    def live(self) -> int:
        return int(json.loads(get(f"http://127.0.0.1:{self.http}/stats"))["items"].get("traces", 0))

    def total(self) -> int:
        return self.past + (self.live() if self.proc is not None else 0)

    def reset(self) -> None:
        post(f"http://127.0.0.1:{self.http}/reset")
        self.past = 0

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        finals = [json.loads(ln)["final"] for ln in out.decode().splitlines() if ln.startswith('{"final"')]
        self.past += int(finals[-1]["items"].get("traces", 0)) if finals else 0
        self.proc = None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def loadgen(grpc: int, rate: float, duration: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SHARED / "loadgen.py"), "otlp", "--signal", "traces", "--protocol", "grpc",
         "--endpoint", f"127.0.0.1:{grpc}", "--items-per-request", "100", "--rate", str(rate),
         "--duration", str(duration), "--procs", "1", "--channels", "2", "--concurrency", "16", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", required=True, help="an otelpipe checkout (run with cwd there)")
    p.add_argument("--duration", type=float, default=180.0, help="soak seconds")
    p.add_argument("--calibrate", type=float, default=10.0, help="seconds of flat-out load to find the maximum")
    p.add_argument("--fraction", type=float, default=0.7)
    p.add_argument("--rate", type=float, default=0, help="spans/s (skips calibration)")
    p.add_argument("--flap-every", type=float, default=30.0)
    p.add_argument("--flap-down", type=float, default=10.0)
    p.add_argument("--storage", action="store_true", help="persistent queue on the flapping exporter")
    args = p.parse_args()

    steady, flapping = Sink(), Sink()
    grpc, admin = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    storage = f", storage: {work / 'queue'}" if args.storage else ""
    cfg = work / "otelpipe.yaml"
    cfg.write_text(CONFIG.format(grpc=grpc, steady=steady.grpc, flapping=flapping.grpc, admin=admin,
                                 storage=storage, extensions="", service_extensions=""))
    steady.start()
    flapping.start()
    proc = subprocess.Popen([sys.executable, "-m", "otelpipe", "--config", str(cfg)], cwd=args.tree,
                            stdout=subprocess.DEVNULL, stderr=(work / "otelpipe.log").open("wb"),
                            start_new_session=True)
    try:
        wait_for(lambda: bool(get(f"http://127.0.0.1:{admin}/readyz")), 60, "otelpipe")
        rate = args.rate
        if not rate:
            out, _ = loadgen(grpc, 0, args.calibrate).communicate(timeout=args.calibrate + 60)
            rate = round(json.loads(out)["ok_items"] / args.calibrate * args.fraction)
            wait_for(lambda: steady.total() >= json.loads(out)["ok_items"]
                     and flapping.total() >= json.loads(out)["ok_items"], 60, "the calibration to drain")
        steady.reset()
        flapping.reset()
        load = loadgen(grpc, rate, args.duration)
        began = time.monotonic()
        rss: list[tuple[float, float]] = []
        next_flap = began + args.flap_every
        flaps = 0
        up_at = 0.0
        while load.poll() is None:
            now = time.monotonic()
            rss.append((now - began, rss_mb(proc.pid)))
            if flapping.proc is not None and now >= next_flap:
                flapping.stop()
                flaps += 1
                up_at = now + args.flap_down
            elif flapping.proc is None and now >= up_at:
                flapping.start()
                next_flap = time.monotonic() + args.flap_every
            time.sleep(1.0)
        if flapping.proc is None:
            flapping.start()
        out, _ = load.communicate(timeout=60)
        result = json.loads(out)
        acked = int(result["ok_items"])
        try:
            wait_for(lambda: steady.total() >= acked and flapping.total() >= acked, 120, "the sinks to catch up")
        except SystemExit:
            pass  # report what arrived: the loss shows in the numbers
        drained_s = round(time.monotonic() - began - args.duration, 1)
        got_steady, got_flapping = steady.total(), flapping.total()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        steady.stop()
        flapping.stop()
    quarters = [rss[min(len(rss) - 1, int(len(rss) * q))][1] for q in (0.25, 0.5, 0.75, 1.0)] if rss else []
    print(json.dumps({
        "tree": args.tree, "storage": args.storage, "rate": rate, "duration_s": args.duration, "flaps": flaps,
        "acked_spans": acked, "errors": result.get("errors", {}),
        "steady": {"spans": got_steady, "lost": max(acked - got_steady, 0), "extra": max(got_steady - acked, 0)},
        "flapping": {"spans": got_flapping, "lost": max(acked - got_flapping, 0),
                     "extra": max(got_flapping - acked, 0)},
        "drain_after_load_s": drained_s,
        "rss_mb_quarters": [round(x, 1) for x in quarters],
        "rss_mb_max": round(max((x for _, x in rss), default=0.0), 1),
    }), flush=True)


if __name__ == "__main__":
    main()

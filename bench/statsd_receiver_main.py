#!/usr/bin/env python3
"""Run the whole otelpipe daemon on a StatsD benchmark config, for ../shared/bench/statsd_capacity.py.

    python bench/statsd_receiver_main.py --statsd-port 18125 [--config bench/configs/statsd_capacity.yaml]

Same as `otelpipe run --config F` (uvloop, the real Service and graph, SIGTERM
drains), except that the `statsd` factory is added to the factory map when
otelpipe/components.py does not list it yet, and `--statsd-port` /
`--socket-buffer` set STATSD_PORT / STATSD_SOCKET_BUFFER for the config. On exit it prints one JSON line with the
receiver's own counts (lines parsed, datagrams read, refused lines, kernel
drops), so a sweep's daemon.log shows what was actually processed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otelpipe import components
from pipeline.component import Kind
from pipeline.config.loader import load
from pipeline.logutil import configure_logging
from pipeline.service import Service
from pipeline.telemetry import Telemetry
from receivers.statsd import receiver as statsd

DEFAULT_CONFIG = ROOT / "bench" / "configs" / "statsd_capacity.yaml"


def factory_map() -> dict:
    fmap = {k: dict(v) for k, v in components.factories().items()}
    fmap[Kind.RECEIVER].setdefault(statsd.FACTORY.type, statsd.FACTORY)
    return fmap


async def serve(config_path: str) -> int:
    fmap = factory_map()
    cfg = load([config_path], fmap)
    configure_logging(cfg.service.telemetry.logs.level, cfg.service.telemetry.logs.encoding)
    tel = Telemetry()
    service = Service(cfg, fmap, telemetry=tel)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
    await service.run()
    print(json.dumps({
        "statsd_lines": tel.value("otelpipe_receiver_statsd_lines_total"),
        "statsd_datagrams": tel.value("otelpipe_receiver_statsd_datagrams_total"),
        "refused_lines": tel.value("otelpipe_receiver_refused_metric_points_total"),
        "accepted_points": tel.value("otelpipe_receiver_accepted_metric_points_total"),
        "kernel_drops": tel.value("otelpipe_receiver_statsd_kernel_drops"),
        "socket_buffer_bytes": tel.value("otelpipe_receiver_statsd_socket_buffer_bytes"),
    }), file=sys.stderr, flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(DEFAULT_CONFIG))
    ap.add_argument("--statsd-port", type=int, default=None, help="sets STATSD_PORT for the config")
    ap.add_argument("--socket-buffer", default=None, help="sets STATSD_SOCKET_BUFFER (e.g. 0 = kernel default, 8MiB)")
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    if args.statsd_port is not None:
        os.environ["STATSD_PORT"] = str(args.statsd_port)
    if args.socket_buffer is not None:
        os.environ["STATSD_SOCKET_BUFFER"] = args.socket_buffer
    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(args.config))


if __name__ == "__main__":
    sys.exit(main())

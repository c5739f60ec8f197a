"""Live reload of an exporter with a persistent queue (`sending_queue.storage`), on the real daemon.

The successor of an exporter that keeps its `storage` opens the same segment log
only after its predecessor closed it, and sends what is on disk; one whose
`storage` moves gets the records handed over, and the old queue forgets each only
once the new one has it on disk. Either way every span a client was answered OK
for arrives, with backends that are down across the reload and come back later.
"""
from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from pipeline.model import Signal
from pipeline.testing import wait_until

from .backends import GrpcBackend
from .daemon import Daemon
from .sdk import make_spans
from .test_live_reload import counter, span_ids

PIPELINE = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}}}
processors:
  batch: {{send_batch_size: 50, timeout: 20ms}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{port}"
    tls: {{insecure: true}}
    sending_queue: {{storage: "{storage}", num_consumers: 2}}
    retry_on_failure: {{initial_interval: 20ms, max_interval: 100ms, max_elapsed_time: 200ms}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
  telemetry: {{metrics: {{address: "127.0.0.1:0"}}}}
  shutdown_timeout: 10s
"""


def span_id(s: object) -> bytes:
    return s.context.span_id.to_bytes(8, "big")  # type: ignore[attr-defined, no-any-return]


async def reload_under_load(tmp_path: Path, old_storage: Path, new_storage: Path) -> None:
    """Load from the SDK across a SIGHUP that points the exporter at a second backend (both down), then
    bring the second one up: every span the SDK was told SUCCESS for arrives there."""
    first, second = GrpcBackend(), GrpcBackend()
    first.failing = second.failing = True
    await first.start()
    await second.start()
    cfg = tmp_path / "otelpipe.yaml"
    cfg.write_text(PIPELINE.format(port=first.port, storage=old_storage))
    d = Daemon("--config", str(cfg))
    try:
        ready = await d.start()
        grpc_ep, admin = ready["endpoints"]["receiver/otlp"]["grpc"], ready["admin"]
        acked: list[bytes] = []
        halfway, stop = threading.Event(), threading.Event()

        def load() -> None:
            exporter = OTLPSpanExporter(endpoint=grpc_ep, insecure=True)
            for i in range(300):  # bounded: stops by itself
                spans = make_spans(2)
                if exporter.export(spans) is SpanExportResult.SUCCESS:  # type: ignore[arg-type]
                    acked.extend(span_id(s) for s in spans)
                if i == 30:
                    halfway.set()
                if stop.is_set() and i > 60:
                    break
            exporter.shutdown()

        loader = asyncio.create_task(asyncio.to_thread(load))
        await asyncio.to_thread(halfway.wait, 30)
        await wait_until(lambda: first.calls >= 3, timeout=20, what="otelpipe retrying against the dead backend")
        cfg.write_text(PIPELINE.format(port=second.port, storage=new_storage))
        d.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        await d.wait_for_log("config reloaded")
        stop.set()
        await loader
        assert len(acked) >= 31 * 6
        assert first.items[Signal.TRACES] == 0 and second.items[Signal.TRACES] == 0
        second.failing = False
        await wait_until(lambda: set(acked) <= set(span_ids(second)), timeout=30,
                         what="every acknowledged span at the new backend")
        assert await counter(admin, "otelpipe_exporter_send_failed_spans_total") == 0
        assert await counter(admin, "otelpipe_config_reloads_total", result="ok") == 1
        assert await d.stop(signal.SIGTERM) == 0
    finally:
        await d.close()
        await first.stop()
        await second.stop()


async def test_a_reload_that_keeps_the_storage_sends_everything_acknowledged_after_the_backend_recovers(
        tmp_path: Path) -> None:
    await reload_under_load(tmp_path, tmp_path / "queue", tmp_path / "queue")


async def test_a_reload_that_moves_the_storage_hands_every_acknowledged_record_to_the_new_queue(
        tmp_path: Path) -> None:
    await reload_under_load(tmp_path, tmp_path / "old", tmp_path / "new")
    # the old queue forgot each record once the new one had it on disk: nothing is left to replay there
    left = [p for p in (tmp_path / "old").rglob("*.seg") if p.stat().st_size]
    assert not left, left

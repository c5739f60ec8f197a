"""`sending_queue.storage`: nothing acknowledged is lost, whatever happens to the process or the backend.

- the real daemon is killed with SIGKILL while clients are sending, `batch` is in the
  pipeline and the backend is down; after a restart every span a client was answered
  OK for arrives (duplicates are allowed, and counted here);
- a torn write left by such a crash is skipped and counted, and start-up goes on;
- a backend down for longer than `retry_on_failure.max_elapsed_time`: everything
  arrives once it is back (the in-memory queue would have dropped it);
- a full `max_size` answers 429 / RESOURCE_EXHAUSTED with a retry delay, and the disk
  use and the oldest item's age are exported.
"""
from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from otelpipe.testing import running_service
from pipeline.model import Signal
from pipeline.testing import make_traces, wait_until

from .backends import GrpcBackend
from .daemon import Daemon

SPANS = 5
PB = {"Content-Type": "application/x-protobuf"}

DAEMON_CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
processors:
  batch: {{send_batch_size: 100, timeout: 20ms}}
exporters:
  otlp:
    endpoint: "{backend}"
    tls: {{insecure: true}}
    sending_queue: {{storage: file_storage, queue_size: 100000, max_size: 256MiB}}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms}}
extensions:
  file_storage: {{directory: "{storage}", create_directory: true}}
service:
  extensions: [file_storage]
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
  telemetry:
    metrics: {{address: "127.0.0.1:0"}}
"""


def body(name: str) -> bytes:
    return make_traces(SPANS, name=name).SerializeToString()  # type: ignore[no-any-return]


def span_names(name: str) -> set[str]:
    return {f"{name}-{i}" for i in range(SPANS)}


@contextlib.asynccontextmanager
async def backend_down() -> AsyncIterator[GrpcBackend]:
    b = GrpcBackend()
    b.failing = True
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def metric(http: aiohttp.ClientSession, admin: str, name: str, **labels: str) -> float:
    async with http.get(f"http://{admin}/metrics") as resp:
        text = await resp.text()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


class Clients:
    """HTTP and gRPC clients sending requests of unique span names; `acked` holds what was answered OK."""

    def __init__(self, ready: dict[str, Any]) -> None:
        self.http_url = f"http://{ready['endpoints']['receiver/otlp']['http']}/v1/traces"
        self.grpc_target = ready["endpoints"]["receiver/otlp"]["grpc"]
        self.acked: set[str] = set()
        self.answered = 0
        self._n = 0

    def _next(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    async def run_http(self, http: aiohttp.ClientSession, stop: asyncio.Event, limit: int) -> None:
        while not stop.is_set() and self._n < limit:
            name = self._next("h")
            try:
                async with http.post(self.http_url, data=body(name), headers=PB) as resp:
                    await resp.read()
                    if resp.status == 200:
                        self.acked |= span_names(name)
            except aiohttp.ClientError:
                return  # the daemon is gone
            self.answered += 1

    async def run_grpc(self, stop: asyncio.Event, limit: int) -> None:
        async with grpc.aio.insecure_channel(self.grpc_target) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            while not stop.is_set() and self._n < limit:
                name = self._next("g")
                try:
                    await stub.Export(ExportTraceServiceRequest.FromString(body(name)), timeout=5)
                except grpc.aio.AioRpcError as e:
                    if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                    grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL):
                        if stop.is_set():
                            return
                        continue
                    raise
                else:
                    self.acked |= span_names(name)
                self.answered += 1


async def start_daemon(cfg: Path) -> tuple[Daemon, dict[str, Any]]:
    d = Daemon("run", "--config", str(cfg))
    ready = await d.start()
    return d, ready


async def test_kill_9_under_load_with_the_backend_down_loses_no_acknowledged_span(tmp_path: Path) -> None:
    async with backend_down() as backend:
        cfg = tmp_path / "otelpipe.yaml"
        cfg.write_text(DAEMON_CONFIG.format(backend=f"127.0.0.1:{backend.port}", storage=tmp_path / "queue"))
        daemon, ready = await start_daemon(cfg)
        try:
            clients = Clients(ready)
            stop = asyncio.Event()
            async with aiohttp.ClientSession() as http:
                senders = [asyncio.create_task(clients.run_http(http, stop, 100_000)) for _ in range(8)]
                senders += [asyncio.create_task(clients.run_grpc(stop, 100_000)) for _ in range(8)]
                await wait_until(lambda: clients.answered >= 400, timeout=60, what="400 answered requests")
                daemon.kill()  # SIGKILL, with 16 requests in flight
                assert await daemon.proc.wait() == -signal.SIGKILL  # type: ignore[union-attr]
                stop.set()
                await asyncio.gather(*senders)
            acked = set(clients.acked)
            assert len(acked) >= 400 * SPANS
            assert backend.items[Signal.TRACES] == 0  # the backend was down throughout: all of it was on disk

            backend.failing = False
            daemon, ready = await start_daemon(cfg)
            await wait_until(lambda: acked <= {s.name for s in backend.spans()}, timeout=60,  # type: ignore[attr-defined]
                             what="every acknowledged span to reach the backend after the restart")
            received = [s.name for s in backend.spans()]  # type: ignore[attr-defined]
            duplicates = len(received) - len(set(received))
            async with aiohttp.ClientSession() as http:
                replayed = await metric(http, ready["admin"], "otelpipe_exporter_queue_replayed_records_total")
            print(f"acknowledged {len(acked)} spans, received {len(received)} ({duplicates} duplicates, "
                  f"{len(set(received)) - len(acked)} unacknowledged that made it anyway), replayed {replayed:.0f}")
            assert replayed > 0
            assert await daemon.stop(signal.SIGTERM) == 0, "\n".join(daemon.raw[-20:])
        finally:
            daemon.kill()


async def test_a_torn_write_left_by_a_crash_is_skipped_counted_and_start_up_goes_on(tmp_path: Path) -> None:
    async with backend_down() as backend:
        cfg = tmp_path / "otelpipe.yaml"
        cfg.write_text(DAEMON_CONFIG.format(backend=f"127.0.0.1:{backend.port}", storage=tmp_path / "queue"))
        daemon, ready = await start_daemon(cfg)
        try:
            url = f"http://{ready['endpoints']['receiver/otlp']['http']}/v1/traces"
            async with aiohttp.ClientSession() as http:
                for i in range(20):
                    async with http.post(url, data=body(f"r{i}"), headers=PB) as resp:
                        assert resp.status == 200
            daemon.kill()
            await daemon.proc.wait()  # type: ignore[union-attr]
            (seg,) = [p for p in (tmp_path / "queue" / "exporter_otlp__traces").glob("*.seg") if p.stat().st_size]
            whole = seg.read_bytes()
            with open(seg, "ab") as f:  # a write the crash cut short: a record's first half
                f.write(whole[:len(whole) // 3])
            backend.failing = False
            daemon, ready = await start_daemon(cfg)
            await backend.wait_for(Signal.TRACES, 20 * SPANS, timeout=30)
            assert {s.name for s in backend.spans()} == set().union(  # type: ignore[attr-defined]
                *(span_names(f"r{i}") for i in range(20)))
            async with aiohttp.ClientSession() as http:
                assert await metric(http, ready["admin"], "otelpipe_exporter_queue_skipped_records_total",
                                    reason="torn_tail") == 1
            assert any(line.get("msg", "").startswith("persistent queue: skipped") for line in daemon.lines)
            assert await daemon.stop(signal.SIGTERM) == 0
        finally:
            daemon.kill()


SERVICE_CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
processors:
  batch: {{send_batch_size: 50, timeout: 5ms}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{port}"
    tls: {{insecure: true}}
    sending_queue: {{storage: "{storage}", num_consumers: 2, max_size: {max_size}}}
    retry_on_failure: {{initial_interval: 20ms, max_interval: 50ms, max_elapsed_time: 150ms}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
"""


async def test_a_backend_down_for_longer_than_the_retry_window_gets_everything_once_it_is_back(
        tmp_path: Path) -> None:
    async with backend_down() as backend, running_service(SERVICE_CONFIG.format(
            port=backend.port, storage=tmp_path / "q", max_size="64MiB")) as svc, aiohttp.ClientSession() as http:
        url = f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/traces"
        for i in range(30):
            async with http.post(url, data=body(f"r{i}"), headers=PB) as resp:
                assert resp.status == 200
        # Each request's retries started at least this long ago, and far longer than max_elapsed_time.
        await wait_until(lambda: backend.calls >= 40, timeout=30, what="the backend to refuse 40 exports")
        tel = svc.telemetry
        assert tel.value("otelpipe_exporter_send_failed_spans_total") == 0
        assert tel.value("otelpipe_exporter_queue_disk_items") == 30 * SPANS
        assert tel.value("otelpipe_exporter_queue_oldest_item_age_seconds") > 0
        backend.failing = False
        await backend.wait_for(Signal.TRACES, 30 * SPANS, timeout=30)
        assert {s.name for s in backend.spans()} == set().union(  # type: ignore[attr-defined]
            *(span_names(f"r{i}") for i in range(30)))
        await wait_until(lambda: tel.value("otelpipe_exporter_queue_disk_items") == 0, what="the queue to empty")
        assert tel.value("otelpipe_exporter_send_failed_spans_total") == 0


async def test_a_full_max_size_answers_429_and_resource_exhausted_and_never_drops_the_oldest(tmp_path: Path) -> None:
    one = len(body("r0"))
    async with backend_down() as backend, running_service(SERVICE_CONFIG.format(
            port=backend.port, storage=tmp_path / "q", max_size=12 * one)) as svc, aiohttp.ClientSession() as http:
        url = f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/traces"
        accepted: list[str] = []
        statuses = []
        for i in range(40):
            async with http.post(url, data=body(f"r{i}"), headers=PB) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After")))
                if resp.status == 200:
                    accepted.append(f"r{i}")
        refused = [s for s in statuses if s[0] != 200]
        assert accepted and refused and all(st == 429 and ra for st, ra in refused), statuses
        async with grpc.aio.insecure_channel(svc.endpoint("receiver", "otlp", "grpc")) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            try:
                await stub.Export(ExportTraceServiceRequest.FromString(body("g")), timeout=5)
                raise AssertionError("a full queue accepted more")
            except grpc.aio.AioRpcError as e:
                assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert any(k == "google.rpc.retryinfo-bin" for k, _ in e.trailing_metadata() or ())
        tel = svc.telemetry
        assert tel.value("otelpipe_exporter_queue_disk_bytes") <= 12 * one
        assert tel.value("otelpipe_exporter_queue_disk_capacity_bytes") == 12 * one
        assert tel.value("otelpipe_receiver_refused_spans_total", reason="queue_full") == (len(refused) + 1) * SPANS
        backend.failing = False  # the oldest were kept: they arrive
        await backend.wait_for(Signal.TRACES, len(accepted) * SPANS, timeout=30)
        assert {s.name for s in backend.spans()} == set().union(  # type: ignore[attr-defined]
            *(span_names(n) for n in accepted))

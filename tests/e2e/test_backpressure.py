"""Back-pressure through `batch`: a client is told success only for data otelpipe will not drop.

Reproduces the failure found with real clients: with `batch` in the pipeline and the exporter's
queue full, the receiver answered success for every request and the data was then dropped (and
counted twice). Now a full queue makes `batch` hold what it acknowledged and refuse new data with
a retryable error, so every span a client was told is accepted reaches the backend.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from otelpipe.testing import running_service
from pipeline.model import Signal
from pipeline.testing import make_traces

from .backends import HttpBackend

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
processors:
  batch: {{send_batch_size: 100, timeout: 5ms}}
exporters:
  otlphttp:
    endpoint: {backend}
    compression: none
    sending_queue: {{num_consumers: 1, queue_size: 2}}
    retry_on_failure: {{initial_interval: 10ms, max_interval: 50ms, max_elapsed_time: 0s}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlphttp]}}
"""

REQUESTS = 1000
SPANS = 10


class GatedBackend(HttpBackend):
    """An OTLP/HTTP backend that holds every export until `gate` opens (a stalled Tempo)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        await self.gate.wait()
        return await super()._handle(request)


@pytest.fixture
async def backend() -> AsyncIterator[GatedBackend]:
    b = GatedBackend()
    await b.start()
    yield b
    b.gate.set()
    await b.stop()


def _body(i: int) -> bytes:
    return make_traces(SPANS, name=f"r{i}").SerializeToString()


async def _send_http(url: str) -> list[tuple[int, str | None]]:
    sem = asyncio.Semaphore(20)
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> tuple[int, str | None]:
            async with sem, session.post(url, data=_body(i),
                                         headers={"Content-Type": "application/x-protobuf"}) as resp:
                await resp.read()
                return resp.status, resp.headers.get("Retry-After")
        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


async def _send_grpc(target: str) -> list[tuple[grpc.StatusCode, bool]]:
    sem = asyncio.Semaphore(20)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)

        async def one(i: int) -> tuple[grpc.StatusCode, bool]:
            async with sem:
                try:
                    await stub.Export(ExportTraceServiceRequest.FromString(_body(i)), timeout=10)
                except grpc.aio.AioRpcError as e:
                    keys = {k for k, _ in (e.trailing_metadata() or ())}
                    return e.code(), "grpc-status-details-bin" in keys
                return grpc.StatusCode.OK, False
        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


@pytest.mark.parametrize("transport", ["http", "grpc"])
async def test_full_queue_behind_batch_refuses_instead_of_dropping(backend: GatedBackend, transport: str) -> None:
    async with running_service(CONFIG.format(backend=f"http://127.0.0.1:{backend.port}")) as svc:
        tel = svc.telemetry
        if transport == "http":
            results = await _send_http(f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/traces")
            accepted = sum(1 for status, _ in results if status == 200)
            refused = [(s, ra) for s, ra in results if s != 200]
            assert refused and all(s == 429 and ra for s, ra in refused), refused[:3]
        else:
            codes = await _send_grpc(svc.endpoint("receiver", "otlp", "grpc"))
            accepted = sum(1 for code, _ in codes if code is grpc.StatusCode.OK)
            refused_codes = [(c, info) for c, info in codes if c is not grpc.StatusCode.OK]
            assert refused_codes and all(c is grpc.StatusCode.RESOURCE_EXHAUSTED and info
                                         for c, info in refused_codes), refused_codes[:3]
        assert 0 < accepted < REQUESTS
        # The backend comes back: everything a client was told is accepted arrives, nothing else.
        backend.gate.set()
        await backend.wait_for(Signal.TRACES, accepted * SPANS, timeout=30)
        proc = svc.component("processor", "batch")
        await proc.force_flush()
        assert tel.value("otelpipe_receiver_accepted_spans_total") == accepted * SPANS
        assert tel.value("otelpipe_receiver_refused_spans_total", reason="queue_full") == (REQUESTS - accepted) * SPANS
        assert tel.value("otelpipe_processor_dropped_spans_total") == 0
        assert tel.value("otelpipe_exporter_send_failed_spans_total") == 0
    assert backend.items[Signal.TRACES] == accepted * SPANS
    assert len({s.name for s in backend.spans()}) == accepted * SPANS  # type: ignore[attr-defined]

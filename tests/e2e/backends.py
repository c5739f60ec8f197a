"""Fake OTLP backends for end-to-end tests: a real grpc.aio server with the
opentelemetry-proto collector services, and an aiohttp OTLP/HTTP server. Both
record decoded requests and can be told to fail (outage) for a while.
"""
from __future__ import annotations

import asyncio
import gzip

import grpc
from aiohttp import web
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from pipeline.model import Signal, count_items


class Recorder:
    def __init__(self) -> None:
        self.requests: dict[Signal, list[object]] = {s: [] for s in Signal}
        self.items: dict[Signal, int] = {s: 0 for s in Signal}
        self.metadata: list[dict[str, str]] = []
        self.failing = False
        self.delay = 0.0  # seconds each export takes (to keep data queued in otelpipe)
        self.calls = 0
        self._cond = asyncio.Condition()

    async def record(self, signal: Signal, msg: object, metadata: dict[str, str]) -> None:
        async with self._cond:
            self.requests[signal].append(msg)
            self.items[signal] += count_items(signal, msg)  # type: ignore[arg-type]
            self.metadata.append(metadata)
            self._cond.notify_all()

    async def wait_for(self, signal: Signal, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            async with self._cond:
                await self._cond.wait_for(lambda: self.items[signal] >= n)

    def spans(self) -> list[object]:
        return [s for r in self.requests[Signal.TRACES] for rs in r.resource_spans  # type: ignore[attr-defined]
                for ss in rs.scope_spans for s in ss.spans]


class GrpcBackend(Recorder):
    """OTLP/gRPC backend on 127.0.0.1:0."""

    def __init__(self) -> None:
        super().__init__()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    def _servicer(self, signal: Signal, base: type) -> object:
        backend = self

        class S(base):  # type: ignore[misc, valid-type]
            async def Export(self, request, context):  # type: ignore[no-untyped-def]
                backend.calls += 1
                if backend.delay:
                    await asyncio.sleep(backend.delay)
                if backend.failing:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "backend outage")
                md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
                await backend.record(signal, request, md)
                return signal.response_type()

        return S()

    async def start(self) -> str:
        self.server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            self._servicer(Signal.TRACES, trace_service_pb2_grpc.TraceServiceServicer), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            self._servicer(Signal.METRICS, metrics_service_pb2_grpc.MetricsServiceServicer), self.server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
            self._servicer(Signal.LOGS, logs_service_pb2_grpc.LogsServiceServicer), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)


class HttpBackend(Recorder):
    """OTLP/HTTP (protobuf) backend on 127.0.0.1:0."""

    def __init__(self) -> None:
        super().__init__()
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.content_types: list[str] = []
        self.encodings: list[str] = []

    async def _handle(self, request: web.Request) -> web.Response:
        signal = Signal(request.match_info["signal"])
        self.calls += 1
        if self.failing:
            return web.Response(status=503, headers={"Retry-After": "0"})
        body = await request.read()
        self.encodings.append(request.headers.get("Content-Encoding", ""))
        if body[:2] == b"\x1f\x8b":  # aiohttp usually inflates request bodies itself
            body = gzip.decompress(body)
        self.content_types.append(request.headers.get("Content-Type", ""))
        msg = signal.request_type.FromString(body)
        await self.record(signal, msg, dict(request.headers))
        return web.Response(body=signal.response_type().SerializeToString(), content_type="application/x-protobuf")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/{signal}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

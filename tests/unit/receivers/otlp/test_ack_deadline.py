"""OTLP receivers in front of a persistent queue: the answer waits for the disk, bounded by the client's deadline."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from pipeline import receiverhelper
from pipeline.component import Kind
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import Sink, make_traces, nop_host, nop_settings
from receivers.otlp.config import GRPCConfig, HTTPConfig, OTLPReceiverConfig, ProtocolsConfig
from receivers.otlp.receiver import FACTORY, OTLPReceiver

TRACES_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class SlowDisk(Sink):
    """A consumer that acknowledges (a persistent queue downstream) and whose writes wait for `gate`."""

    acknowledges = True

    def __init__(self) -> None:
        super().__init__(Signal.TRACES)
        self.gate = asyncio.Event()

    async def consume(self, payload: Payload) -> None:
        await self.gate.wait()
        await super().consume(payload)


@contextlib.asynccontextmanager
async def running(consumer: Sink) -> AsyncIterator[tuple[OTLPReceiver, Telemetry]]:
    tel = Telemetry(process_metrics=False)
    cfg = OTLPReceiverConfig(protocols=ProtocolsConfig(grpc=GRPCConfig(endpoint="127.0.0.1:0"),
                                                       http=HTTPConfig(endpoint="127.0.0.1:0")))
    receiver = FACTORY.create(nop_settings("otlp", Kind.RECEIVER, None, telemetry=tel), cfg,
                              {Signal.TRACES: consumer})
    await receiver.start(nop_host())
    try:
        yield receiver, tel
    finally:
        consumer.gate.set()  # type: ignore[attr-defined]
        await receiver.shutdown()


def test_the_wait_leaves_room_to_answer_before_the_deadline() -> None:
    assert receiverhelper.ack_wait(None) == receiverhelper.DEFAULT_ACK_WAIT
    assert receiverhelper.ack_wait(10.0) == pytest.approx(9.9)
    assert receiverhelper.ack_wait(0.1) == pytest.approx(0.05)
    assert receiverhelper.ack_wait(-1.0) == 0.0


async def test_grpc_answers_unavailable_before_the_clients_deadline_when_the_disk_is_too_slow() -> None:
    disk = SlowDisk()
    async with running(disk) as (receiver, tel), grpc.aio.insecure_channel(receiver.endpoints["grpc"]) as ch:
        call = ch.unary_unary(TRACES_METHOD)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await call(make_traces(3).SerializeToString(), timeout=0.5)
        # UNAVAILABLE (retryable, with the reason), not the client's own DEADLINE_EXCEEDED
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
        assert "not written to disk" in (ei.value.details() or "")
        assert tel.value("otelpipe_receiver_refused_spans_total", transport="grpc", reason="timeout") == 3
        disk.gate.set()
        assert await call(make_traces(2).SerializeToString(), timeout=5) == b""
        assert tel.value("otelpipe_receiver_accepted_spans_total", transport="grpc") == 2


async def test_http_bounds_the_wait_itself_since_otlp_http_sends_no_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receiverhelper, "DEFAULT_ACK_WAIT", 0.2)
    disk = SlowDisk()
    async with running(disk) as (receiver, tel), aiohttp.ClientSession() as http:
        url = f"http://{receiver.endpoints['http']}/v1/traces"
        async with http.post(url, data=make_traces(3).SerializeToString(),
                             headers={"Content-Type": "application/x-protobuf"}) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert tel.value("otelpipe_receiver_refused_spans_total", transport="http", reason="timeout") == 3

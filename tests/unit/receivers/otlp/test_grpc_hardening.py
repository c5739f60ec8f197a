"""OTLP/gRPC refusals made inside grpc core are counted too.

grpc core refuses a message above `max_recv_msg_size_mib` (as sent, or once
gzip-inflated) before any Python runs; the client gets RESOURCE_EXHAUSTED from
core, and the receiver must still count the refusal with reason `too_large`.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from pipeline.model import Signal
from pipeline.testing import Sink, make_traces, wait_until

from .test_grpc import (
    ACCEPTED,
    TRACES_METHOD,
    export_raw,
    good_request_succeeds,
    refused,
    running,
)

MIB = 1024 * 1024


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip], ids=["plain", "gzip"])
async def test_oversize_message_refused_by_grpc_core_is_counted_too_large(compression: grpc.Compression | None) -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, max_recv_msg_size_mib=1) as (receiver, tel):
        # plain: 1 MiB + 100 bytes on the wire; gzip: a few KiB on the wire, 8 MiB inflated
        blob = "x" * (MIB + 100) if compression is None else "\0" * (8 * MIB)
        big = make_traces(1, attrs={"blob": blob}).SerializeToString()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await export_raw(receiver.endpoints["grpc"], big, compression=compression)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await wait_until(lambda: refused(tel, "too_large") == 1, what="the too_large refusal to be counted")
        await good_request_succeeds(receiver.endpoints["grpc"], sink)
        assert tel.value(ACCEPTED, transport="grpc") == 3
        assert refused(tel, "too_large") == 1 and sink.items == 3


async def test_generated_stub_client_over_the_limit_is_counted() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, max_recv_msg_size_mib=1) as (receiver, tel):
        async with grpc.aio.insecure_channel(receiver.endpoints["grpc"]) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Export(make_traces(1, attrs={"blob": "y" * (2 * MIB)}), timeout=5)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            await stub.Export(make_traces(4), timeout=5)
        await wait_until(lambda: refused(tel, "too_large") == 3, what="three too_large refusals")
        await sink.wait_for_items(4)


async def test_a_call_without_a_request_message_is_invalid_argument_and_counted() -> None:
    """Not something an OTLP client does, but the streaming registration must not accept it as empty."""
    sink = Sink()
    async with running({Signal.TRACES: sink}) as (receiver, tel):

        async def nothing() -> AsyncIterator[bytes]:
            return
            yield b""  # pragma: no cover - makes this an async generator

        async with grpc.aio.insecure_channel(receiver.endpoints["grpc"]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.stream_unary(TRACES_METHOD)(nothing(), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused(tel, "malformed") == 1
        assert sink.items == 0
        await good_request_succeeds(receiver.endpoints["grpc"], sink)


async def test_client_deadline_before_the_message_arrives_is_counted_as_timeout() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as (receiver, tel):
        never = asyncio.Event()

        async def stalled() -> AsyncIterator[bytes]:
            await never.wait()
            yield b""

        async with grpc.aio.insecure_channel(receiver.endpoints["grpc"]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.stream_unary(TRACES_METHOD)(stalled(), timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_until(lambda: refused(tel, "timeout") == 1, what="the timeout refusal to be counted")
        assert refused(tel, "too_large") == 0
        await good_request_succeeds(receiver.endpoints["grpc"], sink)

"""OTLP/HTTP connections from hostile or broken clients: header, body, idle and write timeouts, a connection cap.

Raw sockets play the slow clients (aiohttp's client always sends whole
requests); every wait is on a condition (a closed socket, a counter), bounded by
asyncio.timeout so that a regression fails instead of hanging.
"""
from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from pipeline.config.types import Duration
from pipeline.model import Signal
from pipeline.net.server import GuardedServer, ServerTimeouts, auto_max_connections
from pipeline.testing import Sink, make_traces, wait_until

from .test_http import PB, running

GUARD = 10  # seconds; every timeout under test is a fraction of a second
CONNECTIONS = "otelpipe_receiver_refused_connections_total"


def host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


async def raw_connection(endpoint: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*host_port(endpoint))


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection."""
    data = b""
    async with asyncio.timeout(GUARD):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


def request_head(length: int) -> bytes:
    return (f"POST /v1/traces HTTP/1.1\r\nHost: otelpipe\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


async def test_connection_without_a_complete_header_is_closed_after_read_header_timeout() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, read_header_timeout=Duration(0.2)) as client:
        reader, writer = await raw_connection(client.receiver.endpoints["http"])
        writer.write(b"POST /v1/traces HTTP/1.1\r\nHost: otelpipe\r\n")  # never finished
        await writer.drain()
        assert await closed_by_server(reader) == b""
        writer.close()
        assert client.tel.value(CONNECTIONS, receiver="otlp", transport="http", reason="timeout") == 1
        await client.good_request_succeeds(sink)


async def test_body_slower_than_read_timeout_is_answered_408_and_counted() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, read_timeout=Duration(0.3)) as client:
        reader, writer = await raw_connection(client.receiver.endpoints["http"])
        body = make_traces(5).SerializeToString()
        writer.write(request_head(len(body)) + body[:10])  # the rest never comes
        await writer.drain()
        answer = await closed_by_server(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert client.refused("timeout") == 1
        assert sink.items == 0
        await client.good_request_succeeds(sink)  # read_timeout does not hurt a request that arrives in time


async def test_idle_keep_alive_connection_is_closed_after_idle_timeout_without_a_refusal() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, idle_timeout=Duration(0.2)) as client:
        reader, writer = await raw_connection(client.receiver.endpoints["http"])
        body = make_traces(2).SerializeToString()
        writer.write(request_head(len(body)) + body)
        await writer.drain()
        answer = await closed_by_server(reader)  # answered, then closed once idle
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ")
        await sink.wait_for_items(2)
        assert client.tel.value(CONNECTIONS, receiver="otlp", transport="http") == 0


async def test_connections_over_max_connections_are_closed_at_once_and_connected_clients_keep_working() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}, max_connections=3) as client:
        endpoint = client.receiver.endpoints["http"]
        # an SDK-like client holding one keep-alive connection
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as sdk:
            url = client.base + "/v1/traces"

            async def export(n: int) -> int:
                async with sdk.post(url, data=make_traces(n).SerializeToString(), headers=PB) as resp:
                    await resp.read()
                    return resp.status

            assert await export(1) == 200
            idle = [await raw_connection(endpoint) for _ in range(2)]
            await wait_until(lambda: client.receiver.http_connections == 3, what="3 open connections")
            over = [await raw_connection(endpoint) for _ in range(5)]
            for reader, _ in over:
                assert await closed_by_server(reader) == b""  # closed without a request being read
            assert client.tel.value(CONNECTIONS, receiver="otlp", transport="http",
                                    reason="too_many_connections") == 5
            assert await export(2) == 200  # the connected client is unaffected
            for _, writer in idle + over:
                writer.close()
            await wait_until(lambda: client.receiver.http_connections == 1, what="the idle connections to go")
            await client.good_request_succeeds(sink)  # a new connection works again
        await sink.wait_for_items(6)


def test_automatic_connection_cap_is_a_share_of_the_open_file_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert 1 <= auto_max_connections() <= 4096
    if soft != resource.RLIM_INFINITY:
        assert auto_max_connections() == max(1, min(soft // 4, 4096))


@pytest.mark.parametrize("timeouts,header,idle", [
    (ServerTimeouts(), 60.0, 60.0),
    (ServerTimeouts(read_timeout=5.0, read_header_timeout=0.0, idle_timeout=0.0), 5.0, 5.0),
    (ServerTimeouts(read_timeout=0.0, read_header_timeout=0.0, idle_timeout=0.0), 0.0, 0.0),
])
def test_zero_timeouts_fall_back_as_in_go(timeouts: ServerTimeouts, header: float, idle: float) -> None:
    assert (timeouts.header, timeouts.idle) == (header, idle)


async def test_response_the_client_does_not_read_is_cut_after_write_timeout() -> None:
    """A client that stops reading cannot hold a connection (and its handler) forever."""
    big = b"x" * (64 << 20)  # far more than the socket buffers hold

    async def handler(_request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=big)

    refused: list[str] = []
    server = GuardedServer(handler, max_connections=10, timeouts=ServerTimeouts(write_timeout=0.3),
                           on_refused=refused.append, access_log=None)
    runner = web.ServerRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        port = runner.addresses[0][1]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # then never read
        await wait_until(lambda: server.open_connections == 1, timeout=GUARD, what="the connection")
        await wait_until(lambda: server.open_connections == 0, timeout=GUARD, what="the write timeout")
        sock.close()
        assert refused == []  # not a refusal: the request was read and answered
    finally:
        await runner.cleanup()


async def stream_chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 4096):
        yield data[i:i + 4096]


async def test_timeouts_do_not_affect_well_behaved_clients() -> None:
    sink = Sink()
    timeouts = {"read_timeout": Duration(5), "read_header_timeout": Duration(5), "write_timeout": Duration(5),
                "idle_timeout": Duration(5)}
    async with running({Signal.TRACES: sink}, max_connections=2, **timeouts) as client:
        for n in (1, 2, 3):
            status, _, _ = await client.post("/v1/traces", stream_chunks(make_traces(n).SerializeToString()), PB)
            assert status == 200
        await sink.wait_for_items(6)
        assert client.tel.value(CONNECTIONS, receiver="otlp", transport="http") == 0
        assert client.refused("timeout") == 0

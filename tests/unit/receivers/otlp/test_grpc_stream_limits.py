"""One OTLP/gRPC client that never reads its answers cannot take the receiver from everyone else (issue 14).

The misbehaving client is a raw HTTP/2 connection (the `h2` library) that opens as many Export
calls as HTTP/2 flow control lets it send, with a tiny receive buffer, and never reads a byte:
it never learns the server's SETTINGS, never sees an answer, never answers a PING. grpc's own
default lets every one of those calls run and stay open; `max_concurrent_streams` (default 100
per connection) caps what one connection holds, and the keepalive ping closes it when it does
not answer. Meanwhile the OpenTelemetry SDK's gRPC exporter, on its own connection, succeeds.
"""
from __future__ import annotations

import asyncio
import socket

import h2.config
import h2.connection
import h2.exceptions
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from pipeline.model import Signal
from pipeline.testing import Sink, make_traces, wait_until
from receivers.otlp.config import DEFAULT_MAX_CONCURRENT_STREAMS, KeepaliveConfig, ServerParametersConfig

from .test_grpc import TRACES_METHOD, running, sdk_spans

HOSTILE_CONNECTIONS = 25
CALLS_PER_CONNECTION = 4000  # what each one tries; flow control stops it after its first 64 KiB of messages


def open_unread_calls(endpoint: str, body: bytes) -> tuple[socket.socket, int]:
    """Open Export calls on one connection until HTTP/2 flow control stops us; never read. (socket, calls sent)."""
    host, _, port = endpoint.rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    message = b"\0" + len(body).to_bytes(4, "big") + body  # a gRPC length-prefixed message
    sent = 0
    for _ in range(CALLS_PER_CONNECTION):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":path", TRACES_METHOD),
                                   (":authority", endpoint), ("content-type", "application/grpc"), ("te", "trailers")])
        try:
            conn.send_data(stream, message, end_stream=True)
        except h2.exceptions.FlowControlError:
            break  # the connection's 64 KiB window is spent: the server's WINDOW_UPDATEs are never read
        try:
            sock.sendall(conn.data_to_send())
        except (BrokenPipeError, ConnectionResetError):
            break  # the server already closed it (the keepalive test)
        sent += 1
    return sock, sent


def hostile_items(sink: Sink) -> int:
    return sum(p.items for p in sink.payloads if _service(p.message) == "hostile")


def _service(msg: object) -> str:
    for kv in msg.resource_spans[0].resource.attributes:  # type: ignore[attr-defined]
        if kv.key == "service.name":
            return str(kv.value.string_value)
    return ""


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


async def test_clients_that_never_read_are_capped_per_connection_and_the_sdk_keeps_succeeding() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as (receiver, _tel):
        endpoint = receiver.endpoints["grpc"]
        body = make_traces(1, service="hostile").SerializeToString()
        opened = [await asyncio.to_thread(open_unread_calls, endpoint, body) for _ in range(HOSTILE_CONNECTIONS)]
        socks = [s for s, _ in opened]
        try:
            assert all(sent > DEFAULT_MAX_CONCURRENT_STREAMS * 2 for _, sent in opened)
            # The server serves calls up to the cap on each connection (how many of those it reaches depends on
            # when its writes to a client that never reads stall), and never more: without the cap it served all
            # of them (25 x ~630 here).
            limit = HOSTILE_CONNECTIONS * DEFAULT_MAX_CONCURRENT_STREAMS
            await wait_until(lambda: hostile_items(sink) >= limit // 2, timeout=60, what="the hostile calls served")
            exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=5)
            spans = sdk_spans()
            try:
                for _ in range(20):
                    assert await asyncio.to_thread(exporter.export, spans) is SpanExportResult.SUCCESS
            finally:
                await asyncio.to_thread(exporter.shutdown)
            assert sink.items - hostile_items(sink) == 20 * len(spans)
            assert hostile_items(sink) <= limit  # no connection got more than its 100 calls served
        finally:
            close_all(socks)


def _read_until_closed(sock: socket.socket, deadline: float) -> bool:
    """Drain what the server sent (without ever answering it) until it closes the connection."""
    sock.settimeout(deadline)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_keepalive_parameters_map_to_grpc_options() -> None:
    opts = dict(KeepaliveConfig(server_parameters=ServerParametersConfig(
        time=1.5, timeout=2.0, max_connection_age=60.0)).grpc_options())  # type: ignore[arg-type]
    assert opts["grpc.keepalive_time_ms"] == 1500 and opts["grpc.keepalive_timeout_ms"] == 2000
    assert opts["grpc.max_connection_age_ms"] == 60000 and "grpc.max_connection_idle_ms" not in opts


async def test_a_connection_that_does_not_answer_keepalive_pings_is_closed() -> None:
    sink = Sink()
    keepalive = KeepaliveConfig(server_parameters=ServerParametersConfig(time=0.2, timeout=0.2))  # type: ignore[arg-type]
    async with running({Signal.TRACES: sink}, keepalive=keepalive) as (receiver, _tel):
        endpoint = receiver.endpoints["grpc"]
        sock, _sent = await asyncio.to_thread(open_unread_calls, endpoint,
                                              make_traces(1, service="hostile").SerializeToString())
        try:
            assert await asyncio.to_thread(_read_until_closed, sock, 20.0)
        finally:
            sock.close()


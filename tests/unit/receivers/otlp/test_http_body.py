"""OTLP/HTTP bodies from hostile clients: gzip member floods, linear inflation, large bodies off the event loop.

Every test talks to a real receiver on 127.0.0.1:0 through aiohttp, except the
one that counts how often the inflater hands each input byte to zlib.
"""
from __future__ import annotations

import asyncio
import gzip
import os
import sys
import zlib
from typing import Any

import aiohttp
import orjson
import pytest

from pipeline import otlpjson
from pipeline.model import Signal
from pipeline.testing import Sink, make_metrics, make_traces
from receivers.otlp.http import BodyTooLarge, decompress
from receivers.otlp.http_body import TooManyMembers

from .test_http import JSON, PB, running, status_of

# Generous: only there so that a regression fails instead of hanging the suite.
HANG_GUARD = 60


class FeedSpy:
    """Stands in for the zlib module of the inflater and counts the input bytes handed to zlib."""

    error = zlib.error
    MAX_WBITS = zlib.MAX_WBITS

    def __init__(self) -> None:
        self.fed = 0
        self.objects = 0

    def decompressobj(self, wbits: int) -> Any:
        spy = self
        spy.objects += 1
        inner = zlib.decompressobj(wbits)

        class Wrapped:
            def decompress(self, data: bytes, max_length: int = 0) -> bytes:
                spy.fed += len(data)
                return inner.decompress(data, max_length)

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        return Wrapped()


def test_inflating_many_members_hands_each_input_byte_to_zlib_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FeedSpy()
    monkeypatch.setattr(sys.modules[decompress.__module__], "zlib", spy)
    pieces = [os.urandom(2048) for _ in range(1000)]  # incompressible: ~2 KiB per member
    body = b"".join(gzip.compress(p) for p in pieces)
    assert decompress(body, "gzip", 4 << 20) == b"".join(pieces)
    assert spy.objects == 1000
    # Copying "the rest of the body" per member would hand zlib ~500x the body here.
    assert spy.fed < 4 * len(body), (spy.fed, len(body))


def test_member_cap_and_the_bounds_still_hold() -> None:
    data = make_traces(20).SerializeToString()
    members = b"".join(gzip.compress(data[i:i + 1]) for i in range(len(data)))
    assert decompress(members, "gzip", 1 << 20, max_members=len(data)) == data
    with pytest.raises(TooManyMembers, match="gzip members"):
        decompress(members, "gzip", 1 << 20, max_members=len(data) - 1)
    with pytest.raises(BodyTooLarge):
        decompress(members, "gzip", len(data) - 1, max_members=len(data))
    with pytest.raises(zlib.error):
        decompress(b"", "gzip", 1 << 20)
    with pytest.raises(zlib.error):
        decompress(members[:-3], "gzip", 1 << 20, max_members=len(data))


async def test_100k_empty_gzip_members_are_refused_400_and_counted() -> None:
    sink = Sink()
    async with running({Signal.TRACES: sink}) as client:
        flood = gzip.compress(b"") * 100_000  # 2 MB on the wire, nothing inside
        async with asyncio.timeout(HANG_GUARD):
            status, body, headers = await client.post("/v1/traces", flood, {**PB, "Content-Encoding": "gzip"})
        assert status == 400
        assert "gzip members" in status_of(body, headers).message
        assert client.refused("too_many_members") == 1
        assert sink.items == 0
        await client.good_request_succeeds(sink)


async def test_a_request_split_into_many_gzip_members_is_accepted() -> None:
    sink = Sink()
    request = make_traces(50)
    data = request.SerializeToString()
    step = -(-len(data) // 1000)
    body = b"".join(gzip.compress(data[i:i + step]) for i in range(0, len(data), step))
    async with running({Signal.TRACES: sink}) as client:
        status, _, _ = await client.post("/v1/traces", body, {**PB, "Content-Encoding": "gzip"})
        assert status == 200
        await sink.wait_for_items(50)
    assert sink.payloads[0].message == request


def big_traces(spans: int) -> Any:
    return make_traces(spans, attrs={"agent.tool": "search", "agent.prompt": "p" * 200})


@pytest.mark.parametrize("encoding", [None, "gzip", "deflate"])
@pytest.mark.parametrize("fmt", ["protobuf", "json"])
async def test_large_bodies_arrive_intact(fmt: str, encoding: str | None) -> None:
    sink = Sink()
    request = big_traces(5000)  # ~1.5 MB protobuf: past every inline threshold
    data = request.SerializeToString() if fmt == "protobuf" else otlpjson.encode(request)
    headers = dict(PB if fmt == "protobuf" else JSON)
    if encoding is not None:
        data = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
        headers["Content-Encoding"] = encoding
    async with running({Signal.TRACES: sink}) as client:
        status, _, _ = await client.post("/v1/traces", data, headers)
        assert status == 200
        await sink.wait_for_items(5000)
        assert sink.payloads[0].message == request
        assert client.tel.value("otelpipe_receiver_accepted_spans_total", transport="http") == 5000


async def test_large_bad_bodies_are_refused_like_small_ones() -> None:
    sink = Sink()
    limit = 1 << 20
    async with running({Signal.TRACES: sink}, max_request_body_size=limit) as client:
        # past the inline size on the wire, past the limit once inflated: inflated in the worker, 413
        bomb = gzip.compress(os.urandom(300 * 1024) + b"\0" * (8 * limit))
        assert 300 * 1024 < len(bomb) < limit
        status, body, headers = await client.post("/v1/traces", bomb, {**PB, "Content-Encoding": "gzip"})
        assert status == 413 and "decompressed" in status_of(body, headers).message
        # malformed JSON larger than the inline size
        bad_json = b'{"resourceSpans": [' + b'{"resource": {}},' * 50_000 + b"]"
        status, body, headers = await client.post("/v1/traces", bad_json, JSON)
        assert status == 400 and "cannot decode" in status_of(body, headers).message
        # corrupt gzip past the inline size
        corrupt = bytearray(gzip.compress(big_traces(3000).SerializeToString()))
        corrupt[len(corrupt) // 2:len(corrupt) // 2 + 64] = b"\xff" * 64
        status, body, headers = await client.post("/v1/traces", bytes(corrupt), {**PB, "Content-Encoding": "gzip"})
        assert status == 400 and "decompress" in status_of(body, headers).message
        assert client.refused("too_large") == 1
        assert client.refused("malformed") == 2
        assert sink.items == 0
        await client.good_request_succeeds(sink)


def json_traces_body(target_bytes: int) -> bytes:
    """A hand-built OTLP/JSON traces request of about `target_bytes` (building it via protobuf is slow)."""
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "call-tool",
            "kind": 3, "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000500000000",
            "attributes": [{"key": "agent.tool", "value": {"stringValue": "search"}},
                           {"key": "agent.step", "value": {"intValue": "3"}}]}
    one = len(orjson.dumps(span)) + 1
    spans = [span] * (target_bytes // one)
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})


async def test_a_20mb_json_body_does_not_stall_other_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """While a 20 MB OTLP/JSON body is decoded (seconds of Python work), other requests are answered.

    An observer on the JSON decoder says when decoding of the big body starts.
    The small requests then go one after another, each needing several turns of
    the event loop; if decoding ran on the loop, the big request would be done
    before the first of them.
    """
    traces, metrics = Sink(), Sink()
    body = json_traces_body(20_000_000)
    spans = body.count(b'"spanId"')
    loop = asyncio.get_running_loop()
    decoding = asyncio.Event()
    real_decode = otlpjson.decode

    def observed_decode(signal: Signal, data: bytes | str) -> Any:
        if len(data) > 1_000_000:
            loop.call_soon_threadsafe(decoding.set)  # from whichever thread decodes
        return real_decode(signal, data)

    monkeypatch.setattr(otlpjson, "decode", observed_decode)
    async with running({Signal.TRACES: traces, Signal.METRICS: metrics}, max_request_body_size=32 << 20) as client:
        async with asyncio.timeout(HANG_GUARD):
            hostile = asyncio.create_task(client.post("/v1/traces", body, JSON))
            await decoding.wait()
            async with aiohttp.ClientSession() as other:
                for i in range(5):
                    async with other.post(client.base + "/v1/metrics", data=make_metrics(2).SerializeToString(),
                                          headers=PB) as resp:
                        assert resp.status == 200
                    assert not hostile.done(), f"the 20 MB request finished before small request {i + 1} of 5"
            await metrics.wait_for_items(10)
            status, _, _ = await hostile
        assert status == 200
        await traces.wait_for_items(spans)

"""Fuzz targets: the code paths that read what a client or an operator sent, with the refusals each may make.

Each target takes bytes and either returns (the input was used, or refused cleanly) or raises
`AssertionError`/an unexpected exception (a bug). "Clean" is what the daemon turns into an
answer: the exceptions the receiver's handler catches and maps to 400/413/415, a `ConfigError`
with issues, a StatsD line counted as refused. Invariants checked on the way: an inflated body
is never larger than the limit, a decoded request re-encodes, item counts are never negative.

Used by tests/fuzz/test_fuzz.py (bounded, fixed seeds, in the suite) and by tests/fuzz/run.py
(the deeper run by hand).
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import cache

from google.protobuf.message import DecodeError

from otelpipe import components
from pipeline import metricnames
from pipeline.component import Kind
from pipeline.config.loader import load_text
from pipeline.errors import ConfigError
from pipeline.model import Signal
from pipeline.testing import nop_settings
from receivers.otlp.config import HTTPConfig
from receivers.otlp.http import OTLPHTTPServer
from receivers.otlp.http_body import BodyTooLarge, Inflater, TooManyMembers
from receivers.statsd.aggregator import StatsDAggregator
from receivers.statsd.parser import StatsDParser

# What the OTLP/HTTP handler catches around decoding (400 malformed); anything else is a bug.
DECODE_REFUSALS = (DecodeError, ValueError, TypeError, RecursionError)
BODY_LIMIT = 64 * 1024


@cache
def _server() -> OTLPHTTPServer:
    """The OTLP/HTTP receiver's decoding code, without a socket (never started)."""
    return OTLPHTTPServer(nop_settings("otlp", Kind.RECEIVER, None), HTTPConfig(endpoint="127.0.0.1:0"), {})


def _check_payload_usable(signal: Signal, is_json: bool, data: bytes) -> None:
    try:
        payload = _server()._decode(signal, is_json, data, False)
    except DECODE_REFUSALS:
        return
    removed, _why = metricnames.screen(payload)
    assert removed >= 0 and payload.items >= 0
    again = signal.request_type.FromString(payload.serialize())
    assert again.ByteSize() == payload.message.ByteSize()


def otlp_protobuf(data: bytes) -> None:
    """An OTLP/HTTP or OTLP/gRPC protobuf body (both receivers decode with FromString, then screen)."""
    for signal in Signal:
        _check_payload_usable(signal, False, data)


def otlp_json(data: bytes) -> None:
    """An OTLP/HTTP JSON body."""
    for signal in Signal:
        _check_payload_usable(signal, True, data)


def compressed_body(data: bytes) -> None:
    """A gzip or deflate body: inflated at most to the limit, refused cleanly otherwise, then decoded."""
    for encoding in ("gzip", "deflate"):
        inflater = Inflater(data, encoding, BODY_LIMIT)
        try:
            inflater.run(1024)  # as the event loop does first, then the rest as the worker pool does
            inflater.run()
            out = inflater.result()
        except (BodyTooLarge, TooManyMembers, zlib.error):
            continue
        assert len(out) <= BODY_LIMIT
        _check_payload_usable(Signal.TRACES, False, out)


def statsd(data: bytes) -> None:
    """One StatsD datagram (several lines), parsed and aggregated into OTLP metrics."""
    parser = StatsDParser()
    result = parser.parse([data])
    assert result.lines >= 0 and all(n > 0 for n in result.refused.values())
    aggregator = StatsDAggregator()
    aggregator.add(result)
    out = aggregator.flush(2_000_000_000_000_000_000)
    if out is not None:
        out.SerializeToString()


def config(data: bytes) -> None:
    """A config file: it loads, or every problem comes back as a ConfigError (never another exception)."""
    try:
        load_text(data.decode("utf-8", "replace"), components.factories(), {"TOKEN": "t0k3n-value"})
    except ConfigError as e:
        assert e.issues and all(str(i) for i in e.issues)
        assert not any("t0k3n-value" in str(i) for i in e.issues)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "otlp_protobuf": otlp_protobuf,
    "otlp_json": otlp_json,
    "compressed_body": compressed_body,
    "statsd": statsd,
    "config": config,
}

"""Fuzzing in the suite (issue 14): hostile bytes into every decoding path, bounded and reproducible.

Two kinds, both with fixed seeds so CI runs the same inputs every time:

- hypothesis (derandomized, a bounded number of examples per target) over the targets in
  `targets.py`: OTLP protobuf and JSON decoding as the receivers do it, gzip/deflate bodies, the
  StatsD parser and aggregator, the config loader;
- a seeded mutation run against a real OTLP receiver (OTLP/HTTP protobuf, JSON and gzip, and
  OTLP/gRPC) over loopback: every answer is a clean refusal or a success, each request is counted
  once, and the receiver still serves a good request afterwards.

The deeper run, by hand: `python -m tests.fuzz.run --seconds 600` (see tests/fuzz/run.py).
"""
from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable

import grpc
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from pipeline.model import Signal
from pipeline.testing import Sink, make_traces
from tests.unit.receivers.otlp.test_grpc import TRACES_METHOD
from tests.unit.receivers.otlp.test_grpc import running as running_grpc
from tests.unit.receivers.otlp.test_http import running as running_http

from .corpus import SEEDS, mutate
from .targets import TARGETS

EXAMPLES = 150
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def mutated(target: str) -> st.SearchStrategy[bytes]:
    """A seed input of `target` with random byte-level edits (the seed drawn, then the edits)."""
    return st.builds(lambda base, s: mutate(base, random.Random(s), 6), st.sampled_from(SEEDS[target]),
                     st.integers(0, 2**32))


_JSON_KEYS = ["resourceSpans", "resourceMetrics", "resourceLogs", "resource", "attributes", "scopeSpans", "spans",
              "traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano", "value", "stringValue",
              "intValue", "arrayValue", "kvlistValue", "values", "key", "gauge", "sum", "histogram", "dataPoints",
              "asDouble", "asInt", "bucketCounts", "logRecords", "body", "severityNumber", "timeUnixNano"]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=40)
    | st.sampled_from(["0102030405060708", "zz", "", "NaN", "1e999", "-1", "9" * 30]),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.sampled_from(_JSON_KEYS) | st.text(max_size=8),
                                                              kids, max_size=6),
    max_leaves=40)
_statsd_line = st.builds(
    lambda name, values, kind, extra: f"{name}:{':'.join(values)}|{kind}{extra}".encode("utf-8", "surrogatepass"),
    st.text(max_size=20), st.lists(st.sampled_from(["1", "-2.5", "+3", "nan", "1e400", "x", "", "0x10"]) |
                                   st.text(max_size=5), min_size=1, max_size=4),
    st.sampled_from(["c", "g", "ms", "h", "d", "s", "x", ""]),
    st.text(alphabet="|@#:,T.0123456789abc-", max_size=30))
_config_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.sampled_from(["1s", "-5m", "127.0.0.1:0", "${env:TOKEN}", "${env:MISSING}", "64MiB", "[otlp]", "otlp"]),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(
        ["receivers", "exporters", "processors", "extensions", "service", "pipelines", "traces", "otlp", "protocols",
         "grpc", "http", "endpoint", "tls", "auth", "authenticator", "headers", "batch", "timeout", "file", "path",
         "bearertokenauth", "token", "sending_queue", "storage"]) | st.text(max_size=6), kids, max_size=5),
    max_leaves=30)

def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # the stdlib writes integers of any size (orjson stops at 64 bits)


STRATEGIES: dict[str, st.SearchStrategy[bytes]] = {
    "otlp_protobuf": mutated("otlp_protobuf") | st.binary(max_size=512),
    "otlp_json": mutated("otlp_json") | _json_values.map(_dumps),
    "compressed_body": mutated("compressed_body") | st.binary(max_size=256).map(gzip.compress)
    | st.binary(max_size=256),
    "statsd": mutated("statsd") | st.lists(_statsd_line, max_size=8).map(b"\n".join) | st.binary(max_size=256),
    "config": mutated("config") | _config_value.map(_dumps),
}


def fuzz(name: str) -> Callable[[Callable[[bytes], None]], Callable[[], None]]:
    """The test runs target `name` on `EXAMPLES` inputs from its strategy, the same ones every run."""

    def wrap(test: Callable[[bytes], None]) -> Callable[[], None]:
        return seed(20261207)(FUZZ(given(STRATEGIES[name])(test)))  # type: ignore[no-any-return]

    return wrap


@fuzz("otlp_protobuf")
def test_otlp_protobuf_decoding(data: bytes) -> None:
    TARGETS["otlp_protobuf"](data)


@fuzz("otlp_json")
def test_otlp_json_decoding(data: bytes) -> None:
    TARGETS["otlp_json"](data)


@fuzz("compressed_body")
def test_gzip_and_deflate_bodies(data: bytes) -> None:
    TARGETS["compressed_body"](data)


@fuzz("statsd")
def test_statsd_parser(data: bytes) -> None:
    TARGETS["statsd"](data)


@fuzz("config")
def test_config_loader(data: bytes) -> None:
    TARGETS["config"](data)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_input_passes_its_target(name: str) -> None:
    for data in SEEDS[name]:
        TARGETS[name](data)


# --- against real receivers over loopback --------------------------------------------------------------------

REQUESTS = 120
CLEAN_HTTP = {200, 400, 413, 415}


async def test_mutated_otlp_http_requests_get_clean_answers() -> None:
    rng = random.Random(14)
    sink = Sink()
    async with running_http({Signal.TRACES: sink}) as client:
        tel, http = client.tel, client.session
        url = f"{client.base}/v1/traces"
        kinds = [("otlp_protobuf", "application/x-protobuf", None), ("otlp_json", "application/json", None),
                 ("otlp_protobuf", "application/x-protobuf", "gzip")]
        for i in range(REQUESTS):
            target, ctype, encoding = kinds[i % len(kinds)]
            body = mutate(rng.choice(SEEDS[target][:3]), rng, 6)
            headers = {"Content-Type": ctype}
            if encoding:
                body = mutate(gzip.compress(body), rng, 2) if i % 2 else gzip.compress(body)
                headers["Content-Encoding"] = encoding
            async with http.post(url, data=body, headers=headers) as r:
                assert r.status in CLEAN_HTTP, (r.status, body[:80])
                await r.read()
        refused = tel.value("otelpipe_receiver_refused_spans_total", receiver="otlp", transport="http")
        accepted = tel.value("otelpipe_receiver_accepted_spans_total", receiver="otlp", transport="http")
        assert refused > 0 and accepted == sink.items
        async with http.post(url, data=make_traces(2).SerializeToString(),
                             headers={"Content-Type": "application/x-protobuf"}) as r:
            assert r.status == 200


async def test_mutated_otlp_grpc_requests_get_clean_answers() -> None:
    rng = random.Random(41)
    sink = Sink()
    clean = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
    async with running_grpc({Signal.TRACES: sink}) as (receiver, tel):
        async with grpc.aio.insecure_channel(receiver.endpoints["grpc"]) as channel:
            call = channel.unary_unary(TRACES_METHOD)
            for _ in range(REQUESTS):
                body = mutate(rng.choice(SEEDS["otlp_protobuf"][:3]), rng, 6)
                try:
                    await call(body, timeout=10)
                except grpc.aio.AioRpcError as e:
                    assert e.code() in clean, (e.code(), body[:80])
            await call(make_traces(2).SerializeToString(), timeout=10)
        accepted = tel.value("otelpipe_receiver_accepted_spans_total", receiver="otlp", transport="grpc")
        assert accepted == sink.items

"""The wire-format helpers (pipeline/wire.py) against protobuf itself.

The primitives are checked against what upb encodes and accepts (the wrappers
`UInt64Value`/`Int64Value`/`BytesValue` are one-field messages whose bytes are
a tag and the value), at every varint length boundary and on malformed input;
the envelope views against the decoded request on random requests of all three
signals; and the walkers built on the primitives where they used to differ.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from google.protobuf import wrappers_pb2
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from pipeline import wire
from pipeline.model import ExportRequest, Payload, Signal, count_items
from pipeline.testing import kv, make_logs, make_metrics, make_traces
from pipeline.wire import (
    BYTES,
    EGROUP,
    I32,
    I64,
    LEN,
    MAX_FIELD_NUMBER,
    MAX_GROUP_DEPTH,
    SGROUP,
    VALUE,
    VARINT,
    WireError,
    decode_varint,
    encode_varint,
    ld_tag,
    len_fields,
    length_delimited,
    make_tag,
    skeleton,
    skip_field,
    skip_value,
    split_tag,
)
from processors.privacy.secret_mask import SecretMask, SecretMaskConfig
from processors.privacy.walker import STRING, TextRun, Walker, WireFallback, wire_plan

U64 = (1 << 64) - 1
#: Every value at which a varint changes length (1 to 10 bytes), each side of it, and the extremes.
BOUNDARIES = sorted({0, 1, U64, U64 - 1} | {(1 << (7 * k)) + d for k in range(1, 10) for d in (-1, 0)})


def _uint64_bytes(n: int) -> bytes:
    """upb's varint encoding of n: UInt64Value is field 1 (tag 0x08) holding a varint (0, the default,
    is not written at all)."""
    return wrappers_pb2.UInt64Value(value=n).SerializeToString()[1:] or b"\x00"


# -- varints ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", BOUNDARIES)
def test_varint_round_trips_at_every_length_boundary(n: int) -> None:
    enc = encode_varint(n)
    assert enc == _uint64_bytes(n)
    assert len(enc) == max(1, -(-n.bit_length() // 7))
    assert decode_varint(enc, 0) == (n, len(enc))
    # mid-buffer, with bytes after it
    assert decode_varint(b"\x99\x01" + enc + b"\xff", 2) == (n, 2 + len(enc))


@given(st.integers(0, U64))
def test_any_uint64_round_trips_as_upb_encodes_it(n: int) -> None:
    enc = encode_varint(n)
    assert enc == _uint64_bytes(n)
    assert decode_varint(enc, 0) == (n, len(enc))
    assert wrappers_pb2.UInt64Value.FromString(b"\x08" + enc).value == n


@given(st.integers(-(1 << 63), (1 << 63) - 1))
def test_negative_int64_is_encoded_as_its_twos_complement(v: int) -> None:
    enc = encode_varint(v & U64)
    if v:  # (zero is the default value, which upb does not write)
        assert b"\x08" + enc == wrappers_pb2.Int64Value(value=v).SerializeToString()
    assert decode_varint(enc, 0)[0] == v & U64
    assert wrappers_pb2.Int64Value.FromString(b"\x08" + enc).value == v


@pytest.mark.parametrize("n", [-1, -(1 << 63), 1 << 64, 1 << 70])
def test_values_outside_uint64_are_refused_by_the_encoder(n: int) -> None:
    with pytest.raises(ValueError, match="2\\*\\*64"):
        encode_varint(n)


@pytest.mark.parametrize("n", [n for n in BOUNDARIES if n >= 0x80])
def test_every_truncation_of_a_varint_is_an_error(n: int) -> None:
    enc = encode_varint(n)
    for cut in range(len(enc)):
        with pytest.raises(WireError, match="truncated varint"):
            decode_varint(enc[:cut], 0)
        with pytest.raises(WireError, match="truncated varint"):
            decode_varint(b"\x0a" + enc[:cut], 1)


def test_a_varint_longer_than_ten_bytes_is_an_error_as_in_upb() -> None:
    eleven = b"\xff" * 10 + b"\x01"
    with pytest.raises(DecodeError):
        wrappers_pb2.UInt64Value.FromString(b"\x08" + eleven)
    with pytest.raises(WireError, match="longer than 10 bytes"):
        decode_varint(eleven, 0)
    with pytest.raises(WireError, match="longer than 10 bytes"):
        decode_varint(b"\x80" * 64, 0)  # a run of continuation bytes stops at the tenth


@pytest.mark.parametrize("last", [0x00, 0x01, 0x02, 0x7F])
def test_the_tenth_byte_is_read_modulo_2_to_the_64_as_upb_does(last: int) -> None:
    ten = b"\xff" * 9 + bytes((last,))
    expected = wrappers_pb2.UInt64Value.FromString(b"\x08" + ten).value
    assert decode_varint(ten, 0) == (expected, 10)


def test_padded_varints_decode_like_upb() -> None:
    for n in (0, 1, 300):
        padded = bytes(b | 0x80 for b in encode_varint(n)) + b"\x80\x80\x00"
        assert decode_varint(padded, 0) == (wrappers_pb2.UInt64Value.FromString(b"\x08" + padded).value, len(padded))


def test_decoding_reads_from_bytes_bytearray_and_memoryview() -> None:
    raw = encode_varint(300) + encode_varint(5)
    for buf in (raw, bytearray(raw), memoryview(raw)):
        assert decode_varint(buf, 0) == (300, 2)
        assert decode_varint(buf, 2) == (5, 3)
    with pytest.raises(WireError):
        decode_varint(b"", 0)


# -- tags -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("number", [1, 15, 16, 2047, 2048, MAX_FIELD_NUMBER])
@pytest.mark.parametrize("wire_type", [VARINT, I64, LEN, SGROUP, EGROUP, I32])
def test_tags_make_and_split(number: int, wire_type: int) -> None:
    tag = make_tag(number, wire_type)
    assert split_tag(tag) == (number, wire_type)
    assert decode_varint(encode_varint(tag), 0) == (tag, len(encode_varint(tag)))


def test_tags_of_real_fields_are_the_bytes_upb_writes() -> None:
    assert encode_varint(make_tag(1, VARINT)) == wrappers_pb2.UInt64Value(value=1).SerializeToString()[:1]
    assert encode_varint(make_tag(1, LEN)) == wrappers_pb2.BytesValue(value=b"x").SerializeToString()[:1]
    assert ld_tag(KeyValue.DESCRIPTOR, "key") == 0x0A and ld_tag(KeyValue.DESCRIPTOR, "value") == 0x12
    assert ld_tag(ScopeSpans.DESCRIPTOR, "spans") == 0x12
    with pytest.raises(TypeError, match="not a message, string or bytes"):
        ld_tag(Span.DESCRIPTOR, "kind")


@pytest.mark.parametrize(("number", "wire_type"), [(0, LEN), (MAX_FIELD_NUMBER + 1, LEN), (1, 6), (1, -1)])
def test_invalid_tags_are_refused(number: int, wire_type: int) -> None:
    with pytest.raises(ValueError):
        make_tag(number, wire_type)


@pytest.mark.parametrize("tag", [0, 1 << 3 | 6, 1 << 3 | 7, (MAX_FIELD_NUMBER + 1) << 3])
def test_invalid_decoded_tags_are_wire_errors(tag: int) -> None:
    with pytest.raises(WireError):
        split_tag(tag)


# -- skipping fields -------------------------------------------------------------------------------

def _field(number: int, wire_type: int, value: bytes) -> bytes:
    return encode_varint(make_tag(number, wire_type)) + value


# One field of each wire type, as upb writes or accepts them. Numbers from 3 up: unknown to KeyValue
# (key = 1, value = 2), which the tests parse them with.
FIELDS = {
    "varint 1 byte": _field(3, VARINT, b"\x05"),
    "varint 10 bytes": _field(4, VARINT, encode_varint(U64)),
    "i64": _field(5, I64, b"\x01" * 8),
    "len": _field(6, LEN, encode_varint(200) + b"x" * 200),
    "i32": _field(7, I32, b"\x02" * 4),
    "group": _field(8, SGROUP, _field(1, VARINT, b"\x01") + _field(7, SGROUP, _field(7, LEN, b"\x01z")
                                                                            + _field(7, EGROUP, b""))
                    + _field(1, I32, b"abcd") + _field(8, EGROUP, b"")),
    "empty group": _field(9, SGROUP, _field(9, EGROUP, b"")),
}


@pytest.mark.parametrize("name", list(FIELDS))
def test_skip_field_skips_every_wire_type_where_upb_does(name: str) -> None:
    field = FIELDS[name]
    tail = _field(1, LEN, b"\x01k")  # KeyValue.key: upb must find it right after the skipped (unknown) field
    raw = field + tail
    assert KeyValue.FromString(raw).key == "k"
    tag, i = decode_varint(raw, 0)
    assert skip_field(raw, i, tag) == len(field)
    if tag & 7 not in (SGROUP, EGROUP):
        assert skip_value(raw, i, tag & 7) == len(field)


@pytest.mark.parametrize("name", ["group", "empty group"])
def test_skip_value_refuses_groups(name: str) -> None:
    tag, i = decode_varint(FIELDS[name], 0)
    with pytest.raises(WireError, match="group"):
        skip_value(FIELDS[name], i, tag & 7)


@pytest.mark.parametrize(("raw", "why"), [
    (_field(3, VARINT, b"\x80\x80"), "truncated varint"),
    (_field(3, VARINT, b""), "truncated varint"),
    (_field(3, VARINT, b"\xff" * 10 + b"\x01"), "longer than 10 bytes"),
    (_field(3, I64, b"\x00" * 7), "runs past the end"),
    (_field(3, I32, b"\x00" * 3), "runs past the end"),
    (_field(3, LEN, b"\x05abcd"), "runs past the end"),
    (_field(3, LEN, b"\x80"), "truncated varint"),
    (encode_varint(3 << 3 | 6) + b"\x00", "invalid wire type 6"),
    (encode_varint(3 << 3 | 7) + b"\x00", "invalid wire type 7"),
    (_field(3, EGROUP, b""), "end-group tag outside a group"),
    (_field(3, SGROUP, _field(4, EGROUP, b"")), "does not match"),
    (_field(3, SGROUP, _field(4, VARINT, b"\x01")), "truncated varint"),  # never closed
    (_field(3, SGROUP, _field(4, LEN, b"\x09ab")), "runs past the end"),
])
def test_malformed_fields_are_wire_errors_where_upb_refuses_them(raw: bytes, why: str) -> None:
    with pytest.raises(DecodeError):
        KeyValue.FromString(raw)
    tag, i = decode_varint(raw, 0)
    with pytest.raises(WireError, match=why):
        skip_field(raw, i, tag)


def test_groups_nest_only_so_deep() -> None:
    ok = b"".join(_field(1, SGROUP, b"") for _ in range(MAX_GROUP_DEPTH)) + \
        b"".join(_field(1, EGROUP, b"") for _ in range(MAX_GROUP_DEPTH))
    assert skip_field(ok, 1, make_tag(1, SGROUP)) == len(ok)
    deep = _field(1, SGROUP, b"") + ok
    with pytest.raises(WireError, match="nested more than"):
        skip_field(deep, 1, make_tag(1, SGROUP))


_FIELD = st.one_of(
    st.builds(lambda n, v: _field(n, VARINT, encode_varint(v)), st.integers(3, MAX_FIELD_NUMBER), st.integers(0, U64)),
    st.builds(lambda n, v: _field(n, I64, v), st.integers(3, 99), st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, v: _field(n, I32, v), st.integers(3, 99), st.binary(min_size=4, max_size=4)),
    st.builds(lambda n, v: _field(n, LEN, encode_varint(len(v)) + v), st.integers(3, 99), st.binary(max_size=300)),
)
_FIELDS = st.recursive(
    st.lists(_FIELD, max_size=4),
    lambda inner: st.lists(st.one_of(_FIELD.map(lambda f: [f]), st.builds(
        lambda n, body: [_field(n, SGROUP, b"".join(body)) + _field(n, EGROUP, b"")], st.integers(3, 99), inner)),
        max_size=4).map(lambda parts: [f for p in parts for f in p]),
    max_leaves=12,
)


@given(_FIELDS)
def test_skipping_walks_any_valid_message_field_by_field(fields: list[bytes]) -> None:
    raw = b"".join(fields) + _field(1, LEN, b"\x01k")
    assert KeyValue.FromString(raw).key == "k"  # valid, as upb sees it
    i = 0
    for f in fields:
        tag, j = decode_varint(raw, i)
        i = skip_field(raw, j, tag)
        assert raw[i - len(f):i] == f
    assert i == len(raw) - 3


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_arbitrary_bytes_give_an_offset_inside_the_buffer_or_a_wire_error(raw: bytes) -> None:
    # Every step consumes input (so no loop over hostile bytes runs forever) and stays in the buffer.
    i = 0
    with contextlib.suppress(WireError):
        while i < len(raw):
            tag, j = decode_varint(raw, i)
            assert i < j <= len(raw)
            i = skip_field(raw, j, tag)
            assert j < i <= len(raw)
    with contextlib.suppress(WireError):
        for _tag, f, lp, cs, ce in len_fields(raw, 0, len(raw)):
            assert f < lp < cs <= ce <= len(raw)


def test_len_fields_gives_every_length_delimited_field_and_skips_the_rest() -> None:
    kv_bytes = KeyValue(key="k", value=kv("a", "b").value).SerializeToString()
    raw = _field(9, VARINT, b"\x96\x01") + kv_bytes + _field(3, I64, b"\x00" * 8)
    got = list(len_fields(raw, 0, len(raw)))
    assert [(t, raw[cs:ce]) for t, _f, _lp, cs, ce in got] == [
        (0x0A, b"k"), (0x12, kv("a", "b").value.SerializeToString())]
    assert [raw[f:lp] for _t, f, lp, _cs, _ce in got] == [b"\x0a", b"\x12"]
    with pytest.raises(WireError, match="past the end of its message"):
        list(len_fields(raw, 0, len(raw) - 1))
    with pytest.raises(WireError, match="group"):
        list(len_fields(FIELDS["group"], 0, len(FIELDS["group"])))


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 70000])
def test_length_delimited_is_the_bytes_upb_writes(n: int) -> None:
    data = b"\x07" * n
    expected = wrappers_pb2.BytesValue(value=data).SerializeToString()
    assert length_delimited(b"\x0a", data) == (expected or b"\x0a\x00")


# -- skeletons and envelope views ---------------------------------------------------------------------

_KEYS = st.sampled_from(["service.name", "http.route", "k", "é", ""])
_VALUES = st.one_of(st.text(max_size=30), st.integers(-(1 << 63), (1 << 63) - 1), st.booleans(),
                    st.floats(allow_nan=False), st.binary(max_size=10), st.lists(st.text(max_size=5), max_size=2))
_ATTRS = st.lists(st.tuples(_KEYS, _VALUES), max_size=3).map(lambda pairs: [kv(k, v) for k, v in pairs])
_RESOURCE = _ATTRS.map(lambda a: Resource(attributes=a))
_SCOPE = st.builds(lambda name, a: InstrumentationScope(name=name, attributes=a), st.text(max_size=8), _ATTRS)
_URL = st.sampled_from(["", "https://opentelemetry.io/schemas/1.24.0"])
_SPAN = st.builds(lambda tid, name, a, t: Span(trace_id=tid, span_id=b"\x01" * 8, name=name, attributes=a,
                                               start_time_unix_nano=t, end_time_unix_nano=t + 5),
                  st.binary(min_size=16, max_size=16), st.text(max_size=20), _ATTRS, st.integers(0, 1 << 62))
_LOG = st.builds(lambda body, a, t: LogRecord(body=kv("", body).value, attributes=a, time_unix_nano=t),
                 _VALUES, _ATTRS, st.integers(0, 1 << 62))


@st.composite
def _metric(draw: st.DrawFn) -> Metric:
    m = Metric(name=draw(st.text(max_size=10)))
    kind = draw(st.sampled_from([None, *wire.METRIC_KINDS]))
    if kind is not None:
        container = getattr(m, kind)
        container.SetInParent()
        for _ in range(draw(st.integers(0, 3))):
            dp = container.data_points.add()
            dp.attributes.extend(draw(_ATTRS))
            dp.time_unix_nano = draw(st.integers(0, 1 << 62))
    return m


BUILDERS: dict[Signal, Callable[[int], ExportRequest]] = {
    Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}


def _requests(signal: Signal) -> st.SearchStrategy[bytes]:
    resource_type, scope_type, item = {
        Signal.TRACES: (ResourceSpans, ScopeSpans, _SPAN),
        Signal.METRICS: (ResourceMetrics, ScopeMetrics, _metric()),
        Signal.LOGS: (ResourceLogs, ScopeLogs, _LOG),
    }[signal]
    scope = st.builds(lambda s, items, url: scope_type(**{"scope": s, signal.items_field: items, "schema_url": url}),
                      _SCOPE, st.lists(item, max_size=4), _URL)
    resource = st.builds(lambda r, scopes, url: resource_type(**{"resource": r, signal.scope_field: scopes,
                                                                  "schema_url": url}),
                         _RESOURCE, st.lists(scope, max_size=3), _URL)
    request = st.lists(resource, max_size=3).map(
        lambda rs: signal.request_type(**{signal.resource_field: rs}).SerializeToString())
    built = st.integers(0, 30).map(lambda n: BUILDERS[signal](n).SerializeToString())
    # Batches concatenate serialized requests: the envelope of the whole is the envelopes of the parts.
    return st.lists(st.one_of(request, built), min_size=1, max_size=3).map(b"".join)


ENVELOPES = {Signal.TRACES: wire.TRACES_ENVELOPE, Signal.METRICS: wire.METRICS_ENVELOPE,
             Signal.LOGS: wire.LOGS_ENVELOPE}
ITEM_TYPES: dict[Signal, type[Span | Metric | LogRecord]] = {
    Signal.TRACES: Span, Signal.METRICS: Metric, Signal.LOGS: LogRecord}


def _check_envelope(signal: Signal, raw: bytes) -> None:
    decoded = signal.request_type.FromString(raw)
    env = ENVELOPES[signal].FromString(raw)
    rfield, sfield, ifield = signal.resource_field, signal.scope_field, signal.items_field
    resources, expected_resources = getattr(env, rfield), getattr(decoded, rfield)
    assert len(resources) == len(expected_resources)
    for r, dr in zip(resources, expected_resources):
        assert r.resource == dr.resource.SerializeToString()
        assert Resource.FromString(r.resource) == dr.resource
        assert r.schema_url == dr.schema_url
        scopes, expected_scopes = getattr(r, sfield), getattr(dr, sfield)
        assert len(scopes) == len(expected_scopes)
        for s, ds in zip(scopes, expected_scopes):
            assert s.scope == ds.scope.SerializeToString()
            assert s.schema_url == ds.schema_url
            items, expected_items = getattr(s, ifield), getattr(ds, ifield)
            assert [ITEM_TYPES[signal].FromString(b) for b in items] == list(expected_items)
            assert list(items) == [x.SerializeToString() for x in expected_items]
    assert wire.count_items(signal.request_type, raw) == count_items(signal, decoded)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
@pytest.mark.parametrize("signal", list(Signal), ids=[s.value for s in Signal])
def test_envelope_view_and_item_count_equal_the_decoded_request(signal: Signal, data: st.DataObject) -> None:
    _check_envelope(signal, data.draw(_requests(signal)))


def test_count_items_follows_the_metric_data_oneof_as_a_decoder_does() -> None:
    # Valid but unusual encodings: a Metric holding two data kinds (the last one wins) and one kind
    # split in two (the parts merge). The count must be the decoded request's.
    gauge = Metric(gauge=Gauge(data_points=[NumberDataPoint(as_int=i) for i in (1, 2, 3)])).SerializeToString()
    sum_ = Metric(sum=Sum(data_points=[NumberDataPoint(as_int=1)])).SerializeToString()
    for metric in (gauge + sum_, sum_ + gauge, sum_ + sum_ + sum_, gauge + Metric(name="x").SerializeToString()):
        # request.resource_metrics (1) > ResourceMetrics.scope_metrics (2) > ScopeMetrics.metrics (2)
        raw = length_delimited(b"\x0a", length_delimited(b"\x12", length_delimited(b"\x12", metric)))
        decoded = Signal.METRICS.request_type.FromString(raw)
        assert wire.count_items(Signal.METRICS.request_type, raw) == count_items(Signal.METRICS, decoded)
        assert wire.METRICS_ENVELOPE.FromString(raw).resource_metrics[0].scope_metrics[0].metrics == [metric]


def test_count_items_refuses_what_is_not_an_export_request_and_bytes_that_do_not_parse() -> None:
    with pytest.raises(TypeError, match="not an OTLP export request"):
        wire.count_items(Span, b"")
    with pytest.raises(DecodeError):
        wire.count_items(Signal.TRACES.request_type, b"\x0a\x05\x12")


@pytest.mark.parametrize("signal", list(Signal), ids=[s.value for s in Signal])
def test_a_payload_of_bytes_is_counted_from_its_envelope_without_decoding(signal: Signal) -> None:
    raw = BUILDERS[signal](7).SerializeToString() * 2
    p = Payload(signal, raw=raw)
    assert p.items == 14 == count_items(signal, signal.request_type.FromString(raw))
    assert p._message is None  # counted, not decoded
    assert p.message == signal.request_type.FromString(raw)


def test_skeleton_keeps_names_numbers_and_oneofs_of_the_real_message() -> None:
    kinds = skeleton(Metric.DESCRIPTOR, {"name": VALUE, "sum": BYTES, "gauge": {"data_points": BYTES}})
    m = kinds.FromString(Metric(name="n", gauge=Gauge(data_points=[NumberDataPoint(as_int=1)])).SerializeToString())
    assert m.name == "n" and m.WhichOneof("data") == "gauge" and len(m.gauge.data_points) == 1
    m = kinds.FromString(Metric(sum=Sum(is_monotonic=True)).SerializeToString())
    assert m.WhichOneof("data") == "sum" and m.sum == Sum(is_monotonic=True).SerializeToString()
    with pytest.raises(ValueError, match="has no field 'nmae'"):
        skeleton(Metric.DESCRIPTOR, {"nmae": VALUE})
    with pytest.raises(TypeError, match="is a message"):
        skeleton(Metric.DESCRIPTOR, {"sum": VALUE})
    with pytest.raises(TypeError, match="is not a message"):
        skeleton(Metric.DESCRIPTOR, {"name": BYTES})


# -- the walkers built on the primitives -------------------------------------------------------------

_NAME_PLAN = wire_plan(Signal.TRACES.request_type.DESCRIPTOR,
                       [{"resource_spans": {"scope_spans": {"spans": {"name": STRING}}}}])
_UPPER = [TextRun(0, lambda t, _f: t.upper())]


def _request_with_span(span: bytes) -> bytes:
    return length_delimited(b"\x0a", length_delimited(b"\x12", length_delimited(b"\x12", span)))


def test_both_walkers_refuse_a_varint_longer_than_ten_bytes_as_upb_does() -> None:
    # Span.name (5) with a secret, then an unknown varint field of 11 bytes: upb refuses the request.
    # The Python walker used to skip any run of continuation bytes and pass the request on as bytes
    # (which no receiver downstream could decode); the C walker falls back, and so must it.
    span = length_delimited(b"\x2a", b"token=sk-proj-abcdefghij0123456789ABCD") + b"\xa0\x06" + b"\xff" * 10 + b"\x01"
    raw = _request_with_span(span)
    with pytest.raises(DecodeError):
        Signal.TRACES.request_type.FromString(raw)
    for native in (True, False):
        with pytest.raises(WireFallback):
            Walker(_NAME_PLAN, 1, native=native).rewrite(raw, _UPPER)
    # The processor, with the field before the secret (the walkers read a message only up to its last
    # anchor and copy the rest): refused as a decode refuses it, whichever walker runs.
    attr = KeyValue(key="note", value=kv("", "token=sk-proj-abcdefghij0123456789ABCD").value).SerializeToString()
    raw = _request_with_span(b"\xa0\x06" + b"\xff" * 10 + b"\x01" + length_delimited(b"\x4a", attr))
    for native in (True, False):
        with pytest.raises(DecodeError):
            SecretMask(SecretMaskConfig(), Signal.TRACES, native=native)(Payload(Signal.TRACES, raw=raw, items=1))


def test_both_walkers_read_a_ten_byte_tag_alike() -> None:
    # resource_spans' tag (0x0a) written in 10 bytes whose last byte has bits beyond 64: read modulo
    # 2**64 (as upb reads varints) it is still 0x0a. The Python walker used to keep the extra bits and
    # not recognize the field, writing other bytes than the C walker.
    inner = length_delimited(b"\x12", length_delimited(b"\x12", length_delimited(b"\x2a", b"secret")))
    raw = bytes([0x8A] + [0x80] * 8 + [0x02]) + encode_varint(len(inner)) + inner
    out = {native: Walker(_NAME_PLAN, 1, native=native).rewrite(raw, _UPPER) for native in (True, False)}
    c = out[True]
    assert c is not None and b"SECRET" in c
    assert out[False] == c

"""The C parts of the privacy processors against the Python code they replace.

The processors' own tests (test_privacy_wire_path.py) check both walkers against the decoded
path; here the C wire walker (processors/privacy/_wirewalk.c) must write byte-for-byte the Python
walker's request for any plan, offsets and rules, agree on what it refuses and survive arbitrary
corrupted bytes; its id prefilter must equal the anchor regexes; and the C ways of collecting
hyperscan matches (_wirewalk's Collector, processors/privacy/_hsscan.c) must find what the binding with
a Python callback finds.
"""
from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.model import Signal
from processors.privacy import anchorscan, attrwalk
from processors.privacy.attrwalk import (
    PF_HEX,
    PF_NUM,
    PF_ULID,
    PF_UUID,
    WHOLE,
    AnyText,
    Attrs,
    ClassifiedKeys,
    SelectedKeys,
    WireFallback,
    WireRewriter,
    wire_plan,
)
from processors.privacy.secret_anchors import anchors as secret_anchors
from processors.privacy.secret_detectors import DETECTOR_NAMES
from processors.privacy.secret_keys import KeyMatcher
from processors.privacy.secret_mask import SecretMask, SecretMaskConfig
from processors.privacy.uuid_normalize import (
    HEX_ANCHOR,
    NUMERIC_SEGMENT_ANCHOR,
    ULID_ANCHOR,
    UUID_ANCHOR,
    Normalizer,
    UUIDNormalize,
    UUIDNormalizeConfig,
)

from .test_wire_path import REQUESTS

_wirewalk = attrwalk._wirewalk  # None only where it was not built: then the first test says so


def test_the_c_walker_is_built_and_used_by_default() -> None:
    # `make test` installs with setup.py, which builds it wherever a C compiler is available
    # (this machine and CI); without it the processors still work, at Python speed.
    assert attrwalk._wirewalk is not None
    plan = wire_plan(Signal.TRACES.request_type.DESCRIPTOR, {"resource_spans": {"scope_spans": {"spans": {}}}})
    assert WireRewriter(plan).native is not None
    assert WireRewriter(plan, native=False).native is None


def _classify(key: str) -> int:
    # A deterministic mix of the three actions, by key.
    return (len(key) + sum(map(ord, key))) % 3


def _plans(signal: Signal) -> list[dict]:
    rule = ClassifiedKeys(_classify)
    everywhere = Attrs(rule, rule)
    if signal is Signal.TRACES:
        specs = [
            {"resource_spans": {"resource": {"attributes": everywhere}, "scope_spans": {"spans": {
                "name": attrwalk.STRING, "attributes": everywhere, "events": {"attributes": everywhere},
                "status": {"message": attrwalk.STRING}}}}},
            {"resource_spans": {"scope_spans": {"spans": {
                "name": attrwalk.STRING, "attributes": Attrs(SelectedKeys(["http.route", "url.path", "k"]))}}}},
        ]
    elif signal is Signal.LOGS:
        specs = [{"resource_logs": {"resource": {"attributes": everywhere}, "scope_logs": {"log_records": {
            "attributes": Attrs(None, rule), "body": AnyText(rule)}}}}]
    else:
        dp = {"data_points": {"attributes": everywhere, "exemplars": {"filtered_attributes": Attrs(None)}}}
        specs = [{"resource_metrics": {"scope_metrics": {"metrics": {"gauge": dp, "sum": dp, "histogram": dp}}}}]
    return [wire_plan(signal.request_type.DESCRIPTOR, spec) for spec in specs]


_PLANS = {s: _plans(s) for s in Signal}


def _text_fn(text: str, start: int, end: int) -> str:
    # Deterministic edits that shrink, grow (past varint boundaries) or keep strings.
    k = (start * 7 + end) % 5
    if k == 0:
        return text
    if k == 1:
        return text[: len(text) // 2]
    if k == 2:
        return text + "é" * 70
    if k == 3:
        return "[" + text.upper() + "]"
    return "x" * 130


def _whole_fn(text: str) -> str:
    return "[W:" + str(len(text)) + "]" if len(text) % 2 else text


def _run(walker: WireRewriter, raw: bytes, offsets: list[int] | None) -> tuple[str, object]:
    try:
        return "ok", walker.rewrite(raw, offsets if offsets is not None else list(range(len(raw))),
                                    _text_fn, _whole_fn)
    except WireFallback:
        return "fallback", None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
@pytest.mark.parametrize("signal", list(Signal), ids=[s.value for s in Signal])
def test_c_and_python_walkers_write_the_same_bytes(signal: Signal, data: st.DataObject) -> None:
    raw = data.draw(REQUESTS[signal])
    every = data.draw(st.booleans())
    offsets = None if every else sorted(data.draw(st.lists(st.integers(0, max(len(raw) - 1, 0)), max_size=40)))
    for plan in _PLANS[signal]:
        c = WireRewriter(plan, native=True)
        py = WireRewriter(plan, native=False)
        assert _run(c, raw, offsets) == _run(py, raw, offsets)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_corrupted_bytes_never_crash_and_agree_when_both_accept(data: st.DataObject) -> None:
    signal = data.draw(st.sampled_from(list(Signal)))
    raw = bytearray(data.draw(REQUESTS[signal]))
    for _ in range(data.draw(st.integers(1, 4))):
        if not raw:
            break
        op = data.draw(st.integers(0, 2))
        at = data.draw(st.integers(0, len(raw) - 1))
        if op == 0:
            raw[at] = data.draw(st.integers(0, 255))
        elif op == 1:
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=6))
    corrupted = bytes(raw)
    for plan in _PLANS[signal]:
        c_kind, c_out = _run(WireRewriter(plan, native=True), corrupted, None)
        py_kind, py_out = _run(WireRewriter(plan, native=False), corrupted, None)
        if c_kind == py_kind == "ok":
            assert c_out == py_out
        if c_kind == "ok" and c_out is not None:
            assert isinstance(c_out, bytes)


def test_rules_that_misbehave_raise_instead_of_writing() -> None:
    plan = wire_plan(Signal.TRACES.request_type.DESCRIPTOR, {"resource_spans": {"scope_spans": {"spans": {
        "name": attrwalk.STRING}}}})
    from pipeline.testing import make_traces

    raw = make_traces(1).SerializeToString()
    walker = WireRewriter(plan, native=True)
    with pytest.raises(TypeError):
        walker.rewrite(raw, list(range(len(raw))), lambda t, s, e: b"bytes")  # type: ignore[arg-type,return-value]

    def boom(t: str, s: int, e: int) -> str:
        raise KeyError("rule failed")

    with pytest.raises(KeyError):
        walker.rewrite(raw, list(range(len(raw))), boom)
    with pytest.raises(ValueError):
        walker.rewrite(raw, [5, 1], lambda t, s, e: t)


def test_whole_values_under_a_whole_key_cover_bytes_arrays_and_maps() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    from pipeline.testing import make_traces

    msg = make_traces(1)
    span = msg.resource_spans[0].scope_spans[0].spans[0]
    del span.attributes[:]
    v = AnyValue()
    v.array_value.values.add(string_value="a")
    v.array_value.values.add(bytes_value=b"\x01\xff")
    inner = v.array_value.values.add()
    inner.kvlist_value.values.add(key="k", value=AnyValue(string_value="deep"))
    inner.kvlist_value.values.add(key="n", value=AnyValue(int_value=3))
    span.attributes.append(KeyValue(key="secret", value=v))
    raw = msg.SerializeToString()
    plan = wire_plan(Signal.TRACES.request_type.DESCRIPTOR, {"resource_spans": {"scope_spans": {"spans": {
        "attributes": Attrs(ClassifiedKeys(lambda k: WHOLE))}}}})
    everywhere = list(range(len(raw)))
    outs = [WireRewriter(plan, native=n).rewrite(raw, everywhere, lambda t, s, e: t, lambda t: "<" + t + ">")
            for n in (True, False)]
    assert outs[0] == outs[1]
    got = Signal.TRACES.request_type.FromString(outs[0]).resource_spans[0].scope_spans[0].spans[0].attributes[0]
    vals = got.value.array_value.values
    assert [vals[0].string_value, vals[1].string_value] == ["<a>", "<01ff>"]
    assert vals[2].kvlist_value.values[0].value.string_value == "<deep>"
    assert vals[2].kvlist_value.values[1].value.int_value == 3


# -- the id prefilter ---------------------------------------------------------------------------

_FLAGS = {PF_UUID: UUID_ANCHOR, PF_NUM: NUMERIC_SEGMENT_ANCHOR, PF_HEX: HEX_ANCHOR, PF_ULID: ULID_ANCHOR}
_pieces = st.one_of(
    st.binary(max_size=10),
    st.sampled_from([b"-", b"/", b"/7", b"abcd", b"0123", b"-dead-beef-cafe-", b"0123456789abcdef", b"ZZ",
                     b"01ARZ3NDEKTSV4RRFFQ69G5FAV", b"01arz3ndektsv4rrffq69g5fav", b"ILOU",
                     b"f50ae695-14da-8c65-9ce2-b10cccdaebf9"]),
)


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(_pieces, max_size=10), flags=st.integers(0, 15))
def test_prefilter_is_exactly_the_anchor_scan(parts: list[bytes], flags: int) -> None:
    data = b"".join(parts)
    expected = sum(f for f, a in _FLAGS.items() if flags & f and re.search(a.regex, data))
    assert _wirewalk.prefilter(data, flags) == expected


_id_pieces = st.one_of(
    _pieces.map(lambda b: b.decode("latin-1")),
    st.sampled_from(["/", "/12", "/12/", "?", "#", ";", " ", "\n", "{", "}", "urn:uuid:", "URN:UUID:", "\\1", "$"]),
    st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.text(max_size=6),
)


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(_id_pieces, max_size=10), cfg=st.sampled_from([
    UUIDNormalizeConfig(), UUIDNormalizeConfig(hex_ids=False, ulids=False),
    UUIDNormalizeConfig(numeric_path_segments=False, replacement="\\g<0>-<\\1>"),
    UUIDNormalizeConfig(hex_ids=False, numeric_path_segments=False, replacement="X"),
]))
def test_normalize_found_equals_the_joint_regex(parts: list[str], cfg: UUIDNormalizeConfig) -> None:
    # The wire path's UUID-only shortcut must give the joint regex's text and counts exactly.
    text = "".join(parts)
    proc = UUIDNormalize(cfg, Signal.TRACES)
    ref = Normalizer(cfg)
    found = _wirewalk.prefilter(text.encode("utf-8"), proc._prefilter)
    expected = ref.normalize_candidate(text) if found else text
    got = proc.fn.normalize_found(text, found) if found else text
    assert got == expected
    assert proc.fn.take_counts() == ref.take_counts()


_SCANNERS: dict[tuple[int, str], anchorscan.AnchorScanner] = {}


def _scanner(anchors: list[anchorscan.Anchor], matcher: str) -> anchorscan.AnchorScanner:
    key = (id(anchors), matcher)
    if key not in _SCANNERS:
        _SCANNERS[key] = anchorscan.AnchorScanner(anchors, backend="hyperscan", matcher=matcher)
    return _SCANNERS[key]


_ANCHOR_SETS = [secret_anchors(DETECTOR_NAMES, KeyMatcher()), [UUID_ANCHOR, NUMERIC_SEGMENT_ANCHOR, HEX_ANCHOR]]


@pytest.mark.skipif(anchorscan._hyperscan is None, reason="hyperscan is not installed on this platform")
@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.one_of(_pieces, st.sampled_from([b"token ", b"Authorization", b"sk-", b"api_key=",
                                                          b"PRIVATE KEY", b"4111 1111 1111 1111"])), max_size=12))
def test_the_c_match_collector_collects_what_the_python_one_does(parts: list[bytes]) -> None:
    data = b"".join(parts)
    for anchors in _ANCHOR_SETS:
        c = _scanner(anchors, "collector")
        py = _scanner(anchors, "python")
        assert c._collector is not None and py._collector is None
        for ids in (True, False):
            assert c.scan(data, ids=ids) == py.scan(data, ids=ids)


def test_the_libhyperscan_scanner_is_built_where_the_library_is() -> None:
    # `make test` installs libhyperscan-dev on amd64 before installing otelpipe, so setup.py builds
    # processors/privacy/_hsscan.c; secret_mask's scan then makes no Python call per match.
    if not os.path.exists("/usr/include/hs/hs.h"):
        pytest.skip("libhyperscan-dev is not installed (only amd64 has it); the binding is used instead")
    assert anchorscan._hsscan is not None
    assert SecretMask(SecretMaskConfig(), Signal.TRACES).scanner.matcher == "libhs"


@pytest.mark.skipif(anchorscan._hsscan is None or anchorscan._hyperscan is None,
                    reason="needs both libhyperscan (processors/privacy/_hsscan.c) and the hyperscan binding "
                           "to compare")
@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.one_of(_pieces, st.sampled_from([b"token ", b"Authorization", b"sk-", b"api_key=",
                                                          b"PRIVATE KEY", b"4111 1111 1111 1111"])), max_size=12))
def test_libhyperscan_called_from_c_finds_what_the_binding_finds(parts: list[bytes]) -> None:
    data = b"".join(parts)
    for anchors in _ANCHOR_SETS:
        libhs = _scanner(anchors, "libhs")
        binding = _scanner(anchors, "python")
        for ids in (True, False):
            assert libhs.scan(data, ids=ids) == binding.scan(data, ids=ids)


def test_a_map_whose_name_entry_names_a_whole_key_gets_its_value_entries_whole() -> None:
    # Name/value pairs (attrwalk.NAME_KEYS): only the name holds an offset, and the value entries are
    # still visited and written whole, alike by both walkers; a map without such a name, or a rule that
    # cannot call a name WHOLE (selected keys), changes nothing.
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    from pipeline.testing import any_value, make_traces

    msg = make_traces(1)
    span = msg.resource_spans[0].scope_spans[0].spans[0]
    del span.attributes[:]
    env = [{"name": "password", "Value": "hunter2", "other": "kept"}, {"KEY": "host", "value": "db"},
           {"value": ["a", 7], "Name": "password"}]
    span.attributes.append(KeyValue(key="env", value=any_value(env)))
    span.attributes.append(KeyValue(key="k", value=AnyValue(kvlist_value=any_value({"key": "password",
                                                                                     "value": "x"}).kvlist_value)))
    raw = msg.SerializeToString()
    offsets = [m.start() for m in re.finditer(rb"password", raw)]
    for rule, changed in ((ClassifiedKeys(lambda k: WHOLE if k == "password" else 1), True),
                          (SelectedKeys(["env", "k", "password", "value", "Value"]), False)):
        plan = wire_plan(Signal.TRACES.request_type.DESCRIPTOR, {"resource_spans": {"scope_spans": {"spans": {
            "attributes": Attrs(rule, rule)}}}})
        outs = [WireRewriter(plan, native=n).rewrite(raw, offsets, lambda t, s, e: t, lambda t: "<" + t + ">")
                for n in (True, False)]
        assert outs[0] == outs[1]
        if not changed:
            assert outs[0] is None
            continue
        got = Signal.TRACES.request_type.FromString(outs[0]).resource_spans[0].scope_spans[0].spans[0]
        items = [{kv.key: kv.value for kv in v.kvlist_value.values} for v in got.attributes[0].value.array_value.values]
        assert items[0]["Value"].string_value == "<hunter2>" and items[0]["other"].string_value == "kept"
        assert items[1]["value"].string_value == "db"
        assert [v.string_value or v.int_value for v in items[2]["value"].array_value.values] == ["<a>", 7]
        assert {kv.key: kv.value.string_value for kv in got.attributes[1].value.kvlist_value.values} == \
            {"key": "password", "value": "<x>"}

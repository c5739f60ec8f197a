"""The C parts of the privacy processors against the Python code they replace.

The processors' own tests (test_wire_path.py) check every walker/scanner combination against the
decoded-message oracle; here the C wire walker (processors/privacy/_wirewalk.c) must write
byte-for-byte the Python walker's request for any plan and rules (one stage or two in one walk),
agree on what it refuses and survive arbitrary corrupted bytes; its id prefilter must equal the
anchor regexes; and libhyperscan called from C (processors/privacy/_hsscan.c) must find what the
binding finds.
"""
from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.model import Payload, Signal
from pipeline.testing import make_traces
from processors.privacy import scanner as scanner_module
from processors.privacy import walker as walker_module
from processors.privacy.scanner import AnchorScanner
from processors.privacy.secret_keys import KeyMatcher
from processors.privacy.secret_mask import SecretMask, SecretMaskConfig
from processors.privacy.secret_rules import DETECTOR_NAMES
from processors.privacy.secret_rules import anchors as secret_anchors
from processors.privacy.stage import Fused
from processors.privacy.uuid_normalize import Normalizer, UUIDNormalize, UUIDNormalizeConfig
from processors.privacy.walker import (
    PF_HEX,
    PF_NUM,
    PF_ULID,
    PF_UUID,
    STRING,
    WHOLE,
    AnyText,
    Attrs,
    ClassifiedKeys,
    MaskRun,
    Run,
    SelectedKeys,
    TextRun,
    Walker,
    WireFallback,
    wire_plan,
)

from .test_wire_path import REQUESTS

_wirewalk = walker_module._wirewalk  # None only where it was not built: then the first test says so


def test_the_c_walker_is_built_and_used_by_default() -> None:
    # `make test` installs with setup.py, which builds it wherever a C compiler is available
    # (this machine and CI); without it the processors still work, at Python speed.
    assert _wirewalk is not None
    plan = wire_plan(Signal.TRACES.request_type.DESCRIPTOR, [{"resource_spans": {"scope_spans": {"spans": {}}}}])
    assert Walker(plan, 1).native
    assert not Walker(plan, 1, native=False).native
    assert SecretMask(SecretMaskConfig(), Signal.TRACES).single.walker.native


def _classify(key: str) -> int:
    # A deterministic mix of the three actions, by key.
    return (len(key) + sum(map(ord, key))) % 3


def _specs(signal: Signal) -> list[list[dict]]:
    """Plans as lists of one spec per stage: one stage, and two stages looking at overlapping places."""
    rule = ClassifiedKeys(_classify)
    everywhere = Attrs(rule, rule)
    if signal is Signal.TRACES:
        a = {"resource_spans": {"resource": {"attributes": everywhere}, "scope_spans": {"spans": {
            "name": STRING, "attributes": everywhere, "events": {"attributes": everywhere},
            "status": {"message": STRING}}}}}
        b = {"resource_spans": {"scope_spans": {"spans": {
            "name": STRING, "attributes": Attrs(SelectedKeys(["http.route", "url.path", "k"]))}}}}
        return [[a], [b], [a, b], [b, a]]
    if signal is Signal.LOGS:
        a = {"resource_logs": {"resource": {"attributes": everywhere}, "scope_logs": {"log_records": {
            "attributes": Attrs(None, rule), "body": AnyText(rule)}}}}
        b = {"resource_logs": {"scope_logs": {"log_records": {"attributes": Attrs(SelectedKeys(["k", "run.id"]))}}}}
        return [[a], [a, b]]
    dp = {"data_points": {"attributes": everywhere, "exemplars": {"filtered_attributes": Attrs(None)}}}
    return [[{"resource_metrics": {"scope_metrics": {"metrics": {"gauge": dp, "sum": dp, "histogram": dp}}}}]]


_PLANS = {s: [(wire_plan(s.request_type.DESCRIPTOR, specs), len(specs)) for specs in _specs(s)] for s in Signal}


def _text_fn(text: str, _flags: int) -> str:
    # Deterministic edits that shrink, grow (past varint boundaries) or keep strings.
    k = (len(text) * 7 + sum(map(ord, text[:3]))) % 5
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


def _runs(n: int, prefilter: int) -> list[Run]:
    return [TextRun(prefilter if k else 0, _text_fn, _whole_fn) for k in range(n)]


def _run(walker: Walker, raw: bytes, prefilter: int) -> tuple[str, object]:
    try:
        return "ok", walker.rewrite(raw, _runs(walker.nstages, prefilter))
    except WireFallback:
        return "fallback", None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
@pytest.mark.parametrize("signal", list(Signal), ids=[s.value for s in Signal])
def test_c_and_python_walkers_write_the_same_bytes(signal: Signal, data: st.DataObject) -> None:
    raw = data.draw(REQUESTS[signal])
    prefilter = data.draw(st.sampled_from([0, PF_UUID, PF_UUID | PF_NUM | PF_HEX | PF_ULID]))
    for plan, n in _PLANS[signal]:
        assert _run(Walker(plan, n, native=True), raw, prefilter) == _run(Walker(plan, n, native=False), raw, prefilter)


_SECRET_MASKS = {s: SecretMask(SecretMaskConfig(), s) for s in (Signal.TRACES, Signal.LOGS)}
_UUIDS = {s: UUIDNormalize(UUIDNormalizeConfig(log_attributes=("http.route", "k")), s)
          for s in (Signal.TRACES, Signal.LOGS)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
@pytest.mark.parametrize("signal", [Signal.TRACES, Signal.LOGS], ids=["traces", "logs"])
def test_c_and_python_walkers_mask_alike_alone_and_fused(signal: Signal, data: st.DataObject) -> None:
    # the mask stage: C runs the masking loop itself (the masker's `engine`), Python calls the masker
    raw = data.draw(REQUESTS[signal])
    sm, un = _SECRET_MASKS[signal], _UUIDS[signal]
    mask_run = sm.prepare(raw)
    if mask_run is None:
        return
    assert isinstance(mask_run, MaskRun)
    outs = []
    for native in (True, False):
        alone = Walker(sm.single.walker.plan, 1, native=native)
        both = Fused(sm.single, un.single).walker.plan
        try:
            outs.append((alone.rewrite(raw, [mask_run]), sm.masker.take_counts(),
                         Walker(both, 2, native=native).rewrite(raw, [mask_run, un.prepare(raw)]),
                         sm.masker.take_counts(), un.fn.take_counts()))
        except WireFallback:
            outs.append(None)
            sm.masker.take_counts()
            un.fn.take_counts()
    assert outs[0] == outs[1]


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
    for plan, n in _PLANS[signal]:
        c_kind, c_out = _run(Walker(plan, n, native=True), corrupted, 0)
        py_kind, py_out = _run(Walker(plan, n, native=False), corrupted, 0)
        if c_kind == py_kind == "ok":
            assert c_out == py_out
        if c_kind == "ok" and c_out is not None:
            assert isinstance(c_out, bytes)


def test_rules_that_misbehave_raise_instead_of_writing() -> None:
    plan = wire_plan(Signal.TRACES.request_type.DESCRIPTOR, [{"resource_spans": {"scope_spans": {"spans": {
        "name": STRING}}}}])
    raw = make_traces(1).SerializeToString()
    for native in (True, False):
        walker = Walker(plan, 1, native=native)
        with pytest.raises(TypeError):
            walker.rewrite(raw, [TextRun(0, lambda t, _f: b"bytes")])  # type: ignore[arg-type,return-value]

        def boom(t: str, _f: int) -> str:
            raise KeyError("rule failed")

        with pytest.raises(KeyError):
            walker.rewrite(raw, [TextRun(0, boom)])
        with pytest.raises(ValueError):
            walker.rewrite(raw, [])
    engine = MaskRun([5, 1], [0, 0], lambda t, _b: t, lambda t: t, None, None)
    with pytest.raises(ValueError):
        Walker(plan, 1, native=True).rewrite(raw, [engine])


def test_whole_values_under_a_whole_key_cover_bytes_arrays_and_maps() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

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
    plan = wire_plan(Signal.TRACES.request_type.DESCRIPTOR, [{"resource_spans": {"scope_spans": {"spans": {
        "attributes": Attrs(ClassifiedKeys(lambda k: WHOLE))}}}}])
    outs = [Walker(plan, 1, native=n).rewrite(raw, [TextRun(0, lambda t, _f: t, lambda t: "<" + t + ">")])
            for n in (True, False)]
    assert outs[0] == outs[1]
    got = Signal.TRACES.request_type.FromString(outs[0]).resource_spans[0].scope_spans[0].spans[0].attributes[0]
    vals = got.value.array_value.values
    assert [vals[0].string_value, vals[1].string_value] == ["<a>", "<01ff>"]
    assert vals[2].kvlist_value.values[0].value.string_value == "<deep>"
    assert vals[2].kvlist_value.values[1].value.int_value == 3


# -- the id prefilter ---------------------------------------------------------------------------

#: The id anchors, as walker.TextRun's prefilter documents them.
_FLAGS = {PF_UUID: rb"-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-", PF_NUM: rb"/[0-9]", PF_HEX: rb"[0-9a-fA-F]{16}",
          PF_ULID: rb"[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}"}
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
    expected = sum(f for f, rx in _FLAGS.items() if flags & f and re.search(rx, data))
    assert walker_module.id_anchors(data, flags) == expected  # in C
    with pytest.MonkeyPatch.context() as m:
        m.setattr(walker_module, "_wirewalk", None)
        assert walker_module.id_anchors(data, flags) == expected  # in Python


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
    found = walker_module.id_anchors(text.encode("utf-8"), proc.prefilter)
    expected = ref(text) if found else text
    got = proc.fn.normalize_found(text, found) if found else text
    assert got == expected
    assert proc.fn.take_counts() == (ref.take_counts() if found else {})


_SECRET_ANCHORS = secret_anchors(DETECTOR_NAMES, KeyMatcher())


def test_the_libhyperscan_scanner_is_built_where_the_library_is() -> None:
    # `make test` installs libhyperscan-dev on amd64 before installing otelpipe, so setup.py builds
    # processors/privacy/_hsscan.c; secret_mask's scan then makes no Python call per match.
    if not os.path.exists("/usr/include/hs/hs.h"):
        pytest.skip("libhyperscan-dev is not installed (only amd64 has it); the binding is used instead")
    assert scanner_module._hsscan is not None
    assert SecretMask(SecretMaskConfig(), Signal.TRACES).scanner.backend == "libhs"


_BOTH = {}
if scanner_module._hsscan is not None and scanner_module._hyperscan is not None:
    _BOTH = {b: AnchorScanner(_SECRET_ANCHORS, backend=b) for b in ("libhs", "binding")}


@pytest.mark.skipif(not _BOTH, reason="needs both libhyperscan (processors/privacy/_hsscan.c) and the hyperscan "
                                      "binding to compare")
@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.one_of(_pieces, st.sampled_from([b"token ", b"Authorization", b"sk-", b"api_key=",
                                                          b"PRIVATE KEY", b"4111 1111 1111 1111"])), max_size=12))
def test_libhyperscan_called_from_c_finds_what_the_binding_finds(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert _BOTH["libhs"].scan(data) == _BOTH["binding"].scan(data)


def test_a_map_whose_name_entry_names_a_whole_key_gets_its_value_entries_whole() -> None:
    # Name/value pairs (walker.NAME_KEYS): only the name holds an offset, and the value entries are
    # still visited and written whole, alike by both walkers; a map without such a name, or a rule that
    # cannot call a name WHOLE (selected keys), changes nothing.
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    from pipeline.testing import any_value

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
    ids = [0] * len(offsets)
    for rule, changed in ((ClassifiedKeys(lambda k: WHOLE if k == "password" else 1), True),
                          (SelectedKeys(["env", "k", "password", "value", "Value"]), False)):
        plan = wire_plan(Signal.TRACES.request_type.DESCRIPTOR, [{"resource_spans": {"scope_spans": {"spans": {
            "attributes": Attrs(rule, rule)}}}}])
        # a mask stage without value detectors: only the anchor offsets and whole values
        run = MaskRun(offsets, ids, lambda t, _b: t, lambda t: t, lambda t: "<" + t + ">", None)
        outs = [Walker(plan, 1, native=n).rewrite(raw, [run]) for n in (True, False)]
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


_UUID_PROCS = {cfg: {native: UUIDNormalize(cfg, Signal.TRACES, native=native) for native in (True, False)}
               for cfg in (UUIDNormalizeConfig(), UUIDNormalizeConfig(numeric_path_segments=False, replacement="ü{x}"),
                           UUIDNormalizeConfig(hex_ids=False, ulids=False))}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(st.lists(st.one_of(_id_pieces, st.sampled_from(["\x1c", "\x1f", "\x0b", "é", "/7\x1d", "{",
                                                                       "urn:UUID:", "-"])), max_size=8)
                      .map("".join), min_size=1, max_size=4),
       cfg=st.sampled_from(list(_UUID_PROCS)))
def test_the_c_uuid_template_equals_normalize_found(names: list[str], cfg: UUIDNormalizeConfig) -> None:
    # the C walker replaces UUIDs itself where normalize_found would take its UUID-only template
    # (ASCII text, no hex/ULID anchor, no numeric segment): the same text and counts as the Python walk
    msg = make_traces(len(names))
    for sp, name in zip(msg.resource_spans[0].scope_spans[0].spans, names):
        sp.name = name
        sp.attributes.add(key="http.route").value.string_value = name
    raw = msg.SerializeToString()
    outs = []
    for native in (True, False):
        proc = _UUID_PROCS[cfg][native]
        proc.fn.take_counts()
        outs.append((proc(Payload(Signal.TRACES, raw=raw)).serialize(), proc.fn.take_counts()))
    assert outs[0] == outs[1]

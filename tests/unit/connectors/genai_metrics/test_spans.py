"""The wire reading `genai_metrics` relies on: KEYED skeleton fields, enums kept as numbers, token counts."""
from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from connectors.genai_metrics.aggregate import Series
from connectors.genai_metrics.config import DimensionConfig, GenAIMetricsConfig
from connectors.genai_metrics.pricing import PriceTable
from connectors.genai_metrics.runs import RunAccounting, _genaiwire
from connectors.genai_metrics.spans import (
    COUNT_GROUPS,
    NEEDLES,
    R_CODE,
    R_PARENT,
    R_RES,
    R_SID,
    R_TID,
    SPAN_VIEW,
    V_DIMS,
    V_PROVIDER,
    V_REQUEST_MODEL,
    V_RESPONSE_MODEL,
    V_TCR,
    V_TIN,
    V_TOUT,
    V_TRS,
    Record,
    Texts,
    any_count,
    any_text,
    count,
    has_parent_fast,
    trace_id_fast,
)
from pipeline import wire
from pipeline.serieslimit import SeriesLimiter
from pipeline.testing import FakeClock, kv
from tests.unit.connectors.genai_metrics.spantrees import agent, chat, request, span, tool


def test_keyed_attributes_map_keys_to_serialized_values_the_last_one_winning() -> None:
    s = Span(trace_id=b"t" * 16, span_id=b"s" * 8, kind=Span.SPAN_KIND_CLIENT)
    s.attributes.extend([kv("gen_ai.request.model", "gpt-4o"), kv("n", 7), kv("n", 8)])
    s.status.code = Status.STATUS_CODE_ERROR
    v = SPAN_VIEW.FromString(s.SerializeToString())
    assert dict(v.attributes) == {"gen_ai.request.model": AnyValue(string_value="gpt-4o").SerializeToString(),
                                  "n": AnyValue(int_value=8).SerializeToString()}
    assert v.kind == 3 and v.status.code == 2  # enums read as their numbers
    assert v.parent_span_id == b""


def test_keyed_needs_a_repeated_key_value_field() -> None:
    with pytest.raises(TypeError, match="cannot be KEYED"):
        wire.skeleton(KeyValue.DESCRIPTOR, {"value": wire.KEYED})


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 10**12, 2**63 - 1])
def test_token_counts_decode_every_varint_length(value: int) -> None:
    assert any_count(AnyValue(int_value=value).SerializeToString()) == value


@pytest.mark.parametrize(("value", "count"), [
    (AnyValue(int_value=-1), None), (AnyValue(double_value=12.0), 12), (AnyValue(double_value=1.5), None),
    (AnyValue(double_value=float("nan")), None), (AnyValue(string_value="42"), 42), (AnyValue(string_value="4k"), None),
    (AnyValue(bool_value=True), None)])
def test_token_counts_of_other_types(value: AnyValue, count: int | None) -> None:
    assert any_count(value.SerializeToString()) == count


def test_attribute_text_of_each_type() -> None:
    assert any_text(AnyValue(string_value="x" * 300).SerializeToString()) == "x" * 300
    assert any_text(AnyValue(int_value=8931).SerializeToString()) == "8931"
    assert any_text(AnyValue(bool_value=False).SerializeToString()) == "false"


def test_fast_layout_checks_fall_back_when_unsure() -> None:
    child = Span(trace_id=b"t" * 16, span_id=b"s" * 8, parent_span_id=b"p" * 8).SerializeToString()
    root = Span(trace_id=b"t" * 16, span_id=b"s" * 8).SerializeToString()
    assert has_parent_fast(child) and not has_parent_fast(root)
    assert trace_id_fast(child) == b"t" * 16
    odd = Span(span_id=b"s" * 8, parent_span_id=b"p" * 8).SerializeToString()  # no trace id first
    assert trace_id_fast(odd) is None and not has_parent_fast(odd)  # "decode to know"


# -- the two span readers: _genaiwire.Reader (C) and RunAccounting's Python reader ------------------------

def _accounting(dims: tuple[str, ...] = ()) -> RunAccounting:
    cfg = GenAIMetricsConfig(dimensions=tuple(DimensionConfig(name=d) for d in dims))
    return RunAccounting(cfg, Series(SeriesLimiter(100, 60.0), FakeClock()), PriceTable(cfg.prices), Texts(),
                         FakeClock())


def _native(acc: RunAccounting) -> _genaiwire.Reader:
    assert _genaiwire is not None, "connectors/genai_metrics/_genaiwire.c was not built (setup.py)"
    return _genaiwire.Reader(tuple(tuple(n.encode() for n in g) for g in acc._groups), COUNT_GROUPS, NEEDLES)


def _counted(recs: list[Record]) -> list[Record]:
    """Records with token counts as `count` gives them (the C reader makes simple ints itself)."""
    idx = {R_CODE + 1 + g for g in COUNT_GROUPS}
    return [tuple(count(v) if i in idx else v for i, v in enumerate(r)) for r in recs]


def _python(acc: RunAccounting, raw: bytes) -> tuple[list[Record], list[Record]] | None:
    """The Python reader's records, its root candidates decoded (None: a span it counts as malformed)."""
    before = acc.stats.malformed
    genai, candidates = acc._read_py(raw)
    roots = [r for r in (acc._record(rb, sb) for rb, sb in candidates) if r is not None and not r[R_PARENT]]
    if acc.stats.malformed != before:
        return None
    return _counted(genai), _counted(roots)


def _same(raw: bytes, dims: tuple[str, ...] = ()) -> tuple[list[Record], list[Record]]:
    acc = _accounting(dims)
    found = _native(acc).read(raw)
    assert found is not None
    assert (_counted(found[0]), _counted(found[1])) == _python(acc, raw)
    return found


def _agent_trace(t: int) -> list[Span]:
    return [chat(t, 2, 1, 0.0, 1.0, tin=120, tout=30, **{"gen_ai.usage.cache_read.input_tokens": 7}),
            tool(t, 3, 1, 1.0, 1.25, **{"mcp.method.name": "tools/call", "server.address": "mcp", "server.port": 80,
                                         "rpc.response.status_code": "-32000"}),
            chat(t, 4, 1, 1.5, 3.5, tin=2**40, tout=None, error=True, **{"error.type": "timeout"}),
            span(t, 6, 4, 1.6, 3.4, {"http.request.method": "POST"}, kind=Span.SPAN_KIND_CLIENT),
            agent(t, 1, 9, 0.0, 5.0, **{"deployment.environment": "prod"}),
            span(t, 9, None, 0.0, 6.0, {"http.route": "/run", "gen_ai.agent.name": "outer"},
                 kind=Span.SPAN_KIND_SERVER)]


def test_the_c_reader_is_built_and_used_by_default(reader: str) -> None:
    # `make test` installs with setup.py, which builds it wherever a C compiler is available
    assert _genaiwire is not None
    assert (_accounting().native is not None) == (reader == "native")


def test_both_readers_give_the_same_records() -> None:
    spans = [*_agent_trace(1), *_agent_trace(2)]
    legacy = span(3, 2, 1, 0, 1, {"gen_ai.system": "openai", "gen_ai.usage.prompt_tokens": 5.0,
                                   "gen_ai.usage.completion_tokens": "12", "gen_ai.usage.input_tokens": -3,
                                   "gen_ai.provider.name": "azure", "gen_ai.agent.name": ""})
    dup = span(4, 2, None, 0, 1, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "a"})
    dup.attributes.extend([kv("gen_ai.request.model", "b"), kv("gen_ai.usage.input_tokens", True)])
    dup.attributes.add(key="gen_ai.response.model")  # no value: b""
    genai, roots = _same(request([*spans, legacy, dup], **{"deployment.environment": "dev"}).SerializeToString(),
                         dims=("deployment.environment",))
    assert len(genai) == 10 and [r[R_SID] for r in roots] == [(9).to_bytes(8, "big")] * 2
    chat2 = genai[0]
    assert (chat2[V_TIN], chat2[V_TOUT], chat2[V_TCR], chat2[V_TRS]) == (120, 30, 7, None)
    assert genai[2][V_TIN] == 2**40 and genai[2][R_CODE] == 2 and genai[2][V_TOUT] is None
    assert genai[8][V_PROVIDER] == AnyValue(string_value="azure").SerializeToString()  # newest spelling wins
    assert count(genai[8][V_TIN]) is None and count(genai[8][V_TOUT]) == 12
    assert genai[9][V_REQUEST_MODEL] == AnyValue(string_value="b").SerializeToString()  # the last value wins
    assert genai[9][V_RESPONSE_MODEL] == b""
    assert genai[3][V_DIMS] == AnyValue(string_value="prod").SerializeToString() and genai[0][V_DIMS] is None


def test_keys_of_one_length_and_a_key_in_two_groups_are_all_read() -> None:
    # "gen_ai.tool.type" and "gen_ai.agent.id" and the dimensions share lengths with other keys; a dimension
    # named as a key the connector reads gets the value too
    attrs = {"gen_ai.tool.name": "search", "gen_ai.tool.type": "function", "gen_ai.agent.id": "a-1",
             "gen_ai.request.model": "m", "tenant.id.xxxxx": "t", "gen_ai.request.mode": "x"}
    raw = request([span(1, 2, 1, 0, 1, {"gen_ai.operation.name": "execute_tool", **attrs})]).SerializeToString()
    genai, _ = _same(raw, dims=("gen_ai.request.model", "tenant.id.xxxxx", "gen_ai.tool.nam"))
    r = genai[0]
    text = AnyValue(string_value="m").SerializeToString()
    assert r[V_REQUEST_MODEL] == text and r[V_DIMS:] == (text, AnyValue(string_value="t").SerializeToString(), None)


def test_roots_are_every_span_without_a_parent_however_laid_out() -> None:
    odd = Span(span_id=b"r" * 8, trace_id=b"t" * 16, name="root")  # written out of field order below
    raw_span = odd.SerializeToString()
    body = raw_span[18:] + raw_span[:18]  # trace id last: not where SDKs put it
    scope = b"\x12" + bytes([len(body)]) + body
    rs = b"\x12" + bytes([len(scope)]) + scope
    genai, roots = _same(b"\x0a" + bytes([len(rs)]) + rs)
    assert genai == [] and [(r[R_TID], r[R_SID], r[R_RES]) for r in roots] == [(b"t" * 16, b"r" * 8, b"")]


def _one_span_request(body: bytes) -> bytes:
    scope = wire.length_delimited(b"\x12", body)
    return wire.length_delimited(b"\x0a", wire.length_delimited(b"\x12", scope))


@pytest.mark.parametrize("raw", [
    # a span holding the operation key whose bytes are cut short
    _one_span_request(b"\x0a\x10" + b"\x01" * 16 + NEEDLES[0] + b"\x12\xff"),
    # a non-ASCII attribute key (the Python reader checks its UTF-8)
    request([chat(1, 2, 1, 0, 1, **{"ключ": 1})]).SerializeToString(),
    # ... its first non-ASCII byte past the first eight bytes, or in the last few (the C reader checks words)
    request([chat(1, 2, 1, 0, 1, **{"gen_ai.ключ": 1})]).SerializeToString(),
    request([chat(1, 2, 1, 0, 1, **{"gen_ai.operation.namé": 1})]).SerializeToString(),
    # a group (wire type 3) among a span's unknown fields
    _one_span_request(chat(1, 2, 1, 0, 1).SerializeToString() + b"\xa3\x01\xa4\x01"),
    # an attribute value written as a varint
    _one_span_request(chat(1, 2, 1, 0, 1).SerializeToString() + b"\x4a\x05\x0a\x01k\x10\x01"),
])
def test_the_c_reader_leaves_what_it_does_not_read_to_python(raw: bytes) -> None:
    acc = _accounting()
    assert _native(acc).read(raw) is None
    _python(acc, raw)  # reads it (or counts a malformed span)


_BASE = request([*_agent_trace(5), span(6, 1, None, 0, 1, {"gen_ai.operation.name": "embeddings"})],
                **{"service.instance.id": "i-1"}).SerializeToString()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_BASE) - 1), st.integers(0, 255)), max_size=4),
       st.integers(1, len(_BASE)))
def test_on_corrupted_bytes_the_c_reader_agrees_or_leaves_it_to_python(edits: list[tuple[int, int]],
                                                                      cut: int) -> None:
    raw = bytearray(_BASE[:cut])
    for at, b in edits:
        if at < len(raw):
            raw[at] = b
    data = bytes(raw)
    acc = _accounting(("deployment.environment",))
    found = _native(acc).read(data)
    if found is None:
        return
    assert (_counted(found[0]), _counted(found[1])) == _python(acc, data)


def _dump(obj: object) -> object:
    """Accumulators as plain values (slots, recursively), to compare two accountings."""
    slots = getattr(type(obj), "__slots__", None)
    if slots and not isinstance(obj, tuple):
        return tuple((name, _dump(getattr(obj, name))) for name in slots)
    if isinstance(obj, dict):
        return sorted(((repr(k), _dump(v)) for k, v in obj.items()), key=repr)
    if isinstance(obj, list):
        return [_dump(v) for v in obj]
    return obj


def _accounted(raw: bytes, native: bool, dims: tuple[str, ...]) -> object:
    acc = _accounting(dims)
    if not native:
        acc.native = None
    try:
        acc.ingest(raw)
    except DecodeError:
        return "malformed request"
    held = {tid: (t.ops, t.root) for tid, t in acc.pending.items()}
    acc.close_all("shutdown")
    return held, [_dump(pts) for pts in acc.series.points], acc.stats


_MIXED = request([
    *_agent_trace(7),
    span(8, 2, 1, 0, 1, {"gen_ai.system": "openai", "gen_ai.usage.prompt_tokens": "40",
                         "gen_ai.usage.reasoning_tokens": 3.0}),  # legacy, counts not plain ints
    span(8, 3, 1, 0, 1, {"gen_ai.operation.name": "rerank", "gen_ai.provider.name": "cohere"}),  # OTHER
    span(8, 4, 1, 0, 1, {"gen_ai.operation.name": "chat"}, kind=Span.SPAN_KIND_SERVER),
    span(8, 5, 1, 0, 1, {"mcp.method.name": "initialize", "server.address": "mcp"}, kind=Span.SPAN_KIND_CLIENT),
    agent(8, 1, None, 0, 2, name="", **{"gen_ai.agent.id": "asst_1", "gen_ai.conversation.id": "c1"}),
], **{"deployment.environment": "dev"}).SerializeToString()


@pytest.mark.parametrize("dims", [(), ("deployment.environment",)])
def test_the_c_reader_makes_the_ops_the_python_reader_makes(dims: tuple[str, ...]) -> None:
    assert _accounted(_MIXED, True, dims) == _accounted(_MIXED, False, dims)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_MIXED) - 1), st.integers(0, 255)), max_size=3),
       st.integers(1, len(_MIXED)), st.booleans())
def test_on_corrupted_bytes_both_readers_account_the_same(edits: list[tuple[int, int]], cut: int,
                                                          dims: bool) -> None:
    raw = bytearray(_MIXED[:cut])
    for at, b in edits:
        if at < len(raw):
            raw[at] = b
    d = ("deployment.environment",) if dims else ()
    assert _accounted(bytes(raw), True, d) == _accounted(bytes(raw), False, d)

"""Reading GenAI spans off the wire: which spans to decode, and the few fields kept of each.

A span is decoded only if its serialized bytes hold the serialized key of
`gen_ai.operation.name`, `mcp.method.name` or (older conventions) `gen_ai.system`: a
`bytes in bytes` test in C per span, so spans that are not GenAI cost next to nothing. Two
readers give the same records of those spans (`Record`: ids, kind, times, status code and the
serialized `AnyValue` of each attribute group the connector reads, GROUPS):

- `_genaiwire.Reader` (connectors/genai_metrics/_genaiwire.c, built by setup.py): one pass in C
  over a request, which can also make the connector's ops itself (`read_ops`); it leaves
  anything but plain well-formed OTLP to
- the Python reader (`runs.RunAccounting._read_py`, also where the C one is not built), which
  parses a GenAI span with a skeleton (`pipeline.wire`) reading its attributes as a map from
  key to the value's serialized `AnyValue`.

Attribute values that become metric attributes stay serialized (`bytes`) until the metrics are
written: they are only compared and hashed on the way.
"""
from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Protocol, cast

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from connectors.genai_metrics import semconv as sc
from pipeline import wire

_KEY_TAG = wire.encode_varint(wire.ld_tag(KeyValue.DESCRIPTOR, "key"))
_STRING_TAG = wire.encode_varint(wire.ld_tag(AnyValue.DESCRIPTOR, "string_value"))


def key_needle(key: str) -> bytes:
    """The serialized start of a KeyValue with `key`: what a span holding that attribute contains."""
    return wire.length_delimited(_KEY_TAG, key.encode())


def string_value(text: str) -> bytes:
    """The serialized AnyValue of a string (how an attribute value is kept)."""
    return wire.length_delimited(_STRING_TAG, text.encode())


OPERATION_NEEDLE = key_needle(sc.OPERATION)
MCP_NEEDLE = key_needle(sc.MCP_METHOD)
LEGACY_NEEDLE = key_needle(sc.PROVIDER[1])

SERVER = Span.SPAN_KIND_SERVER
STATUS_ERROR = 2  # Status.STATUS_CODE_ERROR


class SpanView(Protocol):
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: Mapping[str, bytes]

    @property
    def status(self) -> Any: ...


class ResourceView(Protocol):
    attributes: Mapping[str, bytes]


SPAN_VIEW = cast(wire.Skeleton[SpanView], wire.skeleton(Span.DESCRIPTOR, {
    "trace_id": wire.VALUE, "span_id": wire.VALUE, "parent_span_id": wire.VALUE, "kind": wire.VALUE,
    "start_time_unix_nano": wire.VALUE, "end_time_unix_nano": wire.VALUE, "attributes": wire.KEYED,
    "status": {"code": wire.VALUE}}))
RESOURCE_VIEW = cast(wire.Skeleton[ResourceView], wire.skeleton(Resource.DESCRIPTOR, {"attributes": wire.KEYED}))

_DOUBLE = struct.Struct("<d")


def any_text(raw: bytes) -> str:
    """An attribute value as metric attribute text (as the Prometheus exporter writes values); bytes that
    are no AnyValue (values are read off the wire unchecked) read as "", like an absent attribute."""
    if raw[:1] == b"\n" and len(raw) >= 2 and raw[1] == len(raw) - 2:
        return raw[2:].decode("utf-8", "replace")  # a string shorter than 128 bytes: the common case
    try:
        v = AnyValue.FromString(raw)
    except DecodeError:
        return ""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which == "int_value":
        return str(v.int_value)
    if which == "double_value":
        return repr(v.double_value)
    if which == "bytes_value":
        return v.bytes_value.hex()
    return "" if which is None else str(v).replace("\n", " ").strip()


def any_count(raw: bytes | None) -> int | None:
    """A token count: an int (or a whole double, or digits in a string) that is not negative; else None."""
    if raw is None:
        return None
    n = len(raw)
    if raw[:1] == b"\x18":
        # int_value: counts below 2**21 (one to three varint bytes) decoded inline, the common case
        if n == 2 and raw[1] < 0x80:
            return raw[1]
        if n == 3 and raw[2] < 0x80 <= raw[1]:
            return (raw[1] & 0x7F) | raw[2] << 7
        if n == 4 and raw[3] < 0x80 <= raw[2] and raw[1] >= 0x80:
            return (raw[1] & 0x7F) | (raw[2] & 0x7F) << 7 | raw[3] << 14
        try:
            v, end = wire.decode_varint(raw, 1)
        except wire.WireError:
            return None
        if end != n:
            return _slow_count(raw)
        return v if v < 1 << 63 else None  # larger is a negative int64
    if raw[:1] == b"!" and n == 9:
        d = _DOUBLE.unpack_from(raw, 1)[0]
        return int(d) if d == d and 0 <= d < 1 << 63 and d == int(d) else None
    return _slow_count(raw)


def _slow_count(raw: bytes) -> int | None:
    text = any_text(raw)
    return int(text) if text.isascii() and text.isdigit() else None


class Texts:
    """Serialized attribute values → text, memoized (the same few models and agents recur)."""

    def __init__(self, limit: int = 65_536) -> None:
        self._cache: dict[bytes, str] = {}
        self._limit = limit

    def __call__(self, raw: bytes | str | None) -> str | None:
        if raw is None or isinstance(raw, str):
            return raw
        try:
            return self._cache[raw]
        except KeyError:
            pass
        if len(self._cache) >= self._limit:
            self._cache.clear()
        text = self._cache[raw] = any_text(raw)
        return text


# -- the record kept of each GenAI span ----------------------------------------------------------------
# A plain tuple (made once per GenAI span, on the hot path), read with these indexes:
#   CLS, span id, parent span id, start and end (ns), error.type, own agent, resource identity, dimension
#   values, conversation id, operation value, then per class: (provider, request model, response model) for
#   INFERENCE and OTHER, (tool name, tool type, None) for TOOL; then for INFERENCE whether it is a generation
#   and the token counts (input, output, cache read, cache write, reasoning: int or None).
# Attribute values stay serialized (bytes); a few the connector computes are text (`_OTHER`).

INFERENCE, TOOL, AGENT, OTHER, ROOT = range(5)  # the class; ROOT: a root span that is no GenAI operation
CLS, SID, PARENT, START, END, ERR, OWN_AGENT, RES, DIMS, CONV, OPV = range(11)
L1, L2, L3, GEN, TIN, TOUT, TCR, TCW, TRS = range(11, 20)
Op = tuple[Any, ...]


def seconds(op: Op) -> float:
    d = op[END] - op[START]
    return d / 1e9 if d > 0 else 0.0


# -- span records --------------------------------------------------------------------------------------
# What a reader (_genaiwire.Reader in C, else RunAccounting's Python reader) gives of a span: a tuple of
# the resource's bytes, the ids, kind, times and status code, then one value per attribute group (GROUPS,
# then the configured dimensions): the serialized AnyValue of the group's first name present, else None.
# Token counts (COUNT_GROUPS) may already be ints.

R_RES, R_TID, R_SID, R_PARENT, R_KIND, R_START, R_END, R_CODE = range(8)
GROUPS: tuple[tuple[str, ...], ...] = (
    (sc.OPERATION,), sc.PROVIDER, (sc.REQUEST_MODEL,), (sc.RESPONSE_MODEL,), sc.INPUT_TOKENS, sc.OUTPUT_TOKENS,
    sc.CACHE_READ_TOKENS, sc.CACHE_WRITE_TOKENS, sc.REASONING_TOKENS, (sc.AGENT[0],), (sc.AGENT[1],),
    (sc.TOOL_NAME,), (sc.TOOL_TYPE,), (sc.CONVERSATION,), (sc.ERROR_TYPE,), (sc.MCP_METHOD,),
    (sc.SERVER_ADDRESS,), (sc.SERVER_PORT,), sc.RPC_STATUS)
(V_OP, V_PROVIDER, V_REQUEST_MODEL, V_RESPONSE_MODEL, V_TIN, V_TOUT, V_TCR, V_TCW, V_TRS, V_AGENT_NAME, V_AGENT_ID,
 V_TOOL, V_TOOL_TYPE, V_CONV, V_ERR, V_MCP, V_ADDRESS, V_PORT, V_RPC) = range(R_CODE + 1, R_CODE + 1 + len(GROUPS))
V_DIMS = R_CODE + 1 + len(GROUPS)
COUNT_GROUPS = tuple(g - R_CODE - 1 for g in (V_TIN, V_TOUT, V_TCR, V_TCW, V_TRS))
NEEDLES = (OPERATION_NEEDLE, MCP_NEEDLE, LEGACY_NEEDLE)
Record = tuple[Any, ...]


def count(v: int | bytes | None) -> int | None:
    """A token count of a record (an int already, or a serialized AnyValue: `any_count`)."""
    return any_count(v) if isinstance(v, bytes) else v


_OP_TEXT = {string_value(op): op for op in (*sc.INFERENCE, sc.EXECUTE_TOOL, sc.INVOKE_AGENT)}
_LEGACY_OP = string_value(sc.LEGACY_OPERATION)


def classify(op_raw: bytes | None, provider: bytes | None) -> tuple[int, bytes | None, bool] | None:
    """(class, operation value, is a generation) of a span, from its `gen_ai.operation.name` (or, before
    that attribute existed, its provider); None when it is no GenAI operation."""
    if op_raw is None:
        if provider is None:
            return None
        return INFERENCE, _LEGACY_OP, True
    op = _OP_TEXT.get(op_raw)
    if op is None:
        op = any_text(op_raw)
        if op not in _OP_TEXT.values():
            return OTHER, op_raw, False
        op_raw = string_value(op)
    if op in sc.INFERENCE:
        return INFERENCE, op_raw, op in sc.GENERATION
    if op == sc.EXECUTE_TOOL:
        return TOOL, op_raw, False
    return AGENT, op_raw, False


_EMPTY = string_value("")


def agent_of(r: Record) -> bytes | None:
    """A span's own agent: `gen_ai.agent.name`, else `gen_ai.agent.id` (an empty name is no name)."""
    v = r[V_AGENT_NAME]
    if v is not None and v != _EMPTY:
        return v  # type: ignore[no-any-return]
    v = r[V_AGENT_ID]
    return v if v is not None and v != _EMPTY else None


def error_of(r: Record) -> bytes | str | None:
    """`error.type`, or `_OTHER` for a span whose status is ERROR without one; None when it succeeded."""
    err = r[V_ERR]
    if err is not None:
        return err  # type: ignore[no-any-return]
    return sc.OTHER_ERROR if r[R_CODE] == STATUS_ERROR else None


def mcp_error(r: Record, texts: Texts) -> tuple[bytes | str | None, bytes | None]:
    """(error.type, rpc.response.status_code) of an MCP call: a JSON-RPC error code is an error too."""
    rpc = r[V_RPC]
    err = r[V_ERR]
    if err is None and rpc is not None and texts(rpc) not in sc.RPC_OK:
        err = rpc
    if err is None and r[R_CODE] == STATUS_ERROR:
        return sc.OTHER_ERROR, rpc
    return err, rpc


def has_parent_fast(sb: bytes) -> bool:
    """True when a span's bytes, as SDKs lay them out (fields in number order), visibly hold a parent
    span id; False means "decode to know" (roots are few, so that is rare)."""
    if sb[:2] != b"\n\x10" or sb[18:20] != b"\x12\x08":
        return False
    i = 28
    if sb[i:i + 1] == b"\x1a":  # trace_state
        n = sb[i + 1] if len(sb) > i + 1 else 0x80
        if n >= 0x80:
            return False
        i += 2 + n
    return sb[i:i + 2] == b"\x22\x08"


def trace_id_fast(sb: bytes) -> bytes | None:
    """A span's trace id when it is its first field (as SDKs write it), else None (decode to know)."""
    return sb[2:18] if sb[:2] == b"\n\x10" else None

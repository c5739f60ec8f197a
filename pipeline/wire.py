"""The protobuf wire format, in one place: varints, tags, skipping fields, and envelope views of OTLP requests.

Why one module: the stages that work on a request's serialized bytes rather
than its decoded message (the privacy processors' wire walker, tail sampling,
the point merging of cardinality_limit and uuid_normalize, item counting) all
need the same few pieces, and every private copy of them drifted (three varint
encoders, two runtime-built descriptor pools).

Two layers:

* Primitives on bytes, for code that walks or writes the wire format in Python
  (the pure-Python wire walker, framing spans into requests). They are checked:
  truncated or malformed input raises `WireError` (a `ValueError`) naming what
  is wrong; nothing reads past the buffer or loops without consuming input.
  They are also fast in CPython, because the walker calls them per field: the
  one-byte cases come first, and running off the end of the buffer is caught
  as an `IndexError` (a `try` costs nothing in CPython 3.11) rather than
  tested for on every byte.
* Skeletons (`skeleton`): message types built at run time from the real
  descriptors, with the same field numbers, but where the sub-messages a
  caller does not need to look inside are `bytes` fields. Parsing a request
  with one runs in C (upb) and hands back exactly the byte ranges asked for
  (a resource, a scope, each span) without decoding them. The envelope views
  (`TRACES_ENVELOPE`, `METRICS_ENVELOPE`, `LOGS_ENVELOPE`) are the common
  case: resource / scope / item boundaries as bytes; `count_items` counts
  spans, metric data points or log records from raw bytes the same way.

A skeleton sees one difference from a full decode, on encodings no SDK writes:
a singular sub-message repeated on the wire is merged by a decoder, but a field
kept as bytes holds only its last occurrence. Repeated fields (the items) and
sub-messages the skeleton walks into (a metric's data) merge exactly as in a
decode, so item counts are always those of the decoded request.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar, Union, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

# -- primitives ---------------------------------------------------------------------------------

#: The wire types (the low three bits of a tag), named as in the protobuf encoding spec.
VARINT, I64, LEN, SGROUP, EGROUP, I32 = range(6)
MAX_FIELD_NUMBER = (1 << 29) - 1
#: How deep `skip_field` follows groups nested in groups (protobuf's own recursion limit is 100).
MAX_GROUP_DEPTH = 100
_MASK64 = (1 << 64) - 1
_SHIFTS = (14, 21, 28, 35, 42, 49, 56)  # bytes 3 to 9 of a varint; byte 10 holds bit 63
_ONE_BYTE = tuple(bytes((n,)) for n in range(0x80))


#: What the readers take: anything indexable by byte offset.
Buffer = bytes | bytearray | memoryview


class WireError(ValueError):
    """Bytes that are not valid protobuf wire format (truncated, a varint too long, a bad wire type...)."""


def decode_varint(buf: Buffer, i: int) -> tuple[int, int]:
    """The varint at `buf[i]` (`0 <= i`): (its value, the offset after it).

    As protobuf decoders do, a varint has at most 10 bytes and its value is
    taken modulo 2**64 (a negative int64 comes back as its two's complement).
    """
    try:
        b = buf[i]
        if b < 0x80:
            return b, i + 1
        b2 = buf[i + 1]
        if b2 < 0x80:
            return b & 0x7F | b2 << 7, i + 2
        result = b & 0x7F | (b2 & 0x7F) << 7
        i += 1
        for shift in _SHIFTS:
            i += 1
            b = buf[i]
            if b < 0x80:
                return result | b << shift, i + 1
            result |= (b & 0x7F) << shift
        i += 1
        b = buf[i]
        if b < 0x80:
            return (result | b << 63) & _MASK64, i + 1
    except IndexError:
        raise WireError("truncated varint") from None
    raise WireError("varint longer than 10 bytes")


def encode_varint(n: int) -> bytes:
    """The varint encoding of `0 <= n < 2**64` (encode a negative int64 `v` as `v & (2**64 - 1)`)."""
    if n < 0x80:
        if n >= 0:
            return _ONE_BYTE[n]
    elif n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    elif n <= _MASK64:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)
    raise ValueError(f"a varint holds 0 to 2**64 - 1, not {n}")


def make_tag(number: int, wire_type: int) -> int:
    """The tag (as an integer; `encode_varint` writes it) of field `number` with `wire_type`."""
    if not 1 <= number <= MAX_FIELD_NUMBER:
        raise ValueError(f"field numbers are 1 to {MAX_FIELD_NUMBER}, not {number}")
    if not VARINT <= wire_type <= I32:
        raise ValueError(f"wire types are 0 to 5, not {wire_type}")
    return number << 3 | wire_type


def split_tag(tag: int) -> tuple[int, int]:
    """(field number, wire type) of a decoded tag; WireError for field number 0 or wire types 6 and 7."""
    number, wire_type = tag >> 3, tag & 7
    if wire_type > I32:
        raise WireError(f"invalid wire type {wire_type}")
    if not 1 <= number <= MAX_FIELD_NUMBER:
        raise WireError(f"invalid field number {number}")
    return number, wire_type


def ld_tag(desc: Descriptor, name: str) -> int:
    """The tag of `desc`'s length-delimited field `name` (a message, string or bytes field)."""
    f = desc.fields_by_name[name]
    if f.type not in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        raise TypeError(f"{desc.full_name}.{name} is not a message, string or bytes field")
    return make_tag(f.number, LEN)


def length_delimited(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field: its encoded `tag`, the length of `data`, then `data`."""
    n = len(data)
    if n < 0x80:
        return b"".join((tag, _ONE_BYTE[n], data))
    return b"".join((tag, encode_varint(n), data))


def skip_value(buf: Buffer, i: int, wire_type: int) -> int:
    """The offset after the value at `buf[i]` of a field of `wire_type`: VARINT, I64, I32 or LEN.

    Groups (SGROUP, EGROUP) raise WireError: their end is a tag, not a length,
    so only `skip_field` (which knows the field number) follows them. Callers
    that refuse groups (no OTLP message has one) use this function, which
    does it for them.
    """
    # The value's last byte is read (IndexError if it is cut short) rather than `len(buf)` compared:
    # this runs per field in the Python walker.
    try:
        if wire_type == VARINT:
            j = i
            while buf[j] >= 0x80:
                j += 1
                if j - i == 10:
                    raise WireError("varint longer than 10 bytes")
            return j + 1
        if wire_type == I64:
            buf[i + 7]
            return i + 8
        if wire_type == I32:
            buf[i + 3]
            return i + 4
        if wire_type == LEN:
            n, i = decode_varint(buf, i)
            if n:
                buf[i + n - 1]
            return i + n
    except IndexError:
        raise WireError("truncated varint" if wire_type == VARINT else "field value runs past the end of the data"
                        ) from None
    if wire_type == SGROUP or wire_type == EGROUP:
        raise WireError("unsupported wire type: group")
    raise WireError(f"invalid wire type {wire_type}")


def skip_field(buf: Buffer, i: int, tag: int) -> int:
    """The offset after the value at `buf[i]` of a field with `tag` (just read), of any wire type.

    A group is skipped to its matching end-group tag, through nested groups
    up to MAX_GROUP_DEPTH deep.
    """
    wire_type = tag & 7
    if wire_type == SGROUP:
        open_groups = [tag >> 3]
        while open_groups:
            t, i = decode_varint(buf, i)
            wt = t & 7
            if wt == SGROUP:
                if len(open_groups) >= MAX_GROUP_DEPTH:
                    raise WireError(f"groups nested more than {MAX_GROUP_DEPTH} deep")
                open_groups.append(t >> 3)
            elif wt == EGROUP:
                if t >> 3 != open_groups.pop():
                    raise WireError("end-group tag does not match its group")
            else:
                i = skip_value(buf, i, wt)
        return i
    if wire_type == EGROUP:
        raise WireError("end-group tag outside a group")
    return skip_value(buf, i, wire_type)


def len_fields(buf: Buffer, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(tag, field start, length-prefix start, content start, content end) of every length-delimited
    field of the message `buf[start:end]`, in order; other fields are skipped (`skip_value`: groups
    are refused). WireError if a field runs past `end`."""
    i = start
    while i < end:
        f = i
        tag, i = decode_varint(buf, i)
        wt = tag & 7
        if wt == LEN:
            lp = i
            n, cs = decode_varint(buf, i)
            i = cs + n
            if i > end:
                raise WireError("field runs past the end of its message")
            yield tag, f, lp, cs, i
        else:
            i = skip_value(buf, i, wt)
    if i != end:
        raise WireError("field runs past the end of its message")


# -- skeletons ----------------------------------------------------------------------------------

#: Skeleton spec values: BYTES keeps a message field as its serialized bytes, VALUE keeps a scalar
#: field (number, string, bytes) as it is and an enum as its number; a nested spec walks into a message field.
#: KEYED reads a repeated key/value message field (`attributes`: KeyValue's `key` = 1, `value` = 2) as a map
#: from key to the value's serialized bytes (a protobuf map has that very wire format), so a caller looks up the
#: keys it wants in C instead of visiting every entry in Python; a key written twice keeps its last value.
BYTES = "bytes"
VALUE = "value"
KEYED = "keyed"
SkeletonSpec = Mapping[str, Union[str, "SkeletonSpec"]]

T_co = TypeVar("T_co", covariant=True)
_PACKAGE = "otelpipe.wire"
_F = descriptor_pb2.FieldDescriptorProto


class Skeleton(Protocol[T_co]):
    """A skeleton message type: `FromString` parses serialized bytes of the real message (in C)."""

    def FromString(self, s: bytes, /) -> T_co: ...


def skeleton(desc: Descriptor, spec: SkeletonSpec) -> Skeleton[Any]:
    """A message type with `desc`'s field numbers, names, labels and oneofs, holding only the fields
    named in `spec` (recursively); everything else is left unparsed (kept as unknown fields). Its
    messages are typed `Any` (their fields exist only at run time): callers that keep them cast to a
    Protocol of the fields they named, as the envelope views below do.

    The type lives in a private descriptor pool (nothing global is touched);
    build it once, at import, and parse with its `FromString`.
    """
    fdp = descriptor_pb2.FileDescriptorProto(name=f"otelpipe/wire/{desc.full_name}.proto", package=_PACKAGE,
                                             syntax="proto3")
    _add_message(fdp, desc.name, desc, spec)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return cast("Skeleton[Any]", message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{desc.name}")))


def _add_message(fdp: descriptor_pb2.FileDescriptorProto, name: str, desc: Descriptor, spec: SkeletonSpec) -> None:
    real = descriptor_pb2.DescriptorProto()
    desc.CopyToProto(real)
    fields = {f.name: f for f in real.field}
    msg = fdp.message_type.add(name=name)
    in_oneof: list[tuple[descriptor_pb2.FieldDescriptorProto, str, bool]] = []
    for fname, sub in spec.items():
        f = fields.get(fname)
        if f is None:
            raise ValueError(f"{desc.full_name} has no field {fname!r}")
        out = msg.field.add()
        out.CopyFrom(f)
        out.ClearField("oneof_index")
        if f.type == _F.TYPE_MESSAGE:
            out.ClearField("type_name")
            if sub == BYTES:
                out.type = _F.TYPE_BYTES
            elif isinstance(sub, Mapping):
                child = f"{name}_{fname}"
                _add_message(fdp, child, cast(Descriptor, desc.fields_by_name[fname].message_type), sub)
                out.type_name = f".{_PACKAGE}.{child}"
            elif sub == KEYED:
                out.type_name = f".{_PACKAGE}.{name}.{_keyed_entry(msg, f, desc)}"
            else:
                raise TypeError(f"{desc.full_name}.{fname} is a message: keep it as BYTES or walk into it")
        elif sub != VALUE or f.type == _F.TYPE_GROUP:
            raise TypeError(f"{desc.full_name}.{fname} is not a message: keep it as VALUE")
        elif f.type == _F.TYPE_ENUM:
            # An enum keeps its number: int32 has the same wire encoding, and proto3 enums are open anyway.
            out.type = _F.TYPE_INT32
            out.ClearField("type_name")
        if f.HasField("oneof_index"):
            in_oneof.append((out, real.oneof_decl[f.oneof_index].name, f.proto3_optional))
    # Real oneofs first, then the synthetic ones of proto3 `optional` fields, as descriptors require.
    order: dict[str, int] = {}
    for synthetic in (False, True):
        for _, oneof, is_synthetic in in_oneof:
            if is_synthetic == synthetic and oneof not in order:
                order[oneof] = len(order)
                msg.oneof_decl.add(name=oneof)
    for out, oneof, _ in in_oneof:
        out.oneof_index = order[oneof]


def _keyed_entry(msg: descriptor_pb2.DescriptorProto, f: descriptor_pb2.FieldDescriptorProto, desc: Descriptor) -> str:
    """Add to `msg` the map entry type that reads repeated key/value field `f` of `desc` as a map."""
    fname = f.name
    item = cast(Descriptor, desc.fields_by_name[fname].message_type)
    key, value = item.fields_by_number.get(1), item.fields_by_number.get(2)
    if (f.label != _F.LABEL_REPEATED or key is None or key.name != "key"
            or key.type != FieldDescriptor.TYPE_STRING or value is None or value.name != "value"
            or value.type != FieldDescriptor.TYPE_MESSAGE):
        raise TypeError(f"{desc.full_name}.{fname} is not a repeated key/value message: it cannot be KEYED")
    entry = msg.nested_type.add(name="".join(p.capitalize() for p in fname.split("_")) + "Entry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    return entry.name


# -- envelope views of OTLP export requests -------------------------------------------------------
# The shape of each envelope (typing only: the classes are made at run time). Field names are the
# real ones; the resource, the scope and each item are their serialized bytes.

class ScopeSpansEnvelope(Protocol):
    scope: bytes
    spans: Sequence[bytes]
    schema_url: str


class ResourceSpansEnvelope(Protocol):
    resource: bytes
    scope_spans: Sequence[ScopeSpansEnvelope]
    schema_url: str


class TracesEnvelope(Protocol):
    resource_spans: Sequence[ResourceSpansEnvelope]


class ScopeMetricsEnvelope(Protocol):
    scope: bytes
    metrics: Sequence[bytes]
    schema_url: str


class ResourceMetricsEnvelope(Protocol):
    resource: bytes
    scope_metrics: Sequence[ScopeMetricsEnvelope]
    schema_url: str


class MetricsEnvelope(Protocol):
    resource_metrics: Sequence[ResourceMetricsEnvelope]


class ScopeLogsEnvelope(Protocol):
    scope: bytes
    log_records: Sequence[bytes]
    schema_url: str


class ResourceLogsEnvelope(Protocol):
    resource: bytes
    scope_logs: Sequence[ScopeLogsEnvelope]
    schema_url: str


class LogsEnvelope(Protocol):
    resource_logs: Sequence[ResourceLogsEnvelope]


def _envelope_spec(resources: str, scopes: str, items: str) -> SkeletonSpec:
    return {resources: {"resource": BYTES, scopes: {"scope": BYTES, items: BYTES, "schema_url": VALUE},
                        "schema_url": VALUE}}


TRACES_ENVELOPE = cast(Skeleton[TracesEnvelope], skeleton(
    ExportTraceServiceRequest.DESCRIPTOR, _envelope_spec("resource_spans", "scope_spans", "spans")))
METRICS_ENVELOPE = cast(Skeleton[MetricsEnvelope], skeleton(
    ExportMetricsServiceRequest.DESCRIPTOR, _envelope_spec("resource_metrics", "scope_metrics", "metrics")))
LOGS_ENVELOPE = cast(Skeleton[LogsEnvelope], skeleton(
    ExportLogsServiceRequest.DESCRIPTOR, _envelope_spec("resource_logs", "scope_logs", "log_records")))

#: The data kinds of a Metric (the members of its `data` oneof), each a container of `data_points`.
METRIC_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")

# For counting data points: metrics walked into as far as their points (through the `data` oneof, so
# a metric holding two kinds counts the last, as a decoder keeps it), each point kept as bytes.
_METRIC_POINTS = skeleton(ExportMetricsServiceRequest.DESCRIPTOR, {"resource_metrics": {"scope_metrics": {
    "metrics": {kind: {"data_points": BYTES} for kind in METRIC_KINDS}}}})


def _count_spans(raw: bytes) -> int:
    return sum([len(ss.spans) for rs in TRACES_ENVELOPE.FromString(raw).resource_spans for ss in rs.scope_spans])


def _count_log_records(raw: bytes) -> int:
    return sum([len(sl.log_records) for rl in LOGS_ENVELOPE.FromString(raw).resource_logs for sl in rl.scope_logs])


def _count_data_points(raw: bytes) -> int:
    n = 0
    for rm in _METRIC_POINTS.FromString(raw).resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is not None:
                    n += len(getattr(m, kind).data_points)
    return n


_COUNTERS = {
    ExportTraceServiceRequest.DESCRIPTOR.full_name: _count_spans,
    ExportMetricsServiceRequest.DESCRIPTOR.full_name: _count_data_points,
    ExportLogsServiceRequest.DESCRIPTOR.full_name: _count_log_records,
}


def count_items(request_type: type[Message], raw: bytes) -> int:
    """Spans, metric data points or log records in serialized export request `raw` of `request_type`
    (an `Export*ServiceRequest` class), from the envelope alone: equal to counting the decoded request.

    Raises `google.protobuf.message.DecodeError` if the envelope does not parse.
    """
    try:
        counter = _COUNTERS[request_type.DESCRIPTOR.full_name]
    except (AttributeError, KeyError):
        raise TypeError(f"not an OTLP export request type: {request_type!r}") from None
    return counter(raw)


__all__ = [
    "BYTES",
    "EGROUP",
    "I32",
    "I64",
    "KEYED",
    "LEN",
    "LOGS_ENVELOPE",
    "MAX_FIELD_NUMBER",
    "MAX_GROUP_DEPTH",
    "METRICS_ENVELOPE",
    "METRIC_KINDS",
    "SGROUP",
    "TRACES_ENVELOPE",
    "VALUE",
    "VARINT",
    "Buffer",
    "LogsEnvelope",
    "MetricsEnvelope",
    "Skeleton",
    "SkeletonSpec",
    "TracesEnvelope",
    "WireError",
    "count_items",
    "decode_varint",
    "encode_varint",
    "ld_tag",
    "len_fields",
    "length_delimited",
    "make_tag",
    "skeleton",
    "skip_field",
    "skip_value",
    "split_tag",
]

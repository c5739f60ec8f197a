"""Find and rewrite strings in OTLP requests: the machinery shared by the privacy processors.

Two layers (the anchor scan that feeds the first is `processors.anchorscan`):

* `WireRewriter`: walks the protobuf wire format (in C, `processors/privacy/_wirewalk.c`,
  where it is built; the Python walk here is the fallback and the reference),
  driven by a plan built from the message descriptors, only into the
  sub-messages that hold an occurrence,
  hands the few strings found there (with their context: which field, which
  attribute key) to the rules, and writes the request back as it goes: every
  unchanged byte range is copied as a slice and only the length prefixes of
  the messages around a changed string are re-encoded. Nothing else is
  decoded or encoded.
* Decoded-message walkers (`rewrite_attributes`, `replace_whole_value`, ...):
  the reference implementation of the same rules on a decoded request. The
  processors use it for payloads that only exist decoded, for options the
  wire path does not implement, and for bytes the wire walker refuses
  (`WireFallback`); the tests use it as the oracle for the wire path.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)

from pipeline.model import ExportRequest
from pipeline.wire import (
    LEN,
    decode_varint,
    encode_varint,
    ld_tag,
    len_fields,
    length_delimited,
    make_tag,
    skip_value,
)

# The walker in C (processors/privacy/_wirewalk.c); optional at install time, same output as `WireRewriter`'s Python.
try:
    from processors.privacy import _wirewalk
except ImportError:  # pragma: no cover - built by setup.py wherever a C compiler is available
    _wirewalk = None  # type: ignore[assignment]

StrFn = Callable[[str], str]

# --------------------------------------------------------------------------------------------
# Item iteration
# --------------------------------------------------------------------------------------------

def iter_data_point_attributes(msg: ExportRequest, exemplars: bool = False) -> Iterator[Any]:
    """The attribute list of every metric data point (and of exemplars, if asked)."""
    for rm in msg.resource_metrics:  # type: ignore[union-attr]
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is None:
                    continue
                for dp in getattr(m, kind).data_points:
                    yield dp.attributes
                    if exemplars and kind != "summary":
                        for ex in dp.exemplars:
                            yield ex.filtered_attributes


# --------------------------------------------------------------------------------------------
# Rewriting
# --------------------------------------------------------------------------------------------

def rewrite_any_value(v: AnyValue, fn: StrFn) -> int:
    """Apply `fn` to every string leaf of `v` (arrays and maps, recursively); count changes."""
    s = v.string_value
    if s:
        new = fn(s)
        if new is not s and new != s:
            v.string_value = new
            return 1
        return 0
    kind = v.WhichOneof("value")
    n = 0
    if kind == "array_value":
        for item in v.array_value.values:
            n += rewrite_any_value(item, fn)
    elif kind == "kvlist_value":
        for kv in v.kvlist_value.values:
            n += rewrite_any_value(kv.value, fn)
    return n


def rewrite_attributes(attrs: Iterable[KeyValue], fn: StrFn, keys: frozenset[str] | None = None) -> int:
    """Apply `fn` to the string values of the attributes whose key is in `keys` (all when None)."""
    n = 0
    for kv in attrs:
        if keys is not None and kv.key not in keys:
            continue
        v = kv.value
        s = v.string_value
        if s:
            new = fn(s)
            if new is not s and new != s:
                v.string_value = new
                n += 1
        elif v.WhichOneof("value") in ("array_value", "kvlist_value"):
            n += rewrite_any_value(v, fn)
    return n


def replace_whole_value(v: AnyValue, mask: StrFn) -> int:
    """Replace a value's content with its mask: strings and bytes become the mask string,
    arrays and maps have every leaf masked; numbers and booleans carry no credential and stay."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        s = v.string_value
        new = mask(s)
        if new != s:
            v.string_value = new
            return 1
        return 0
    if kind == "bytes_value":
        v.string_value = mask(v.bytes_value.hex())
        return 1
    if kind == "array_value":
        return sum(replace_whole_value(item, mask) for item in v.array_value.values)
    if kind == "kvlist_value":
        return sum(replace_whole_value(kv.value, mask) for kv in v.kvlist_value.values)
    return 0


# --------------------------------------------------------------------------------------------
# The wire walker
# --------------------------------------------------------------------------------------------

class WireFallback(Exception):
    """Bytes the wire walker does not handle (malformed, groups, invalid UTF-8, a KeyValue or
    AnyValue with a repeated key or value); the caller takes the decoded path, which treats
    them exactly as before (re-encoding, or rejecting what does not decode)."""


#: What a rule does with an attribute, by key.
SKIP, TEXT, WHOLE = 0, 1, 2
#: Name/value pairs in maps (`{name: DB_PASSWORD, value: ...}`, Kubernetes env, AWS tags): in a map
#: walked under a mapping rule, an entry keyed as in NAME_KEYS whose string value the rule calls WHOLE
#: (a key name that names a credential) makes the entries keyed as in VALUE_KEYS WHOLE too, unless the
#: rule says SKIP for them. Exact keys, the same bytes in processors/privacy/_wirewalk.c.
NAME_KEYS: frozenset[str] = frozenset({"name", "Name", "NAME", "key", "Key", "KEY"})
VALUE_KEYS: frozenset[str] = frozenset({"value", "Value", "VALUE"})
_NAME_KEYS_B = frozenset(k.encode() for k in NAME_KEYS)
_VALUE_KEYS_B = frozenset(k.encode() for k in VALUE_KEYS)


def names_whole(values: Iterable[KeyValue], rule: Mapping[str, int]) -> bool:
    """Whether a map's name/value pair names a credential (see NAME_KEYS), on a decoded map."""
    for kv in values:
        if kv.key in NAME_KEYS and kv.value.WhichOneof("value") == "string_value" and \
                rule[kv.value.string_value] == WHOLE:
            return True
    return False


#: KeyRule: a mapping key -> SKIP/TEXT/WHOLE (`rule[key]`: a dict lookup in C for known keys, see
#: `SelectedKeys` and `ClassifiedKeys`); None means TEXT for every key (the key is not decoded).
KeyRule = Mapping[str, int] | None


class SelectedKeys(dict):  # type: ignore[type-arg]
    """KeyRule: TEXT for the given keys, SKIP for every other key."""

    def __init__(self, keys: Iterable[str]) -> None:
        super().__init__((k, TEXT) for k in keys)

    def __missing__(self, key: str) -> int:
        return SKIP


class ClassifiedKeys(dict):  # type: ignore[type-arg]
    """KeyRule computed by `fn` and remembered, for at most `limit` keys (keys of unbounded
    cardinality cost a recomputation, never memory)."""

    def __init__(self, fn: Callable[[str], int], limit: int = 8192) -> None:
        super().__init__()
        self._fn = fn
        self._limit = limit

    def __missing__(self, key: str) -> int:
        action = self._fn(key)
        if len(self) < self._limit:
            self[key] = action
        return action


#: TextFn(text, start, end): the new text of a string that holds offsets (`start`/`end`: its bytes in
#: the request); WholeFn(text): the new text of a string or bytes leaf (as hex) under a WHOLE key.
TextFn = Callable[[str, int, int], str]
WholeFn = Callable[[str], str]


def _unchanged(text: str) -> str:
    return text


def _unchanged_text(text: str, _start: int, _end: int) -> str:
    return text


_STRING_TAG = ld_tag(AnyValue.DESCRIPTOR, "string_value")
_VALUE_TAG = ld_tag(KeyValue.DESCRIPTOR, "value")
_ARRAY_TAG = ld_tag(AnyValue.DESCRIPTOR, "array_value")
_KVLIST_TAG = ld_tag(AnyValue.DESCRIPTOR, "kvlist_value")
_BYTES_TAG = ld_tag(AnyValue.DESCRIPTOR, "bytes_value")
_STRING_TAG_BYTES = encode_varint(_STRING_TAG)
_VALUE_TAG_BYTES = encode_varint(_VALUE_TAG)
_AV_NUMBERS = frozenset(f.number for f in AnyValue.DESCRIPTOR.fields)  # the `value` oneof's members
# The fast paths below rely on these sharing one tag byte (field 1): a string value, a key, the
# items of arrays and of maps.
assert _STRING_TAG == ld_tag(KeyValue.DESCRIPTOR, "key") == 0x0A
assert _STRING_TAG == ld_tag(ArrayValue.DESCRIPTOR, "values") == ld_tag(KeyValueList.DESCRIPTOR, "values")
assert {f.containing_oneof.name for f in AnyValue.DESCRIPTOR.fields if f.containing_oneof} == {"value"}

_MSG, _STR, _ATTRS, _ANY = range(4)


class Attrs:
    """Plan leaf: a repeated KeyValue field. `rule` decides per key; `nested` is the rule for the
    keys of maps inside the values (None: every leaf of a selected value is a string to check)."""

    __slots__ = ("nested", "rule")

    def __init__(self, rule: KeyRule, nested: KeyRule = None) -> None:
        self.rule = rule
        self.nested = nested


class AnyText:
    """Plan leaf: an AnyValue field (a log body) whose strings are all checked; `nested` as in `Attrs`."""

    __slots__ = ("nested",)

    def __init__(self, nested: KeyRule = None) -> None:
        self.nested = nested


#: Plan leaf: a string field.
STRING = "string"

PlanSpec = Mapping[str, Any]  # field name -> nested PlanSpec, STRING, Attrs or AnyText
Plan = dict[int, tuple[int, Any]]


class _KV:
    __slots__ = ("inner", "rule")

    def __init__(self, rule: KeyRule, inner: _AnySpec) -> None:
        self.rule = rule
        self.inner = inner


class _AnySpec:
    """How to walk an AnyValue's arrays and maps: sub-plans for ArrayValue and KeyValueList."""

    __slots__ = ("array", "kvlist", "nested")

    def __init__(self, nested: KeyRule) -> None:
        self.nested = nested
        self.array: Plan = {_STRING_TAG: (_ANY, self)}  # ArrayValue.values
        self.kvlist: Plan = {_STRING_TAG: (_ATTRS, _KV(nested, self))}  # KeyValueList.values


def wire_plan(desc: Descriptor, spec: PlanSpec) -> Plan:
    """A walk plan for messages of type `desc`, from field names (checked against the descriptors).

    `spec` maps a field name to a nested spec (a sub-message to walk into), `STRING`
    (a string leaf), `Attrs(...)` (a repeated KeyValue field) or `AnyText(...)`. Fields
    not named are skipped without looking at them.
    """
    plan: Plan = {}
    for name, sub in spec.items():
        f = desc.fields_by_name[name]
        tag = make_tag(f.number, LEN)
        if sub == STRING:
            if f.type != FieldDescriptor.TYPE_STRING:
                raise TypeError(f"{desc.full_name}.{name} is not a string")
            plan[tag] = (_STR, None)
            continue
        if f.type != FieldDescriptor.TYPE_MESSAGE:
            raise TypeError(f"{desc.full_name}.{name} is not a message")
        if isinstance(sub, Attrs):
            if f.message_type is None or f.message_type.full_name != KeyValue.DESCRIPTOR.full_name:
                raise TypeError(f"{desc.full_name}.{name} is not a KeyValue list")
            plan[tag] = (_ATTRS, _KV(sub.rule, _AnySpec(sub.nested)))
        elif isinstance(sub, AnyText):
            if f.message_type is None or f.message_type.full_name != AnyValue.DESCRIPTOR.full_name:
                raise TypeError(f"{desc.full_name}.{name} is not an AnyValue")
            plan[tag] = (_ANY, _AnySpec(sub.nested))
        else:
            plan[tag] = (_MSG, wire_plan(f.message_type, sub))  # type: ignore[arg-type]
    return plan


class WireRewriter:
    """Applies string rules to a serialized request in one pass over the parts that matter.

    `rewrite(raw, offsets, text_fn, whole_fn)` walks `plan` from the request
    message, entering a length-delimited field only when an offset falls inside
    its content, and stops reading a message once no offset is left in it.
    Attribute keys are decoded only for KeyValues that hold an offset (in the
    key or the value), and the plan's rule for that key decides: SKIP, TEXT
    (each string of the value that holds an offset goes through `text_fn`) or
    WHOLE (every string and bytes leaf of the value goes through `whole_fn`,
    offsets or not; a bytes leaf becomes a string).

    The new request is written as the walk goes: unchanged byte ranges are
    copied as slices, a changed string is written with its new length, and
    every message around it gets its length prefix re-encoded when the walk
    leaves it (a prefix that changes size grows the message around it too).
    The messages entered are kept on a stack and only written out (the bytes
    before them, a slot for their length prefix) once something inside them
    changes, so entering a message in which nothing changes costs nothing in
    the output.

    One rewrite at a time per instance (the walk's state lives in attributes,
    which is faster than passing it down).

    Where the C extension `processors._wirewalk` is built (setup.py; it is
    optional), `rewrite` runs the same walk in C and only calls back into
    Python for the rules, which writes byte-for-byte the same request (the
    tests run both against each other and against the decoded path).
    `native=False` forces the Python walk. `rewrite_all` exists only natively.
    """

    __slots__ = (
        "_buf",
        "_last",
        "_n",
        "_offs",
        "_pieces",
        "_stack",
        "_text",
        "_view",
        "_whole",
        "_written",
        "native",
        "plan",
    )

    def __init__(self, plan: Plan, *, native: bool | None = None) -> None:
        self.plan = plan
        if native and _wirewalk is None:
            raise RuntimeError("the C wire walker (processors._wirewalk) is not built")
        use = _wirewalk is not None if native is None else native
        self.native = _wirewalk.Walker(native_nodes(plan), WireFallback) if use else None
        self._reset()

    def _reset(self) -> None:
        self._buf = b""
        self._view = memoryview(b"")
        self._offs: list[int] = []
        self._n = 0
        self._pieces: list[Any] = []
        self._last = 0
        self._stack: list[list[int]] = []  # [length-prefix start, content start, end, prefix slot, growth]
        self._written = 0  # how many frames of the stack (from the bottom) have a prefix slot
        self._text: TextFn = _unchanged_text
        self._whole: WholeFn = _unchanged

    def rewrite(self, raw: bytes, offsets: list[int], text_fn: TextFn, whole_fn: WholeFn = _unchanged
                ) -> bytes | None:
        """The new bytes, or None when no string changed. `offsets` must be sorted.

        Raises WireFallback on bytes it does not handle; `text_fn` and `whole_fn`
        may then have been called for some strings already.
        """
        if self.native is not None:
            return self.native.rewrite(raw, offsets, text_fn, None if whole_fn is _unchanged else whole_fn)
        self._buf = raw
        self._view = memoryview(raw)
        self._offs = offsets
        self._n = len(offsets)
        pieces: list[Any] = []
        self._pieces = pieces
        self._last = 0
        self._stack = []
        self._written = 0
        self._text = text_fn
        self._whole = whole_fn
        try:
            self._msg(0, len(raw), self.plan)
            if not pieces:
                return None
            pieces.append(self._view[self._last:])
            return b"".join(pieces)
        except (IndexError, ValueError) as e:
            # truncated bytes, malformed (WireError), invalid UTF-8 (UnicodeDecodeError)
            raise WireFallback(str(e)) from e
        finally:
            self._reset()

    def rewrite_all(self, raw: bytes, text_fn: Callable[[str, int], str], prefilter: int) -> bytes | None:
        """`rewrite` without an anchor scan: every string the plan names is a candidate if it holds
        one of the anchors selected by `prefilter` (`PF_*` flags: the uuid_normalize anchors,
        checked in C while walking), and goes to `text_fn(text, found)` with the flags of the
        anchors it holds (0 passes every string, with found 0). Only with the C walker (see
        `native`)."""
        if self.native is None:
            raise RuntimeError("rewrite_all needs the C wire walker")
        return self.native.rewrite(raw, None, text_fn, None, prefilter)

    # -- output --------------------------------------------------------------------------------

    def _put(self, f: int, ce: int, field: bytes) -> None:
        """Write `field` in place of the bytes [f, ce)."""
        pieces = self._pieces
        view = self._view
        stack = self._stack
        k = self._written
        if k < len(stack):  # the first change inside these messages: give them prefix slots
            while k < len(stack):
                frame = stack[k]
                pieces.append(view[self._last:frame[0]])
                frame[3] = len(pieces)
                pieces.append(None)
                self._last = frame[1]
                k += 1
            self._written = k
        pieces.append(view[self._last:f])
        pieces.append(field)
        self._last = ce
        if stack:
            stack[-1][4] += len(field) - (ce - f)

    def _leave(self) -> None:
        """Leave the innermost message entered (with `self._stack.append([lp, cs, ce, -1, 0])`)."""
        frame = self._stack.pop()
        if frame[3] >= 0:
            self._finish(frame)

    def _finish(self, frame: list[int]) -> None:
        """Write the length prefix of a message left after something inside it changed."""
        stack = self._stack
        lp, cs, ce, slot, grown = frame
        self._written -= 1
        if not grown:
            self._pieces[slot] = self._view[lp:cs]
            return
        prefix = encode_varint(ce - cs + grown)
        self._pieces[slot] = prefix
        if stack:
            stack[-1][4] += grown + len(prefix) - (cs - lp)

    # -- walking -----------------------------------------------------------------------------

    def _msg(self, s: int, e: int, plan: Plan) -> None:
        # The hot loop. For the next offset, skip to the field holding it (an inner loop that only
        # reads tags and lengths), enter that field if the plan names it, then go on from its end.
        buf = self._buf
        offs = self._offs
        n = self._n
        ci = bisect_left(offs, s)
        i = s
        while ci < n:
            c = offs[ci]
            if c >= e:
                return  # nothing more to find in this message
            while True:
                f = i
                tag = buf[i]
                if tag & 0x87 == 2:  # a one-byte tag of a length-delimited field: the common case
                    lp = i + 1
                    ln = buf[lp]
                    if ln < 0x80:
                        cs = i + 2
                    elif buf[i + 2] < 0x80:
                        ln = (ln & 0x7F) | buf[i + 2] << 7
                        cs = i + 3
                    else:
                        ln, cs = decode_varint(buf, lp)
                    i = cs + ln
                elif tag & 0x87 == 1:  # a one-byte tag of a fixed64 (timestamps)
                    cs = i = i + 9
                else:
                    if tag < 0x80:
                        i += 1
                    else:
                        tag, i = decode_varint(buf, i)
                    if tag & 7 == 2:
                        lp = i
                        ln, cs = decode_varint(buf, i)
                        i = cs + ln
                    else:
                        cs = i = skip_value(buf, i, tag & 7)
                if i > c:
                    break
            ce = i
            if ce > e:
                raise WireFallback("field overruns its message")
            if c < cs:  # the offset is in this field's tag or length (or a number): look past it
                ci = bisect_left(offs, cs, ci)
                if ci >= n or offs[ci] >= ce:
                    continue
            step = plan.get(tag)
            if step is not None:
                kind, arg = step
                if kind == _ATTRS:
                    self._kv(f, lp, cs, ce, arg)
                elif kind == _MSG:
                    stack = self._stack
                    stack.append([lp, cs, ce, -1, 0])
                    self._msg(cs, ce, arg)
                    frame = stack.pop()
                    if frame[3] >= 0:
                        self._finish(frame)
                elif kind == _STR:
                    text = buf[cs:ce].decode()
                    new = self._text(text, cs, ce)
                    if new != text:
                        self._put(f, ce, length_delimited(buf[f:lp], new.encode()))
                else:
                    self._stack.append([lp, cs, ce, -1, 0])
                    self._any_text(cs, ce, arg)
                    self._leave()
            ci = bisect_left(offs, ce, ci)

    def _has_offset(self, s: int, e: int) -> bool:
        k = bisect_left(self._offs, s)
        return k < self._n and self._offs[k] < e

    def _kv_parts(self, s: int, e: int) -> tuple[int, int, tuple[int, int, int] | None]:
        """(key start, key end, value (length-prefix start, content start, end) or None) of a KeyValue."""
        ks = ke = -1
        value = None
        for tag, _f, lp, cs, ce in len_fields(self._buf, s, e):
            if tag == _STRING_TAG:
                if ks >= 0:
                    raise WireFallback("KeyValue with two keys")
                ks, ke = cs, ce
            elif tag == _VALUE_TAG:
                if value is not None:
                    raise WireFallback("KeyValue with two values")
                value = (lp, cs, ce)
        return ks, ke, value

    def _kv(self, f: int, lp: int, s: int, e: int, spec: _KV) -> None:
        """A KeyValue field: [f, lp) its tag, [lp, s) its length, [s, e) the KeyValue."""
        buf = self._buf
        # Fast path: `key` then `value` and nothing else, a short key (how every SDK writes
        # attributes), and a value that is one string: rewritten as one piece.
        if buf[s] == _STRING_TAG and buf[s + 1] < 0x80:
            ke = s + 2 + buf[s + 1]
            if ke < e and buf[ke] == _VALUE_TAG:
                vl = buf[ke + 1]
                if vl < 0x80:
                    vcs = ke + 2
                else:
                    vl, vcs = decode_varint(buf, ke + 1)
                if vcs + vl == e and vcs < e and buf[vcs] == _STRING_TAG:
                    ln = buf[vcs + 1]
                    if ln < 0x80:
                        scs = vcs + 2
                    else:
                        ln, scs = decode_varint(buf, vcs + 1)
                    if scs + ln == e:
                        rule = spec.rule
                        action = TEXT if rule is None else rule[buf[s + 2:ke].decode()]
                        if action == TEXT:
                            k = bisect_left(self._offs, scs)
                            if k >= self._n or self._offs[k] >= e:
                                return
                            text = buf[scs:e].decode()
                            new = self._text(text, scs, e)
                        elif action == SKIP:
                            return
                        else:
                            text = buf[scs:e].decode()
                            new = self._whole(text)
                        if new != text:
                            field = length_delimited(_STRING_TAG_BYTES, new.encode())
                            kv = b"".join((buf[s:ke], _VALUE_TAG_BYTES, encode_varint(len(field)), field))
                            self._put(f, e, length_delimited(buf[f:lp], kv))
                        return
        ks, ke, value = self._kv_parts(s, e)
        if value is None:
            return
        rule = spec.rule
        action = TEXT if rule is None else rule[buf[ks:ke].decode() if ks >= 0 else ""]
        if action == SKIP:
            return
        vlp, vcs, vce = value
        if action == TEXT and not self._has_offset(vcs, vce):
            return
        stack = self._stack
        stack.append([lp, s, e, -1, 0])
        stack.append([vlp, vcs, vce, -1, 0])
        if action == WHOLE:
            self._any_whole(vcs, vce)
        else:
            self._any_text(vcs, vce, spec.inner)
        self._leave()
        self._leave()

    def _any_field(self, s: int, e: int) -> tuple[int, int, int, int, int] | None:
        """The length-delimited value field of an AnyValue (None for numbers, booleans, empty)."""
        buf = self._buf
        found = None
        seen = 0
        i = s
        while i < e:
            f = i
            tag, i = decode_varint(buf, i)
            wt = tag & 7
            if tag >> 3 in _AV_NUMBERS:
                seen += 1
                if seen > 1:
                    raise WireFallback("AnyValue with two values")
            if wt == 2:
                lp = i
                ln, cs = decode_varint(buf, i)
                i = cs + ln
                if i > e:
                    raise WireFallback("field overruns its message")
                if tag >> 3 in _AV_NUMBERS:
                    found = (tag, f, lp, cs, i)
            else:
                i = skip_value(buf, i, wt)
        if i != e:
            raise WireFallback("field overruns its message")
        return found

    def _any_text(self, s: int, e: int, spec: _AnySpec) -> None:
        v = self._any_field(s, e)
        if v is None:
            return
        tag, f, lp, cs, ce = v
        if tag == _STRING_TAG:
            if self._has_offset(cs, ce):
                text = self._buf[cs:ce].decode()
                new = self._text(text, cs, ce)
                if new != text:
                    self._put(f, ce, length_delimited(_STRING_TAG_BYTES, new.encode()))
        elif tag == _ARRAY_TAG or tag == _KVLIST_TAG:
            self._stack.append([lp, cs, ce, -1, 0])
            rule = spec.nested
            if tag == _KVLIST_TAG and rule is not None and not isinstance(rule, SelectedKeys) and \
                    self._names_whole(cs, ce, rule):
                self._named_map(cs, ce, rule, spec)
            else:
                self._msg(cs, ce, spec.array if tag == _ARRAY_TAG else spec.kvlist)
            self._leave()

    def _names_whole(self, s: int, e: int, rule: Mapping[str, int]) -> bool:
        """`names_whole` on the wire: the KeyValues of the KeyValueList [s, e), in order, until one
        keyed as in NAME_KEYS holds a string that `rule` calls WHOLE."""
        buf = self._buf
        for tag, _f, _lp, cs, ce in len_fields(buf, s, e):
            if tag != _STRING_TAG:
                continue
            ks, ke, value = self._kv_parts(cs, ce)
            if value is None or ks < 0 or buf[ks:ke] not in _NAME_KEYS_B:
                continue
            v = self._any_field(value[1], value[2])
            if v is not None and v[0] == _STRING_TAG and rule[buf[v[3]:v[4]].decode()] == WHOLE:
                return True
        return False

    def _named_map(self, s: int, e: int, rule: Mapping[str, int], spec: _AnySpec) -> None:
        """The KeyValues of a map whose name/value pair names a credential: as `_kv` does (without
        its fast path), but entries keyed as in VALUE_KEYS are WHOLE (unless SKIP) and visited
        whether or not they hold an offset."""
        buf = self._buf
        stack = self._stack
        for tag, _f, lp, cs, ce in len_fields(buf, s, e):
            if tag != _STRING_TAG:
                continue
            ks, ke, value = self._kv_parts(cs, ce)
            if value is None:
                continue
            key = buf[ks:ke] if ks >= 0 else b""
            forced = key in _VALUE_KEYS_B
            if not forced and not self._has_offset(cs, ce):
                continue
            action = rule[key.decode()]
            if forced and action == TEXT:
                action = WHOLE
            if action == SKIP:
                continue
            vlp, vcs, vce = value
            if action == TEXT and not self._has_offset(vcs, vce):
                continue
            stack.append([lp, cs, ce, -1, 0])
            stack.append([vlp, vcs, vce, -1, 0])
            if action == WHOLE:
                self._any_whole(vcs, vce)
            else:
                self._any_text(vcs, vce, spec)
            self._leave()
            self._leave()

    def _any_whole(self, s: int, e: int) -> None:
        v = self._any_field(s, e)
        if v is None:
            return
        tag, f, lp, cs, ce = v
        buf = self._buf
        if tag == _STRING_TAG:
            text = buf[cs:ce].decode()
            new = self._whole(text)
            if new != text:
                self._put(f, ce, length_delimited(_STRING_TAG_BYTES, new.encode()))
        elif tag == _BYTES_TAG:  # becomes a string: the mask of its hex
            self._put(f, ce, length_delimited(_STRING_TAG_BYTES, self._whole(buf[cs:ce].hex()).encode()))
        elif tag == _ARRAY_TAG or tag == _KVLIST_TAG:
            stack = self._stack
            stack.append([lp, cs, ce, -1, 0])
            for t2, _f2, lp2, cs2, ce2 in len_fields(buf, cs, ce):
                if t2 != _STRING_TAG:
                    continue
                stack.append([lp2, cs2, ce2, -1, 0])
                if tag == _ARRAY_TAG:
                    self._any_whole(cs2, ce2)
                else:
                    value = self._kv_parts(cs2, ce2)[2]
                    if value is not None:
                        vlp, vcs, vce = value
                        stack.append([vlp, vcs, vce, -1, 0])
                        self._any_whole(vcs, vce)
                        self._leave()
                self._leave()
            self._leave()


#: Prefilter flags for `WireRewriter.rewrite_all` (the uuid_normalize anchors): a UUID core
#: `-hhhh-hhhh-hhhh-`, `/digit`, 16 hex characters in a row, 26 ULID characters in a row.
PF_UUID, PF_NUM, PF_HEX, PF_ULID = 1, 2, 4, 8
if _wirewalk is not None:
    assert (PF_UUID, PF_NUM, PF_HEX, PF_ULID) == (_wirewalk.PF_UUID, _wirewalk.PF_NUM, _wirewalk.PF_HEX,
                                                  _wirewalk.PF_ULID)


def native_rule(rule: KeyRule) -> object:
    """A KeyRule as the C walker takes it: selected keys as a tuple of their UTF-8 bytes (compared
    in C, no str made per key), anything else as the mapping itself."""
    if rule is None:
        return None
    if isinstance(rule, SelectedKeys):
        return tuple(k.encode("utf-8") for k in rule)
    return rule


def native_nodes(plan: Plan) -> list[list[tuple[int, int, int, object, object]]]:
    """A plan as the C walker takes it: node 0 is the request; each node a list of
    (tag, kind, sub-node, rule, nested rule) steps. AnyValue arrays and maps need no node (the C
    walker knows their shape); their `nested` rule travels with the step."""
    nodes: list[list[tuple[int, int, int, object, object]]] = []
    index: dict[int, int] = {}

    def add(p: Plan) -> int:
        k = index.get(id(p))
        if k is not None:
            return k
        k = index[id(p)] = len(nodes)
        steps: list[tuple[int, int, int, object, object]] = []
        nodes.append(steps)
        for tag, (kind, arg) in p.items():
            if kind == _MSG:
                steps.append((tag, kind, add(arg), None, None))
            elif kind == _STR:
                steps.append((tag, kind, 0, None, None))
            elif kind == _ATTRS:
                steps.append((tag, kind, 0, native_rule(arg.rule), native_rule(arg.inner.nested)))
            else:
                steps.append((tag, kind, 0, None, native_rule(arg.nested)))
        return k

    add(plan)
    return nodes

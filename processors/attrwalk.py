"""Small helpers to find and rewrite strings in OTLP requests, shared by the privacy processors.

Two layers:

* Bytes prefilters (`BytesPrefilter`): a few compiled bytes regexes run over a
  request's serialized form. Literal-prefixed patterns scan at memchr speed in
  CPython's `re`, so a request without any candidate costs a few microseconds per
  kilobyte and is handed on untouched (never decoded, never re-encoded).
* Tree walkers: iterate the items of a decoded request and rewrite string leaves
  of `AnyValue`/`KeyValue` trees in place. They do the least Python work per
  attribute they can: one key lookup, one `string_value` read, and a function call
  only for strings that may hold a match.

Everything returns how many strings it changed, so callers call
`payload.mutable()` (which only drops the cached wire bytes) exactly when
something changed.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline.model import ExportRequest, Signal

StrFn = Callable[[str], str]


class BytesPrefilter:
    """Says cheaply whether serialized bytes may contain a candidate at all.

    `patterns` run on the raw bytes, `lower_patterns` on a lower-cased copy (made
    only when needed), so case-insensitive keywords stay literal-prefixed and fast.
    `always` makes every request a candidate (e.g. for user regexes that cannot
    be checked on bytes).
    """

    __slots__ = ("_patterns", "_lower", "_checks", "always")

    def __init__(self, patterns: Iterable[bytes | re.Pattern[bytes]] = (),
                 lower_patterns: Iterable[bytes | re.Pattern[bytes]] = (),
                 checks: Iterable[Callable[[bytes], bool]] = (), *, always: bool = False) -> None:
        self._patterns = tuple(p if isinstance(p, re.Pattern) else re.compile(p) for p in patterns)
        self._lower = tuple(p if isinstance(p, re.Pattern) else re.compile(p) for p in lower_patterns)
        self._checks = tuple(checks)
        self.always = always

    def hit(self, raw: bytes) -> bool:
        if self.always:
            return True
        for p in self._patterns:
            if p.search(raw) is not None:
                return True
        for check in self._checks:
            if check(raw):
                return True
        if self._lower:
            low = raw.lower()
            for p in self._lower:
                if p.search(low) is not None:
                    return True
        return False


def literal_any(needles: Iterable[bytes]) -> list[re.Pattern[bytes]]:
    """One compiled literal pattern per needle (each scans at memchr speed)."""
    return [re.compile(re.escape(n)) for n in needles]


def run_check(chars: bytes, length: int) -> Callable[[bytes], bool]:
    """A check for a run of at least `length` bytes from `chars` (hex ids, ULIDs, card digits).

    Such patterns have no literal to anchor on, and `re` would try a match at every
    position; mapping the class to one byte with `bytes.translate` and searching
    for the run as a literal keeps the scan in C at a few hundred MB/s.
    """
    table = bytearray(b"." * 256)
    for c in chars:
        table[c] = 0x61  # "a"
    tbl = bytes(table)
    needle = b"a" * length

    def check(raw: bytes) -> bool:
        return needle in raw.translate(tbl)

    return check


# --------------------------------------------------------------------------------------------
# Item iteration
# --------------------------------------------------------------------------------------------

def iter_resources(signal: Signal, msg: ExportRequest) -> Iterator[Any]:
    """The Resource of every ResourceSpans/ResourceMetrics/ResourceLogs."""
    for r in getattr(msg, signal.resource_field):
        yield r.resource


def iter_spans(msg: ExportRequest) -> Iterator[Any]:
    for rs in msg.resource_spans:  # type: ignore[union-attr]
        for ss in rs.scope_spans:
            yield from ss.spans


def iter_log_records(msg: ExportRequest) -> Iterator[Any]:
    for rl in msg.resource_logs:  # type: ignore[union-attr]
        for sl in rl.scope_logs:
            yield from sl.log_records


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
# Item offsets on the wire
# --------------------------------------------------------------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    b = buf[i]
    if b < 0x80:
        return b, i + 1
    result = b & 0x7F
    shift = 7
    i += 1
    while True:
        b = buf[i]
        result |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of every length-delimited field in buf[start:end]; skips the others."""
    i = start
    while i < end:
        tag, i = _varint(buf, i)
        wt = tag & 7
        if wt == 2:
            n, i = _varint(buf, i)
            if i + n > end:
                raise ValueError("truncated field")
            yield tag >> 3, i, i + n
            i += n
        elif wt == 0:
            _, i = _varint(buf, i)
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
    if i != end:
        raise ValueError("field overruns its message")


def item_offsets(raw: bytes) -> tuple[list[int], list[tuple[int, int, int]]] | None:
    """Where each item (span, log record or metric) of a serialized request starts.

    All three requests share the shape request.1 → resource.2 → scope.2 → item, so
    one envelope walk (a few hundred nanoseconds per item, item contents skipped)
    gives `starts` (sorted byte offsets) and `index` ((resource, scope, item)
    positions in the decoded message, in the same order). With them, match offsets
    from a bytes scan map to the few items worth decoding and walking. Returns
    None if the bytes do not parse as that shape (the caller then walks everything).
    """
    starts: list[int] = []
    index: list[tuple[int, int, int]] = []
    try:
        ri = 0
        for f, rs, re_ in _fields(raw, 0, len(raw)):
            if f != 1:
                continue
            si = 0
            for f2, ss, se in _fields(raw, rs, re_):
                if f2 != 2:
                    continue
                ii = 0
                for f3, it, _ in _fields(raw, ss, se):
                    if f3 == 2:
                        starts.append(it)
                        index.append((ri, si, ii))
                        ii += 1
                si += 1
            ri += 1
    except (ValueError, IndexError):
        return None
    return starts, index


def items_at(offsets: Iterable[int], starts: list[int]) -> set[int]:
    """Indices (into `starts`) of the items holding the given byte offsets (offsets before the
    first item, e.g. in a resource, map to nothing)."""
    import bisect

    out = set()
    for off in offsets:
        k = bisect.bisect_right(starts, off) - 1
        if k >= 0:
            out.add(k)
    return out


def run_finder(chars: bytes, length: int) -> Callable[[bytes], list[int]]:
    """Like `run_check`, but returns where every run of at least `length` bytes from `chars` starts."""
    table = bytearray(b"." * 256)
    for c in chars:
        table[c] = 0x61
    tbl = bytes(table)
    needle = b"a" * length

    def find(raw: bytes) -> list[int]:
        tr = raw.translate(tbl)
        out = []
        pos = tr.find(needle)
        while pos >= 0:
            out.append(pos)
            end = tr.find(b".", pos + length)
            if end < 0:
                break
            pos = tr.find(needle, end)
        return out

    return find

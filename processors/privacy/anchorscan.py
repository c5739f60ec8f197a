"""Find where the privacy processors' rules may match, in one pass over a request's wire bytes.

`AnchorScanner`: one pass over a request's wire bytes for every anchor of every
enabled rule (a literal or short pattern that each match of the rule contains),
giving the byte offsets of all occurrences. It uses hyperscan (one compiled
multi-pattern database, tens of microseconds per 67 KB request) when the
library is importable and otherwise CPython's `re`, one pattern at a time
(the same offsets, an order of magnitude slower). A request without any
occurrence is handed on untouched: never decoded, never re-encoded.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

try:  # the C extension (processors/privacy/_wirewalk.c) has a match collector for hyperscan's callbacks
    from processors.privacy import _wirewalk
except ImportError:  # pragma: no cover - built by setup.py wherever a C compiler is available
    _wirewalk = None  # type: ignore[assignment]

try:  # libhyperscan called directly (processors/privacy/_hsscan.c): needs the system library at build time
    from processors.privacy import _hsscan
except ImportError:  # pragma: no cover - built by setup.py where libhyperscan is installed
    _hsscan = None  # type: ignore[assignment]

_hyperscan: Any
try:  # a native multi-pattern matcher; pyproject installs it on x86_64, where the wheels bundle the library
    import hyperscan as _hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    _hyperscan = None


@dataclass(frozen=True, slots=True)
class Anchor:
    """Bytes that every match of a rule contains, inside the one string that holds the match.

    `regex` is CPython `re` syntax (look-arounds allowed). hyperscan has no
    look-arounds, so `hs` may give the same occurrences as plain expressions,
    each with its `trail`: how many bytes of context the expression matches
    after the anchor itself (`token[^s]` has a trail of 1). Without `hs`,
    `regex` itself is compiled for hyperscan with a trail of 0. `tag` marks a
    gate: the scan reports which tags occurred anywhere in the request. `info`
    is the caller's own data about the anchor (the scanner only carries it).
    """

    regex: bytes
    caseless: bool = False
    hs: tuple[tuple[bytes, int], ...] = ()
    tag: str | None = None
    info: object = None
    shape: tuple[bytes, bytes] | None = None  # (translate table, needle): see `shaped`


def shaped(regex: bytes, parts: Iterable[tuple[bytes, int]], **kw: Any) -> Anchor:
    """An anchor made of byte classes only (`[0-9]{4}[ -][0-9]{4}...`), as (class, count) parts.

    `regex` is the same pattern, for hyperscan. CPython `re` has no literal to
    skip ahead to in such a pattern and tries it at every byte, so the `re`
    backend maps each class to one letter with `bytes.translate` and searches
    the letters as a plain literal instead.
    """
    parts = list(parts)
    table = bytearray(b"." * 256)
    letters: dict[bytes, int] = {}
    needle = bytearray()
    for chars, count in parts:
        letter = letters.setdefault(chars, 0x61 + len(letters))
        for c in chars:
            if table[c] not in (0x2E, letter):
                raise ValueError("byte classes of a shaped anchor must not overlap")
            table[c] = letter
        needle += bytes((letter,)) * count
    return Anchor(regex, shape=(bytes(table), bytes(needle)), **kw)


_HS_FLAG_CASELESS = 1  # hs_compile.h; the binding and _hsscan export the same value
assert _hyperscan is None or _hyperscan.HS_FLAG_CASELESS == _HS_FLAG_CASELESS
assert _hsscan is None or _hsscan.HS_FLAG_CASELESS == _HS_FLAG_CASELESS


def _fixed_width(expr: bytes) -> int | None:
    """The match length of a fixed-length expression (None if variable)."""
    # re._parser is private and typeshed's view of it varies by release:
    # reach it through importlib so the type checker sees Any either way.
    parser: Any = importlib.import_module("re._parser")
    lo, hi = parser.parse(expr.decode("latin-1")).getwidth()
    return lo if lo == hi else None


class AnchorScanner:
    """Offsets of every anchor occurrence in a request, in one pass.

    `scan(raw)` returns (offsets, tags, ids): sorted byte offsets, one per
    occurrence; the tags of the anchors that occurred; and, if asked with
    `ids=True`, the index (in the `anchors` given) of each offset's anchor.
    What is guaranteed is that every occurrence has an offset inside it (so
    inside the string that holds it). For an anchor of fixed length the offset
    is the occurrence's first byte with either backend; for a variable-length
    one it is its last byte with hyperscan (which reports every end of every
    match) and its first byte with `re` (each search restarts one byte after
    the previous match start, so overlapping occurrences are all found); for a
    run (`shaped`, one class) the `re` backend gives positions one run length
    apart, which also puts one in every occurrence.

    `backend` is "hyperscan" or "re" ("auto": hyperscan when it is installed
    and works on this CPU); ask for "re" to force the fallback.

    How hyperscan's matches are collected (`matcher`, all with the same result):
    "libhs", libhyperscan called from C (processors/privacy/_hsscan.c), no Python call
    per scan at all; "collector", hyperscan's Python binding with a C callback
    (processors/privacy/_wirewalk.c `Collector`); "python", the binding with a Python
    closure. "auto" takes the first of these that is installed. The binding
    takes the GIL back for every match, which on agent telemetry (a hundred and
    more matches per request) was most of the scan's cost. One scan at a time
    per scanner (hyperscan's scratch space belongs to the database).
    """

    __slots__ = ("_adj", "_anchor_of", "_collector", "_db", "_gate_from", "_libhs", "_res", "_tag_of", "anchors",
                 "backend", "matcher")

    def __init__(self, anchors: Iterable[Anchor], *, backend: str = "auto", matcher: str = "auto") -> None:
        self.anchors = tuple(anchors)
        if backend not in ("auto", "hyperscan", "re"):
            raise ValueError(f"unknown scanner backend {backend!r}")
        if matcher not in ("auto", "libhs", "collector", "python"):
            raise ValueError(f"unknown match collection {matcher!r}")
        available = {"libhs": _hsscan is not None, "collector": _hyperscan is not None and _wirewalk is not None,
                     "python": _hyperscan is not None}
        if matcher == "auto":
            matcher = next((m for m, ok in available.items() if ok), "python")
        elif backend != "re" and not available[matcher]:
            raise RuntimeError(f"hyperscan matches cannot be collected with {matcher!r} here (not installed)")
        self.matcher = matcher
        self._collector: Any = None
        self._libhs: Any = None
        self._db: Any = None
        if backend == "hyperscan" and not any(available.values()):
            raise RuntimeError("hyperscan is not installed")
        if backend != "re" and any(available.values()) and self.anchors:
            try:
                self._compile_hyperscan()
            except Exception:  # e.g. a CPU without the instructions the library needs
                if backend == "hyperscan":
                    raise
                self._db = self._libhs = None
        self.backend = "hyperscan" if self._db is not None or self._libhs is not None else "re"
        # The re backend; caseless anchors are written in lower case and searched in a lower-cased copy.
        if any(a.caseless and a.regex != a.regex.lower() for a in self.anchors):
            raise ValueError("caseless anchors must be written in lower case")
        self._res = tuple(re.compile(a.regex) for a in self.anchors)

    def _compile_hyperscan(self) -> None:
        exprs: list[bytes] = []
        flags: list[int] = []
        adj: list[int] = []
        tags: list[str | None] = []
        anchor_of: list[int] = []
        # Tagged (gate) expressions get the highest ids, so the match handler tells them apart with
        # one comparison.
        order = sorted(range(len(self.anchors)), key=lambda k: self.anchors[k].tag is not None)
        for k in order:
            a = self.anchors[k]
            for expr, trail in a.hs or ((a.regex, 0),):
                width = _fixed_width(expr)
                exprs.append(expr)
                flags.append(_HS_FLAG_CASELESS if a.caseless else 0)
                # end offset -> the first byte (fixed length) or the last byte before the trail
                adj.append(width if width is not None else 1 + trail)
                tags.append(a.tag)
                anchor_of.append(k)
        if len(exprs) > 255:
            raise ValueError("too many anchor expressions")
        self._adj = tuple(adj)
        self._tag_of = tuple(tags)
        self._anchor_of = tuple(anchor_of)
        self._gate_from = next((i for i, t in enumerate(tags) if t is not None), len(tags))
        if self.matcher == "libhs":
            self._libhs = _hsscan.Scanner(exprs, flags, self._adj, self._anchor_of, self._gate_from)
            return
        db = _hyperscan.Database(mode=_hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs), flags=flags)
        self._db = db
        if self.matcher == "collector":
            self._collector = _wirewalk.Collector(self._adj, self._anchor_of, self._gate_from)

    def scan(self, raw: bytes, ids: bool = False) -> tuple[list[int], frozenset[str], list[int] | None]:
        if self._libhs is not None or self._db is not None:
            return self._scan_hyperscan(raw, ids)
        return self._scan_re(raw, ids)

    def _scan_hyperscan(self, raw: bytes, ids: bool) -> tuple[list[int], frozenset[str], list[int] | None]:
        collector = self._collector
        if self._libhs is not None or collector is not None:  # the bookkeeping in C (processors/privacy/_matches.h)
            if self._libhs is not None:
                offsets, anchor_ids, gate_ids = self._libhs.scan(raw)
            else:
                try:
                    self._db.scan(raw, match_event_handler=collector)
                finally:
                    offsets, anchor_ids, gate_ids = collector.take()
            tag_of = self._tag_of
            tags = frozenset(tag_of[i] for i in gate_ids) if gate_ids else frozenset()
            return offsets, tags, anchor_ids if ids else None
        found: list[int] = []
        gates: list[int] = []
        append = found.append
        adj = self._adj
        gate_from = self._gate_from
        if ids:
            def on_match(i: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
                append((end - adj[i]) << 8 | i)
                if i >= gate_from:
                    gates.append(i)
        else:
            def on_match(i: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
                append(end - adj[i])
                if i >= gate_from:
                    gates.append(i)

        self._db.scan(raw, match_event_handler=on_match)
        found.sort()
        tag_of = self._tag_of
        tags = frozenset(tag_of[i] for i in set(gates)) if gates else frozenset()
        if not ids:
            return found, tags, None
        anchor_of = self._anchor_of
        return [v >> 8 for v in found], tags, [anchor_of[v & 0xFF] for v in found]

    def _scan_re(self, raw: bytes, ids: bool) -> tuple[list[int], frozenset[str], list[int] | None]:
        # Literal-prefixed searches (CPython skips ahead to the literal), caseless ones on a
        # lower-cased copy, shaped ones as literals on a translated copy; each restarts one byte
        # after the previous match start, so overlapping occurrences are found too.
        found: list[tuple[int, int]] = []
        tags = set()
        lowered: bytes | None = None
        translated: dict[bytes, bytes] = {}
        for k, (rx, a) in enumerate(zip(self._res, self.anchors)):
            before = len(found)
            if a.shape is not None:
                table, needle = a.shape
                tr = translated.get(table)
                if tr is None:
                    tr = translated[table] = raw.translate(table)
                found.extend((p, k) for p in _shape_offsets(tr, needle))
            else:
                text = raw
                if a.caseless:
                    if lowered is None:
                        lowered = raw.lower()
                    text = lowered
                m = rx.search(text)
                while m is not None:
                    found.append((m.start(), k))
                    m = rx.search(text, m.start() + 1)
            if a.tag is not None and len(found) > before:
                tags.add(a.tag)
        found.sort()
        offsets = [o for o, _ in found]
        return offsets, frozenset(tags), [k for _, k in found] if ids else None


def _shape_offsets(tr: bytes, needle: bytes) -> Iterator[int]:
    """Offsets covering every occurrence of `needle` in `tr`.

    A needle of one repeated letter is a run: in a run of such letters every
    window of the needle's length is an occurrence, so positions one needle
    length apart across the whole run cover them all (each window holds one).
    Other needles: every occurrence start.
    """
    n = len(needle)
    if needle == needle[:1] * n:
        other = re.compile(b"[^" + needle[:1] + b"]")
        pos = tr.find(needle)
        while pos >= 0:
            m = other.search(tr, pos)  # the end of the run
            end = len(tr) if m is None else m.start()
            yield from range(pos, end, n)
            pos = tr.find(needle, end)
    else:
        pos = tr.find(needle)
        while pos >= 0:
            yield pos
            pos = tr.find(needle, pos + 1)

"""The anchor scan: where in a request's wire bytes secret_mask's rules may match, in one pass.

An anchor is a short pattern that every match of a rule contains (`sk-` for OpenAI keys, a
key term such as `password` for `key=value` pairs). `AnchorScanner.scan(raw)` returns the byte
offset of every anchor occurrence in the request, with which anchor it is, and which gate
anchors occurred anywhere (a gate switches a detector on for the request, see
`secret_rules.Detector.gated`). A request without any occurrence is handed on untouched; in the
others the wire walker visits only the strings holding one.

One interface, three implementations, chosen in one place (`AnchorScanner.__init__`), best first:

* `libhs`: libhyperscan called from C (processors/privacy/_hsscan.c): one compiled multi-pattern
  database, no Python call during a scan. Built by setup.py where the system library is installed.
* `binding`: hyperscan's Python binding (pyproject installs it on x86_64); matches are collected
  by a C callback (`_wirewalk.Collector`) where the C extension is built, else by a Python one.
* `re`: CPython `re`, one literal-led search per anchor (the same offsets, an order of magnitude
  slower), wherever hyperscan is missing or does not run on the CPU.

Anchors made only of byte classes (`shaped`: card digits) are not for hyperscan, which has no
literal to skip to in them and spent more on them than on all other anchors together: C samples
for them (processors/privacy/_matches.h) with either hyperscan backend, `re` maps the classes to
letters and searches a literal.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

try:  # the C wire walker's module also collects the binding's matches
    from processors.privacy import _wirewalk
except ImportError:  # pragma: no cover - built by setup.py wherever a C compiler is available
    _wirewalk = None  # type: ignore[assignment]

try:  # libhyperscan called directly: needs the system library at build time
    from processors.privacy import _hsscan
except ImportError:  # pragma: no cover - built by setup.py where libhyperscan is installed
    _hsscan = None  # type: ignore[assignment]

_hyperscan: Any
try:  # pyproject installs it on x86_64, where the wheels bundle the library
    import hyperscan as _hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    _hyperscan = None

#: The implementations, best first (see the module docstring).
BACKENDS = ("libhs", "binding", "re")
_HS_FLAG_CASELESS = 1  # hs_compile.h; the binding and _hsscan export the same value
assert _hyperscan is None or _hyperscan.HS_FLAG_CASELESS == _HS_FLAG_CASELESS
assert _hsscan is None or _hsscan.HS_FLAG_CASELESS == _HS_FLAG_CASELESS


@dataclass(frozen=True, slots=True)
class Anchor:
    """Bytes that every match of a rule contains, inside the one string that holds the match.

    `regex` is CPython `re` syntax (look-arounds allowed). hyperscan has no look-arounds, so `hs`
    may give the same occurrences as plain expressions, each with its trail: how many bytes of
    context it matches after the anchor itself (`token[^s]` has a trail of 1). `shape`: the same
    pattern as (byte class, count) parts, for an anchor of byte classes only (see `shaped`).
    `tag` marks a gate: the scan reports which tags occurred. `info` is the caller's own data
    about the anchor (the scanner only carries it).
    """

    regex: bytes
    caseless: bool = False
    hs: tuple[tuple[bytes, int], ...] = ()
    tag: str | None = None
    info: object = None
    shape: tuple[tuple[bytes, int], ...] = ()


def shaped(regex: bytes, parts: Iterable[tuple[bytes, int]], **kw: Any) -> Anchor:
    """An anchor made of byte classes only (`[0-9]{4}[ -][0-9]{6}...`): `regex` and the same as parts."""
    parts = tuple(parts)
    seen: set[int] = set()
    for chars in dict.fromkeys(chars for chars, _ in parts):
        if seen & set(chars):
            raise ValueError("byte classes of a shaped anchor must not overlap")
        seen |= set(chars)
    return Anchor(regex, shape=parts, **kw)


class Scan(NamedTuple):
    """What a scan found: sorted `offsets`, one inside each anchor occurrence; the `tags` of the gate
    anchors that occurred; `ids[i]`, the index (among the scanner's anchors) of offsets[i]'s anchor."""

    offsets: list[int]
    tags: frozenset[str]
    ids: list[int]


def fixed_width(expr: bytes) -> int | None:
    """The match length of a fixed-length expression (None if variable)."""
    # re._parser is private and typeshed's view of it varies by release: reach it through importlib
    # so the type checker sees Any either way.
    parser: Any = importlib.import_module("re._parser")
    lo, hi = parser.parse(expr.decode("latin-1")).getwidth()
    return lo if lo == hi else None


class _Expressions:
    """The anchors as hyperscan sees them: expressions with ids (gates last, so one comparison tells
    them apart), the offset adjustment of each (end of match -> the first byte of a fixed-length
    one, the last byte before the trail of a variable-length one), and the shapes left to C."""

    def __init__(self, anchors: tuple[Anchor, ...]) -> None:
        self.exprs: list[bytes] = []
        self.ids: list[int] = []
        self.flags: list[int] = []
        adj: list[int] = []
        tags: list[str | None] = []
        anchor_of: list[int] = []
        shapes: list[tuple[int, tuple[tuple[bytes, int], ...]]] = []
        for k in sorted(range(len(anchors)), key=lambda k: anchors[k].tag is not None):
            a = anchors[k]
            if a.shape:
                shapes.append((len(adj), a.shape))
                adj.append(0)
                tags.append(a.tag)
                anchor_of.append(k)
                continue
            for expr, trail in a.hs or ((a.regex, 0),):
                width = fixed_width(expr)
                self.ids.append(len(adj))
                self.exprs.append(expr)
                self.flags.append(_HS_FLAG_CASELESS if a.caseless else 0)
                adj.append(width if width is not None else 1 + trail)
                tags.append(a.tag)
                anchor_of.append(k)
        if len(adj) > 256:
            raise ValueError("too many anchor expressions")
        self.adj = tuple(adj)
        self.tags = tuple(tags)
        self.anchor_of = tuple(anchor_of)
        self.shapes = tuple(shapes)
        self.gate_from = next((i for i, t in enumerate(tags) if t is not None), len(tags))


# -- the three implementations: scan(raw) -> (offsets, anchor indexes, gate expression ids) ----------

class _LibHS:
    name = "libhs"

    def __init__(self, anchors: tuple[Anchor, ...], ex: _Expressions) -> None:
        self.scan: Callable[[bytes], tuple[list[int], list[int], list[int]]] = _hsscan.Scanner(
            ex.exprs, ex.ids, ex.flags, ex.adj, ex.anchor_of, ex.gate_from, ex.shapes).scan


class _Binding:
    name = "binding"

    def __init__(self, anchors: tuple[Anchor, ...], ex: _Expressions) -> None:
        self._db: Any = None
        if ex.exprs:
            self._db = _hyperscan.Database(mode=_hyperscan.HS_MODE_BLOCK)
            self._db.compile(expressions=ex.exprs, ids=ex.ids, elements=len(ex.exprs), flags=ex.flags)
        self._ex = ex
        self._shapes = [(i, _shape_table(parts)) for i, parts in ex.shapes]
        self._collector = None if _wirewalk is None else _wirewalk.Collector(ex.adj, ex.anchor_of, ex.gate_from,
                                                                                ex.shapes)

    def scan(self, raw: bytes) -> tuple[list[int], list[int], list[int]]:
        collector = self._collector
        if collector is not None:  # the bookkeeping in C (processors/privacy/_matches.h)
            try:
                if self._db is not None:
                    self._db.scan(raw, match_event_handler=collector)
            finally:
                found = collector.take(raw)
            return found
        ex = self._ex
        hits: list[int] = []  # offset << 8 | expression id
        adj = ex.adj

        def on_match(i: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            hits.append((end - adj[i]) << 8 | i)

        if self._db is not None:
            self._db.scan(raw, match_event_handler=on_match)
        for i, (table, needle) in self._shapes:
            hits.extend(o << 8 | i for o in _shape_offsets(raw.translate(table), needle))
        hits.sort()
        gates = sorted({v & 0xFF for v in hits if v & 0xFF >= ex.gate_from})
        return [v >> 8 for v in hits], [ex.anchor_of[v & 0xFF] for v in hits], gates


class _Re:
    """Literal-led searches (CPython skips ahead to the literal), caseless ones on a lower-cased copy,
    shaped ones as literals on a translated copy; each restarts one byte after the previous match
    start, so overlapping occurrences are found too. Gates are reported by anchor index."""

    name = "re"

    def __init__(self, anchors: tuple[Anchor, ...]) -> None:
        if any(a.caseless and a.regex != a.regex.lower() for a in anchors):
            raise ValueError("caseless anchors must be written in lower case")
        self._anchors = anchors
        self._res = tuple(re.compile(a.regex) for a in anchors)
        self._tables = tuple(_shape_table(a.shape) if a.shape else None for a in anchors)

    def scan(self, raw: bytes) -> tuple[list[int], list[int], list[int]]:
        found: list[tuple[int, int]] = []
        gates: list[int] = []
        lowered: bytes | None = None
        translated: dict[bytes, bytes] = {}
        for k, (rx, a, table) in enumerate(zip(self._res, self._anchors, self._tables)):
            before = len(found)
            if table is not None:
                tr = translated.get(table[0])
                if tr is None:
                    tr = translated[table[0]] = raw.translate(table[0])
                found.extend((p, k) for p in _shape_offsets(tr, table[1]))
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
                gates.append(k)
        found.sort()
        return [o for o, _ in found], [k for _, k in found], gates


def _shape_table(parts: tuple[tuple[bytes, int], ...]) -> tuple[bytes, bytes]:
    """(translate table, needle): each class mapped to one letter, the shape as those letters."""
    table = bytearray(b"." * 256)
    letters: dict[bytes, int] = {}
    needle = bytearray()
    for chars, count in parts:
        letter = letters.setdefault(chars, 0x61 + len(letters))
        for c in chars:
            table[c] = letter
        needle += bytes((letter,)) * count
    return bytes(table), bytes(needle)


def _shape_offsets(tr: bytes, needle: bytes) -> Iterator[int]:
    """Offsets covering every occurrence of `needle` in `tr`.

    A needle of one repeated letter is a run: in a run of such letters every window of the
    needle's length is an occurrence, so positions one needle length apart across the whole run
    cover them all (each window holds one). Other needles: every occurrence start.
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


def available_backends() -> tuple[str, ...]:
    """The implementations installed here (whether hyperscan runs on this CPU is found out later)."""
    have = {"libhs": _hsscan is not None, "binding": _hyperscan is not None, "re": True}
    return tuple(b for b in BACKENDS if have[b])


class AnchorScanner:
    """Offsets of every anchor occurrence in a request, in one pass (see the module docstring).

    `backend`: "auto" takes the best implementation that is installed and works on this CPU
    (`self.backend` says which runs); naming one insists on it. Every occurrence gets an offset
    inside it. For an anchor of fixed length it is the occurrence's first byte with any backend;
    for a variable-length one its last byte with hyperscan and its first with `re`; for a shape,
    some byte inside. One scan at a time per scanner (hyperscan's scratch space).
    """

    __slots__ = ("_gate_tags", "_impl", "anchors", "backend")

    def __init__(self, anchors: Iterable[Anchor], *, backend: str = "auto") -> None:
        self.anchors = tuple(anchors)
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"unknown scanner backend {backend!r} (backends: {', '.join(BACKENDS)})")
        wanted = available_backends() if backend == "auto" else (backend,)
        if backend not in ("auto", *available_backends()):
            raise RuntimeError(f"the {backend!r} scanner is not installed here")
        ex = _Expressions(self.anchors)
        impl: _LibHS | _Binding | _Re | None = None
        for name in wanted:
            try:
                impl = _LibHS(self.anchors, ex) if name == "libhs" else _Binding(self.anchors, ex) \
                    if name == "binding" else _Re(self.anchors)
                break
            except Exception:  # e.g. a CPU without the instructions hyperscan needs
                if backend != "auto":
                    raise
        assert impl is not None  # `re` always works
        self._impl = impl
        self.backend = impl.name
        # gates come back as expression ids from hyperscan, as anchor indexes from `re`
        self._gate_tags = tuple(a.tag for a in self.anchors) if impl.name == "re" else ex.tags

    def scan(self, raw: bytes) -> Scan:
        offsets, ids, gates = self._impl.scan(raw)
        tag_of = self._gate_tags
        return Scan(offsets, frozenset(tag_of[g] for g in gates) if gates else frozenset(), ids)  # type: ignore[misc]

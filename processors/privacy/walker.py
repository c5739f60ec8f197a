"""The wire walker: find and rewrite strings in a serialized OTLP request, for the privacy processors.

`Walker(plan, nstages)` walks a request's protobuf wire bytes along a plan built from the message
descriptors (`wire_plan`: which fields hold the strings each stage looks at), hands the strings
it finds to the stages' rules and writes the request back as it goes: every unchanged byte range
is copied and only the length prefixes of the messages around a changed string are re-encoded.
Nothing else is decoded or encoded.

The walk is implemented in C (processors/privacy/_wirewalk.c, built by setup.py) and, for where
no C compiler was available at install, in Python here (`_PyWalk`); both write the same bytes
(tests/unit/processors/privacy/test_wirewalk_native.py runs them against each other). The comment at the
top of the C file describes the walk in full; in short:

* A stage is one processor's rules: `MaskRun` (secret_mask: the strings holding an offset of the
  request's anchor scan, masked by the masker's rules at the positions the anchors give) or
  `TextRun` (uuid_normalize: the strings holding an id anchor, or every string for user patterns).
  Several stages in one walk apply in order to each string: secret_mask and uuid_normalize, when
  adjacent in a pipeline, edit a request in one walk.
* A stage's key rule decides per attribute: SKIP, TEXT (its text rule) or WHOLE (every leaf of the
  value replaced by its whole rule; a bytes leaf becomes the string of the rule applied to its hex).
* Bytes it does not handle (malformed, invalid UTF-8, a KeyValue with two keys or values, an
  AnyValue with two values) raise `WireFallback`; the caller then re-encodes the request the way
  protobuf does (which resolves all of these, or refuses the request) and walks that.
"""
from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from pipeline.wire import LEN, decode_varint, encode_varint, ld_tag, make_tag, skip_field
from processors.privacy.scanner import Anchor, AnchorScanner, shaped

try:
    from processors.privacy import _wirewalk
except ImportError:  # pragma: no cover - built by setup.py wherever a C compiler is available
    _wirewalk = None  # type: ignore[assignment]


class WireFallback(Exception):
    """Bytes the walker does not handle (see the module docstring)."""


#: What a key rule says about an attribute.
SKIP, TEXT, WHOLE = 0, 1, 2
#: Name/value pairs in maps (`{name: DB_PASSWORD, value: ...}`, Kubernetes env, AWS tags): in a map
#: walked under a mapping rule, an entry keyed as in NAME_KEYS whose string value the rule calls
#: WHOLE makes the entries keyed as in VALUE_KEYS WHOLE too, unless the rule says SKIP for them.
#: Exact keys, the same bytes in _wirewalk.c.
NAME_KEYS: frozenset[str] = frozenset({"name", "Name", "NAME", "key", "Key", "KEY"})
VALUE_KEYS: frozenset[str] = frozenset({"value", "Value", "VALUE"})
_NAME_KEYS_B = frozenset(k.encode() for k in NAME_KEYS)
_VALUE_KEYS_B = frozenset(k.encode() for k in VALUE_KEYS)
#: The id anchors a TextRun's prefilter selects (bit flags, see `id_anchors`): a UUID core
#: `-hhhh-hhhh-hhhh-`, `/digit`, 16 hex characters in a row, 26 ULID characters in a row.
PF_UUID, PF_NUM, PF_HEX, PF_ULID = 1, 2, 4, 8
MODE_MASK, MODE_TEXT = 0, 1
#: Anchor infos as the C walker takes them (masker.positions: where a detector's match starts).
INFO_PAIR, INFO_FULL = -1000000, -1000001
if _wirewalk is not None:
    assert (PF_UUID, PF_NUM, PF_HEX, PF_ULID, MODE_MASK, MODE_TEXT, INFO_PAIR, INFO_FULL) == (
        _wirewalk.PF_UUID, _wirewalk.PF_NUM, _wirewalk.PF_HEX, _wirewalk.PF_ULID, _wirewalk.MODE_MASK,
        _wirewalk.MODE_TEXT, _wirewalk.INFO_PAIR, _wirewalk.INFO_FULL)


# -- key rules ----------------------------------------------------------------------------------

#: KeyRule: a mapping key -> SKIP/TEXT/WHOLE (`rule[key]`), None for TEXT on every key.
KeyRule = Mapping[str, int] | None


class SelectedKeys(dict):  # type: ignore[type-arg]
    """KeyRule: TEXT for the given keys, SKIP for every other key (the keys' bytes are compared)."""

    def __init__(self, keys: Iterable[str]) -> None:
        super().__init__((k, TEXT) for k in keys)
        self.encoded = frozenset(k.encode("utf-8") for k in self)

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


def _native_rule(rule: KeyRule) -> object:
    if isinstance(rule, SelectedKeys):
        return tuple(k.encode("utf-8") for k in rule)
    return rule


# -- plans --------------------------------------------------------------------------------------

class Attrs:
    """Plan leaf: a repeated KeyValue field. `rule` decides per key; `nested` is the rule for the
    keys of maps inside the values (None: every leaf of a selected value is looked at)."""

    __slots__ = ("nested", "rule")

    def __init__(self, rule: KeyRule, nested: KeyRule = None) -> None:
        self.rule = rule
        self.nested = nested


class AnyText:
    """Plan leaf: an AnyValue field (a log body) whose strings are all looked at; `nested` as in `Attrs`."""

    __slots__ = ("nested",)

    def __init__(self, nested: KeyRule = None) -> None:
        self.nested = nested


#: Plan leaf: a string field.
STRING = "string"
PlanSpec = Mapping[str, Any]  # field name -> nested PlanSpec, STRING, Attrs or AnyText
_MSG, _STR, _ATTRS, _ANY = range(4)
Leaf = tuple[KeyRule, KeyRule]  # (rule, nested)


@dataclass(slots=True)
class Step:
    kind: int
    leaves: list[Leaf | None]
    sub: Plan | None = None
    owner: bool = False
    #: the stages with a leaf here (for a sub-message: with leaves below, `sub.reach`)
    reach: int = 0
    #: per stage, from `leaves` (`args`, made once): the key rule (False: no leaf), the nested rule,
    #: and TEXT/SKIP
    rules: list[KeyRule | bool] | None = None
    nested: list[KeyRule] = field(default_factory=list)
    act: list[int] = field(default_factory=list)

    def args(self) -> list[KeyRule | bool]:
        if self.rules is None:
            self.nested = [lf[1] if lf is not None else None for lf in self.leaves]
            self.act = [SKIP if lf is None else TEXT for lf in self.leaves]
            self.rules = [lf[0] if lf is not None else False for lf in self.leaves]
        return self.rules


@dataclass(slots=True)
class Plan:
    """A message's planned fields by tag, and `reach`: the bit set of stages with leaves below."""

    steps: dict[int, Step] = field(default_factory=dict)
    reach: int = 0


def wire_plan(desc: Descriptor, specs: Sequence[PlanSpec | None], owners: Iterable[str] = ()) -> Plan:
    """The walk plan of messages of type `desc` for one spec per stage (None: the stage looks nowhere).

    A spec maps a field name (checked against the descriptors) to a nested spec (a sub-message to
    walk into), `STRING`, `Attrs(...)` or `AnyText(...)`; fields no spec names are skipped without
    looking at them. Sub-messages whose type's full name is in `owners` count, per stage, the
    values it changed inside them (secret_mask's summary attributes).
    """
    owner_types = frozenset(owners)
    plan = Plan()
    for k, spec in enumerate(specs):
        if spec is not None:
            _add(plan, desc, spec, k, len(specs), owner_types)
    return plan


def _add(plan: Plan, desc: Descriptor, spec: PlanSpec, k: int, n: int, owners: frozenset[str]) -> None:
    for name, sub in spec.items():
        f = desc.fields_by_name[name]
        tag = make_tag(f.number, LEN)
        sub_type = f.message_type.full_name if f.message_type is not None else ""
        leaf: Leaf | None
        if sub == STRING:
            if f.type != FieldDescriptor.TYPE_STRING:
                raise TypeError(f"{desc.full_name}.{name} is not a string")
            kind, leaf = _STR, (None, None)
        elif f.type != FieldDescriptor.TYPE_MESSAGE:
            raise TypeError(f"{desc.full_name}.{name} is not a message")
        elif isinstance(sub, Attrs):
            if sub_type != KeyValue.DESCRIPTOR.full_name:
                raise TypeError(f"{desc.full_name}.{name} is not a KeyValue list")
            kind, leaf = _ATTRS, (sub.rule, sub.nested)
        elif isinstance(sub, AnyText):
            if sub_type != AnyValue.DESCRIPTOR.full_name:
                raise TypeError(f"{desc.full_name}.{name} is not an AnyValue")
            kind, leaf = _ANY, (None, sub.nested)
        else:
            kind, leaf = _MSG, None
        step = plan.steps.setdefault(tag, Step(kind, [None] * n))
        if step.kind != kind:
            raise TypeError(f"{desc.full_name}.{name} is planned as two kinds of field")
        if kind == _MSG:
            if step.sub is None:
                step.sub = Plan()
                step.owner = sub_type in owners
            assert f.message_type is not None
            _add(step.sub, f.message_type, sub, k, n, owners)
            step.reach = step.sub.reach
            plan.reach |= step.sub.reach
        else:
            step.leaves[k] = leaf
            step.reach |= 1 << k
            plan.reach |= 1 << k


def native_plan(plan: Plan) -> list[tuple[int, list[tuple[int, int, int, bool, tuple[object, ...]]]]]:
    """A plan as the C walker takes it: node 0 the request; each node (reach, steps), each step
    (tag, kind, sub-node, owner, leaves: per stage None or (rule, nested))."""
    nodes: list[tuple[int, list[tuple[int, int, int, bool, tuple[object, ...]]]]] = []
    index: dict[int, int] = {}

    def add(p: Plan) -> int:
        k = index.get(id(p))
        if k is None:
            k = index[id(p)] = len(nodes)
            steps: list[tuple[int, int, int, bool, tuple[object, ...]]] = []
            nodes.append((p.reach, steps))
            for tag, s in p.steps.items():
                sub = add(s.sub) if s.sub is not None else 0
                leaves = tuple(None if lf is None else (_native_rule(lf[0]), _native_rule(lf[1])) for lf in s.leaves)
                steps.append((tag, s.kind, sub, s.owner, leaves))
        return k

    add(plan)
    return nodes


# -- stages -------------------------------------------------------------------------------------

@dataclass(slots=True)
class MaskRun:
    """secret_mask's stage for one request: the strings holding an offset of the scan (`offsets`,
    sorted, with their anchor indexes `ids`) go to `anchored(text, base)` (base: where the string's
    bytes start) in Python and to `engine` (see _wirewalk.c) in C; a string an earlier stage changed
    goes to `full(text)`; values under a WHOLE key to `whole(text)`. `owners`: see `TextRun`."""

    offsets: Sequence[int]
    ids: Sequence[int]
    anchored: Callable[[str, int], str]
    full: Callable[[str], str]
    whole: Callable[[str], str] | None
    engine: tuple[object, ...] | None
    owners: list[tuple[int, int]] | None = None


@dataclass(slots=True)
class TextRun:
    """uuid_normalize's stage (or any string rule): the strings holding one of the id anchors selected
    by `prefilter` (0: every string) go to `text(text, flags)`, `flags` the anchors found in it.
    `owners`, if a list, gets (content offset, n) for every owner message the stage changed n
    values in."""

    prefilter: int
    text: Callable[[str, int], str]
    whole: Callable[[str], str] | None = None
    owners: list[tuple[int, int]] | None = None
    #: (replacement, counts): `text` is uuid_normalize's `normalize_found`, whose UUID-only case the C
    #: walker runs itself (replacing each UUID, counting under "uuid" in `counts`)
    uuid: tuple[str, dict[str, int]] | None = None
    #: how the Python walk finds the id anchors in a request (None: `IdAnchorScan()`)
    anchors: IdAnchorScan | None = None


Run = MaskRun | TextRun


def id_anchors(data: bytes, flags: int) -> int:
    """The id anchors (`PF_*` flags, those in `flags`) that `data` holds: `_wirewalk.prefilter`."""
    if _wirewalk is not None:
        return _wirewalk.prefilter(data, flags)
    found = 0
    for f, rx in _ID_ANCHORS:
        if flags & f:
            size, byte = _ID_NEEDS[f]  # what the search needs, cheaper to check first
            if len(data) >= size and byte in data and rx.search(data) is not None:
                found |= f
    return found


def _id_anchor_res() -> tuple[tuple[int, re.Pattern[bytes]], ...]:
    return ((PF_UUID, re.compile(rb"-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-")), (PF_NUM, re.compile(rb"/[0-9]")),
            (PF_HEX, re.compile(rb"[0-9a-fA-F]{16}")), (PF_ULID, re.compile(rb"[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}")))


_ID_ANCHORS = _id_anchor_res()
#: the length and a byte every id anchor occurrence has
_ID_NEEDS = {PF_UUID: (16, b"-"), PF_NUM: (2, b"/"), PF_HEX: (16, b""), PF_ULID: (26, b"")}


_HEX_CHARS = b"0123456789abcdefABCDEF"
_ULID_CHARS = bytes(c for c in b"0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyz")
#: the id anchors that are runs of one byte class (class, length): shaped anchors of the scan
_ID_RUNS = {PF_HEX: (_HEX_CHARS, 16), PF_ULID: (_ULID_CHARS, 26)}


class IdAnchorScan:
    """The Python walk's counterpart of the C walker's per-string id anchor check, to enter only the
    messages that may hold an id: `scan(data, flags)`, sorted offsets such that every occurrence of an
    id anchor in `flags` in the request holds one, found by the anchor scanner (`scanner.AnchorScanner`,
    one pass of hyperscan where installed; `backend` as there)."""

    __slots__ = ("_scanners", "backend")

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend
        self._scanners: dict[int, AnchorScanner] = {}

    def scan(self, data: bytes, flags: int) -> list[int]:
        sc = self._scanners.get(flags)
        if sc is None:
            anchors = [Anchor(rx.pattern) if f not in _ID_RUNS else shaped(rx.pattern, [_ID_RUNS[f]])
                       for f, rx in _ID_ANCHORS if flags & f]
            sc = self._scanners[flags] = AnchorScanner(anchors, backend=self.backend)
        return sc.scan(data).offsets


# -- the walker ---------------------------------------------------------------------------------

class Walker:
    """A compiled plan for `nstages` stages; `rewrite` walks a request (in C where it is built, see
    the module docstring; `native=False` forces the Python walk)."""

    __slots__ = ("_native", "_selecting", "nstages", "plan")

    def __init__(self, plan: Plan, nstages: int, *, native: bool | None = None) -> None:
        if native and _wirewalk is None:
            raise RuntimeError("the C wire walker (processors.privacy._wirewalk) is not built")
        self.plan = plan
        self.nstages = nstages
        self._selecting = _selecting_stages(plan, nstages)
        use = _wirewalk is not None if native is None else native
        self._native = _wirewalk.Walker(native_plan(plan), nstages, WireFallback) if use else None

    @property
    def native(self) -> bool:
        return self._native is not None

    def rewrite(self, raw: bytes, runs: Sequence[Run]) -> bytes | None:
        """The new bytes, or None when no string changed. Raises WireFallback on bytes it does not
        handle (the stages' rules may have been called for some strings already)."""
        if len(runs) != self.nstages:
            raise ValueError("one run per stage")
        mask = next((r for r in runs if isinstance(r, MaskRun)), None)
        if self._native is None:
            return _PyWalk(raw, runs, mask, self._selecting).run(self.plan)
        stages = tuple((MODE_MASK, r.engine, r.whole, r.owners) if isinstance(r, MaskRun)
                       else (MODE_TEXT, r.prefilter, r.text, r.whole, r.owners, r.uuid) for r in runs)
        if mask is None:
            return self._native.rewrite(raw, stages)
        return self._native.rewrite(raw, stages, mask.offsets, mask.ids)


def _selecting_stages(plan: Plan, nstages: int) -> int:
    """The stages whose key rules in `plan` only select keys (None or SelectedKeys: TEXT or SKIP, never
    WHOLE), as a bit set."""
    out = (1 << nstages) - 1
    for step in plan.steps.values():
        if step.sub is not None:
            out &= _selecting_stages(step.sub, nstages)
        for k, leaf in enumerate(step.leaves):
            if leaf is not None and not all(r is None or isinstance(r, SelectedKeys) for r in leaf):
                out &= ~(1 << k)
    return out


_STRING_TAG = ld_tag(AnyValue.DESCRIPTOR, "string_value")
_VALUE_TAG = ld_tag(KeyValue.DESCRIPTOR, "value")
_ARRAY_TAG = ld_tag(AnyValue.DESCRIPTOR, "array_value")
_KVLIST_TAG = ld_tag(AnyValue.DESCRIPTOR, "kvlist_value")
_BYTES_TAG = ld_tag(AnyValue.DESCRIPTOR, "bytes_value")
_STRING_HEAD = encode_varint(_STRING_TAG)
_VARINT1 = tuple(encode_varint(n) for n in range(0x80))  # the one-byte varints
_VALUE_HEAD = encode_varint(_VALUE_TAG)
assert _STRING_TAG == ld_tag(KeyValue.DESCRIPTOR, "key") == 0x0A  # a key, a string value, array and map items
assert _STRING_TAG == ld_tag(ArrayValue.DESCRIPTOR, "values") == ld_tag(KeyValueList.DESCRIPTOR, "values")
_MAX_DEPTH = 128  # as _wirewalk.c
_ID_SCAN = IdAnchorScan()


_NO_COUNT: list[int] = []


class _Frame:
    __slots__ = ("ce", "count", "cs", "lp", "ostart", "owner", "slot")

    def __init__(self, lp: int, cs: int, ce: int, owner: bool, nstages: int) -> None:
        self.lp, self.cs, self.ce, self.owner = lp, cs, ce, owner
        self.slot = -1  # index in the output pieces of its prefix, once something inside changed
        self.ostart = 0  # the output length where its content starts (then)
        self.count = [0] * nstages if owner else _NO_COUNT  # (only owners count)


class _PyWalk:
    """One walk in Python: the functions of _wirewalk.c, one method each, in the same order."""

    def __init__(self, raw: bytes, runs: Sequence[Run], mask: MaskRun | None, selecting: int) -> None:
        self.buf = raw
        self.runs = runs
        self.n = len(runs)
        self.mask = mask
        self.mask_stage = -1 if mask is None else list(runs).index(mask)
        # text stages looking at every string, and those looking only at strings holding an id anchor:
        # for these the walk enters only messages holding one (`text_offs`, see `IdAnchorScan`)
        # (only stages whose key rules never say WHOLE, which acts on any value: `selecting`)
        self.pf_stages = sum(1 << k for k, r in enumerate(runs)
                             if isinstance(r, TextRun) and r.prefilter and selecting >> k & 1)
        self.every_stages = sum(1 << k for k, r in enumerate(runs) if isinstance(r, TextRun)) & ~self.pf_stages
        pf = 0
        scan = None
        for r in runs:
            if isinstance(r, TextRun):
                pf |= r.prefilter
                scan = scan or r.anchors
        self.text_offs = (scan or _ID_SCAN).scan(raw, pf) if pf else []
        self.offs: Sequence[int] = () if mask is None else mask.offsets
        # every offset where some stage may change something (`touched`): the two lists merged
        self.touch: Sequence[int] = sorted([*self.offs, *self.text_offs]) if self.text_offs else self.offs
        self.out: list[bytes | memoryview | None] = []
        self.olen = 0  # bytes in `out` so far
        self.view = memoryview(raw)
        self.last = 0
        self.stack: list[_Frame] = []
        self.written = 0
        self.changed = False
        self.no_stages = [SKIP] * self.n  # (read only)
        self.text_stage = [isinstance(r, TextRun) for r in runs]
        self.no_names = [False] * self.n

    def run(self, plan: Plan) -> bytes | None:
        try:
            self.walk_msg(0, len(self.buf), plan)
        except (IndexError, ValueError) as e:  # truncated (IndexError, WireError), invalid UTF-8
            raise WireFallback(str(e)) from e
        if not self.changed:
            return None
        self.out.append(self.view[self.last:])
        return b"".join(self.out)  # type: ignore[arg-type]

    # -- reading

    def next_field(self, i: int, end: int) -> tuple[int, int, int, int, int, bool]:
        """(tag, after, lp, cs, ce, length-delimited) of the field at i."""
        tag, i = decode_varint(self.buf, i)
        if tag & 7 != LEN:
            if tag >> 3 == 0:
                raise WireFallback("field number 0")
            j = skip_field(self.buf, i, tag)
            if j > end:
                raise WireFallback("field overruns its message")
            return tag, j, 0, 0, 0, False
        ln, cs = decode_varint(self.buf, i)
        if ln > end - cs:
            raise WireFallback("field overruns its message")
        return tag, cs + ln, i, cs, cs + ln, True

    def has_off(self, a: int, b: int) -> bool:
        k = bisect_left(self.offs, a)
        return k < len(self.offs) and self.offs[k] < b

    def touched(self, a: int, b: int) -> bool:
        """Whether some stage may change something in [a, b): an anchor offset or an id anchor lies there."""
        k = bisect_left(self.touch, a)
        return k < len(self.touch) and self.touch[k] < b

    def worth(self, stages: int, a: int, b: int) -> bool:
        if stages & self.every_stages:
            return True
        if stages & self.pf_stages and self.touched(a, b):
            return True
        return self.mask_stage >= 0 and bool(stages >> self.mask_stage & 1) and self.has_off(a, b)

    # -- writing

    def push(self, lp: int, cs: int, ce: int, owner: bool = False) -> None:
        if len(self.stack) >= _MAX_DEPTH:
            raise WireFallback("messages nested too deeply")
        self.stack.append(_Frame(lp, cs, ce, owner, self.n))

    def pop(self) -> None:
        fr = self.stack.pop()
        if fr.owner:
            for k, run in enumerate(self.runs):
                if fr.count[k] and run.owners is not None:
                    run.owners.append((fr.cs, fr.count[k]))
        if fr.slot < 0:
            return
        self.written -= 1
        ce = fr.ce
        self.out.append(self.view[self.last:ce])
        olen = self.olen + ce - self.last
        self.last = ce
        n = olen - fr.ostart
        prefix = self.view[fr.lp:fr.cs] if n == ce - fr.cs else encode_varint(n)
        self.out[fr.slot] = prefix
        self.olen = olen + len(prefix)

    def emit(self, piece: bytes | memoryview) -> None:
        self.out.append(piece)
        self.olen += len(piece)

    def put(self, f: int, ce: int, head: bytes, text: bytes) -> None:
        out = self.out
        if self.written < len(self.stack):
            for fr in self.stack[self.written:]:  # first change inside these: give them slots
                self.emit(self.view[self.last:fr.lp])
                fr.slot = len(out)
                out.append(None)
                fr.ostart = self.olen
                self.last = fr.cs
            self.written = len(self.stack)
        n = len(text)
        piece = b"".join((head, _VARINT1[n] if n < 0x80 else encode_varint(n), text))
        out.append(self.view[self.last:f])
        out.append(piece)
        self.olen += f - self.last + len(piece)
        self.last = ce
        self.changed = True

    def count_change(self, k: int) -> None:
        if self.runs[k].owners is None:
            return
        for fr in reversed(self.stack):
            if fr.owner:
                fr.count[k] += 1
                return

    # -- strings through the stages

    def decode(self, s: int, e: int) -> str:
        return self.buf[s:e].decode()

    def stage_text(self, k: int, cur: str, changed: bool, cs: int, ce: int) -> str:
        run = self.runs[k]
        if isinstance(run, MaskRun):
            if run.engine is None:
                return cur
            return run.full(cur) if changed else run.anchored(cur, cs)
        found = 0
        if run.prefilter:
            found = id_anchors(cur.encode() if changed else self.buf[cs:ce], run.prefilter)
            if not found:
                return cur
        return _checked(run.text(cur, found))

    def string_leaf(self, act: Sequence[int], f: int, cs: int, ce: int, head: bytes) -> None:
        if self.n == 1:
            new = self.text_one(act[0], cs, ce) if act[0] != SKIP else None
        else:
            new = self.leaf_text(act, cs, ce)
        if new is not None:
            self.put(f, ce, head, new.encode())

    def leaf_text(self, act: Sequence[int], cs: int, ce: int) -> str | None:
        """The new text of the string [cs, ce) through the stages, None when unchanged: whether some
        stage wants it, then `stage_text` per stage, the anchor checks they share made once."""
        runs = self.runs
        raw = self.buf[cs:ce]
        offs: bool | None = None  # has_off(cs, ce), once known
        pre_k, pre_found = -1, 0  # a TextRun's id anchors in `raw`, once known
        for k, a in enumerate(act):
            if a == WHOLE:
                break
            if a != TEXT:
                continue
            run = runs[k]
            if isinstance(run, TextRun):  # with a prefilter: only strings holding an id anchor
                if not run.prefilter:
                    break
                pre_k, pre_found = k, id_anchors(raw, run.prefilter)
                if pre_found:
                    break
            else:
                offs = self.has_off(cs, ce)
                if offs:
                    break
        else:
            return None
        orig = cur = raw.decode()
        changed = False
        for k, run in enumerate(runs):
            a = act[k]
            if a == WHOLE:
                new = cur if run.whole is None else _checked(run.whole(cur))
            elif a != TEXT:
                continue
            elif isinstance(run, MaskRun):
                if not changed:
                    if offs is None:
                        offs = self.has_off(cs, ce)
                    if not offs:
                        continue
                if run.engine is None:
                    continue
                new = run.full(cur) if changed else run.anchored(cur, cs)
            else:
                found = 0
                if run.prefilter:
                    found = pre_found if k == pre_k and not changed else id_anchors(
                        cur.encode() if changed else raw, run.prefilter)
                    if not found:
                        continue
                new = _checked(run.text(cur, found))
            if new != cur:
                changed = True
                if run.owners is not None:
                    self.count_change(k)
            cur = new
        return cur if changed and cur != orig else None

    def bytes_leaf(self, act: Sequence[int], f: int, cs: int, ce: int) -> None:
        if WHOLE not in act[:self.n]:
            return
        first = list(act).index(WHOLE)
        cur = self.buf[cs:ce].hex()
        for k in range(first, self.n):
            run = self.runs[k]
            if act[k] == WHOLE:
                new = cur if run.whole is None else _checked(run.whole(cur))
            elif act[k] == TEXT:
                new = self.stage_text(k, cur, True, cs, ce)
            else:
                continue
            if k == first or new != cur:
                self.count_change(k)
            cur = new
        self.put(f, ce, _STRING_HEAD, cur.encode())

    def classify(self, rule: KeyRule, ks: int, ke: int) -> int:
        if rule is None:
            return TEXT
        if isinstance(rule, SelectedKeys):
            return TEXT if (self.buf[ks:ke] if ks >= 0 else b"") in rule.encoded else SKIP
        key = self.decode(ks, ke) if ks >= 0 else ""
        return rule[key]

    # -- walking

    def any_field(self, s: int, e: int) -> tuple[int, int, int, int, int] | None:
        found = None
        seen = 0
        i = s
        while i < e:
            f = i
            tag, i, lp, cs, ce, ld = self.next_field(i, e)
            if 1 <= tag >> 3 <= 7:
                seen += 1
                if seen > 1:
                    raise WireFallback("AnyValue with two values")
                if ld:
                    found = (tag, f, lp, cs, ce)
        return found

    def kv_parts(self, s: int, e: int) -> tuple[int, int, tuple[int, int, int] | None]:
        ks = ke = -1
        value = None
        i = s
        while i < e:
            tag, i, lp, cs, ce, ld = self.next_field(i, e)
            if not ld:
                continue
            if tag == _STRING_TAG:
                if ks >= 0:
                    raise WireFallback("KeyValue with two keys")
                ks, ke = cs, ce
            elif tag == _VALUE_TAG:
                if value is not None:
                    raise WireFallback("KeyValue with two values")
                value = (lp, cs, ce)
        return ks, ke, value

    def kv_one(self, lp: int, s: int, e: int, step: Step) -> None:
        """`kv` for a KeyValue of an attribute list `walk_msg` entered for an offset inside it (nothing
        inherited or named): in a walk of one stage, the common shape (see `kv_string`) is done here
        without per-stage lists."""
        rules = step.rules or step.args()
        scs = self.kv_string(lp, s, e)[1] if self.n == 1 else 0
        if not scs:
            self.kv(lp, s, e, rules, step.nested, self.no_stages, self.no_names)
            return
        rule = rules[0]
        if rule is False:
            return
        buf = self.buf
        ks = s + 2
        ke = ks + buf[s + 1]
        # (`kv`'s checks that an offset lies in the KeyValue hold: the walk entered it for one; and
        # `text_one` checks that an anchor scan offset lies in the string itself)
        if isinstance(rule, SelectedKeys):  # (`classify`'s common case inline)
            action = TEXT if buf[ks:ke] in rule.encoded else SKIP
        else:
            action = self.classify(rule, ks, ke)  # type: ignore[arg-type]
        if action == SKIP:
            return
        if len(self.stack) >= _MAX_DEPTH - 1:
            raise WireFallback("messages nested too deeply")
        new = self.text_one(action, scs, e)
        if new is not None:  # the KeyValue anew: its key, then the value holding the new string
            text = new.encode()
            n = len(text)
            ln = _VARINT1[n] if n < 0x80 else encode_varint(n)
            n += 1 + len(ln)
            self.put(lp, e, b"", b"".join((buf[s:ke], _VALUE_HEAD, _VARINT1[n] if n < 0x80 else encode_varint(n),
                                           _STRING_HEAD, ln, text)))

    def text_one(self, action: int, cs: int, ce: int) -> str | None:
        """`leaf_text` in a walk of one stage (`action` its TEXT or WHOLE)."""
        run = self.runs[0]
        raw = self.buf[cs:ce]
        if action == WHOLE:
            cur = raw.decode()
            new = cur if run.whole is None else _checked(run.whole(cur))
        elif isinstance(run, TextRun):
            found = 0
            if run.prefilter:
                found = id_anchors(raw, run.prefilter)
                if not found:
                    return None
            cur = raw.decode()
            new = _checked(run.text(cur, found))
        else:
            if run.engine is None or not self.has_off(cs, ce):
                return None
            cur = raw.decode()
            new = run.anchored(cur, cs)
        if new == cur:
            return None
        if run.owners is not None:
            self.count_change(0)
        return new

    def kv(self, lp: int, s: int, e: int, rules: Sequence[KeyRule | bool], nested: Sequence[KeyRule],
           inherit: Sequence[int], named: Sequence[bool]) -> None:
        """`rules[k]` is False for a stage that does not classify this key (see _wirewalk.c kv)."""
        vcs, scs = self.kv_string(lp, s, e)
        if scs:  # the common shape: written as one piece (see `kv_string`)
            ks = s + 2
            ke = ks + self.buf[s + 1]
            vlp, vce = ke + 1, e
        else:
            ks, ke, value = self.kv_parts(s, e)
            if value is None:
                return
            vlp, vcs, vce = value
        act = [SKIP] * self.n
        text_stage = self.text_stage
        offs = self.offs
        j = bisect_left(offs, s)
        in_kv = j < len(offs) and offs[j] < e  # has_off(s, e)
        for k in range(self.n):
            a = inherit[k]
            if a != SKIP:
                act[k] = a
                continue
            rule = rules[k]
            if rule is False:
                continue
            forced = named[k] and ks >= 0 and self.buf[ks:ke] in _VALUE_KEYS_B
            if not forced:
                if text_stage[k]:
                    if self.pf_stages >> k & 1 and not self.touched(s, e):
                        continue
                elif self.mask_stage != k or not in_kv:
                    continue
            action = self.classify(rule, ks, ke)  # type: ignore[arg-type]
            if forced and action == TEXT:
                action = WHOLE
            if action == TEXT and not text_stage[k]:
                j = bisect_left(offs, vcs, j)
                if not (j < len(offs) and offs[j] < vce):  # has_off(vcs, vce)
                    action = SKIP
            act[k] = action
        if not any(act):
            return
        if scs:
            if len(self.stack) >= _MAX_DEPTH - 1:
                raise WireFallback("messages nested too deeply")
            new = self.leaf_text(act, scs, e)
            if new is not None:
                text = new.encode()
                field = _STRING_HEAD + encode_varint(len(text)) + text
                self.put(lp, e, b"", b"".join((self.buf[s:ke], _VALUE_HEAD, encode_varint(len(field)), field)))
            return
        self.push(lp, s, e)
        self.push(vlp, vcs, vce)
        self.any_value(vcs, vce, act, nested)
        self.pop()
        self.pop()

    def kv_string(self, lp: int, s: int, e: int) -> tuple[int, int]:
        """Where the string value's bytes start if the KeyValue [s, e) (its length prefix at lp) is
        a short key then a value holding one string, the way SDKs write attributes, with minimal length
        prefixes (so writing it anew as one piece gives the bytes the frames of `push` would): (where the
        value's content starts, where the string's bytes start); else (0, 0)."""
        buf = self.buf
        n = e - s
        if buf[s] != _STRING_TAG or buf[s + 1] >= 0x80 or s - lp != (1 if n < 0x80 else _varint_size(n)):
            return 0, 0
        ke = s + 2 + buf[s + 1]
        if ke + 2 >= e or buf[ke] != _VALUE_TAG:
            return 0, 0
        vln = buf[ke + 1]
        if vln < 0x80:
            vcs = ke + 2
        else:
            vln, vcs = decode_varint(buf, ke + 1)
            if vcs - ke - 1 != _varint_size(vln):
                return 0, 0
        if vcs + vln != e or vcs + 2 > e or buf[vcs] != _STRING_TAG:
            return 0, 0
        ln = buf[vcs + 1]  # read only within the value (a bad varint is `any_field`'s to refuse)
        if ln < 0x80:
            scs = vcs + 2
        elif vcs + 2 < e and buf[vcs + 2] < 0x80:
            ln, scs = ln & 0x7F | buf[vcs + 2] << 7, vcs + 3
        else:
            return 0, 0
        return (vcs, scs) if scs + ln == e else (0, 0)

    def names_whole(self, s: int, e: int, rule: Mapping[str, int]) -> bool:
        i = s
        while i < e:
            tag, i, _lp, ecs, ece, ld = self.next_field(i, e)
            if not ld or tag != _STRING_TAG:
                continue
            ks, ke, value = self.kv_parts(ecs, ece)
            if value is None or ks < 0 or self.buf[ks:ke] not in _NAME_KEYS_B:
                continue
            v = self.any_field(value[1], value[2])
            if v is not None and v[0] == _STRING_TAG and self.classify(rule, v[3], v[4]) == WHOLE:
                return True
        return False

    def any_elements(self, tag: int, lp: int, cs: int, ce: int, act: Sequence[int], nested: Sequence[KeyRule]) -> None:
        self.push(lp, cs, ce)
        named = [False] * self.n
        inherit = [SKIP] * self.n
        rules: list[KeyRule | bool] = [False] * self.n
        every = False
        for k in range(self.n):
            if act[k] == SKIP:
                continue
            if tag == _KVLIST_TAG and act[k] == TEXT and nested[k] is not None:
                rules[k] = nested[k]
                if not isinstance(nested[k], SelectedKeys):
                    named[k] = self.names_whole(cs, ce, nested[k])  # type: ignore[arg-type]
            else:
                inherit[k] = act[k]
            if act[k] == WHOLE or (isinstance(self.runs[k], TextRun) and not self.pf_stages >> k & 1) or named[k]:
                every = True
        i = cs
        while i < ce:
            etag, i, elp, ecs, ece, ld = self.next_field(i, ce)
            if not ld or etag != _STRING_TAG or (not every and not self.touched(ecs, ece)):
                continue
            if tag == _KVLIST_TAG:
                self.kv(elp, ecs, ece, rules, nested, inherit, named)
                continue
            self.push(elp, ecs, ece)
            self.any_value(ecs, ece, act, nested)
            self.pop()
        self.pop()

    def any_value(self, s: int, e: int, act: Sequence[int], nested: Sequence[KeyRule]) -> None:
        v = self.any_field(s, e)
        if v is None:
            return
        tag, f, lp, cs, ce = v
        if tag == _STRING_TAG:
            self.string_leaf(act, f, cs, ce, _STRING_HEAD)
        elif tag == _BYTES_TAG:
            self.bytes_leaf(act, f, cs, ce)
        elif tag in (_ARRAY_TAG, _KVLIST_TAG):
            self.any_elements(tag, lp, cs, ce, act, nested)

    def walk_leaf(self, step: Step, f: int, lp: int, cs: int, ce: int) -> None:
        rules = step.args()
        if step.kind == _ATTRS:
            self.kv(lp, cs, ce, rules, step.nested, self.no_stages, self.no_names)
        elif step.kind == _MSG:
            assert step.sub is not None
            self.push(lp, cs, ce, step.owner)
            self.walk_msg(cs, ce, step.sub)
            self.pop()
        elif step.kind == _STR:
            self.string_leaf(step.act, f, cs, ce, self.buf[f:lp])
        else:
            self.push(lp, cs, ce)
            self.any_value(cs, ce, step.act, step.nested)
            self.pop()

    def walk_msg(self, s: int, e: int, plan: Plan) -> None:
        if plan.reach & self.every_stages:
            self.walk_every(s, e, plan)
            return
        # Only fields holding a `touch` offset can be worth entering: for the next offset, read past the
        # fields before it (one-byte tags of length-delimited, fixed64 and small varint fields inline,
        # the rest by `next_field`), look at the field holding it, then go on from that field's end. A field that
        # overruns the message ends the inner loop (the offset lies before the message's end), so it
        # is checked there, once.
        buf = self.buf
        touch = self.touch
        n = len(touch)
        steps = plan.steps
        pf_stages = self.pf_stages
        # whether an offset of `touch` is one of the anchor scan's (else `has_off` tells)
        mask_bit = 0 if self.mask_stage < 0 else 1 << self.mask_stage
        all_mask = touch is self.offs
        ci = bisect_left(touch, s)
        i = s
        while ci < n:
            c = touch[ci]
            if c >= e:
                return  # nothing more to find in this message
            while True:
                f = i
                tag = buf[i]
                if tag & 0x87 == LEN and tag >= 8:
                    lp = i + 1
                    ln = buf[lp]
                    if ln < 0x80:
                        cs = i + 2
                    elif buf[i + 2] < 0x80:
                        ln, cs = ln & 0x7F | buf[i + 2] << 7, i + 3
                    else:
                        ln, cs = decode_varint(buf, lp)
                    i = ce = cs + ln
                    ld = True
                elif tag & 0x87 == 1 and tag >= 8:  # a fixed64 (timestamps)
                    i += 9
                    ld = False
                elif tag & 0x87 == 0 and tag >= 8 and buf[i + 1] < 0x80:  # a one-byte varint (kinds, codes)
                    i += 2
                    ld = False
                else:
                    tag, i, lp, cs, ce, ld = self.next_field(i, e)
                if i > c:
                    break
            if i > e:
                raise WireFallback("field overruns its message")
            if not ld:
                ci = bisect_left(touch, i, ci)
                continue
            if c < cs:  # the offset is in this field's tag or length: look past them
                ci = bisect_left(touch, cs, ci)
                if ci >= n or touch[ci] >= ce:
                    continue
            step = steps.get(tag)
            if step is not None and (step.reach & pf_stages or (mask_bit & step.reach and (
                    all_mask or self.has_off(cs, ce)))):  # `worth`, the offset known to be there
                if step.kind == _ATTRS:  # (`walk_leaf`'s first two cases, inline: most fields walked)
                    self.kv_one(lp, cs, ce, step)
                elif step.kind == _MSG:  # (`push` and `pop` inline: most messages entered change nothing)
                    stack = self.stack
                    if len(stack) >= _MAX_DEPTH:
                        raise WireFallback("messages nested too deeply")
                    stack.append(fr := _Frame(lp, cs, ce, step.owner, self.n))
                    self.walk_msg(cs, ce, step.sub)  # type: ignore[arg-type]
                    if fr.owner or fr.slot >= 0:
                        self.pop()
                    else:
                        stack.pop()
                else:
                    self.walk_leaf(step, f, lp, cs, ce)
            ci = bisect_left(touch, ce, ci)

    def walk_every(self, s: int, e: int, plan: Plan) -> None:
        """`walk_msg` where a stage looks at every string below: every field is read."""
        i = s
        while i < e:
            f = i
            tag, i, lp, cs, ce, ld = self.next_field(i, e)
            if not ld:
                continue
            step = plan.steps.get(tag)
            if step is not None and self.worth(step.reach, cs, ce):
                self.walk_leaf(step, f, lp, cs, ce)

def _varint_size(n: int) -> int:
    return 1 if n < 0x80 else 2 if n < 0x4000 else len(encode_varint(n))


def _checked(new: object) -> str:
    if not isinstance(new, str):
        raise TypeError("a string rule must return str")
    return new

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

import bisect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from pipeline.wire import LEN, decode_varint, encode_varint, ld_tag, make_tag, skip_field

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
            plan.reach |= step.sub.reach
        else:
            step.leaves[k] = leaf
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


Run = MaskRun | TextRun


def id_anchors(data: bytes, flags: int) -> int:
    """The id anchors (`PF_*` flags, those in `flags`) that `data` holds: `_wirewalk.prefilter`."""
    if _wirewalk is not None:
        return _wirewalk.prefilter(data, flags)
    found = 0
    for f, rx in _ID_ANCHORS:
        if flags & f and rx.search(data) is not None:
            found |= f
    return found


def _id_anchor_res() -> tuple[tuple[int, re.Pattern[bytes]], ...]:
    return ((PF_UUID, re.compile(rb"-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-")), (PF_NUM, re.compile(rb"/[0-9]")),
            (PF_HEX, re.compile(rb"[0-9a-fA-F]{16}")), (PF_ULID, re.compile(rb"[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}")))


_ID_ANCHORS = _id_anchor_res()


def _run_table(chars: bytes) -> bytes:
    """A bytes.translate table mapping `chars` to x and every other byte to a dot."""
    return bytes(ord("x") if c in chars else ord(".") for c in range(256))


_HEX_CHARS = b"0123456789abcdefABCDEF"
_ULID_CHARS = bytes(c for c in b"0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyz")
#: the run anchors: (length, translate table)
_ID_RUNS = {PF_HEX: (16, _run_table(_HEX_CHARS)), PF_ULID: (26, _run_table(_ULID_CHARS))}


def id_anchor_offsets(data: bytes, flags: int) -> list[int]:
    """Sorted offsets such that every occurrence of an id anchor in `flags` holds one (the Python walk's
    counterpart of the C walker's per-string check, to enter only the messages that may hold an id):
    every UUID-core and `/digit` occurrence start, and in every run of 16+ hex (26+ ULID) characters
    every 16th (26th) position, which any window of that length inside the run holds."""
    out: list[int] = []
    for f, rx in _ID_ANCHORS:
        if not flags & f:
            continue
        if f in _ID_RUNS:
            step, table = _ID_RUNS[f]
            tr = data.translate(table)
            needle = b"x" * step
            pos = tr.find(needle)
            while pos >= 0:
                end = tr.find(b".", pos)
                end = len(tr) if end < 0 else end
                out.extend(range(pos, end, step))
                pos = tr.find(needle, end)
            continue
        m = rx.search(data)
        while m is not None:  # overlapping occurrences too
            out.append(m.start())
            m = rx.search(data, m.start() + 1)
    out.sort()
    return out


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
assert _STRING_TAG == ld_tag(KeyValue.DESCRIPTOR, "key") == 0x0A  # a key, a string value, array and map items
assert _STRING_TAG == ld_tag(ArrayValue.DESCRIPTOR, "values") == ld_tag(KeyValueList.DESCRIPTOR, "values")
_MAX_DEPTH = 128  # as _wirewalk.c


class _Frame:
    __slots__ = ("ce", "count", "cs", "lp", "ostart", "owner", "slot")

    def __init__(self, lp: int, cs: int, ce: int, owner: bool, nstages: int) -> None:
        self.lp, self.cs, self.ce, self.owner = lp, cs, ce, owner
        self.slot = -1  # index in the output pieces of its prefix, once something inside changed
        self.ostart = 0  # the output length where its content starts (then)
        self.count = [0] * nstages


class _PyWalk:
    """One walk in Python: the functions of _wirewalk.c, one method each, in the same order."""

    def __init__(self, raw: bytes, runs: Sequence[Run], mask: MaskRun | None, selecting: int) -> None:
        self.buf = raw
        self.runs = runs
        self.n = len(runs)
        self.mask = mask
        self.mask_stage = -1 if mask is None else list(runs).index(mask)
        # text stages looking at every string, and those looking only at strings holding an id anchor:
        # for these the walk enters only messages holding one (`text_offs`, see `id_anchor_offsets`)
        # (only stages whose key rules never say WHOLE, which acts on any value: `selecting`)
        self.pf_stages = sum(1 << k for k, r in enumerate(runs)
                             if isinstance(r, TextRun) and r.prefilter and selecting >> k & 1)
        self.every_stages = sum(1 << k for k, r in enumerate(runs) if isinstance(r, TextRun)) & ~self.pf_stages
        pf = 0
        for r in runs:
            if isinstance(r, TextRun):
                pf |= r.prefilter
        self.text_offs = id_anchor_offsets(raw, pf) if pf else []
        self.offs: Sequence[int] = () if mask is None else mask.offsets
        self.out: list[bytes | memoryview | None] = []
        self.olen = 0  # bytes in `out` so far
        self.view = memoryview(raw)
        self.last = 0
        self.stack: list[_Frame] = []
        self.written = 0
        self.changed = False

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
        k = bisect.bisect_left(self.offs, a)
        return k < len(self.offs) and self.offs[k] < b

    def has_text_off(self, a: int, b: int) -> bool:
        k = bisect.bisect_left(self.text_offs, a)
        return k < len(self.text_offs) and self.text_offs[k] < b

    def touched(self, a: int, b: int) -> bool:
        """Whether some stage may change something in [a, b): an anchor offset or an id anchor lies there."""
        return self.has_off(a, b) or self.has_text_off(a, b)

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
        self.emit(self.view[self.last:fr.ce])
        self.last = fr.ce
        n = self.olen - fr.ostart
        prefix = self.view[fr.lp:fr.cs] if n == fr.ce - fr.cs else encode_varint(n)
        self.out[fr.slot] = prefix
        self.olen += len(prefix)

    def emit(self, piece: bytes | memoryview) -> None:
        self.out.append(piece)
        self.olen += len(piece)

    def put(self, f: int, ce: int, head: bytes, text: bytes) -> None:
        for fr in self.stack[self.written:]:  # first change inside these: give them slots
            self.emit(self.view[self.last:fr.lp])
            fr.slot = len(self.out)
            self.out.append(None)
            fr.ostart = self.olen
            self.last = fr.cs
        self.written = len(self.stack)
        self.emit(self.view[self.last:f])
        self.emit(head + encode_varint(len(text)) + text)
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

    def leaf_wanted(self, act: Sequence[int], cs: int, ce: int) -> bool:
        for k, a in enumerate(act):
            run = self.runs[k]
            if a == WHOLE:
                return True
            if a != TEXT:
                continue
            if isinstance(run, TextRun):  # with a prefilter: only strings holding an id anchor
                if not run.prefilter or id_anchors(self.buf[cs:ce], run.prefilter):
                    return True
            elif self.has_off(cs, ce):
                return True
        return False

    def string_leaf(self, act: Sequence[int], f: int, cs: int, ce: int, head: bytes) -> None:
        if not self.leaf_wanted(act, cs, ce):
            return
        orig = cur = self.decode(cs, ce)
        changed = False
        for k, run in enumerate(self.runs):
            if act[k] == WHOLE:
                new = cur if run.whole is None else _checked(run.whole(cur))
            elif act[k] == TEXT and (changed or isinstance(run, TextRun) or self.has_off(cs, ce)):
                new = self.stage_text(k, cur, changed, cs, ce)
            else:
                continue
            if new != cur:
                changed = True
                self.count_change(k)
            cur = new
        if changed and cur != orig:
            self.put(f, ce, head, cur.encode())

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

    def kv(self, lp: int, s: int, e: int, rules: Sequence[KeyRule | bool], nested: Sequence[KeyRule],
           inherit: Sequence[int], named: Sequence[bool]) -> None:
        """`rules[k]` is False for a stage that does not classify this key (see _wirewalk.c kv)."""
        ks, ke, value = self.kv_parts(s, e)
        if value is None:
            return
        vlp, vcs, vce = value
        act = [SKIP] * self.n
        for k in range(self.n):
            if inherit[k] != SKIP:
                act[k] = inherit[k]
            elif rules[k] is not False:
                forced = named[k] and ks >= 0 and self.buf[ks:ke] in _VALUE_KEYS_B
                text = isinstance(self.runs[k], TextRun)
                if not forced and not ((text and (not self.pf_stages >> k & 1 or self.touched(s, e))) or
                                       (self.mask_stage == k and self.has_off(s, e))):
                    continue
                action = self.classify(rules[k], ks, ke)  # type: ignore[arg-type]
                if forced and action == TEXT:
                    action = WHOLE
                if action == TEXT and isinstance(self.runs[k], MaskRun) and not self.has_off(vcs, vce):
                    action = SKIP
                act[k] = action
        if not any(act):
            return
        self.push(lp, s, e)
        self.push(vlp, vcs, vce)
        self.any_value(vcs, vce, act, nested)
        self.pop()
        self.pop()

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
        present = [lf is not None for lf in step.leaves]
        if step.kind == _MSG:
            assert step.sub is not None
            self.push(lp, cs, ce, step.owner)
            self.walk_msg(cs, ce, step.sub)
            self.pop()
        elif step.kind == _STR:
            self.string_leaf([TEXT if p else SKIP for p in present], f, cs, ce, self.buf[f:lp])
        elif step.kind == _ATTRS:
            rules = [lf[0] if lf is not None else False for lf in step.leaves]
            nested = [lf[1] if lf is not None else None for lf in step.leaves]
            self.kv(lp, cs, ce, rules, nested, [SKIP] * self.n, [False] * self.n)
        else:
            nested = [lf[1] if lf is not None else None for lf in step.leaves]
            self.push(lp, cs, ce)
            self.any_value(cs, ce, [TEXT if p else SKIP for p in present], nested)
            self.pop()

    def walk_msg(self, s: int, e: int, plan: Plan) -> None:
        everything = plan.reach & self.every_stages
        i = s
        while i < e:
            if not everything and not self.touched(i, e):
                return
            f = i
            tag, i, lp, cs, ce, ld = self.next_field(i, e)
            if not ld:
                continue
            step = plan.steps.get(tag)
            if step is None:
                continue
            reach = step.sub.reach if step.sub is not None else sum(
                1 << k for k, lf in enumerate(step.leaves) if lf is not None)
            if self.worth(reach, cs, ce):
                self.walk_leaf(step, f, lp, cs, ce)


def _checked(new: object) -> str:
    if not isinstance(new, str):
        raise TypeError("a string rule must return str")
    return new

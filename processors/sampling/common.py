"""Consistent probability sampling (OTEP 235 / W3C Trace Context level 2) shared by both samplers.

Why one module: the head sampler (`probabilistic_sampler`) and the tail
sampler's `probabilistic` policy must decide *identically* for a trace, on
every otelpipe instance and in every SDK that follows the OpenTelemetry
specification. So the arithmetic lives here once:

- randomness `R` is the trace id's least-significant 56 bits (W3C level 2
  says those 7 bytes are random), unless the `ot` tracestate entry carries an
  explicit `rv` (14 hex digits), which then wins;
- the rejection threshold for a probability `p` is `T = round((1 - p) * 2^56)`,
  computed with exact rational arithmetic from the configured decimal, so the
  result never depends on float rounding;
- an item is kept iff `R >= T`;
- `T` travels as `ot=th:<hex>`: 14 hex digits with the trailing zeros removed
  (`"0"` means 100%), so a later sampler can only sample further.

The Collector's older `hash_seed` mode (FNV-1a over the seed and the trace id,
14 bits) is also here, expressed as a 56-bit randomness and threshold so the
same `R >= T` test and the same tracestate encoding apply to it.
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from fractions import Fraction

MAX_THRESHOLD = 1 << 56  # T == 2^56 rejects everything ("never sample")
ALWAYS_THRESHOLD = 0
NUM_HEX_DIGITS = 14
MIN_PROBABILITY = Fraction(1, MAX_THRESHOLD)

_MASK56 = MAX_THRESHOLD - 1
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")


# --- probability <-> threshold -------------------------------------------------------------

def probability_from_percentage(pct: float) -> Fraction:
    """The exact probability a configured percentage means: `repr` keeps the decimal the user wrote.

    Percentages above 100 mean 100% (as the Collector documents); NaN and
    negatives are rejected by config validation before this is called.
    """
    if not math.isfinite(pct) or pct < 0:
        raise ValueError(f"invalid sampling percentage {pct!r}")
    p = Fraction(repr(float(pct))) / 100
    return min(p, Fraction(1))


def threshold_for_probability(p: Fraction, precision: int = NUM_HEX_DIGITS) -> int:
    """`round((1 - p) * 2^56)`, then rounded to `precision` significant hex digits.

    As in the Collector's `sampling_precision`, digits are added for free near
    the extremes (leading `0`s when p is close to 1, leading `f`s when p is
    small) so the relative error stays small. A probability below 2^-56 (but
    above 0) cannot be expressed: it returns `MAX_THRESHOLD` (never sample).
    """
    if p >= 1:
        return ALWAYS_THRESHOLD
    if p < MIN_PROBABILITY:
        return MAX_THRESHOLD
    t = round((1 - p) * MAX_THRESHOLD)
    if precision >= NUM_HEX_DIGITS:
        return t
    digits = min(NUM_HEX_DIGITS, precision + max(-_frexp_exponent(p) // 4, -_frexp_exponent(1 - p) // 4))
    return round_threshold(t, digits)


def _frexp_exponent(x: Fraction) -> int:
    """`e` with 2^(e-1) <= x < 2^e (math.frexp's exponent, exactly, for 0 < x)."""
    e = x.numerator.bit_length() - x.denominator.bit_length()
    while x >= Fraction(2) ** e:
        e += 1
    while x < Fraction(2) ** (e - 1):
        e -= 1
    return e


def round_threshold(t: int, digits: int) -> int:
    """Round a threshold to its first `digits` hex digits (of 14), half up.

    Rounding never reaches 2^56 (that would turn "rarely" into "never"); it
    truncates instead in that one case.
    """
    if t <= 0 or digits >= NUM_HEX_DIGITS:
        return max(t, 0)
    shift = 4 * (NUM_HEX_DIGITS - digits)
    rounded = ((t + (1 << (shift - 1))) >> shift) << shift
    if rounded >= MAX_THRESHOLD:
        rounded = (t >> shift) << shift
    return rounded


def threshold_probability(t: int) -> Fraction:
    """The sampling probability a threshold encodes: `(2^56 - T) / 2^56`."""
    return Fraction(MAX_THRESHOLD - t, MAX_THRESHOLD)


def trace_id_randomness(trace_id: bytes) -> int:
    """The low 56 bits of a 16-byte trace id (W3C level 2 random trace-id flag)."""
    return int.from_bytes(trace_id[9:16], "big")


def encode_threshold(t: int) -> str:
    """`th` value: 14 lowercase hex digits with trailing zeros removed; `"0"` for always."""
    if t <= 0:
        return "0"
    if t >= MAX_THRESHOLD:
        raise ValueError("the never-sample threshold has no encoding")
    return f"{t:014x}".rstrip("0")


def decode_threshold(text: str) -> int:
    """Parse a `th` value (1-14 hex digits, trailing zeros implied)."""
    if not 1 <= len(text) <= NUM_HEX_DIGITS or not _HEX_RE.match(text):
        raise ValueError(f"invalid th value {text!r}: expected 1 to 14 hex digits")
    return int(text, 16) << (4 * (NUM_HEX_DIGITS - len(text)))


def encode_randomness(r: int) -> str:
    return f"{r & _MASK56:014x}"


def decode_randomness(text: str) -> int:
    if len(text) != NUM_HEX_DIGITS or not _HEX_RE.match(text):
        raise ValueError(f"invalid rv value {text!r}: expected exactly 14 hex digits")
    return int(text, 16)


# --- the Collector's legacy hash_seed mode ---------------------------------------------------

HASH_BUCKETS_LG2 = 14
HASH_BUCKETS = 1 << HASH_BUCKETS_LG2
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(data: bytes, h: int = _FNV_OFFSET) -> int:
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def seed_basis(seed: int) -> int:
    """The FNV state after hashing the seed's four little-endian bytes (computed once per sampler)."""
    return fnv1a32(seed.to_bytes(4, "little"))


def seeded_hash(data: bytes, seed: int) -> int:
    """FNV-1a 32 over the seed's four little-endian bytes, then the data (the Collector's computeHash)."""
    return fnv1a32(data, seed_basis(seed))


def hash_seed_randomness(data: bytes, seed: int, *, basis: int | None = None) -> int:
    """The 56-bit randomness equivalent to the Collector's 14-bit hash bucket.

    `R >= hash_seed_threshold(pct)` holds exactly when the Collector's original
    test `hash & 0x3fff < pct * 163.84` does, so the decision is the Collector's
    and the result still fits the OTel `rv`/`th` encoding.
    """
    h = fnv1a32(data, seed_basis(seed) if basis is None else basis)
    hashed = h & (HASH_BUCKETS - 1)
    top = h >> (32 - HASH_BUCKETS_LG2)
    mixed = top ^ (top << 10)
    return ((HASH_BUCKETS - 1 - hashed) << 42) | (mixed << 14) | hashed


def _float32(x: float) -> float:
    y: float = struct.unpack("f", struct.pack("f", x))[0]
    return y


def hash_seed_threshold(pct: float) -> int:
    """The Collector's bucket rule: `uint32(float32(pct) * float32(16384/100))`, as a 56-bit threshold."""
    pct = min(pct, 100.0)
    scaled = int(_float32(_float32(pct) * _float32(HASH_BUCKETS / 100.0)))
    if scaled <= 0:
        return MAX_THRESHOLD
    return (HASH_BUCKETS - min(scaled, HASH_BUCKETS)) << 42


# --- W3C tracestate and the `ot` entry -------------------------------------------------------

_W3C_KEY = r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_W3C_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_W3C_MEMBER_RE = re.compile(rf"^({_W3C_KEY})=({_W3C_VALUE})$")
_OT_RE = re.compile(r"^[a-z][a-z0-9]*:[a-zA-Z0-9._\-]*(?:;[a-z][a-z0-9]*:[a-zA-Z0-9._\-]*)*$")
MAX_TRACESTATE_MEMBERS = 32
MAX_OT_LENGTH = 256


def parse_tracestate(text: str) -> list[tuple[str, str]]:
    """W3C `tracestate` → ordered `(key, value)` list. Raises ValueError when it is not valid."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    if not text:
        return out
    for raw in text.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        m = _W3C_MEMBER_RE.match(member)
        if m is None:
            raise ValueError(f"invalid tracestate member {member[:64]!r}")
        key = m.group(1)
        if key in seen:
            raise ValueError(f"duplicate tracestate key {key!r}")
        seen.add(key)
        out.append((key, m.group(2)))
    if len(out) > MAX_TRACESTATE_MEMBERS:
        raise ValueError(f"tracestate has {len(out)} members; at most {MAX_TRACESTATE_MEMBERS} are allowed")
    return out


def format_tracestate(members: list[tuple[str, str]]) -> str:
    return ",".join(f"{k}={v}" for k, v in members[:MAX_TRACESTATE_MEMBERS])


@dataclass(slots=True)
class OTelState:
    """The `ot` tracestate entry: its sub-keys in order, with `th` and `rv` parsed."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    threshold: int | None = None
    randomness: int | None = None

    @classmethod
    def parse(cls, value: str) -> OTelState:
        if len(value) > MAX_OT_LENGTH:
            raise ValueError("the ot tracestate value is longer than 256 characters")
        if not _OT_RE.match(value):
            raise ValueError(f"invalid ot tracestate value {value[:64]!r}")
        st = cls()
        for part in value.split(";"):
            k, _, v = part.partition(":")
            if k == "th":
                st.threshold = decode_threshold(v)
            elif k == "rv":
                st.randomness = decode_randomness(v)
            st.fields.append((k, v))
        return st

    def set(self, key: str, value: str) -> None:
        for i, (k, _) in enumerate(self.fields):
            if k == key:
                self.fields[i] = (key, value)
                return
        self.fields.append((key, value))

    def remove(self, key: str) -> None:
        self.fields = [(k, v) for k, v in self.fields if k != key]

    def format(self) -> str:
        return ";".join(f"{k}:{v}" for k, v in self.fields)


@dataclass(slots=True)
class TraceState:
    """A parsed W3C tracestate with its `ot` entry split out (the rest kept verbatim, in order)."""

    others: list[tuple[str, str]]
    ot: OTelState

    @classmethod
    def parse(cls, text: str) -> TraceState:
        members = parse_tracestate(text)
        ot = OTelState()
        others = []
        for k, v in members:
            if k == "ot":
                ot = OTelState.parse(v)
            else:
                others.append((k, v))
        return cls(others, ot)

    def with_threshold(self, threshold: int, randomness: int | None = None) -> str:
        """The tracestate text after setting `th` (and optionally `rv`); `ot` moves to the front.

        W3C asks that a modified entry moves to the left; members past 32 fall
        off the right end.
        """
        ot = OTelState(list(self.ot.fields), self.ot.threshold, self.ot.randomness)
        if randomness is not None:
            ot.set("rv", encode_randomness(randomness))
        ot.set("th", encode_threshold(threshold))
        return format_tracestate([("ot", ot.format()), *self.others])



def span_randomness(trace_id: bytes, ot: OTelState) -> int | None:
    """Explicit `rv` wins; else the trace id's low 56 bits; None when the trace id is invalid (all zero)."""
    if ot.randomness is not None:
        return ot.randomness
    if not trace_id or not any(trace_id):
        return None
    return trace_id_randomness(trace_id)

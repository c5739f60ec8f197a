"""Tail-sampling policies: their config blocks (the Collector's shape) and their evaluators.

Why a separate module: `tail_sampling.py` owns buffering, timing and memory;
this module owns "does this whole trace match?". Each policy is a small class
with `evaluate(trace, now) -> bool`, built once from its validated config, so
regexes, sets and thresholds are prepared before the first span arrives.

Policies look at a `TraceView`, the spans of one trace with their resource,
held as wire bytes and decoded only when a policy reads span fields.
Attribute policies check resource attributes first (once per resource), then
span attributes, and stop at the first match.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

from pipeline.config.types import Issue, did_you_mean
from pipeline.wire import encode_varint, ld_tag, length_delimited
from processors.sampling import common as sc

STATUS_CODES = {
    "UNSET": Status.STATUS_CODE_UNSET,
    "OK": Status.STATUS_CODE_OK,
    "ERROR": Status.STATUS_CODE_ERROR,
}


# --- config blocks ------------------------------------------------------------------------
# Each block's `check()` returns (key, message) pairs; the policy's validate() prefixes the
# block name, so messages land on paths like `policies[2].latency.threshold_ms`.

@dataclass(frozen=True, slots=True, kw_only=True)
class AlwaysSampleConfig:
    def check(self) -> list[tuple[str, str]]:
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusCodeConfig:
    status_codes: tuple[str, ...] = ()

    def check(self) -> list[tuple[str, str]]:
        if not self.status_codes:
            return [("status_codes", "needs at least one of OK, ERROR, UNSET")]
        out = []
        for i, code in enumerate(self.status_codes):
            if _status_code(code) is None:
                out.append((f"status_codes[{i}]", f"unknown status code {code!r}: use OK, ERROR or UNSET"
                                                  f"{did_you_mean(code.upper(), STATUS_CODES)}"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyConfig:
    threshold_ms: int = 0
    upper_threshold_ms: int = 0

    def check(self) -> list[tuple[str, str]]:
        out = []
        if self.threshold_ms < 0:
            out.append(("threshold_ms", "must not be negative"))
        if self.upper_threshold_ms < 0:
            out.append(("upper_threshold_ms", "must not be negative"))
        elif self.upper_threshold_ms and self.upper_threshold_ms <= self.threshold_ms:
            out.append(("upper_threshold_ms", "must be greater than threshold_ms (or 0 for no upper bound)"))
        if self.threshold_ms == 0 and self.upper_threshold_ms == 0:
            out.append(("threshold_ms", "is required: the whole-trace duration, in milliseconds, "
                                        "from which traces are kept"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbabilisticConfig:
    sampling_percentage: float = 0.0

    def check(self) -> list[tuple[str, str]]:
        p = self.sampling_percentage
        if math.isnan(p) or not 0 <= p <= 100:
            return [("sampling_percentage", f"must be between 0 and 100, got {p:g}")]
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class StringAttributeConfig:
    key: str = ""
    values: tuple[str, ...] = ()
    enabled_regex_matching: bool = False
    cache_max_size: int = 0
    invert_match: bool = False

    def check(self) -> list[tuple[str, str]]:
        out = []
        if not self.key:
            out.append(("key", "is required"))
        if not self.values:
            out.append(("values", "needs at least one value"))
        if self.enabled_regex_matching:
            for i, v in enumerate(self.values):
                try:
                    re.compile(v)
                except re.error as e:
                    out.append((f"values[{i}]", f"invalid regular expression {v!r}: {e}"))
        if self.cache_max_size < 0:
            out.append(("cache_max_size", "must not be negative"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class NumericAttributeConfig:
    key: str = ""
    min_value: float | None = None
    max_value: float | None = None
    invert_match: bool = False

    def check(self) -> list[tuple[str, str]]:
        out = []
        if not self.key:
            out.append(("key", "is required"))
        if self.min_value is None and self.max_value is None:
            out.append(("min_value", "set min_value, max_value or both"))
        elif self.min_value is not None and self.max_value is not None and self.max_value < self.min_value:
            out.append(("max_value", "must be greater than or equal to min_value"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanCountConfig:
    min_spans: int = 0
    max_spans: int = 0

    def check(self) -> list[tuple[str, str]]:
        out = []
        if self.min_spans < 1:
            out.append(("min_spans", "must be at least 1"))
        if self.max_spans and self.max_spans < self.min_spans:
            out.append(("max_spans", "must be at least min_spans (or 0 for no maximum)"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitingConfig:
    spans_per_second: int = 0

    def check(self) -> list[tuple[str, str]]:
        return [] if self.spans_per_second > 0 else [("spans_per_second", "must be greater than 0")]


_LEAF_TYPES = ("always_sample", "status_code", "latency", "probabilistic", "string_attribute",
               "numeric_attribute", "span_count", "rate_limiting")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubPolicyConfig:
    """One policy: `{name, type, <type>: {...}}`. Inside `and`, sub-policies cannot nest another `and`."""

    name: str = ""
    type: str = ""
    always_sample: AlwaysSampleConfig = field(default_factory=AlwaysSampleConfig)
    status_code: StatusCodeConfig = field(default_factory=StatusCodeConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    probabilistic: ProbabilisticConfig = field(default_factory=ProbabilisticConfig)
    string_attribute: StringAttributeConfig = field(default_factory=StringAttributeConfig)
    numeric_attribute: NumericAttributeConfig = field(default_factory=NumericAttributeConfig)
    span_count: SpanCountConfig = field(default_factory=SpanCountConfig)
    rate_limiting: RateLimitingConfig = field(default_factory=RateLimitingConfig)

    def _types(self) -> tuple[str, ...]:
        return _LEAF_TYPES

    def _block(self, type_: str) -> Any:
        return getattr(self, type_)

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if not self.name:
            out.append(Issue("name", "is required (it labels this policy's decisions in the self-metrics)"))
        types = self._types()
        if not self.type:
            out.append(Issue("type", f"is required: one of {', '.join(types)}"))
            return out
        if self.type not in types:
            hint = did_you_mean(self.type, types) or f" (valid: {', '.join(types)})"
            nested = " ('and' cannot be nested inside 'and')" if self.type == "and" else ""
            out.append(Issue("type", f"unknown policy type '{self.type}'{nested}{hint}"))
            return out
        for key, msg in self._block(self.type).check():
            out.append(Issue(f"{self.type}.{key}", msg))
        for other in types:
            if other != self.type and self._block(other) != type(self._block(other))():
                out.append(Issue(other, f"is set but this policy's type is '{self.type}'; "
                                               f"remove it or change type to '{other}'"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class AndConfig:
    and_sub_policy: tuple[SubPolicyConfig, ...] = ()

    def check(self) -> list[tuple[str, str]]:
        if not self.and_sub_policy:
            return [("and_sub_policy", "needs at least one sub-policy")]
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyConfig(SubPolicyConfig):
    """A top-level policy: any leaf type, or `and` with `and_sub_policy`."""

    and_: AndConfig = field(default_factory=AndConfig, metadata={"yaml": "and"})

    def _types(self) -> tuple[str, ...]:
        return (*_LEAF_TYPES, "and")

    def _block(self, type_: str) -> Any:
        return self.and_ if type_ == "and" else getattr(self, type_)


def _status_code(text: str) -> int | None:
    t = text.strip().upper()
    if t.startswith("STATUS_CODE_"):
        t = t[len("STATUS_CODE_"):]
    return STATUS_CODES.get(t)


# --- the view of one trace -----------------------------------------------------------------

class ResourceRef:
    """One ResourceSpans' resource as wire bytes; decoded only if a policy reads its attributes."""

    __slots__ = ("data", "schema_url", "_message")

    def __init__(self, data: bytes, schema_url: str) -> None:
        self.data = data
        self.schema_url = schema_url
        self._message: Resource | None = None

    def message(self) -> Resource:
        if self._message is None:
            self._message = Resource.FromString(self.data)
        return self._message


class Origin:
    """Where spans came from: their resource and their scope (wire bytes), shared by the spans of one scope."""

    __slots__ = ("resource", "scope", "scope_schema_url")

    def __init__(self, resource: ResourceRef, scope: bytes, scope_schema_url: str) -> None:
        self.resource = resource
        self.scope = scope
        self.scope_schema_url = scope_schema_url


_SPANS_TAG = encode_varint(ld_tag(ScopeSpans.DESCRIPTOR, "spans"))
_SHORT_FRAMES = [_SPANS_TAG + encode_varint(n) for n in range(0x80)]  # tag + one-byte length (runs per span)


def frame_span(span: bytes) -> bytes:
    """A span as the `spans` field of ScopeSpans (tag + length + bytes), so spans concatenate into a ScopeSpans."""
    n = len(span)
    if n < 0x80:
        return _SHORT_FRAMES[n] + span
    return length_delimited(_SPANS_TAG, span)


class TraceView:
    """The spans of one trace as policies see them; spans are held as wire bytes and decoded on first use.

    Policies that need no span fields (always_sample, span_count, probabilistic
    without an explicit `rv`) never pay for decoding.
    """

    __slots__ = ("trace_id", "origins", "raw_spans", "_entries", "_duration")

    def __init__(self, trace_id: bytes, origins: Sequence[Origin], raw_spans: Sequence[bytes]) -> None:
        self.trace_id = trace_id
        self.origins = origins
        self.raw_spans = raw_spans
        self._entries: list[tuple[Origin, Span]] | None = None
        self._duration: int | None = None

    @property
    def entries(self) -> list[tuple[Origin, Span]]:
        """(origin, decoded span) pairs, decoded with one protobuf call for the whole trace."""
        if self._entries is None:
            decoded = ScopeSpans.FromString(b"".join([frame_span(s) for s in self.raw_spans])).spans
            self._entries = list(zip(self.origins, decoded))
        return self._entries

    def spans(self) -> Iterator[Span]:
        for _, span in self.entries:
            yield span

    @property
    def span_count(self) -> int:
        return len(self.raw_spans)

    @property
    def duration_ns(self) -> int:
        """Whole-trace duration: latest span end minus earliest span start."""
        if self._duration is None:
            entries = self.entries
            start = min(s.start_time_unix_nano for _, s in entries)
            end = max(s.end_time_unix_nano for _, s in entries)
            self._duration = max(end - start, 0)
        return self._duration

    def resource_then_span_attributes(self) -> Iterator[Any]:
        """Each distinct resource's attributes once, then every span's attributes."""
        seen: set[int] = set()
        for origin in self.origins:
            ref = origin.resource
            if id(ref) not in seen:
                seen.add(id(ref))
                yield ref.message().attributes
        for _, span in self.entries:
            yield span.attributes

    def randomness(self) -> int | None:
        """OTEP 235 randomness: an `rv` on any span's tracestate, else the trace id's low 56 bits."""
        if any(b"rv:" in s for s in self.raw_spans):
            for _, span in self.entries:
                ts = span.trace_state
                if ts and "rv:" in ts:
                    try:
                        rv = sc.TraceState.parse(ts).ot.randomness
                    except ValueError:
                        continue
                    if rv is not None:
                        return rv
        if not any(self.trace_id):
            return None
        return sc.trace_id_randomness(self.trace_id)


# --- evaluators ------------------------------------------------------------------------------

class Policy(Protocol):
    name: str

    def evaluate(self, trace: TraceView, now: float) -> bool: ...


class AlwaysSample:
    def __init__(self, name: str) -> None:
        self.name = name

    def evaluate(self, trace: TraceView, now: float) -> bool:
        return True


class StatusCode:
    def __init__(self, name: str, cfg: StatusCodeConfig) -> None:
        self.name = name
        self.codes = frozenset(c for c in (_status_code(x) for x in cfg.status_codes) if c is not None)

    def evaluate(self, trace: TraceView, now: float) -> bool:
        codes = self.codes
        return any(s.status.code in codes for _, s in trace.entries)


class Latency:
    def __init__(self, name: str, cfg: LatencyConfig) -> None:
        self.name = name
        self.lower = cfg.threshold_ms * 1_000_000
        self.upper = cfg.upper_threshold_ms * 1_000_000 if cfg.upper_threshold_ms else None

    def evaluate(self, trace: TraceView, now: float) -> bool:
        d = trace.duration_ns
        if d < self.lower:
            return False
        return self.upper is None or d <= self.upper


class Probabilistic:
    """Consistent with the head sampler: keep iff randomness >= round((1 - p) * 2^56)."""

    def __init__(self, name: str, cfg: ProbabilisticConfig) -> None:
        self.name = name
        self.threshold = sc.threshold_for_probability(sc.probability_from_percentage(cfg.sampling_percentage))

    def evaluate(self, trace: TraceView, now: float) -> bool:
        if self.threshold >= sc.MAX_THRESHOLD:
            return False
        r = trace.randomness()
        return r is not None and r >= self.threshold


class StringAttribute:
    def __init__(self, name: str, cfg: StringAttributeConfig) -> None:
        self.name = name
        self.key = cfg.key
        self.invert = cfg.invert_match
        self.values = frozenset(cfg.values)
        self.regex = re.compile("|".join(f"(?:{v})" for v in cfg.values)) if cfg.enabled_regex_matching else None

    def _matches(self, value: str) -> bool:
        if self.regex is not None:
            return self.regex.search(value) is not None
        return value in self.values

    def evaluate(self, trace: TraceView, now: float) -> bool:
        key = self.key
        found = False
        for attrs in trace.resource_then_span_attributes():
            for kv in attrs:
                if (kv.key == key and kv.value.WhichOneof("value") == "string_value"
                        and self._matches(kv.value.string_value)):
                    found = True
                    break
            if found:
                break
        return found != self.invert


class NumericAttribute:
    def __init__(self, name: str, cfg: NumericAttributeConfig) -> None:
        self.name = name
        self.key = cfg.key
        self.invert = cfg.invert_match
        self.lo = -math.inf if cfg.min_value is None else cfg.min_value
        self.hi = math.inf if cfg.max_value is None else cfg.max_value

    def evaluate(self, trace: TraceView, now: float) -> bool:
        key, lo, hi = self.key, self.lo, self.hi
        found = False
        for attrs in trace.resource_then_span_attributes():
            for kv in attrs:
                if kv.key != key:
                    continue
                v = kv.value
                kind = v.WhichOneof("value")
                num = v.int_value if kind == "int_value" else v.double_value if kind == "double_value" else None
                if num is not None and lo <= num <= hi:
                    found = True
                    break
            if found:
                break
        return found != self.invert


class SpanCount:
    def __init__(self, name: str, cfg: SpanCountConfig) -> None:
        self.name = name
        self.min = cfg.min_spans
        self.max = cfg.max_spans or None

    def evaluate(self, trace: TraceView, now: float) -> bool:
        n = trace.span_count
        return n >= self.min and (self.max is None or n <= self.max)


class RateLimiting:
    """At most `spans_per_second` spans of kept traces per (clock) second."""

    def __init__(self, name: str, cfg: RateLimitingConfig) -> None:
        self.name = name
        self.limit = cfg.spans_per_second
        self._second = -1
        self._spent = 0

    def evaluate(self, trace: TraceView, now: float) -> bool:
        second = int(now)
        if second != self._second:
            self._second = second
            self._spent = 0
        n = trace.span_count
        if self._spent + n > self.limit:
            return False
        self._spent += n
        return True


class And:
    def __init__(self, name: str, subs: list[Policy]) -> None:
        self.name = name
        self.subs = subs

    def evaluate(self, trace: TraceView, now: float) -> bool:
        return all(p.evaluate(trace, now) for p in self.subs)


def build_policy(cfg: SubPolicyConfig) -> Policy:
    """The evaluator for one validated policy config."""
    t = cfg.type
    if t == "and" and isinstance(cfg, PolicyConfig):
        return And(cfg.name, [build_policy(sub) for sub in cfg.and_.and_sub_policy])
    builders: dict[str, Any] = {
        "always_sample": lambda: AlwaysSample(cfg.name),
        "status_code": lambda: StatusCode(cfg.name, cfg.status_code),
        "latency": lambda: Latency(cfg.name, cfg.latency),
        "probabilistic": lambda: Probabilistic(cfg.name, cfg.probabilistic),
        "string_attribute": lambda: StringAttribute(cfg.name, cfg.string_attribute),
        "numeric_attribute": lambda: NumericAttribute(cfg.name, cfg.numeric_attribute),
        "span_count": lambda: SpanCount(cfg.name, cfg.span_count),
        "rate_limiting": lambda: RateLimiting(cfg.name, cfg.rate_limiting),
    }
    if t not in builders:
        raise ValueError(f"unknown policy type {t!r}")
    return builders[t]()  # type: ignore[no-any-return]

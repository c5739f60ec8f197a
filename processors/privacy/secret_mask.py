"""secret_mask: keep credentials out of every backend.

Agent telemetry carries API keys and bearer tokens in tool arguments, HTTP
headers, prompts and error messages. This processor masks them before any
exporter sees them, with two mechanisms (both on by default; rules in
`processors.secret_detectors`):

1. Sensitive keys: an attribute (or a map entry in a log body) whose key names a
   credential (`http.request.header.authorization`, `x-api-token`, `db.password`)
   has its whole value replaced. Counts such as `gen_ai.usage.input_tokens` are
   not credentials and are left alone, and so are semantic-convention
   identifiers (`session.id`, `identifier_keys`). `allowed_keys` exempts keys
   from both mechanisms. In a map (a kvlist value or a log body) that holds a
   name/value pair (`{name: DB_PASSWORD, value: ...}`, also `key`/`Value`...),
   the `value` entry is masked whole when the `name` entry names a credential.
2. Secret values anywhere in a string: only the secret part is replaced and the
   text around it is kept.

Where: span names, status messages, span/event/link attributes, resource
attributes, log bodies (strings and nested maps/arrays) and attributes, metric
data point (and exemplar) attributes.

`mode: hash` writes a short keyed hash instead of a fixed text, so equal secrets
stay correlatable (`[REDACTED:3f9a1c2b0d4e]`). The key is required: a random
per-process key would break correlation across restarts and replicas, and an
unkeyed hash of a short password can be reversed by brute force.

Cost model: one hyperscan pass over the request's wire bytes finds every anchor
of every enabled rule (`processors.anchorscan.AnchorScanner`; CPython `re` where
hyperscan is not installed). A request without any is handed on untouched (not
decoded, not re-encoded). Otherwise the wire walker visits only the messages
holding an anchor, the rules run on the few strings found there (the same
`Masker` as always), and the masks are spliced into the bytes: unchanged ranges
are copied, only the length prefixes around a changed string are re-encoded.
The decoded-message walk (`SecretMask.rewrite`) remains for payloads that only
exist decoded, `blocked_values` and `summary_attributes` (which need every
string, or new attributes), and bytes the wire walker refuses.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline.component import (
    ProcessorFactory,
    Settings,
    Stability,
    processor_from_func,
)
from pipeline.config.types import Issue, Secret
from pipeline.model import ExportRequest, Payload, Signal
from pipeline.telemetry import CountsByLabel
from processors.privacy.anchorscan import AnchorScanner
from processors.privacy.attrwalk import (
    SKIP,
    STRING,
    TEXT,
    VALUE_KEYS,
    WHOLE,
    AnyText,
    Attrs,
    ClassifiedKeys,
    Plan,
    WireFallback,
    WireRewriter,
    iter_data_point_attributes,
    names_whole,
    replace_whole_value,
    wire_plan,
)
from processors.privacy.secret_anchors import anchors
from processors.privacy.secret_detectors import DETECTOR_NAMES, GATED, Masker, Replacer
from processors.privacy.secret_keys import (
    ALLOWED,
    DEFAULT_BLOCKED_KEYS,
    DEFAULT_IDENTIFIER_KEYS,
    NOT_SENSITIVE,
    SENSITIVE,
    KeyMatcher,
)

SUMMARY_COUNT_KEY = "otelpipe.masked.count"
_MIN_SECRET_LEN = 5  # the shortest builtin match is a pair like `pwd=x`
_NESTED = ("kvlist_value", "array_value")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretMaskConfig:
    #: mechanism 1: mask the whole value of attributes whose key names a credential
    key_matching: bool = True
    blocked_keys: tuple[str, ...] = DEFAULT_BLOCKED_KEYS
    #: keys left alone by both mechanisms (case-insensitive; a trailing '*' matches a prefix)
    allowed_keys: tuple[str, ...] = ()
    #: semantic-convention identifiers that mechanism 1 keeps although a term matches them
    #: (`session.id`); a key written out in blocked_keys is masked all the same
    identifier_keys: tuple[str, ...] = DEFAULT_IDENTIFIER_KEYS
    #: mechanism 2: detect secret values inside strings
    value_detection: bool = True
    #: switch single detectors off (or back on), e.g. {card_number: false}
    detectors: dict[str, bool] = field(default_factory=dict)
    #: extra regexes whose matches are masked (the group named `secret`, or the whole match)
    blocked_values: tuple[str, ...] = ()
    replacement: str = "[REDACTED]"
    mode: Literal["replace", "hash"] = "replace"
    hash_key: Secret = Secret("")
    hash_length: int = 12
    #: add otelpipe.masked.count to spans and log records that had something masked
    summary_attributes: bool = False

    def enabled_detectors(self) -> frozenset[str]:
        if not self.value_detection:
            return frozenset()
        return frozenset(n for n in DETECTOR_NAMES if self.detectors.get(n, True))

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        for name in self.detectors:
            if name not in DETECTOR_NAMES:
                from pipeline.config.types import did_you_mean

                issues.append(Issue(f"detectors.{name}",
                                    f"unknown detector '{name}'{did_you_mean(name, DETECTOR_NAMES)}"
                                    f" (detectors: {', '.join(DETECTOR_NAMES)})"))
        for i, pattern in enumerate(self.blocked_values):
            try:
                rx = re.compile(pattern)
            except re.error as e:
                issues.append(Issue(f"blocked_values[{i}]", f"invalid regular expression {pattern!r}: {e}"))
                continue
            if rx.match(""):
                issues.append(Issue(f"blocked_values[{i}]", f"{pattern!r} matches the empty string"))
        if not self.replacement:
            issues.append(Issue("replacement", "must not be empty"))
        if self.mode == "hash":
            if not self.hash_key:
                issues.append(Issue("hash_key", "is required when mode is 'hash' (a stable secret, e.g. "
                                           "${env:OTELPIPE_MASK_HASH_KEY}, so hashes match across restarts "
                                           "and replicas and cannot be brute-forced without it)"))
            if not 6 <= self.hash_length <= 64:
                issues.append(Issue("hash_length", f"must be between 6 and 64 hex digits, got {self.hash_length}"))
        if any(not k for k in self.allowed_keys):
            issues.append(Issue("allowed_keys", "must not contain empty keys"))
        if any(not k for k in self.identifier_keys):
            issues.append(Issue("identifier_keys", "must not contain empty keys"))
        if not issues and self.replacement and self.value_detection:
            from dataclasses import replace

            masker = make_masker(replace(self, replacement="\x01", mode="replace"))
            if masker.mask_text(self.replacement) != self.replacement:
                issues.append(Issue("replacement", f"{self.replacement!r} looks like a secret itself"))
        return issues


def make_masker(cfg: SecretMaskConfig) -> Masker:
    keys = KeyMatcher(cfg.blocked_keys, cfg.allowed_keys, identifier_keys=cfg.identifier_keys)
    key = cfg.hash_key.reveal().encode() if cfg.mode == "hash" else None
    replacer = Replacer(cfg.replacement, key, cfg.hash_length)
    return Masker(keys=keys, replacer=replacer, enabled=cfg.enabled_detectors(), blocked_values=cfg.blocked_values)


class SecretMask:
    """The pure payload function (see module docstring)."""

    def __init__(self, cfg: SecretMaskConfig, signal: Signal, *, scanner_backend: str = "auto",
                 native: bool | None = None) -> None:
        self.cfg = cfg
        self.signal = signal
        self.masker = make_masker(cfg)
        self.key_matching = cfg.key_matching and bool(cfg.blocked_keys)
        self.min_len = 1 if cfg.blocked_values else _MIN_SECRET_LEN
        self.scanner = AnchorScanner(anchors(self.masker.enabled, self.masker.keys, self.key_matching),
                                     backend=scanner_backend)
        self._anchor_info = tuple(a.info for a in self.scanner.anchors)
        self.nothing_enabled = not self.key_matching and not self.masker.enabled and not cfg.blocked_values
        self._summary = cfg.summary_attributes
        # classifications whose values get value detection (sensitive ones too when key matching is off)
        self._plain = frozenset({NOT_SENSITIVE} if self.key_matching else {NOT_SENSITIVE, SENSITIVE})
        # user regexes cannot be anchored (every string must be checked) and summary attributes add
        # attributes: both take the decoded walk
        actions = {NOT_SENSITIVE: TEXT, SENSITIVE: WHOLE if self.key_matching else TEXT, ALLOWED: SKIP}
        keys = self.masker.keys
        self._key_rule = ClassifiedKeys(lambda key: actions[keys.classify(key)])
        self.wire = None if cfg.blocked_values or self._summary else WireRewriter(_wire_plan(signal, self._key_rule),
                                                                                 native=native)
        self._scan: tuple[list[int], list[int], frozenset[str]] | None = None

    def __call__(self, payload: Payload) -> Payload:
        if self.nothing_enabled:
            return payload
        raw = payload.raw_cached
        if raw is None:
            return self._decoded(payload, GATED)
        offsets, gated, ids = self.scanner.scan(raw, ids=self.wire is not None)
        if self.cfg.blocked_values:
            return self._decoded(payload, gated)  # user regexes: every string, whatever the anchors
        if not offsets:
            return payload  # no anchor anywhere: not decoded, bytes kept
        if self.wire is None:
            return self._decoded(payload, gated)
        assert ids is not None
        counts = dict(self.masker.counts)
        self._scan = (offsets, ids, gated)
        try:
            new = self.wire.rewrite(raw, offsets, self._wire_text, self.masker.mask_value)
        except WireFallback:
            self.masker.counts = counts  # forget what the abandoned walk counted
            return self._decoded(payload, gated)
        finally:
            self._scan = None
        if new is not None:
            payload.replace_raw(new)
        return payload

    def _wire_text(self, text: str, start: int, end: int) -> str:
        """Value detection on one string of the request (its bytes are raw[start:end]).

        The detectors are tried only where the anchor occurrences inside the string
        say a match can start; over the whole string for anchors marked FULL and for
        non-ASCII strings (whose byte offsets are not character offsets). All of it
        is `Masker.mask_anchored`, in one call: this runs once per string holding an
        anchor, and every call layer shows in the per-request cost.
        """
        return self.masker.mask_anchored(text, start, self._scan, self._anchor_info)  # type: ignore[arg-type]

    def _decoded(self, payload: Payload, gated: frozenset[str]) -> Payload:
        if self.rewrite(payload.message, gated):
            payload.mutable()  # drop the stale wire bytes; the message was changed in place
        return payload

    # -- collecting ------------------------------------------------------------------------------
    #
    # The walk collects every string that may hold a secret as (holder, field, text, owner)
    # and masks whole values under sensitive keys on the spot; then all collected texts
    # are scanned in one batch (Masker.mask_many) and only changed ones are written back.

    def _attrs(self, attrs: Iterable[KeyValue], owner: object, out: list[tuple[Any, str, str, object]]) -> int:
        # The hot loop: one dict lookup per key (the matcher's cache), one string read per value.
        n = 0
        keys = self.masker.keys
        cached = keys._cache.get
        plain = self._plain
        append = out.append
        for kv in attrs:
            key = kv.key
            c = cached(key)
            if c is None:
                c = keys.classify(key)
            if c in plain:
                v = kv.value
                s = v.string_value
                if s:
                    append((v, "string_value", s, owner))
                elif v.WhichOneof("value") in _NESTED:
                    n += self._any(v, owner, out)
            elif c == SENSITIVE:
                n += replace_whole_value(kv.value, self.masker.mask_value)
        return n

    def _any(self, v: AnyValue, owner: object, out: list[tuple[Any, str, str, object]]) -> int:
        s = v.string_value
        if s:
            out.append((v, "string_value", s, owner))
            return 0
        kind = v.WhichOneof("value")
        if kind == "kvlist_value":
            values = v.kvlist_value.values
            if self.key_matching and names_whole(values, self._key_rule):
                return self._named_map(values, owner, out)
            return self._attrs(values, owner, out)
        if kind == "array_value":
            return sum(self._any(item, owner, out) for item in v.array_value.values)
        return 0

    def _named_map(self, values: Iterable[KeyValue], owner: object, out: list[tuple[Any, str, str, object]]) -> int:
        """`_attrs` for a map whose name/value pair names a credential (`attrwalk.NAME_KEYS`): its
        value entries are masked whole, unless allowed."""
        n = 0
        for kv in values:
            if kv.key in VALUE_KEYS and self.masker.keys.classify(kv.key) != ALLOWED:
                n += replace_whole_value(kv.value, self.masker.mask_value)
            else:
                n += self._attrs((kv,), owner, out)
        return n

    def _text(self, holder: Any, field_name: str, owner: object, out: list[tuple[Any, str, str, object]]) -> None:
        s = getattr(holder, field_name)
        if s:
            out.append((holder, field_name, s, owner))

    # -- requests --------------------------------------------------------------------------------

    def rewrite(self, msg: ExportRequest, gated: frozenset[str] = GATED) -> int:
        """Mask `msg` in place; returns the number of values masked."""
        out: list[tuple[Any, str, str, object]] = []
        per_owner: dict[int, int] = {}
        owners: dict[int, Any] = {}
        summary = self._summary
        total = 0
        if self.signal is Signal.TRACES:
            for rs in msg.resource_spans:  # type: ignore[union-attr]
                total += self._attrs(rs.resource.attributes, None, out)
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        owner = sp if summary else None
                        self._text(sp, "name", owner, out)
                        if sp.status.message:
                            self._text(sp.status, "message", owner, out)
                        n = self._attrs(sp.attributes, owner, out)
                        for ev in sp.events:
                            n += self._attrs(ev.attributes, owner, out)
                        for link in sp.links:
                            n += self._attrs(link.attributes, owner, out)
                        if n:
                            total += n
                            if summary:
                                per_owner[id(sp)] = per_owner.get(id(sp), 0) + n
                                owners[id(sp)] = sp
        elif self.signal is Signal.LOGS:
            for rl in msg.resource_logs:  # type: ignore[union-attr]
                total += self._attrs(rl.resource.attributes, None, out)
                for sl in rl.scope_logs:
                    for lr in sl.log_records:
                        owner = lr if summary else None
                        n = self._attrs(lr.attributes, owner, out)
                        if lr.HasField("body"):
                            n += self._any(lr.body, owner, out)
                        if n:
                            total += n
                            if summary:
                                per_owner[id(lr)] = per_owner.get(id(lr), 0) + n
                                owners[id(lr)] = lr
        else:
            # No summary attribute on data points: adding one would change the series identity.
            for rm in msg.resource_metrics:  # type: ignore[union-attr]
                total += self._attrs(rm.resource.attributes, None, out)
            for attrs in iter_data_point_attributes(msg, exemplars=True):
                total += self._attrs(attrs, None, out)
        if out:
            changed = self.masker.mask_many([c[2] for c in out], gated)
            for i, new in changed.items():
                holder, field_name, _, owner = out[i]
                setattr(holder, field_name, new)
                if owner is not None:
                    per_owner[id(owner)] = per_owner.get(id(owner), 0) + 1
                    owners[id(owner)] = owner
            total += len(changed)
        if summary:
            for key, n in per_owner.items():
                _add_count(owners[key].attributes, n)
        return total

    # -- single strings (tests, reuse) -------------------------------------------------------------

    def text(self, s: str) -> str:
        if len(s) < self.min_len:
            return s
        return self.masker.mask_text(s)


def _add_count(attrs: Any, n: int) -> None:
    for kv in attrs:
        if kv.key == SUMMARY_COUNT_KEY:
            kv.value.int_value = kv.value.int_value + n
            return
    attrs.add(key=SUMMARY_COUNT_KEY, value=AnyValue(int_value=n))


def _wire_plan(signal: Signal, rule: object) -> Plan:
    """Where secret_mask looks on the wire: the same places as `SecretMask.rewrite`."""
    attrs = Attrs(rule, rule)  # type: ignore[arg-type]
    resource = {"resource": {"attributes": attrs}}
    if signal is Signal.TRACES:
        span = {"name": STRING, "attributes": attrs, "events": {"attributes": attrs},
                "links": {"attributes": attrs}, "status": {"message": STRING}}
        spec = {"resource_spans": {**resource, "scope_spans": {"spans": span}}}
    elif signal is Signal.LOGS:
        record = {"attributes": attrs, "body": AnyText(rule)}  # type: ignore[arg-type]
        spec = {"resource_logs": {**resource, "scope_logs": {"log_records": record}}}
    else:
        with_exemplars = {"data_points": {"attributes": attrs, "exemplars": {"filtered_attributes": attrs}}}
        metric = {"gauge": with_exemplars, "sum": with_exemplars, "histogram": with_exemplars,
                  "exponential_histogram": with_exemplars, "summary": {"data_points": {"attributes": attrs}}}
        spec = {"resource_metrics": {**resource, "scope_metrics": {"metrics": metric}}}
    return wire_plan(signal.request_type.DESCRIPTOR, spec)


def create(settings: Settings, cfg: SecretMaskConfig, next_consumer: object):  # type: ignore[no-untyped-def]
    assert settings.signal is not None
    proc = SecretMask(cfg, settings.signal)
    counter = settings.telemetry.counter("processor_masked_values")
    counts = CountsByLabel(counter, str(settings.id), settings.pipeline)
    masker = proc.masker

    def process(payload: Payload) -> Payload:
        out = proc(payload)
        if masker.counts:
            counts.add(masker.take_counts())
        return out

    return processor_from_func(settings, process, next_consumer, mutates_data=True)  # type: ignore[arg-type]


FACTORY = ProcessorFactory(
    type="secret_mask",
    config_type=SecretMaskConfig,
    signals={Signal.TRACES: Stability.BETA, Signal.METRICS: Stability.BETA, Signal.LOGS: Stability.BETA},
    create=create,
    description="Masks credentials: values under sensitive keys and secrets detected inside strings.",
)

__all__ = ["FACTORY", "SecretMaskConfig", "SecretMask", "make_masker", "SUMMARY_COUNT_KEY"]

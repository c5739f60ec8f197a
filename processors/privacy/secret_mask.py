"""secret_mask: keep credentials out of every backend.

Agent telemetry carries API keys and bearer tokens in tool arguments, HTTP headers, prompts and
error messages. This processor masks them before any exporter sees them, with two mechanisms (both
on by default):

1. Sensitive keys (`processors.privacy.secret_keys`): an attribute (or a map entry in a log body)
   whose key names a credential (`http.request.header.authorization`, `x-api-token`, `db.password`)
   has its whole value replaced. Counts such as `gen_ai.usage.input_tokens` are not credentials and
   are left alone, and so are semantic-convention identifiers (`session.id`, `identifier_keys`).
   `allowed_keys` exempts keys from both mechanisms. In a map (a kvlist value or a log body) that
   holds a name/value pair (`{name: DB_PASSWORD, value: ...}`, also `key`/`Value`...), the `value`
   entry is masked whole when the `name` entry names a credential.
2. Secret values anywhere in a string (`processors.privacy.secret_rules`, one table of detectors):
   only the secret part is replaced and the text around it is kept.

Where: span names, status messages, span/event/link attributes, resource attributes, log bodies
(strings and nested maps/arrays) and attributes, metric data point (and exemplar) attributes.

`mode: hash` writes a short keyed hash instead of a fixed text, so equal secrets stay correlatable
(`[REDACTED:3f9a1c2b0d4e]`). The key is required: a random per-process key would break correlation
across restarts and replicas, and an unkeyed hash of a short password can be reversed by brute force.

How a request is masked: one anchor scan over its wire bytes (`processors.privacy.scanner`) finds
every place where a rule may match; a request without any is handed on untouched (not decoded, not
re-encoded). Otherwise the wire walker (`processors.privacy.walker`, in C) visits only the strings
holding an anchor, tries the detectors only at the positions the anchors give, and splices the masks
into the bytes. `blocked_values` (user regexes, which no anchor can find) send every string through
the rules; `summary_attributes` decodes the masked request to add the counts (and only then).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from pipeline.component import ProcessorFactory, Settings, Stability
from pipeline.config.types import Issue, Secret
from pipeline.model import Payload, Signal
from processors.privacy.masker import Masker, Replacer
from processors.privacy.scanner import AnchorScanner
from processors.privacy.secret_keys import (
    ALLOWED,
    DEFAULT_BLOCKED_KEYS,
    DEFAULT_IDENTIFIER_KEYS,
    NOT_SENSITIVE,
    SENSITIVE,
    KeyMatcher,
)
from processors.privacy.secret_rules import DETECTOR_NAMES, FULL, PAIR, PAIR_STOPWORDS, anchors
from processors.privacy.stage import PrivacyProcessor, Single, owner_offsets
from processors.privacy.walker import (
    INFO_FULL,
    INFO_PAIR,
    SKIP,
    STRING,
    TEXT,
    WHOLE,
    AnyText,
    Attrs,
    ClassifiedKeys,
    MaskRun,
    PlanSpec,
    Run,
    TextRun,
)

SUMMARY_COUNT_KEY = "otelpipe.masked.count"
#: The messages summary attributes go on, and where they are in their requests (field numbers).
_OWNERS = {Signal.TRACES: ("opentelemetry.proto.trace.v1.Span", (1, 2, 2)),
           Signal.LOGS: ("opentelemetry.proto.logs.v1.LogRecord", (1, 2, 2))}


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
    """secret_mask on one request: the payload function, and the processor's stage of the walk
    (`processors.privacy.stage.Stage`). `scanner_backend` and `native` pick the scan and the walker
    (the best installed by default; tests run every combination)."""

    def __init__(self, cfg: SecretMaskConfig, signal: Signal, *, scanner_backend: str = "auto",
                 native: bool | None = None) -> None:
        self.cfg = cfg
        self.signal = signal
        self.masker = make_masker(cfg)
        keys = self.masker.keys
        key_matching = cfg.key_matching and bool(cfg.blocked_keys)
        self.scanner = AnchorScanner(anchors(self.masker.enabled, keys, key_matching), backend=scanner_backend)
        infos = [a.info for a in self.scanner.anchors]
        self._info = tuple(infos)
        self._native_info = tuple(INFO_PAIR if i == PAIR else INFO_FULL if i == FULL else i for i in infos)
        self.nothing_enabled = not key_matching and not self.masker.enabled and not cfg.blocked_values
        actions = {NOT_SENSITIVE: TEXT, SENSITIVE: WHOLE if key_matching else TEXT, ALLOWED: SKIP}
        self.key_rule = ClassifiedKeys(lambda key: actions[keys.classify(key)])
        owner = _OWNERS.get(signal) if cfg.summary_attributes else None
        self.owners: tuple[str, ...] = () if owner is None else (owner[0],)
        self.single = Single(self, native)

    def __call__(self, payload: Payload) -> Payload:
        if self.nothing_enabled:
            return payload
        return self.single(payload)

    def spec(self) -> PlanSpec:
        """Where secret_mask looks on the wire."""
        attrs = Attrs(self.key_rule, self.key_rule)
        resource = {"resource": {"attributes": attrs}}
        if self.signal is Signal.TRACES:
            span = {"name": STRING, "attributes": attrs, "events": {"attributes": attrs},
                    "links": {"attributes": attrs}, "status": {"message": STRING}}
            return {"resource_spans": {**resource, "scope_spans": {"spans": span}}}
        if self.signal is Signal.LOGS:
            record = {"attributes": attrs, "body": AnyText(self.key_rule)}
            return {"resource_logs": {**resource, "scope_logs": {"log_records": record}}}
        points = {"data_points": {"attributes": attrs, "exemplars": {"filtered_attributes": attrs}}}
        metric = {kind: points for kind in ("gauge", "sum", "histogram", "exponential_histogram")}
        metric["summary"] = {"data_points": {"attributes": attrs}}
        return {"resource_metrics": {**resource, "scope_metrics": {"metrics": metric}}}

    def prepare(self, raw: bytes) -> Run | None:
        """The scan, and what the walker needs from it; None when no anchor occurs (no user regexes)."""
        masker = self.masker
        scan = self.scanner.scan(raw)
        owners: list[tuple[int, int]] | None = [] if self.owners else None
        if self.cfg.blocked_values:  # user regexes: every string, whatever the anchors
            text = partial(_mask_text, masker, scan.tags)
            return TextRun(0, text, masker.mask_value, owners)
        if not scan.offsets:
            return None
        full = partial(masker.mask_text, gated=scan.tags)
        anchored = partial(_mask_anchored, masker, scan.offsets, scan.ids, self._info, scan.tags)
        return MaskRun(scan.offsets, scan.ids, anchored, full, masker.mask_value, self._engine(scan.tags, full),
                       owners)

    def _engine(self, gated: frozenset[str], full: object) -> tuple[object, ...] | None:
        """What the C walker's masking loop needs (see _wirewalk.c `Stage`); None: no value detector."""
        c = self.masker.variant(gated)
        if c is None:
            return None
        m = self.masker
        r = m.replacer
        return (c.rx.match, c.rules, self._native_info, full, r.fixed, r, r.is_mask, m.counts, m.pair_check,
                m.keys.known, PAIR_STOPWORDS, SENSITIVE, c.pair)

    def idle(self) -> Run:
        return MaskRun((), (), _same_anchored, _same, None, None)

    def checkpoint(self) -> dict[str, int]:
        return dict(self.masker.counts)

    def restore(self, counts: dict[str, int]) -> None:
        self.masker.restore_counts(counts)

    def finish(self, payload: Payload, walked: bytes, new: bytes | None, run: Run) -> None:
        """Summary attributes: add each owner's count (the request is decoded for it)."""
        if not run.owners:
            return
        path = _OWNERS[self.signal][1]
        ordinal = {off: i for i, off in enumerate(owner_offsets(walked, path))}
        msg = payload.mutable()
        items = [item for r in getattr(msg, self.signal.resource_field) for sc in getattr(r, self.signal.scope_field)
                 for item in getattr(sc, self.signal.items_field)]
        for off, n in run.owners:
            _add_count(items[ordinal[off]].attributes, n)

    def describe(self) -> dict[str, str]:
        return {"scanner": self.scanner.backend}

    # -- single strings (tests, reuse) -------------------------------------------------------------

    def text(self, s: str) -> str:
        return self.masker.mask_text(s)


def _mask_text(masker: Masker, gated: frozenset[str], s: str, _flags: int) -> str:
    return masker.mask_text(s, gated)


def _mask_anchored(masker: Masker, offsets: list[int], ids: list[int], info: tuple[object, ...],
                   gated: frozenset[str], s: str, base: int) -> str:
    return masker.mask_anchored(s, base, offsets, ids, info, gated)


def _same(s: str) -> str:
    return s


def _same_anchored(s: str, _base: int) -> str:
    return s


def _add_count(attrs: object, n: int) -> None:
    for kv in attrs:  # type: ignore[attr-defined]
        if kv.key == SUMMARY_COUNT_KEY:
            kv.value.int_value = kv.value.int_value + n
            return
    attrs.add(key=SUMMARY_COUNT_KEY, value=AnyValue(int_value=n))  # type: ignore[attr-defined]


def create(settings: Settings, cfg: SecretMaskConfig, next_consumer: object) -> PrivacyProcessor:
    assert settings.signal is not None
    proc = SecretMask(cfg, settings.signal)
    return PrivacyProcessor(settings, proc.single, next_consumer, counter="processor_masked_values",
                            take_counts=proc.masker.take_counts)


FACTORY = ProcessorFactory(
    type="secret_mask",
    config_type=SecretMaskConfig,
    signals={Signal.TRACES: Stability.BETA, Signal.METRICS: Stability.BETA, Signal.LOGS: Stability.BETA},
    create=create,
    description="Masks credentials: values under sensitive keys and secrets detected inside strings.",
)

__all__ = ["FACTORY", "SecretMaskConfig", "SecretMask", "make_masker", "SUMMARY_COUNT_KEY"]

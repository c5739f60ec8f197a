"""uuid_normalize: replace identifiers in span names, routes and metric attributes by placeholders.

Agent telemetry carries session, run, tool-call and conversation ids inside
routes and span names (`/v1/agents/3f2c.../runs`). Every distinct id is a new
series in Prometheus and a new operation name in tracing backends. This
processor rewrites them to placeholders (`/v1/agents/{uuid}/runs`) where
grouping happens: span names, selected span/log attributes and metric data
point attributes. Trace and span ids, resource attributes (service.instance.id
is an identity, not noise) and unselected attributes are never touched.

How a request is normalized: never decoded or re-encoded. The wire walker
(`processors.privacy.walker`, in C) visits the span names and selected attributes only, checks
each for the anchors an id must contain (`-hhhh-hhhh-hhhh-` UUID cores, `/digit` path segments,
hex and ULID runs), hands the few strings holding one to the normalizer (a template substitution
when only UUIDs can match) and splices the results into the bytes. User `patterns` cannot be
anchored: with them every selected string goes to the normalizer.

Metrics: points of one metric that normalization makes the same series (200
routes `/v1/agents/<uuid>/runs` become one `/v1/agents/{uuid}/runs`) are merged
into one point, so totals survive: an exporter keeps only one point of a
series per timestamp (the Prometheus exporter took 1 of 200 StatsD
increments). How sums, histograms, gauges and summaries merge, and what
"the same series" means for delta and cumulative data, is in
`pipeline/pointmerge.py`. Only metrics in which a string changed are looked
at, so a request normalization leaves alone pays nothing. Merged points leave
the request: they are counted as dropped with `reason="merged"` (their values
live on in the point they were merged into), so accepted = sent + dropped holds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from pipeline.component import ProcessorFactory, Settings, Stability
from pipeline.config.types import Issue
from pipeline.model import Payload, Signal
from pipeline.pointmerge import MetricBytes, changed_metrics, merge_same_series
from processors.privacy.stage import PrivacyProcessor, Single
from processors.privacy.walker import (
    PF_HEX,
    PF_NUM,
    PF_ULID,
    PF_UUID,
    STRING,
    Attrs,
    IdAnchorScan,
    PlanSpec,
    Run,
    SelectedKeys,
    TextRun,
)

DEFAULT_SPAN_ATTRIBUTES: tuple[str, ...] = (
    "http.route", "http.target", "url.path", "url.template", "rpc.method", "messaging.destination.name",
)

_H = "[0-9a-fA-F]"
_UUID_CORE = f"{_H}{{8}}-{_H}{{4}}-{_H}{{4}}-{_H}{{4}}-{_H}{{12}}"
#: 8-4-4-4-12 hex, any case, optionally braced or prefixed with urn:uuid:, not inside a longer word.
#: Every detector uses the same boundary (no letter or digit on either side) and every match
#: starts and ends with a letter, digit or brace, so replacing one match never unblocks a
#: neighbour: normalizing twice gives the same text as normalizing once.
UUID_PATTERN = (rf"(?<![0-9A-Za-z])(?:(?i:urn:uuid:)(?:\{{{_UUID_CORE}\}}|{_UUID_CORE})"
                rf"|\{{{_UUID_CORE}\}}|{_UUID_CORE})(?![0-9A-Za-z])")
#: Crockford base32, 26 characters, first one 0-7 (48-bit timestamp), one case.
ULID_PATTERN = r"(?<![0-9A-Za-z])[0-7](?:[0-9A-HJKMNP-TV-Z]{25}|[0-9a-hjkmnp-tv-z]{25})(?![0-9A-Za-z])"
#: At least 16 hex characters in a row (request ids, hashes, hex trace ids in strings).
HEX_PATTERN = r"(?<![0-9A-Za-z])[0-9a-fA-F]{16,}(?![0-9A-Za-z])"
#: A path segment made only of digits: /users/12345/ or /users/12345 (before /, ?, #, ; or the end).
NUMERIC_SEGMENT_PATTERN = r"(?<=/)[0-9]+(?=[/?#;]|$|\s)"

_UUID_HINT = re.compile(r"-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-")
_NUM_HINT = re.compile(r"/[0-9]")
_RUN_HINT = re.compile(r"[0-9A-Za-z]{16}")
#: Where NUMERIC_SEGMENT_PATTERN matches, led by the `/` it looks behind at (so `re` skips to it).
_NUM_SEGMENT = re.compile(r"/[0-9]+(?=[/?#;]|$|\s)")


@dataclass(frozen=True, slots=True, kw_only=True)
class PatternConfig:
    """A user rule: every match of `regex` becomes `replacement` (re.sub syntax, \\1 and \\g<name> work)."""

    regex: str = ""
    replacement: str = ""

    def validate(self) -> list[Issue]:
        if not self.regex:
            return [Issue("regex", "is required")]
        try:
            rx = re.compile(self.regex)
        except re.error as e:
            return [Issue("regex", f"invalid regular expression {self.regex!r}: {e}")]
        if rx.match(""):
            return [Issue("regex", f"{self.regex!r} matches the empty string; "
                                   "it would insert the replacement everywhere")]
        try:
            rx.sub(self.replacement, "")  # parses group references in the template
        except (re.error, IndexError) as e:
            return [Issue("replacement", f"invalid replacement {self.replacement!r}: {e}")]
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class UUIDNormalizeConfig:
    replacement: str = "{uuid}"
    span_names: bool = True
    span_attributes: tuple[str, ...] = DEFAULT_SPAN_ATTRIBUTES
    log_attributes: tuple[str, ...] = ()
    #: data point attributes to normalize; null (the default) means all of them, [] none.
    metric_attributes: tuple[str, ...] | None = None
    numeric_path_segments: bool = True
    hex_ids: bool = True
    ulids: bool = True
    patterns: tuple[PatternConfig, ...] = ()

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        for pat in (UUID_PATTERN, HEX_PATTERN, ULID_PATTERN):
            if re.search(pat, self.replacement):
                issues.append(Issue("replacement", (f"{self.replacement!r} would itself be normalized again; "
                                               "use text without ids, e.g. '{uuid}'")))
                break
        return issues


_PLACEHOLDERS = {"ulid": "{ulid}", "hex": "{hex}", "num": "{id}"}


class Normalizer:
    """The string function: all enabled detectors in one regex pass, then user patterns."""

    def __init__(self, cfg: UUIDNormalizeConfig) -> None:
        alts = [f"(?P<uuid>{UUID_PATTERN})"]
        if cfg.ulids:
            alts.append(f"(?P<ulid>{ULID_PATTERN})")
        if cfg.hex_ids:
            alts.append(f"(?P<hex>{HEX_PATTERN})")
        if cfg.numeric_path_segments:
            alts.append(f"(?P<num>{NUMERIC_SEGMENT_PATTERN})")
        self._rx = re.compile("|".join(alts))
        self._num = cfg.numeric_path_segments
        self._runs = cfg.hex_ids or cfg.ulids
        self._placeholders = {**_PLACEHOLDERS, "uuid": cfg.replacement}
        self._user = tuple((re.compile(p.regex), p.replacement) for p in cfg.patterns)
        self.counts: dict[str, int] = {}
        # The fast path of `normalize_candidate`: UUIDs alone, replaced by a template (no callback).
        self._uuid_rx = re.compile(UUID_PATTERN)
        self._uuid_template = cfg.replacement.replace("\\", "\\\\")

    def _sub(self, m: re.Match[str]) -> str:
        kind = m.lastgroup
        assert kind is not None
        text = m.group()
        # hex: digits and letters both, one letter case: ids and hashes, not numbers or words.
        if kind == "hex" and (text.isdigit() or not any(c.isdigit() for c in text)
                              or (text != text.lower() and text != text.upper())):
            return text
        if kind == "ulid" and (sum(c.isdigit() for c in text) < 2 or text.isdigit()):
            return text
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return self._placeholders[kind]

    def maybe(self, s: str) -> bool:
        """Cheap hints (C-speed substring and literal-prefixed searches) that a builtin may match."""
        if "-" in s and _UUID_HINT.search(s) is not None:
            return True
        if self._num and "/" in s and _NUM_HINT.search(s) is not None:
            return True
        return self._runs and len(s) >= 16 and _RUN_HINT.search(s) is not None

    def __call__(self, s: str) -> str:
        if self.maybe(s) and self._rx.search(s) is not None:
            s = self._rx.sub(self._sub, s)
        for rx, repl in self._user:
            new, n = rx.subn(repl, s)
            if n and new != s:
                self.counts["pattern"] = self.counts.get("pattern", 0) + n
                s = new
        return s

    def normalize_found(self, s: str, found: int) -> str:
        """`self(s)` without user patterns, for a string in which the walker found the id anchors
        `found` (`PF_*` flags, see `walker.TextRun`): the anchors are necessary conditions of a
        builtin match, and a string without any is not handed over.

        Ids in agent telemetry are nearly all UUIDs, and the joint regex (four look-behind-led
        alternatives tried at every character) costs 2.5x a UUID-only one. `re.sub` matches
        against the original string, so where no other detector can match anywhere in it, the
        joint regex finds exactly the UUID-only regex's matches: then a template substitution
        does the work, without a Python call per match. Every ULID or hex match holds its anchor,
        and a numeric segment is checked directly (`/1f55...`, a UUID after a slash, holds the
        `/digit` anchor without being one).
        """
        if found & (PF_HEX | PF_ULID) or (found & PF_NUM and _NUM_SEGMENT.search(s) is not None):
            return self._rx.sub(self._sub, s)
        new, n = self._uuid_rx.subn(self._uuid_template, s)
        if n:
            self.counts["uuid"] = self.counts.get("uuid", 0) + n
        return new

    def normalize_all(self, s: str, _found: int) -> str:
        """`self(s)`, as the walker calls a rule that looks at every string (user patterns)."""
        return self(s)

    def take_counts(self) -> dict[str, int]:
        """The counts so far, and start again from none."""
        c = dict(self.counts)
        self.counts.clear()
        return c

    def restore_counts(self, counts: dict[str, int]) -> None:
        """Set the counts back to `counts` (a walk that was abandoned counted nothing)."""
        self.counts.clear()
        self.counts.update(counts)


class UUIDNormalize:
    """uuid_normalize on one request: the payload function, and the processor's stage of the walk
    (`processors.privacy.stage.Stage`). `native` picks the walker (the C one where it is built);
    `scanner_backend` the anchor scanner with which the Python walker finds the id anchors."""

    owners: tuple[str, ...] = ()

    def __init__(self, cfg: UUIDNormalizeConfig, signal: Signal, *, native: bool | None = None,
                 scanner_backend: str = "auto") -> None:
        self.cfg = cfg
        self._anchors = IdAnchorScan(scanner_backend)
        self.signal = signal
        self.fn = Normalizer(cfg)
        self._span_keys = frozenset(cfg.span_attributes)
        self._log_keys = frozenset(cfg.log_attributes)
        self._metric_keys = None if cfg.metric_attributes is None else frozenset(cfg.metric_attributes)
        # the anchors the walker checks each selected string for; none with user patterns (every string)
        self.prefilter = 0 if cfg.patterns else (
            PF_UUID | (PF_NUM if cfg.numeric_path_segments else 0) | (PF_HEX if cfg.hex_ids else 0)
            | (PF_ULID if cfg.ulids else 0))
        self._text = self.fn.normalize_found if self.prefilter else self.fn.normalize_all
        # normalize_found's UUID-only case, done by the C walker itself (see walker.TextRun.uuid)
        self._uuid = (cfg.replacement, self.fn.counts) if self.prefilter else None
        self.nothing_selected = (
            (signal is Signal.TRACES and not cfg.span_names and not self._span_keys)
            or (signal is Signal.LOGS and not self._log_keys)
            or (signal is Signal.METRICS and self._metric_keys is not None and not self._metric_keys)
        )
        self.single = Single(self, native)

    def __call__(self, payload: Payload) -> Payload:
        if self.nothing_selected:
            return payload
        return self.single(payload)

    def spec(self) -> PlanSpec:
        """Where uuid_normalize looks on the wire."""
        def selected(keys: frozenset[str] | None) -> Attrs:
            return Attrs(None if keys is None else SelectedKeys(keys))

        if self.signal is Signal.TRACES:
            span: dict[str, object] = {"attributes": selected(self._span_keys)}
            if self.cfg.span_names:
                span["name"] = STRING
            return {"resource_spans": {"scope_spans": {"spans": span}}}
        if self.signal is Signal.LOGS:
            return {"resource_logs": {"scope_logs": {"log_records": {"attributes": selected(self._log_keys)}}}}
        points = {"data_points": {"attributes": selected(self._metric_keys)}}
        metric = {kind: points for kind in ("gauge", "sum", "histogram", "exponential_histogram", "summary")}
        return {"resource_metrics": {"scope_metrics": {"metrics": metric}}}

    def prepare(self, raw: bytes) -> Run:
        return TextRun(self.prefilter, self._text, uuid=self._uuid, anchors=self._anchors)

    def idle(self) -> Run:
        return TextRun(self.prefilter, _same)

    def checkpoint(self) -> dict[str, int]:
        return dict(self.fn.counts)

    def restore(self, counts: dict[str, int]) -> None:
        self.fn.restore_counts(counts)

    def finish(self, payload: Payload, walked: bytes, new: bytes | None, run: Run) -> None:
        """Metrics: merge the points that became one series in the metrics a string changed in (the
        payload is decoded only if there is something to merge); it recounts its items."""
        if new is None or self.signal is not Signal.METRICS:
            return
        before, after = MetricBytes(walked), MetricBytes(new)
        changed = changed_metrics(before, after)

        def request() -> ExportMetricsServiceRequest:
            return cast(ExportMetricsServiceRequest, payload.message)

        if changed and merge_same_series(request, changed, before, after):
            payload.mark_changed()

    def describe(self) -> dict[str, str]:
        return {"id anchors": "checked by the walker in each selected string" if self.prefilter
                else "none (user patterns: every selected string)"}


def _same(s: str, _flags: int) -> str:
    return s


def create(settings: Settings, cfg: UUIDNormalizeConfig, next_consumer: object) -> PrivacyProcessor:
    assert settings.signal is not None
    proc = UUIDNormalize(cfg, settings.signal)
    # Points merged into another are the only items that leave: counted as dropped, reason "merged".
    return PrivacyProcessor(settings, proc.single, next_consumer, counter="processor_normalized_values",
                            take_counts=proc.fn.take_counts, drop_reason="merged")


FACTORY = ProcessorFactory(
    type="uuid_normalize",
    config_type=UUIDNormalizeConfig,
    signals={Signal.TRACES: Stability.BETA, Signal.METRICS: Stability.BETA, Signal.LOGS: Stability.BETA},
    create=create,
    description="Replaces UUIDs, ULIDs, long hex ids and numeric path segments with placeholders.",
)

__all__ = ["FACTORY", "Normalizer", "PatternConfig", "UUIDNormalize", "UUIDNormalizeConfig"]

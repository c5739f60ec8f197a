"""filter: drop telemetry matching OTTL conditions, as the Collector's filterprocessor does.

Config (the Collector's keys): `error_mode` (ignore, silent, propagate; default ignore), and either
the current style, `trace_conditions` / `metric_conditions` / `log_conditions` (a flat list of
conditions whose context is inferred, or groups `{context, conditions, error_mode}`), or the older
one, `traces: {resource, span, spanevent}`, `metrics: {resource, metric, datapoint}`,
`logs: {resource, log_record}` (lists of conditions in that context). An item is dropped when any
condition of its group is true; resources, scopes and metrics left empty go with it. Both styles
for one signal at once is an error. The legacy `include`/`exclude` match properties are accepted
for `spans` (the same matcher as the attributes processor's) and refused elsewhere with a hint.

Dropped spans, data points and log records are counted in
`otelpipe_processor_dropped_*_total{reason="filtered"}`. A request no condition can match (told
from its wire bytes, see `processors/ottl/prefilter.py`) is handed on without being decoded.
With error_mode `ignore`/`silent` a condition that fails on an item counts as false (the item is
kept); `propagate` refuses the whole request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.component import Consumer, FuncProcessor, ProcessorFactory, Settings, Stability, processor_from_func
from pipeline.config.types import Issue
from pipeline.errors import PermanentError
from pipeline.model import Payload, Signal
from processors.attributes.match import MatchConfig, SpanMatcher
from processors.ottl import prefilter
from processors.ottl.config import explicit_group, parse_groups
from processors.ottl.runner import ErrorHandler, Group, StatementFailed, run_filter


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceFilters:
    resource: tuple[str, ...] = ()
    span: tuple[str, ...] = ()
    spanevent: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricFilters:
    resource: tuple[str, ...] = ()
    metric: tuple[str, ...] = ()
    datapoint: tuple[str, ...] = ()
    include: dict[str, Any] | None = None
    exclude: dict[str, Any] | None = None
    regexp: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LogFilters:
    resource: tuple[str, ...] = ()
    log_record: tuple[str, ...] = ()
    include: dict[str, Any] | None = None
    exclude: dict[str, Any] | None = None


_CONDITION_KEYS = {Signal.TRACES: "trace_conditions", Signal.METRICS: "metric_conditions",
                   Signal.LOGS: "log_conditions"}
_EXPLICIT: dict[Signal, tuple[str, tuple[tuple[str, str], ...]]] = {
    Signal.TRACES: ("traces", (("resource", "resource"), ("span", "span"), ("spanevent", "spanevent"))),
    Signal.METRICS: ("metrics", (("resource", "resource"), ("metric", "metric"), ("datapoint", "datapoint"))),
    Signal.LOGS: ("logs", (("resource", "resource"), ("log_record", "log"))),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterConfig:
    error_mode: Literal["ignore", "silent", "propagate"] = "ignore"
    traces: TraceFilters = TraceFilters()
    metrics: MetricFilters = MetricFilters()
    logs: LogFilters = LogFilters()
    spans: MatchConfig = MatchConfig()
    trace_conditions: tuple[Any, ...] = ()
    metric_conditions: tuple[Any, ...] = ()
    log_conditions: tuple[Any, ...] = ()

    def groups(self, signal: Signal) -> tuple[list[Group], list[Issue]]:
        key = _CONDITION_KEYS[signal]
        inferred, issues = parse_groups(signal.value, key, getattr(self, key), self.error_mode,
                                        conditions_only=True)
        section, lists = _EXPLICIT[signal]
        block = getattr(self, section)
        explicit: list[Group] = []
        for field, context in lists:
            groups, problems = explicit_group(signal.value, f"{section}.{field}", context, getattr(block, field),
                                              self.error_mode)
            explicit.extend(groups)
            issues.extend(problems)
        if getattr(self, key) and any(getattr(block, f) for f, _ in lists):
            issues.append(Issue(key, f"cannot be combined with the older `{section}:` conditions; use one style"))
        return [*explicit, *inferred], issues

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        for signal in Signal:
            issues.extend(self.groups(signal)[1])
        for section in ("metrics", "logs"):
            block = getattr(self, section)
            for key in ("include", "exclude"):
                if getattr(block, key) is not None:
                    issues.append(Issue(f"{section}.{key}", (
                        f"the legacy match properties are not supported for {section}; write the condition in "
                        f"OTTL under {section}_conditions" if section == "metrics" else
                        "the legacy match properties are not supported for logs; write the condition in OTTL "
                        "under log_conditions, e.g. 'log.severity_number < SEVERITY_NUMBER_WARN'")))
        if self.metrics.regexp is not None:
            issues.append(Issue("metrics.regexp", "only applies to the legacy match properties, which are not "
                                                  "supported; use IsMatch() in metric_conditions"))
        problem = self.spans.check_signal(Signal.TRACES)
        if problem is not None:
            issues.append(Issue("spans", problem))
        if self.spans.configured and (self.traces.span or self.traces.spanevent or self.trace_conditions):
            issues.append(Issue("spans", "cannot use OTTL conditions and include/exclude for spans at the same time"))
        return issues


class Filter:
    """The payload function: prefilter on the wire bytes, then drop matching items."""

    def __init__(self, groups: list[Group], signal: Signal, on_error: ErrorHandler,
                 matcher: SpanMatcher | None = None) -> None:
        self.groups = groups
        self.signal = signal
        self.on_error = on_error
        self.matcher = matcher
        need = prefilter.NEVER
        for g in groups:
            need = prefilter.or_(need, g.need)
        self.may_touch = prefilter.Checker(need)
        self.skipped = 0

    def __call__(self, payload: Payload) -> Payload | None:
        if not self.groups and self.matcher is None:
            return payload
        raw = payload.raw_cached
        if self.matcher is None and raw is not None and not self.may_touch(raw):
            self.skipped += 1
            return payload
        msg = payload.message
        try:
            removed = run_filter(self.signal.value, msg, self.groups, self.on_error)
        except StatementFailed as e:
            raise PermanentError(f"filter: {e}") from e
        if self.matcher is not None:
            removed |= self.matcher.drop_unmatched(msg)
        if removed:
            payload.mark_changed()  # recounts the items: the dropped ones are counted by the adapter
        return payload


def create(settings: Settings, cfg: FilterConfig, next_consumer: Consumer) -> FuncProcessor:
    assert settings.signal is not None
    groups, issues = cfg.groups(settings.signal)
    assert not issues, issues  # validated before create
    matcher = SpanMatcher(cfg.spans) if settings.signal is Signal.TRACES and cfg.spans.configured else None
    proc = Filter(groups, settings.signal, ErrorHandler(settings.logger, settings.clock), matcher)
    return processor_from_func(settings, proc, next_consumer, mutates_data=bool(groups) or matcher is not None,
                               drop_reason="filtered")


FACTORY = ProcessorFactory(
    type="filter",
    config_type=FilterConfig,
    signals={Signal.TRACES: Stability.ALPHA, Signal.METRICS: Stability.ALPHA, Signal.LOGS: Stability.ALPHA},
    create=create,
    description="Drops telemetry matching OTTL conditions (the Collector's filter processor).",
)

__all__ = ["FACTORY", "Filter", "FilterConfig"]

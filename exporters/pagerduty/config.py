"""Configuration of the `pagerduty` exporter: the Events API v2 target and the alert rules.

Rules are checked when the config is read, with key paths: unknown aggregations and conditions
(with "did you mean"), missing fields, bad durations, filters that are neither a value, a list
nor `{regex: ...}`, regexes that do not compile, templates that do not parse or name an
attribute outside `group_by`, a denominator or volume guard grouped by attributes the rule does
not group by, and duplicate rule names.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from exporters.pagerduty import templates
from pipeline.config.types import Duration, Issue, Secret, did_you_mean
from pipeline.exporterhelper import ExporterConfig
from pipeline.net.tls import TLSClientConfig
from pipeline.net.urls import url_problem

DEFAULT_ENDPOINT = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_EVALUATION_INTERVAL = Duration(15.0)
DEFAULT_WINDOW = Duration(300.0)
DEFAULT_MAX_SERIES = 50_000
DEFAULT_LIMIT = 100

Aggregation = Literal["last", "avg", "min", "max", "sum", "count", "rate", "increase", "p50", "p90", "p95", "p99"]
Condition = Literal[">", ">=", "<", "<=", "==", "!="]
Severity = Literal["critical", "error", "warning", "info"]
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
#: Aggregations that count something: a group whose series were quiet in the window counts 0.
COUNTING = frozenset({"sum", "count", "rate", "increase"})


@dataclass(frozen=True, slots=True)
class Matcher:
    """One attribute condition of a filter: equal to one of `values`, or fully matching `regex`."""

    values: frozenset[str] = frozenset()
    regex: re.Pattern[str] | None = None

    def __call__(self, value: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(value) is not None
        return value in self.values


def attribute_text(value: object) -> str:
    """How a filter value written in YAML compares with an attribute value: as text (`true`, `500`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compile_filter(spec: Mapping[str, Any]) -> tuple[dict[str, Matcher], list[Issue]]:
    """The matchers of a `filter:` block, and the problems, keyed relative to the block."""
    out: dict[str, Matcher] = {}
    issues: list[Issue] = []
    for key, value in spec.items():
        if isinstance(value, (str, int, float, bool)):
            out[key] = Matcher(values=frozenset({attribute_text(value)}))
        elif isinstance(value, list):
            bad = [v for v in value if not isinstance(v, (str, int, float, bool))]
            if not value or bad:
                issues.append(Issue(key, "a list of values must be non-empty and hold only strings, numbers or "
                                         "booleans"))
                continue
            out[key] = Matcher(values=frozenset(attribute_text(v) for v in value))
        elif isinstance(value, dict):
            unknown = [k for k in value if k != "regex"]
            if unknown:
                issues.append(Issue(f"{key}.{unknown[0]}", f"unknown key '{unknown[0]}'"
                                    f"{did_you_mean(str(unknown[0]), ['regex'])} (a filter is a value, a list of "
                                    "values or {regex: ...})"))
                continue
            pattern = value.get("regex")
            if not isinstance(pattern, str):
                issues.append(Issue(f"{key}.regex", "must be a regular expression (a string)"))
                continue
            try:
                out[key] = Matcher(regex=re.compile(pattern))
            except re.error as e:
                issues.append(Issue(f"{key}.regex", f"invalid regular expression {pattern!r}: {e}"))
        else:
            issues.append(Issue(key, "must be a value, a list of values or {regex: ...}, not "
                                     f"{'nothing (null)' if value is None else type(value).__name__}"))
    return out, issues


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectorConfig:
    """`ratio_to`: the denominator. Every field left out is the rule's; `offset` moves its window back.

    `group_by` may name a subset of the rule's `group_by` (one denominator shared by several groups,
    e.g. every tool's failures over all calls); it defaults to the rule's.
    """

    metric: str | None = None
    filter: dict[str, Any] | None = None
    aggregation: Aggregation | None = None
    window: Duration | None = None
    offset: Duration = Duration(0.0)
    group_by: tuple[str, ...] | None = None

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.metric is not None and not self.metric:
            out.append(Issue("metric", "must not be empty (leave it out to use the rule's metric)"))
        if self.window is not None and self.window <= 0:
            out.append(Issue("window", "must be greater than 0"))
        if self.offset < 0:
            out.append(Issue("offset", "must be 0 or more (how far back the window is moved)"))
        if self.filter is not None:
            out.extend(Issue(f"filter.{i.key}", i.message) for i in compile_filter(self.filter)[1])
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeConfig(SelectorConfig):
    """`min_volume`: the rule only holds for a group whose guard aggregation is at least `threshold`.

    The fields default to the rule's, as in `ratio_to`, except `aggregation`, which defaults to
    `increase` (requests in the window for a counter, observations for a histogram).
    """

    threshold: float

    def validate(self) -> list[Issue]:
        return SelectorConfig.validate(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConfig:
    """A link on the incident (`links` of the event): `href` and `text` are templates, like `summary`;
    in `href` the fields are percent-encoded (`{service.name}` of `a b&c` gives `a%20b%26c`)."""

    href: str
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleConfig:
    name: str
    metric: str
    filter: dict[str, Any] = field(default_factory=dict)
    aggregation: Aggregation
    window: Duration = DEFAULT_WINDOW
    ratio_to: SelectorConfig | None = None
    min_volume: VolumeConfig | None = None
    group_by: tuple[str, ...] = ()
    condition: Condition
    threshold: float
    for_: Duration = field(default=Duration(0.0), metadata={"yaml": "for"})
    severity: Severity = "error"
    summary: str = ""
    links: tuple[LinkConfig, ...] = ()
    limit: int = DEFAULT_LIMIT

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if not self.name.strip():
            out.append(Issue("name", "must not be empty"))
        elif any(ord(c) < 32 for c in self.name):
            out.append(Issue("name", "must not contain control characters"))
        if not self.metric:
            out.append(Issue("metric", "must not be empty: the OTLP metric name, e.g. 'agent.requests'"))
        if self.window <= 0:
            out.append(Issue("window", "must be greater than 0"))
        if self.for_ < 0:
            out.append(Issue("for", "must be 0 or more"))
        if self.threshold != self.threshold or self.threshold in (float("inf"), float("-inf")):
            out.append(Issue("threshold", "must be a finite number"))
        if self.limit < 0:
            out.append(Issue("limit", "must be 0 (no limit) or more"))
        out.extend(Issue(f"filter.{i.key}", i.message) for i in compile_filter(self.filter)[1])
        if len(set(self.group_by)) != len(self.group_by):
            out.append(Issue("group_by", "names an attribute twice"))
        for key, sel in (("ratio_to", self.ratio_to), ("min_volume", self.min_volume)):
            if sel is not None and sel.group_by is not None:
                extra = [a for a in sel.group_by if a not in self.group_by]
                if extra:
                    out.append(Issue(f"{key}.group_by", f"{extra} not in the rule's group_by {list(self.group_by)}: "
                                                        "each group must find its denominator or guard"))
        for key, text in (("summary", self.summary),
                          *((f"links[{i}].href", link.href) for i, link in enumerate(self.links)),
                          *((f"links[{i}].text", link.text) for i, link in enumerate(self.links))):
            try:
                problems = templates.check(templates.parse(text), self.group_by)
            except templates.TemplateError as e:
                problems = [str(e)]
            out.extend(Issue(key, p) for p in problems)
        for i, link in enumerate(self.links):
            if not link.href.strip():
                out.append(Issue(f"links[{i}].href", "must not be empty"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class PagerDutyExporterConfig(ExporterConfig):
    """`exporters.pagerduty`: evaluates `rules` over the metrics it receives, every `evaluation_interval`.

    `sending_queue`, `retry_on_failure` and `timeout` apply to the events on their way to PagerDuty
    (and to the metrics on their way into the history, which never fail). Events have one sender
    whatever `sending_queue.num_consumers` says, so they leave in order and a resolve never
    overtakes its trigger.
    """

    routing_key: Secret = field(default_factory=lambda: Secret(""))
    endpoint: str = DEFAULT_ENDPOINT
    evaluation_interval: Duration = DEFAULT_EVALUATION_INTERVAL
    source: str = ""
    component: str = ""
    group: str = ""
    class_: str = field(default="", metadata={"yaml": "class"})
    client: str = "otelpipe"
    client_url: str = ""
    rules: tuple[RuleConfig, ...] = ()
    max_series: int = DEFAULT_MAX_SERIES
    tls: TLSClientConfig = field(default_factory=TLSClientConfig)

    def validate(self) -> list[Issue]:
        out = list(ExporterConfig.validate(self))
        if not self.routing_key:
            out.append(Issue("routing_key", "is required: the integration key of a PagerDuty service "
                                            "(Events API v2), e.g. ${env:PAGERDUTY_ROUTING_KEY}"))
        problem = url_problem(self.endpoint, {})
        if problem:
            out.append(Issue("endpoint", problem))
        if self.evaluation_interval <= 0:
            out.append(Issue("evaluation_interval", "must be greater than 0"))
        if self.max_series < 1:
            out.append(Issue("max_series", "must be at least 1"))
        if not self.sending_queue.enabled:
            out.append(Issue("sending_queue.enabled", "must be true: events wait in the queue while PagerDuty is "
                                                      "retried, so evaluation never stalls"))
        if not self.rules:
            out.append(Issue("rules", "at least one rule is required"))
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                out.append(Issue(f"rules[{i}].name", f"duplicate rule name {rule.name!r} (also "
                                                     f"rules[{seen[rule.name]}]): the name is part of each "
                                                     "incident's dedup_key"))
            seen.setdefault(rule.name, i)
        return out

"""Include/exclude match properties (the Collector's filterconfig.MatchProperties).

Every property that is set must match (AND); within a list, any item may match (OR), except
`attributes` and `resources`, where every listed attribute must match. `match_type: strict` compares
exactly; `regexp` searches (unanchored, as Go's MatchString). Which properties apply depends on
the data: spans take services, span_names, span_kinds, attributes, resources, libraries; logs take
log_bodies, log_severity_texts, log_severity_number, attributes, resources, libraries; metrics take
metric_names and resources.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.config.types import Issue
from pipeline.model import Signal
from processors.ottl.regex import compile_re2
from processors.ottl.values import PMap, from_any, same, string_like

_SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_SPAN_KIND_NAMES = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
_SEVERITIES = {**{f"{lvl}{'' if n == 1 else n}": 1 + 4 * i + n - 1
                  for i, lvl in enumerate(("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")) for n in range(1, 5)},
               **{str(n): n for n in range(1, 25)}}

_PROPS = ("services", "span_names", "span_kinds", "log_bodies", "log_severity_texts", "log_severity_number",
          "metric_names", "attributes", "resources", "libraries")
_APPLIES: dict[Signal, frozenset[str]] = {
    Signal.TRACES: frozenset({"services", "span_names", "span_kinds", "attributes", "resources", "libraries"}),
    Signal.LOGS: frozenset({"log_bodies", "log_severity_texts", "log_severity_number", "attributes", "resources",
                            "libraries"}),
    Signal.METRICS: frozenset({"metric_names", "resources"}),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AttributeMatch:
    key: str = ""
    #: absent: the key must be present; otherwise the value must match
    value: Any = None

    def validate(self) -> list[Issue]:
        return [Issue("key", "is required")] if not self.key else []


@dataclass(frozen=True, slots=True, kw_only=True)
class LibraryMatch:
    name: str = ""
    #: absent: any version matches; "" matches only an empty version
    version: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SeverityNumberMatch:
    min: int | str = 0
    match_undefined: bool = False

    def level(self) -> int:
        if isinstance(self.min, int):
            return self.min
        return _SEVERITIES.get(self.min.upper(), -1)

    def validate(self) -> list[Issue]:
        if not 0 <= self.level() <= 24:
            return [Issue("min", f"{self.min!r} is not a severity: use 1-24 or TRACE..FATAL4 (case-insensitive)")]
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class RegexpConfig:
    """Accepted for compatibility: Python caches compiled patterns itself."""

    cacheenabled: bool = False
    cachemaxnumentries: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchProperties:
    match_type: Literal["", "strict", "regexp"] = ""
    regexp: RegexpConfig | None = None
    services: tuple[str, ...] = ()
    span_names: tuple[str, ...] = ()
    span_kinds: tuple[str, ...] = ()
    log_bodies: tuple[str, ...] = ()
    log_severity_texts: tuple[str, ...] = ()
    log_severity_number: SeverityNumberMatch | None = None
    metric_names: tuple[str, ...] = ()
    attributes: tuple[AttributeMatch, ...] = ()
    resources: tuple[AttributeMatch, ...] = ()
    libraries: tuple[LibraryMatch, ...] = ()

    def set_properties(self) -> list[str]:
        return [p for p in _PROPS if getattr(self, p)]

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        if not self.match_type:
            issues.append(Issue("match_type", "is required: strict or regexp"))
        if not self.set_properties():
            issues.append(Issue("", "at least one of " + ", ".join(_PROPS) + " must be set"))
        if self.match_type == "regexp":
            for prop in ("services", "span_names", "span_kinds", "log_bodies", "log_severity_texts", "metric_names"):
                for i, pattern in enumerate(getattr(self, prop)):
                    issues.extend(_check_regex(pattern, f"{prop}[{i}]"))
            for prop in ("attributes", "resources"):
                for i, a in enumerate(getattr(self, prop)):
                    if a.value is not None:
                        if not isinstance(a.value, str):
                            issues.append(Issue(f"{prop}[{i}].value", "must be a string (a regex) with "
                                                                      "match_type regexp"))
                        else:
                            issues.extend(_check_regex(a.value, f"{prop}[{i}].value"))
            for i, lib in enumerate(self.libraries):
                issues.extend(_check_regex(lib.name, f"libraries[{i}].name"))
        for i, kind in enumerate(self.span_kinds if self.match_type == "strict" else ()):
            if _kind_index(kind) < 0:
                issues.append(Issue(f"span_kinds[{i}]", f"unknown span kind {kind!r}: use SPAN_KIND_SERVER, "
                                                        "SPAN_KIND_CLIENT, ... (or Server, Client, ...)"))
        return issues


def _check_regex(pattern: str, key: str) -> list[Issue]:
    try:
        compile_re2(pattern)
    except ValueError as e:
        return [Issue(key, str(e))]
    return []


def _kind_index(kind: str) -> int:
    k = kind.upper().removeprefix("SPAN_KIND_")
    return _SPAN_KINDS.index(k) if k in _SPAN_KINDS else -1


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchConfig:
    include: MatchProperties | None = None
    exclude: MatchProperties | None = None

    @property
    def configured(self) -> bool:
        return self.include is not None or self.exclude is not None

    def check_signal(self, signal: Signal) -> str | None:
        """Why these properties cannot be used with `signal` (None if they can)."""
        for name in ("include", "exclude"):
            props: MatchProperties | None = getattr(self, name)
            if props is None:
                continue
            wrong = [p for p in props.set_properties() if p not in _APPLIES[signal]]
            if wrong:
                return (f"{name}.{wrong[0]} does not apply to {signal.value}; {signal.value} can match on "
                        f"{', '.join(sorted(_APPLIES[signal]))}")
        return None


# -- matching ------------------------------------------------------------------------------------

Str = Callable[[str], bool]


def _strings(props: MatchProperties, values: Sequence[str]) -> Str:
    if props.match_type == "regexp":
        rxs = [compile_re2(v) for v in values]
        return lambda s: any(rx.search(s) is not None for rx in rxs)
    wanted = frozenset(values)
    return lambda s: s in wanted


def _attrs(props: MatchProperties, wanted: Sequence[AttributeMatch]) -> Callable[[PMap], bool]:
    checks: list[tuple[str, Callable[[Any], bool]]] = []
    for a in wanted:
        if a.value is None:
            checks.append((a.key, lambda v: True))
        elif props.match_type == "regexp":
            rx = compile_re2(str(a.value))
            checks.append((a.key, lambda v, rx=rx: rx.search(string_like(v) or "") is not None))  # type: ignore[misc]
        else:
            checks.append((a.key, lambda v, want=a.value: same(v, want)))  # type: ignore[misc]

    def match(m: PMap) -> bool:
        for key, check in checks:
            kv = m.find(key)
            if kv is None or not check(from_any(kv.value)):
                return False
        return True
    return match


class Matcher:
    """One include or exclude block, compiled: `span(resource, scope, span)`, `log(...)`, `metric(...)`."""

    def __init__(self, props: MatchProperties) -> None:
        self.p = props
        s = props
        self._services = _strings(s, s.services) if s.services else None
        self._names = _strings(s, s.span_names) if s.span_names else None
        kinds_strict = {_kind_index(k) for k in s.span_kinds}
        self._kinds: Callable[[int], bool] | None = None
        if s.span_kinds:
            if s.match_type == "regexp":
                rx = _strings(s, s.span_kinds)
                self._kinds = lambda k: 0 <= k < 6 and (rx(_SPAN_KIND_NAMES[k]) or rx("SPAN_KIND_" + _SPAN_KINDS[k]))
            else:
                self._kinds = lambda k: k in kinds_strict
        self._bodies = _strings(s, s.log_bodies) if s.log_bodies else None
        self._sev_texts = _strings(s, s.log_severity_texts) if s.log_severity_texts else None
        self._metric_names = _strings(s, s.metric_names) if s.metric_names else None
        self._attributes = _attrs(s, s.attributes) if s.attributes else None
        self._resources = _attrs(s, s.resources) if s.resources else None
        self._libraries = [(compile_re2(lib.name) if s.match_type == "regexp" else None, lib) for lib in s.libraries]

    def _common(self, resource: Any, scope: Any) -> bool:
        if self._resources is not None and not self._resources(PMap(resource.attributes)):
            return False
        if self._libraries:
            ok = False
            for rx, lib in self._libraries:
                name_ok = rx.search(scope.name) is not None if rx is not None else scope.name == lib.name
                if name_ok and (lib.version is None or lib.version == scope.version):
                    ok = True
                    break
            if not ok:
                return False
        return True

    def span(self, resource: Any, scope: Any, span: Any) -> bool:
        if self._services is not None:
            service = PMap(resource.attributes).get("service.name")
            if not isinstance(service, str) or not self._services(service):
                return False
        if self._names is not None and not self._names(span.name):
            return False
        if self._kinds is not None and not self._kinds(span.kind):
            return False
        if self._attributes is not None and not self._attributes(PMap(span.attributes)):
            return False
        return self._common(resource, scope)

    def log(self, resource: Any, scope: Any, record: Any) -> bool:
        if self._bodies is not None:
            if record.body.WhichOneof("value") != "string_value" or not self._bodies(record.body.string_value):
                return False
        if self._sev_texts is not None and not self._sev_texts(record.severity_text):
            return False
        sev = self.p.log_severity_number
        if sev is not None:
            n = record.severity_number
            if not ((n == 0 and sev.match_undefined) or (n != 0 and n >= sev.level())):
                return False
        if self._attributes is not None and not self._attributes(PMap(record.attributes)):
            return False
        return self._common(resource, scope)

    def metric(self, resource: Any, scope: Any, metric: Any) -> bool:
        if self._metric_names is not None and not self._metric_names(metric.name):
            return False
        return self._common(resource, scope)


class Selector:
    """include/exclude together: `selected(kind, resource, scope, item)` says whether an item is acted on."""

    def __init__(self, cfg: MatchConfig) -> None:
        self.include = Matcher(cfg.include) if cfg.include is not None else None
        self.exclude = Matcher(cfg.exclude) if cfg.exclude is not None else None

    def selected(self, kind: str, resource: Any, scope: Any, item: Any) -> bool:
        if self.include is not None and not getattr(self.include, kind)(resource, scope, item):
            return False
        return not (self.exclude is not None and getattr(self.exclude, kind)(resource, scope, item))


class SpanMatcher:
    """The filter processor's legacy `spans: {include, exclude}`: spans not selected are dropped."""

    def __init__(self, cfg: MatchConfig) -> None:
        self.selector = Selector(cfg)

    def drop_unmatched(self, msg: Any) -> bool:
        removed = False
        for ri in range(len(msg.resource_spans) - 1, -1, -1):
            rs = msg.resource_spans[ri]
            for si in range(len(rs.scope_spans) - 1, -1, -1):
                ss = rs.scope_spans[si]
                for i in range(len(ss.spans) - 1, -1, -1):
                    if not self.selector.selected("span", rs.resource, ss.scope, ss.spans[i]):
                        del ss.spans[i]
                        removed = True
                if not ss.spans:
                    del rs.scope_spans[si]
            if not rs.scope_spans:
                del msg.resource_spans[ri]
        return removed

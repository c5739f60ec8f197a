"""The Collector's two config styles for OTTL lists, shared by `transform` and `filter`.

`trace_statements` (or `trace_conditions`) is either a flat list of strings (one group whose context
is inferred) or a list of groups `{context, conditions, statements, error_mode}`; mixing the two in
one list is an error, as in the Collector. Problems come back as `Issue`s keyed by where they are
(`trace_statements[2]`, `metric_statements[0].statements[1]`), with the statement, the column and
what is supported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.config.types import Issue, decode_dataclass
from pipeline.errors import ConfigIssue
from processors.ottl.runner import ErrorMode, Group, build_group

GroupErrorMode = Literal["", "ignore", "silent", "propagate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextStatements:
    """One advanced-style group of the transform processor."""

    context: str = ""
    conditions: tuple[str, ...] = ()
    statements: tuple[str, ...] = ()
    error_mode: GroupErrorMode = ""
    #: accepted for compatibility; otelpipe's OTTL has no `cache` paths, so there is nothing to share
    shared_cache: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextConditions:
    """One advanced-style group of the filter processor."""

    context: str = ""
    conditions: tuple[str, ...] = ()
    error_mode: GroupErrorMode = ""


def parse_groups(signal: str, key: str, raw: tuple[Any, ...], default_mode: ErrorMode,
                 *, conditions_only: bool = False) -> tuple[list[Group], list[Issue]]:
    """Compile `raw` (the YAML list under `key`) into groups for `signal`; every problem as an Issue."""
    issues: list[Issue] = []
    groups: list[Group] = []
    if not raw:
        return groups, issues
    flat = [i for i, v in enumerate(raw) if isinstance(v, str)]
    if flat and len(flat) != len(raw):
        return [], [Issue(key, "configuring both styles in one list is not supported: use only strings (basic) "
                               "or only groups with `context` / `statements` (advanced)")]
    if flat:
        texts = tuple(str(v) for v in raw)
        group, problems = build_group(signal, "", () if conditions_only else texts,
                                      texts if conditions_only else (), default_mode)
        for p in problems:
            issues.append(Issue(f"{key}[{p.index}]" if p.field != "context" else key, p.text()))
        if group is not None:
            groups.append(group)
        return groups, issues
    cls = ContextConditions if conditions_only else ContextStatements
    for gi, item in enumerate(raw):
        where = f"{key}[{gi}]"
        decode_issues: list[ConfigIssue] = []
        cfg = decode_dataclass(cls, item, where, decode_issues)
        if decode_issues:
            issues.extend(Issue(i.path, i.message) for i in decode_issues)
            continue
        statements = () if conditions_only else cfg.statements
        if not conditions_only and not statements:
            issues.append(Issue(f"{where}.statements", "is required: a group needs at least one statement"))
            continue
        if conditions_only and not cfg.conditions:
            issues.append(Issue(f"{where}.conditions", "is required: a group needs at least one condition"))
            continue
        mode: ErrorMode = cfg.error_mode or default_mode
        group, problems = build_group(signal, cfg.context.lower(), statements, cfg.conditions, mode)
        for p in problems:
            sub = "context" if p.field == "context" else f"{p.field}[{p.index}]"
            issues.append(Issue(f"{where}.{sub}", p.text()))
        if group is not None:
            groups.append(group)
    return groups, issues


def explicit_group(signal: str, key: str, context: str, conditions: tuple[str, ...],
                   default_mode: ErrorMode) -> tuple[list[Group], list[Issue]]:
    """A filter list of the older style (`traces: {span: [...]}`): conditions in a named context."""
    if not conditions:
        return [], []
    group, problems = build_group(signal, context, (), conditions, default_mode)
    issues = [Issue(f"{key}[{p.index}]", p.text()) for p in problems]
    return ([group] if group is not None else []), issues

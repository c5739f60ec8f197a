"""Statement and condition groups: context inference, group conditions, error_mode, and running them
over a decoded request.

A group is what the Collector's config calls a context statements (or conditions) block:
`{context, conditions, statements, error_mode}`, or the flat list form, which is one group whose
context is inferred from the paths (the most specific context any path names: log, datapoint,
metric, spanevent, span, resource, scope).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.redact import redact_text
from processors.ottl import prefilter
from processors.ottl.compiler import CompiledCondition, CompiledStatement, Compiler, referenced_contexts
from processors.ottl.contexts import PRIORITY, SIGNAL_CONTEXTS, TransformContext
from processors.ottl.grammar import OTTLError, parse_condition, parse_statement
from processors.ottl.prefilter import ALWAYS, NEVER, Need
from processors.ottl.values import OTTLRuntimeError

ErrorMode = Literal["ignore", "silent", "propagate"]
#: Failures of a statement on one item that error_mode handles (OTTL type errors, protobuf range errors).
RUNTIME_ERRORS = (OTTLRuntimeError, ValueError, TypeError, OverflowError)


class StatementFailed(Exception):
    """A statement failed on an item with error_mode propagate: the request is refused."""


@dataclass(frozen=True, slots=True)
class GroupIssue:
    """A problem in one statement or condition of a group: which list, which index, the OTTL error."""

    field: str  # "statements", "conditions" or "context"
    index: int
    error: OTTLError | None
    message: str = ""

    def text(self) -> str:
        """For `otelpipe validate`: a URL with credentials written in a statement is redacted."""
        return redact_text(str(self.error) if self.error is not None else self.message)


@dataclass(frozen=True, slots=True)
class Group:
    context: str
    statements: tuple[CompiledStatement, ...]
    conditions: tuple[CompiledCondition, ...]
    error_mode: ErrorMode

    @property
    def need(self) -> Need:
        """What a request must contain for this group to change anything (statements) or match (conditions)."""
        cond = ALWAYS
        if self.conditions:
            cond = NEVER
            for c in self.conditions:
                cond = prefilter.or_(cond, c.need)
        if not self.statements:
            return cond
        stmts = NEVER
        for s in self.statements:
            stmts = prefilter.or_(stmts, s.need)
        return prefilter.and_(cond, stmts)


def infer_context(signal: str, texts: Sequence[tuple[str, int, Any]]) -> tuple[str | None, list[GroupIssue]]:
    """The context of a group without `context:`: the most specific context its paths name. Paths of
    another signal's contexts are reported per statement (the rest still get a context)."""
    valid = SIGNAL_CONTEXTS[signal]
    found: set[str] = set()
    issues: list[GroupIssue] = []
    for field, i, node in texts:
        refs = referenced_contexts(node)
        bad = sorted((c, col) for c, col in refs.items() if c not in valid)
        if bad:
            issues.append(GroupIssue(field, i, OTTLError(node.text, bad[0][1], (
                f"{bad[0][0]} paths cannot be used with {signal} data; the contexts here are {', '.join(valid)}"))))
        found |= set(refs) & set(valid)
    for ctx in PRIORITY:
        if ctx in found:
            return ctx, issues
    if issues:
        return None, issues
    field, i, node = texts[0]
    return None, [GroupIssue(field, i, OTTLError(node.text, 1, (
        "cannot infer the context: start paths with a context name "
        f"({', '.join(valid)}), e.g. {valid[1] if len(valid) > 2 else valid[0]}.attributes[\"key\"], "
        "or give the group a `context`")))]


def build_group(signal: str, context: str, statements: Sequence[str], conditions: Sequence[str],
                error_mode: ErrorMode) -> tuple[Group | None, list[GroupIssue]]:
    """Parse and compile a group; `context` "" means infer it. Returns the group or every problem found."""
    issues: list[GroupIssue] = []
    parsed: list[tuple[str, int, Any]] = []
    for field, texts, parse in (("statements", statements, parse_statement), ("conditions", conditions,
                                                                              parse_condition)):
        for i, text in enumerate(texts):
            try:
                parsed.append((field, i, parse(text)))
            except OTTLError as e:
                issues.append(GroupIssue(field, i, e))
    valid = SIGNAL_CONTEXTS[signal]
    explicit = bool(context)
    if explicit:
        if context not in valid:
            return None, [*issues, GroupIssue("context", 0, None, f"unknown context {context!r} for {signal} "
                                                                  f"data; use one of {', '.join(valid)}")]
        ctx = context
    else:
        if not parsed:
            return None, issues
        inferred, problems = infer_context(signal, parsed)
        issues.extend(problems)
        if inferred is None:
            return None, issues
        ctx = inferred
    compiler = Compiler(ctx, explicit=explicit)
    stmts: list[CompiledStatement] = []
    conds: list[CompiledCondition] = []
    flagged = {(p.field, p.index) for p in issues}
    for field, i, node in parsed:
        if (field, i) in flagged:
            continue
        try:
            if field == "statements":
                stmts.append(compiler.statement(node))
            else:
                conds.append(compiler.condition(node))
        except OTTLError as e:
            issues.append(GroupIssue(field, i, e))
    if issues:
        return None, issues
    return Group(ctx, tuple(stmts), tuple(conds), error_mode), []


# -- running ---------------------------------------------------------------------------------------

class ErrorHandler:
    """What error_mode does with a statement that failed on an item: log (rate-limited), stay
    silent, or raise StatementFailed."""

    def __init__(self, logger: logging.LoggerAdapter[logging.Logger] | logging.Logger,
                 clock: Callable[[], float], interval: float = 10.0) -> None:
        self._logger = logger
        self._clock = clock
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0
        self.errors = 0

    def __call__(self, mode: ErrorMode, text: str, exc: BaseException) -> None:
        self.errors += 1
        if mode == "propagate":
            raise StatementFailed(f'"{text}" failed: {exc}') from exc
        if mode == "silent":
            return
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return
        extra = f" ({self._suppressed} more failures not logged)" if self._suppressed else ""
        self._logger.warning('OTTL statement "%s" failed: %s%s', redact_text(text), exc, extra)
        self._suppressed = 0
        self._next = now + self._interval


def _items(signal: str, msg: Any, context: str, tc: TransformContext) -> Iterator[None]:
    """Walk `msg`, pointing `tc` at each item of `context` in turn (yields once per item)."""
    if signal == "traces":
        for rs in msg.resource_spans:
            tc.resource, tc.resource_container = rs.resource, rs
            if context == "resource":
                yield None
                continue
            for ss in rs.scope_spans:
                tc.scope, tc.scope_container = ss.scope, ss
                if context == "scope":
                    yield None
                    continue
                for span in ss.spans:
                    tc.span = span
                    if context == "span":
                        yield None
                    else:
                        for ev in span.events:
                            tc.event = ev
                            yield None
    elif signal == "metrics":
        for rm in msg.resource_metrics:
            tc.resource, tc.resource_container = rm.resource, rm
            if context == "resource":
                yield None
                continue
            for sm in rm.scope_metrics:
                tc.scope, tc.scope_container = sm.scope, sm
                if context == "scope":
                    yield None
                    continue
                for m in sm.metrics:
                    tc.metric = m
                    if context == "metric":
                        yield None
                        continue
                    which = m.WhichOneof("data")
                    if which is not None:
                        for dp in getattr(m, which).data_points:
                            tc.point = dp
                            yield None
    else:
        for rl in msg.resource_logs:
            tc.resource, tc.resource_container = rl.resource, rl
            if context == "resource":
                yield None
                continue
            for sl in rl.scope_logs:
                tc.scope, tc.scope_container = sl.scope, sl
                if context == "scope":
                    yield None
                    continue
                for lr in sl.log_records:
                    tc.log = lr
                    yield None


def run_statements(signal: str, msg: Any, groups: Sequence[Group], on_error: ErrorHandler) -> bool:
    """Run every group over `msg` in order; whether anything changed. StatementFailed in propagate mode."""
    changed = False
    tc = TransformContext()
    for g in groups:
        conditions = g.conditions
        statements = g.statements
        mode = g.error_mode
        for _ in _items(signal, msg, g.context, tc):
            if conditions and not _any_true(conditions, tc, mode, on_error):
                continue
            for st in statements:
                try:
                    if st.where is None or st.where(tc):
                        if st.run(tc):
                            changed = True
                except RUNTIME_ERRORS as e:
                    on_error(mode, st.text, e)
    return changed


def _any_true(conditions: Sequence[CompiledCondition], tc: TransformContext, mode: ErrorMode,
              on_error: ErrorHandler) -> bool:
    for c in conditions:
        try:
            if c.test(tc):
                return True
        except RUNTIME_ERRORS as e:
            on_error(mode, c.text, e)
    return False


def run_filter(signal: str, msg: Any, groups: Sequence[Group], on_error: ErrorHandler) -> bool:
    """Drop every item for which a condition of its group is true; empty scopes and resources (and
    metrics without points) go too. Whether anything was removed."""
    removed = False
    tc = TransformContext()
    for g in groups:
        removed |= _filter_group(signal, msg, g, tc, on_error)
    return removed


def _drop(container: Any, flags: list[bool]) -> bool:
    if not any(flags):
        return False
    for i in range(len(flags) - 1, -1, -1):
        if flags[i]:
            del container[i]
    return True


def _filter_group(signal: str, msg: Any, g: Group, tc: TransformContext, on_error: ErrorHandler) -> bool:
    ctx, conds, mode = g.context, g.conditions, g.error_mode

    def hit() -> bool:
        return _any_true(conds, tc, mode, on_error)

    rfield, sfield, ifield = {"traces": ("resource_spans", "scope_spans", "spans"),
                              "metrics": ("resource_metrics", "scope_metrics", "metrics"),
                              "logs": ("resource_logs", "scope_logs", "log_records")}[signal]
    removed = False
    resources = getattr(msg, rfield)
    drop_r: list[bool] = []
    for r in resources:
        tc.resource, tc.resource_container = r.resource, r
        if ctx == "resource":
            drop_r.append(hit())
            continue
        scopes = getattr(r, sfield)
        drop_s: list[bool] = []
        for s in scopes:
            tc.scope, tc.scope_container = s.scope, s
            if ctx == "scope":
                drop_s.append(hit())
                continue
            items = getattr(s, ifield)
            drop_i: list[bool] = []
            for it in items:
                if signal == "traces":
                    tc.span = it
                    if ctx == "span":
                        drop_i.append(hit())
                        continue
                    flags = []
                    for ev in it.events:
                        tc.event = ev
                        flags.append(hit())
                    removed |= _drop(it.events, flags)
                    drop_i.append(False)
                elif signal == "metrics":
                    tc.metric = it
                    if ctx == "metric":
                        drop_i.append(hit())
                        continue
                    which = it.WhichOneof("data")
                    if which is None:
                        drop_i.append(False)
                        continue
                    points = getattr(it, which).data_points
                    flags = []
                    for dp in points:
                        tc.point = dp
                        flags.append(hit())
                    if _drop(points, flags):
                        removed = True
                        drop_i.append(len(points) == 0)
                    else:
                        drop_i.append(False)
                else:
                    tc.log = it
                    drop_i.append(hit())
            removed |= _drop(items, drop_i)
            drop_s.append(len(items) == 0 and any(drop_i))
        removed |= _drop(scopes, drop_s)
        drop_r.append(len(scopes) == 0 and any(drop_s))
    removed |= _drop(resources, drop_r)
    return removed

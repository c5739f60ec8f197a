"""transform: modify telemetry with OTTL statements, as the Collector's transformprocessor does.

Config (the Collector's keys): `error_mode` (ignore, silent, propagate; default ignore) and
`trace_statements` / `metric_statements` / `log_statements`, each a flat list of statements (one
group, its context inferred from the paths) or a list of groups `{context, conditions, statements,
error_mode}`. Statements run in order; a group's `conditions` are ORed and gate all its statements.

Cost model: before decoding a request, the processor checks its wire bytes for what the statements
need to have any effect (`processors/ottl/prefilter.py`: the strings a `where` clause compares
with, the keys an editor deletes, the literals of a regex); a request that no statement can touch
is handed on as it came, neither decoded nor re-encoded. Otherwise the request is decoded and the
statements run; when none changed anything, the wire bytes are still kept.

error_mode: `ignore` logs a failing statement (rate-limited) and goes on with the next, `silent`
goes on without logging, `propagate` refuses the whole request (a permanent error: the receiver
answers 400 and counts it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.component import Consumer, FuncProcessor, ProcessorFactory, Settings, Stability, processor_from_func
from pipeline.config.types import Issue
from pipeline.errors import PermanentError
from pipeline.model import Payload, Signal
from processors.ottl import prefilter
from processors.ottl.config import parse_groups
from processors.ottl.runner import ErrorHandler, Group, StatementFailed, run_statements

_KEYS = {Signal.TRACES: "trace_statements", Signal.METRICS: "metric_statements", Signal.LOGS: "log_statements"}


@dataclass(frozen=True, slots=True, kw_only=True)
class TransformConfig:
    error_mode: Literal["ignore", "silent", "propagate"] = "ignore"
    trace_statements: tuple[Any, ...] = ()
    metric_statements: tuple[Any, ...] = ()
    log_statements: tuple[Any, ...] = ()
    flatten_data: bool = False

    def groups(self, signal: Signal) -> tuple[list[Group], list[Issue]]:
        key = _KEYS[signal]
        return parse_groups(signal.value, key, getattr(self, key), self.error_mode)

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        for signal in Signal:
            issues.extend(self.groups(signal)[1])
        if self.flatten_data:
            issues.append(Issue("flatten_data", "needs the Collector's transform.flatten.logs feature gate, "
                                                "which otelpipe does not have; remove it"))
        return issues


class Transform:
    """The payload function: prefilter on the wire bytes, then run the statements on the decoded request."""

    def __init__(self, groups: list[Group], signal: Signal, on_error: ErrorHandler) -> None:
        self.groups = groups
        self.signal = signal
        self.on_error = on_error
        need = prefilter.NEVER
        for g in groups:
            need = prefilter.or_(need, g.need)
        self.may_touch = prefilter.Checker(need)
        self.skipped = 0  # requests handed on without decoding (for tests and the benchmark)

    def __call__(self, payload: Payload) -> Payload:
        if not self.groups:
            return payload
        raw = payload.raw_cached
        if raw is not None and not self.may_touch(raw):
            self.skipped += 1
            return payload
        msg = payload.message
        try:
            changed = run_statements(self.signal.value, msg, self.groups, self.on_error)
        except StatementFailed as e:
            raise PermanentError(f"transform: {e}") from e
        if changed:
            payload.mutable()  # the message changed in place: the cached bytes are stale
        return payload


def create(settings: Settings, cfg: TransformConfig, next_consumer: Consumer) -> FuncProcessor:
    assert settings.signal is not None
    groups, issues = cfg.groups(settings.signal)
    assert not issues, issues  # validated before create
    proc = Transform(groups, settings.signal, ErrorHandler(settings.logger, settings.clock))
    return processor_from_func(settings, proc, next_consumer, mutates_data=bool(groups))


FACTORY = ProcessorFactory(
    type="transform",
    config_type=TransformConfig,
    signals={Signal.TRACES: Stability.BETA, Signal.METRICS: Stability.BETA, Signal.LOGS: Stability.BETA},
    create=create,
    description="Modifies telemetry with OTTL statements (the Collector's transform processor).",
)

__all__ = ["FACTORY", "Transform", "TransformConfig"]

"""attributes: insert, update, upsert, delete, hash, extract or convert attributes of spans, log records
and data points (the Collector's attributesprocessor), optionally only for items selected by
`include`/`exclude` match properties.

A request none of whose actions can change anything (told from its wire bytes: the keys an update,
delete, hash, extract or convert names must be in it) is handed on without being decoded; when
the actions ran and changed nothing, the request keeps its wire bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.component import Consumer, FuncProcessor, ProcessorFactory, Settings, Stability, processor_from_func
from pipeline.config.types import Issue
from pipeline.model import Payload, Signal
from processors.attributes.actions import ActionConfig, Actions, validate_actions
from processors.attributes.match import MatchConfig as _MatchConfig
from processors.attributes.match import MatchProperties, Selector
from processors.ottl import prefilter


@dataclass(frozen=True, slots=True, kw_only=True)
class AttributesConfig:
    actions: tuple[ActionConfig, ...] = ()
    include: MatchProperties | None = None
    exclude: MatchProperties | None = None

    def validate(self) -> list[Issue]:
        return validate_actions(self.actions, "actions")

    def match(self) -> _MatchConfig:
        return _MatchConfig(include=self.include, exclude=self.exclude)


class AttributesProcessor:
    """The payload function."""

    def __init__(self, cfg: AttributesConfig, signal: Signal) -> None:
        self.signal = signal
        self.actions = Actions(cfg.actions)
        self.may_touch = prefilter.Checker(self.actions.need)
        match = cfg.match()
        problem = match.check_signal(signal)
        if problem is not None:
            raise ValueError(f"attributes processor in a {signal.value} pipeline: {problem}")
        self.selector = Selector(match) if match.configured else None

    def __call__(self, payload: Payload) -> Payload:
        raw = payload.raw_cached
        if raw is not None and not self.may_touch(raw):
            return payload
        if self._apply(payload.message, payload.headers):
            payload.mutable()
        return payload

    def _apply(self, msg: Any, headers: Any) -> bool:
        apply = self.actions.apply
        sel = self.selector
        changed = False
        if self.signal is Signal.TRACES:
            for rs in msg.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        if sel is None or sel.selected("span", rs.resource, ss.scope, span):
                            changed |= apply(span.attributes, headers)
        elif self.signal is Signal.LOGS:
            for rl in msg.resource_logs:
                for sl in rl.scope_logs:
                    for lr in sl.log_records:
                        if sel is None or sel.selected("log", rl.resource, sl.scope, lr):
                            changed |= apply(lr.attributes, headers)
        else:
            for rm in msg.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if sel is not None and not sel.selected("metric", rm.resource, sm.scope, m):
                            continue
                        which = m.WhichOneof("data")
                        if which is None:
                            continue
                        for dp in getattr(m, which).data_points:
                            changed |= apply(dp.attributes, headers)
        return changed


def create(settings: Settings, cfg: AttributesConfig, next_consumer: Consumer) -> FuncProcessor:
    assert settings.signal is not None
    return processor_from_func(settings, AttributesProcessor(cfg, settings.signal), next_consumer)


FACTORY = ProcessorFactory(
    type="attributes",
    config_type=AttributesConfig,
    signals={Signal.TRACES: Stability.BETA, Signal.METRICS: Stability.BETA, Signal.LOGS: Stability.BETA},
    create=create,
    description="Inserts, updates, deletes, hashes, extracts or converts item attributes (the Collector's "
                "attributes processor).",
)

__all__ = ["FACTORY", "AttributesConfig", "AttributesProcessor"]
